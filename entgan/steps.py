"""The pipeline's steps as plain functions over files: what each KFP component calls.

inspect (edge) -> plan (cloud) -> rounds of [train (edge) -> aggregate (cloud)]
-> eval (edge) -> evaluate (cloud) -> deploy (cloud)

Every argument that crosses a node is a file path: weight bundles and feature statistics are
safetensors, reports and plans are JSON. The same functions run in-process (tests,
benchmarks) and inside the components.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from entgan import strategies
from entgan.aggregate import AggregationError, check_update
from entgan.bundle import Bundle, BundleError, BundleHeader, load_bundle, pack, read_header, save_bundle
from entgan.config import JobSpec
from entgan.data import DataError, EdgeReport, inspect_edge, load_edge
from entgan.evaluate import (
    FeatureStats,
    classification_accuracy,
    embed,
    feature_stats,
    fid_from_stats,
    frechet_distance,
    merge_stats,
    save_sample_grid,
    uncertain_count,
)
from entgan.report import model_description, run_note, version_description
from entgan.quality import cas_counts, cas_from_counts, gate_decision, precision_recall, train_cas_classifier
from entgan.lifecycle import Stage, State, StateChange, current_states, driver_tags, evaluate_trigger, parse_clock
from entgan.redact import redact
from entgan.strategies import FEATURES, EdgeUpdate

EDGE_FAILURE = "edge-failure"  # the bundle kind an edge task writes in place of its output when it fails
TRANSIENT_ERRORS = (ConnectionError, TimeoutError)  # retried in the task before it counts as a failure


def log(message: str) -> None:
    """Progress for humans: one flushed line (KFP and kfp.local show task stdout)."""
    print(f"[entgan {time.strftime('%H:%M:%S')}] {message}", flush=True)


def configure_threads() -> None:
    """Edge steps honour ENTGAN_NUM_THREADS (set by `entgan run` so that the two edge tasks that
    kfp.local runs at once share the cores); cloud steps run alone and use them all."""
    threads = os.environ.get("ENTGAN_NUM_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))


# ---------------------------------------------------------------- job creation and plan


@dataclass
class Plan:
    """Job creation's decision: which types train, which edge trains which, where each starts."""

    types: list[str]  # the types this run trains
    assignments: dict[str, list[str]]  # edge -> types it trains
    train_examples: dict[str, int]  # type -> training images over all edges
    holdout_examples: dict[str, int]  # type -> held-out images over all edges
    start: dict[str, str | None] = field(default_factory=dict)  # type -> champion version or None
    parents: dict[str, dict] = field(default_factory=dict)  # new type -> nearest known task it starts from
    evaluator_types: list[str] = field(default_factory=list)  # the feature network's classes, in order
    evaluator_version: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # type -> why it is not trained
    uncertain: dict[str, int] = field(default_factory=dict)  # images the evaluator could not place
    new_samples: dict[str, int] = field(default_factory=dict)
    decision: str = "train"  # or "wait"
    trigger_reason: str = ""
    failed_edges: dict[str, str] = field(default_factory=dict)  # edge -> why its inspection failed

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls(**json.loads(Path(path).read_text()))

    def label(self, data_type: str) -> int:
        return self.evaluator_types.index(data_type)


def _now() -> float:
    return time.time()


_PROGRESS = [State.READY, State.STARTING, State.RUNNING, State.COMPLETED]


def record(library, run_id: str, stage: Stage, *states: State, detail: str = "") -> None:
    """Append state changes of one stage to the job's MLflow run, in order. A state the stage
    has already reached is skipped, so a retried task records nothing twice."""
    at = _now()
    reached = current_states(library.states(run_id))[stage]
    for i, state in enumerate(states):
        if state in _PROGRESS and reached in _PROGRESS and _PROGRESS.index(state) <= _PROGRESS.index(reached):
            continue
        library.record_state(run_id, StateChange(stage, state, at + i * 1e-6, detail))
        log(f"{stage.value} stage: {state.value}{' - ' + detail if detail else ''}")


@contextlib.contextmanager
def recorded_failure(job: JobSpec, kfp_run_id: str, stage: Stage, edge: str | None = None):
    """Record `stage` Failed (with the edge and the error) if the body raises, then re-raise.

    Recording is best effort: a task that cannot reach MLflow still fails with its own error."""
    try:
        yield
    except Exception as err:
        try:
            from entgan.registry import library_for

            library = library_for(job)
            change = StateChange(stage, State.FAILED, _now(), "task failed", edge,
                                 redact(f"{type(err).__name__}: {err}")[:2000])
            library.record_state(job_run(library, kfp_run_id), change)
            log(f"{stage.value} stage: Failed{' at ' + edge if edge else ''}: {err}")
        except Exception as record_err:  # noqa: BLE001 - never hide the task's own error
            log(f"could not record the failure in MLflow: {record_err}")
        raise


def run_edge_task(job: JobSpec, kfp_run_id: str, stage: Stage, edge: str, output_path: str | Path, work,
                  round_: int = 0, retries: int = 2, delay: float = 2.0):
    """Run an edge task's `work()` so that a failing edge does not fail the round; returns what
    `work()` returned, or None when the edge failed.

    A transient error (connection, timeout) is retried `retries` times with doubling delays.
    Any other error, or the last transient one, makes the edge's output a failure record (a
    bundle of kind `edge-failure` naming the edge and the error), records the edge's failure in
    the stage states, and returns None: the task itself succeeds, and the cloud step that
    collects the edges' outputs decides whether enough edges answered (`train.min_edges`).
    A task that is killed (out of memory, node lost) writes nothing; KFP retries it (`set_retry`).
    """
    for attempt in range(retries + 1):
        try:
            return work()
        except TRANSIENT_ERRORS as err:
            if attempt == retries:
                error = err
                break
            log(f"{edge}: transient error ({type(err).__name__}: {redact(str(err))}); "
                f"retry {attempt + 1}/{retries} in {delay:.0f}s")
            time.sleep(delay)
            delay *= 2
        except Exception as err:  # noqa: BLE001 - every failure of an edge becomes a record
            error = err
            break
    message = redact(f"{type(error).__name__}: {error}")[:2000]
    save_bundle(output_path, {}, BundleHeader(kind=EDGE_FAILURE, round=round_, edge=edge, extra={"error": message}))
    where = f"round {round_}" if round_ else ("inspection" if stage is Stage.TRAIN else "evaluation")
    log(f"{edge}: {where} failed, going on without this edge: {message}")
    try:
        from entgan.registry import library_for

        library = library_for(job)
        change = StateChange(stage, State.FAILED, _now(), f"{where}: edge left out", edge, message)
        library.record_state(job_run(library, kfp_run_id), change)
    except Exception as record_err:  # noqa: BLE001 - the failure record above is what counts
        log(f"could not record the failure in MLflow: {redact(str(record_err))}")
    return None


def split_failures(paths: list[str]) -> tuple[list[Bundle], dict[str, str], dict[str, str]]:
    """Load the bundles the edges sent: (verified bundles, {edge: its own failure record},
    {edge: why the cloud refused its bundle}). Both kinds of failure leave that edge out.
    A refused bundle (checksum, dtypes, finite values) is named by the edge in its header."""
    bundles, failed, refused = [], {}, {}
    for p in paths:
        try:
            bundle = load_bundle(p)
        except BundleError as err:
            header = read_header(p)
            refused[header.edge if header and header.edge else str(p)] = f"bundle refused: {err}"
            continue
        if bundle.header.kind == EDGE_FAILURE:
            failed[bundle.header.edge or str(p)] = str(bundle.header.extra.get("error", "unknown error"))
        else:
            bundles.append(bundle)
    return bundles, failed, refused


def _record_refused(library, run_id: str | None, stage: Stage, refused: dict[str, str], where: str) -> None:
    """Record edges whose output the cloud refused (their own failures are recorded by them)."""
    for edge, why in refused.items():
        log(f"{edge}: {where}: left out: {why}")
        if library is not None:
            library.record_state(run_id, StateChange(stage, State.FAILED, _now(), f"{where}: edge left out",
                                                     edge, why[:2000]))


def job_run(library, kfp_run_id: str) -> str:
    """The MLflow run that `create job` opened for this KFP run."""
    run_id = library.run_for(kfp_run_id)
    if run_id is None:
        raise LookupError(f"no MLflow run is tagged entgan.kfp_run_id={kfp_run_id}; `create job` opens it first")
    return run_id


def step_create_job(job: JobSpec, kfp_run_id: str, library, snapshot_path: str | Path) -> list[dict[str, str]]:
    """Job creation: open the job's MLflow run (every stage Waiting) and snapshot the library's
    evaluator and per-type statistics for the edges' inspection. Returns the fan-out items: one
    node selector per edge."""
    params = {
        "strategy": job.train.strategy,
        "rounds": job.train.rounds,
        "local_steps": job.train.local_steps,
        "cloud_steps": job.train.global_steps,
        "image_size": job.train.image_size,
        "width": job.train.width,
        "latent_dim": job.train.latent_dim,
        "mu": job.train.mu,
        "edges": ",".join(job.edge_names),
        "trigger": f"{job.trigger.scope} new samples {job.trigger.operator} {job.trigger.threshold}"
        + (f" within {job.trigger.window[0]}-{job.trigger.window[1]}" if job.trigger.window else ""),
    }
    note = (f"EntGAN job `{job.name}`, KFP run `{kfp_run_id}`: {job.train.rounds} rounds of `{job.train.strategy}` "
            f"on edges {', '.join(job.edge_names)}.")  # the run's description in the MLflow UI
    tags = {"entgan.kfp_run_id": kfp_run_id, "mlflow.note.content": note}
    tags.update(driver_tags())  # issue 19: the local `entgan run` process, so `status` can spot a stale run
    run_id = library.start_run(f"kfp-{kfp_run_id}", params, tags)
    for stage in Stage:
        record(library, run_id, stage, State.WAITING, detail="job created")
    groups, extra = {}, {"evaluator_types": [], "evaluator_version": None}
    evaluator = library.evaluator()
    if evaluator:
        bundle = library.load(evaluator)
        groups = bundle.groups()
        extra = {
            "evaluator_types": bundle.header.extra.get("types", []),
            "evaluator_version": evaluator.version,
        }
    save_bundle(snapshot_path, pack(groups), BundleHeader(kind="library", extra=extra))
    return [e.selector for e in job.edges]


def _evaluator_from(snapshot: Bundle, train, evaluation):
    types = snapshot.header.extra["evaluator_types"]
    if not types:
        return None, []
    net = strategies.new_feature_net(len(types), train, evaluation)
    net.load_state_dict(snapshot.groups()[FEATURES])
    return net, types


def step_inspect(job: JobSpec, edge: str, report_path: str | Path, snapshot_path: str | Path | None = None) -> EdgeReport:
    """At the edge: count images per type (decoding each, so a corrupt file is named now) and,
    when the library has an evaluator, feature statistics per type and how many images it cannot
    place confidently (possible unseen types). Only counts and statistics leave the edge."""
    configure_threads()
    spec = job.edge(edge)
    report = inspect_edge(edge, spec.data, job.eval.holdout_fraction, job.train.image_size)
    tensors = {}
    if snapshot_path is not None:
        net, known = _evaluator_from(load_bundle(snapshot_path), job.train, job.eval)
        if net is not None:
            images = load_edge(spec.data, sorted(report.types), 0.0, job.train.image_size, holdout=False)
            for t, x in images.items():
                tensors.update(feature_stats(net, x).as_tensors(t))
                report.uncertain[t] = uncertain_count(net, x, job.eval.confidence)
    counts = ", ".join(f"{t}={c.train}+{c.holdout}" for t, c in report.types.items()) or "no images"
    log(f"{edge}: {counts} (train+held-out)")
    for t, n in report.uncertain.items():
        if n:
            log(f"{edge}: {n} {t} image(s) the evaluator cannot place confidently (possible unseen type)")
    header = BundleHeader(kind="edge-report", edge=edge, extra={"report": json.loads(report.to_json())})
    save_bundle(report_path, tensors, header)
    return report


def make_plan(job: JobSpec, reports: list[EdgeReport]) -> Plan:
    """Pure policy: decide the task set and who trains what from the edges' counts."""
    seen = sorted({t for r in reports for t in r.types})
    wanted = seen if job.data_types == "discover" else list(job.data_types)
    skipped: dict[str, str] = {}
    for t in seen:
        if t not in wanted:
            skipped[t] = "found at an edge but not listed in the job's data_types"
    train_n = {t: sum(r.types[t].train for r in reports if t in r.types) for t in wanted}
    held_n = {t: sum(r.types[t].holdout for r in reports if t in r.types) for t in wanted}
    types = []
    for t in wanted:
        if train_n[t] < job.train.min_images_per_type:
            skipped[t] = (
                f"{train_n[t]} training images, fewer than train.min_images_per_type="
                f"{job.train.min_images_per_type}; add images at an edge"
            )
        elif held_n[t] < 2:
            skipped[t] = "fewer than 2 held-out images for evaluation; add images or raise eval.holdout_fraction"
        else:
            types.append(t)
    if not types:
        reasons = "; ".join(f"{t}: {why}" for t, why in skipped.items()) or "the edges hold no images"
        raise DataError(f"job {job.name!r}: no data type can be trained ({reasons})")
    assignments = {r.edge: [t for t in types if t in r.types and r.types[t].train > 0] for r in reports}
    uncertain = {t: sum(r.uncertain.get(t, 0) for r in reports) for t in seen}
    return Plan(
        types,
        assignments,
        {t: train_n[t] for t in types},
        {t: held_n[t] for t in types},
        skipped=skipped,
        uncertain={t: n for t, n in uncertain.items() if n},
    )


def apply_trigger(job: JobSpec, plan: Plan, trained_before: dict[str, int], now: dt.time | None = None) -> Plan:
    """Keep only the types the trigger lets train; `plan.decision` becomes 'wait' if none."""
    plan.new_samples = {t: plan.train_examples[t] - trained_before.get(t, 0) for t in plan.types}
    window = tuple(parse_clock(t) for t in job.trigger.window) if job.trigger.window else None
    decision = evaluate_trigger(
        plan.new_samples,
        op=job.trigger.operator,
        threshold=job.trigger.threshold,
        scope=job.trigger.scope,
        window=window,
        now=now,
    )
    plan.decision, plan.trigger_reason = ("train" if decision.train else "wait"), decision.reason
    for t in plan.types:
        if t not in decision.types:
            plan.skipped[t] = f"trigger not met ({decision.reason})"
    plan.types = decision.types
    plan.assignments = {e: [t for t in types if t in decision.types] for e, types in plan.assignments.items()}
    return plan


def nearest_task(new: FeatureStats, known: dict[str, FeatureStats]) -> tuple[str, float] | None:
    """Task-relation discovery: the known type whose feature statistics are closest."""
    if not known:
        return None
    distances = {t: frechet_distance(new, stats) for t, stats in known.items()}
    best = min(distances, key=distances.get)
    return best, distances[best]


def step_plan(
    job: JobSpec,
    report_paths: list[str],
    snapshot_path: str | Path,
    plan_path: str | Path,
    state_path: str | Path,
    library,
    kfp_run_id: str,
    now: dt.time | None = None,
) -> Plan:
    """Job creation's decision: collect the edges' reports, apply the trigger, and write the
    starting global state: a known type starts from its champion, a new type from the
    champion of its nearest known type (warm start), else from scratch."""
    run_id = job_run(library, kfp_run_id)
    bundles, failed, refused = split_failures(report_paths)
    _record_refused(library, run_id, Stage.TRAIN, refused, "inspection")
    failed.update(refused)
    bundles = sorted(bundles, key=lambda b: b.header.edge)
    if len(bundles) < job.train.min_edges:
        reasons = "; ".join(f"{e}: {why}" for e, why in sorted(failed.items()))
        raise DataError(f"only {len(bundles)} of {len(job.edges)} edges could be inspected, fewer than "
                        f"train.min_edges={job.train.min_edges} ({reasons}); fix those edges or lower min_edges")
    reports = [EdgeReport.from_json(json.dumps(b.header.extra["report"])) for b in bundles]
    plan = make_plan(job, reports)
    plan.failed_edges = failed
    last = {t: library.latest_version(t) for t in plan.types}
    trained_before = {t: int(v.tags.get("entgan.train_images", 0)) for t, v in last.items() if v}
    apply_trigger(job, plan, trained_before, now)
    snapshot = load_bundle(snapshot_path)
    known_types = snapshot.header.extra["evaluator_types"]
    plan.evaluator_types = known_types + sorted(set(plan.types) - set(known_types))
    plan.evaluator_version = snapshot.header.extra["evaluator_version"]
    for t, n in plan.uncertain.items():
        log(f"{n} image(s) of {t} could not be placed confidently by the evaluator: possible unseen types")
    if plan.decision == "wait":
        record(library, run_id, Stage.TRAIN, State.WAITING, detail=f"trigger not met: {plan.trigger_reason}")
        plan.save(plan_path)
        _save_state(state_path, {}, round_=0, types=[])
        return plan

    state = strategies.initial_state(plan.types, job.train, job.eval)
    state[FEATURES] = strategies.new_feature_net(len(plan.evaluator_types), job.train, job.eval).state_dict()
    if known_types:
        state[FEATURES] = strategies.extend_feature_net(
            snapshot.groups()[FEATURES], known_types, plan.evaluator_types, job.train, job.eval
        )
    new_stats = _merged_report_stats(bundles)
    known_stats = {t: FeatureStats.from_tensors(snapshot.tensors, f"stats/{t}") for t in known_types
                   if f"stats/{t}/count" in snapshot.tensors}
    for t in plan.types:
        champion = library.champion(t)
        plan.start[t] = champion.version if champion else None
        if champion:
            state.update(library.load(champion).groups())
            continue
        candidates = {k: s for k, s in known_stats.items() if k != t and library.champion(k)}
        nearest = nearest_task(new_stats[t], candidates) if t in new_stats else None
        if nearest:
            parent, distance = nearest
            parent_version = library.champion(parent)
            groups = library.load(parent_version).groups()
            state[f"{t}/G"], state[f"{t}/D"] = groups[f"{parent}/G"], groups[f"{parent}/D"]
            plan.parents[t] = {"type": parent, "version": parent_version.version, "distance": distance}
            log(f"new type {t}: warm start from {parent} v{parent_version.version} (feature distance {distance:.2f})")
        else:
            log(f"new type {t}: no related known type, training from scratch")
    for t, why in plan.skipped.items():
        log(f"type {t} not trained: {why}")
    for edge, types in plan.assignments.items():
        log(f"{edge} trains {types or 'nothing'}")
    plan.save(plan_path)
    _save_state(state_path, state, round_=0, types=plan.types)
    record(library, run_id, Stage.TRAIN, State.READY, State.STARTING, detail=plan.trigger_reason)
    return plan


def _merged_report_stats(bundles: list[Bundle]) -> dict[str, FeatureStats]:
    per_type: dict[str, list[FeatureStats]] = {}
    for b in bundles:
        for key in b.tensors:
            if key.endswith("/count"):
                t = key.rsplit("/", 1)[0]
                per_type.setdefault(t, []).append(FeatureStats.from_tensors(b.tensors, t))
    return {t: merge_stats(parts) for t, parts in per_type.items()}


def _save_state(path: str | Path, state: dict, round_: int, types: list[str], extra: dict | None = None) -> None:
    header = BundleHeader(kind="global-state", round=round_, extra={"types": types, **(extra or {})})
    save_bundle(path, pack(state), header)


def _load_state(path: str | Path) -> dict:
    return load_bundle(path).groups()


# ---------------------------------------------------------------- train rounds


def step_edge_train(
    job: JobSpec, edge: str, plan_path: str | Path, state_path: str | Path, round_: int, update_path: str | Path
) -> EdgeUpdate:
    """An edge's round: train its types from the global state, write its update bundle."""
    configure_threads()
    plan = Plan.load(plan_path)
    types = plan.assignments.get(edge, [])
    data = load_edge(job.edge(edge).data, types, job.eval.holdout_fraction, job.train.image_size,
                     holdout=False) if types else {}  # an edge left out at inspection sends an empty update
    state = _load_state(state_path)
    started = time.perf_counter()
    update = strategies.edge_round(
        edge,
        state,
        data,
        plan.evaluator_types,
        job.train,
        job.eval,
        round_=round_,
        on_type=lambda t: log(f"{edge} round {round_}/{job.train.rounds}: training {t} ({len(data[t])} images)"),
        on_step=lambda t, step, steps, losses: _log_step(edge, round_, job.train.rounds, t, step, steps, losses),
    )
    header = BundleHeader(
        kind="edge-update",
        round=round_,
        edge=edge,
        num_examples=update.num_examples,
        extra={"losses": update.losses, "seconds": time.perf_counter() - started},
    )
    save_bundle(update_path, pack(update.groups), header)
    log(f"{edge} round {round_}: sent {sorted(update.groups)} in {time.perf_counter() - started:.1f}s")
    return update


def _log_step(edge: str, round_: int, rounds: int, data_type: str, step: int, steps: int,
              losses: dict[str, float]) -> None:
    """A progress line four times per type and round (`entgan run` turns them into a bar)."""
    if step * 4 // steps > (step - 1) * 4 // steps:  # at 25, 50, 75 and 100 %
        log(f"{edge} round {round_}/{rounds}: {data_type} step {step}/{steps} "
            f"(D loss {losses['d_loss']:.2f}, G loss {losses['g_loss']:.2f})")


def step_aggregate(
    job: JobSpec,
    plan_path: str | Path,
    state_path: str | Path,
    update_paths: list[str],
    round_: int,
    out_state_path: str | Path,
    library=None,
    kfp_run_id: str | None = None,
) -> dict[str, float]:
    """The cloud's round: verify and aggregate the edges' updates into the next global state.

    Round 1 marks the train stage Running; the last round marks it Completed."""
    plan = Plan.load(plan_path)
    run_id = job_run(library, kfp_run_id) if library is not None else None
    if library is not None and round_ == 1:
        record(library, run_id, Stage.TRAIN, State.RUNNING, detail="edge updates of round 1 arrived")
    state = _load_state(state_path)
    cloud = strategies.CloudRound(state, job.train, round_=round_)
    failed, refused, arrived, cloud_seconds = {}, {}, 0, 0.0
    for path in update_paths:  # one bundle at a time: with FedAvg each is folded in, then dropped
        bundles, its_failure, its_refusal = split_failures([path])  # verifies checksum, dtypes, finite values
        failed.update(its_failure)
        refused.update(its_refusal)
        for bundle in bundles:
            h = bundle.header
            problem = (f"expected an edge update of round {round_}, got {h.kind} round {h.round}"
                       if h.kind != "edge-update" or h.round != round_ else check_update(bundle.groups(), state))
            if problem:
                refused[h.edge or "?"] = f"update refused: {problem}"
            else:
                arrived += 1
                started = time.perf_counter()
                cloud.add(EdgeUpdate(h.edge or "?", bundle.groups(), h.num_examples, h.extra.get("losses", {})))
                cloud_seconds += time.perf_counter() - started
        del bundles
    _record_refused(library, run_id, Stage.TRAIN, refused, f"round {round_}")
    failed.update(refused)
    if cloud.contributing < job.train.min_edges:
        reasons = "; ".join(f"{e}: {why}" for e, why in sorted(failed.items())) or "no edge holds a type to train"
        raise AggregationError(
            f"round {round_}: {cloud.contributing} usable edge update(s), fewer than train.min_edges="
            f"{job.train.min_edges} ({reasons}); nothing is aggregated or registered: fix those edges "
            "or lower train.min_edges, then re-run"
        )
    started = time.perf_counter()
    new_state, metrics = cloud.finish()
    metrics["cloud_seconds"] = cloud_seconds + time.perf_counter() - started
    metrics["failed_edges"] = float(len(failed))
    _save_state(out_state_path, new_state, round_, plan.types, {"metrics": metrics})
    if library is not None:
        library.log_metrics(run_id, metrics, step=round_)
        # Each round's generators, for the FID-per-round curves that evaluation draws.
        library.log_bundle(run_id, pack({f"{t}/G": new_state[f"{t}/G"] for t in plan.types}),
                           BundleHeader(kind="round-generators", round=round_), round_file(round_))
        if round_ == job.train.rounds:
            record(library, run_id, Stage.TRAIN, State.COMPLETED, detail=f"{round_} rounds")
    left_out = f"; left out: {', '.join(sorted(failed))}" if failed else ""
    log(f"round {round_}/{job.train.rounds} aggregated from {arrived} edge(s) ({job.train.strategy}, "
        f"{job.train.aggregation}){left_out}")
    return metrics


def round_file(round_: int) -> str:
    """Where the job's MLflow run keeps the global generators after `round_`."""
    return f"rounds/round-{round_:03d}.safetensors"


# ---------------------------------------------------------------- evaluation


def step_prepare_eval(
    job: JobSpec,
    plan_path: str | Path,
    initial_state_path: str | Path,
    state_path: str | Path,
    kit_path: str | Path,
    library=None,
    kfp_run_id: str | None = None,
) -> None:
    """The eval stage starts: train the CAS classifiers on synthetic images only, `eval.cas_seeds`
    of each set of generators, for the edges to test on their real images. Sets: "candidate" (the
    trained generators), "baseline" (the starting ones: the "before" of the report) and, when the
    run trains known and new types together, "champion" (`_champion_set`), which the gate
    compares the candidates with."""
    if library is not None:
        record(library, job_run(library, kfp_run_id), Stage.EVAL, State.READY, State.STARTING, State.RUNNING,
               detail="federated evaluation")
    plan = Plan.load(plan_path)
    final, initial = _load_state(state_path), _load_state(initial_state_path)
    sets = {name: {t: strategies.load_generator(state, t, job.train) for t in plan.types}
            for name, state in (("candidate", final), ("baseline", initial))}
    if _champion_set(plan):
        sets["champion"] = {t: sets["baseline" if plan.start.get(t) else "candidate"][t] for t in plan.types}
    groups = {}
    for name, generators in sets.items():
        for i in range(job.eval.cas_seeds):
            classifier = train_cas_classifier(
                generators, plan.types, image_size=job.train.image_size, steps=job.eval.cas_steps,
                batch_size=job.train.batch_size, seed=job.train.seed + i, feature_dim=job.eval.feature_dim,
            )
            groups[f"cas/{name}/{i}"] = classifier.state_dict()
        log(f"CAS classifiers of the {name} generators trained on synthetic images "
            f"({job.eval.cas_seeds} seeds x {job.eval.cas_steps} steps)")
    save_bundle(kit_path, pack(groups), BundleHeader(kind="eval-kit", extra={"types": plan.types,
                                                                              "cas_sets": list(sets)}))


def _champion_set(plan: Plan) -> bool:
    """Does the gate need its own CAS classifier? A type's CAS depends on every type the classifier
    is trained on. When a run trains new types beside known ones, the starting generators ("baseline")
    hold each new type's warm start, a copy of its parent's generator, which halves the parent's
    CAS (the classifier cannot tell the two apart). The gate's "champion" set is the library as
    it stands if no known type's candidate is promoted: champions, plus the new types' candidates."""
    known = [t for t in plan.types if plan.start.get(t)]
    return bool(known) and len(known) < len(plan.types)


def _cas_classifiers(groups: dict, name: str, job: JobSpec, types: list[str]) -> list:
    """The eval kit's CAS classifiers of one set of generators (`step_prepare_eval`), one per seed."""
    nets = []
    for i in range(job.eval.cas_seeds):
        net = strategies.new_feature_net(len(types), job.train, job.eval)
        net.load_state_dict(groups[f"cas/{name}/{i}"])
        nets.append(net)
    return nets


def _pooled_counts(classifiers: list, images: torch.Tensor, label: int) -> tuple[int, int]:
    """(correct, total) summed over the classifiers: their CAS is the mean of theirs."""
    counts = [cas_counts(c, images, label) for c in classifiers]
    return sum(c for c, _ in counts), sum(n for _, n in counts)


def step_edge_eval(
    job: JobSpec,
    edge: str,
    plan_path: str | Path,
    state_path: str | Path,
    kit_path: str | Path,
    stats_path: str | Path,
) -> dict[str, int]:
    """At the edge, on its real held-out images, per type: feature statistics and feature vectors
    (for FID and precision/recall) and how many images each CAS classifier gets right. No pixels
    leave the edge; the feature vectors are the 64-number embeddings, not images."""
    configure_threads()
    plan = Plan.load(plan_path)
    types = plan.assignments.get(edge, [])
    data = load_edge(job.edge(edge).data, types, job.eval.holdout_fraction, job.train.image_size,
                     holdout=True) if types else {}
    net = strategies.load_feature_net(_load_state(state_path), len(plan.evaluator_types), job.train, job.eval)
    kit = load_bundle(kit_path)
    groups = kit.groups()
    classifiers = {name: _cas_classifiers(groups, name, job, plan.types) for name in kit.header.extra["cas_sets"]}
    tensors, counts, accuracy, cas = {}, {}, {}, {}
    for t, images in data.items():
        if len(images) == 0:
            continue
        tensors.update(feature_stats(net, images).as_tensors(t))
        tensors[f"{t}/features"] = embed(net, images)
        counts[t] = len(images)
        accuracy[t] = classification_accuracy(net, images, plan.label(t))
        cas[t] = {name: _pooled_counts(c, images, plan.types.index(t)) for name, c in classifiers.items()}
    header = BundleHeader(kind="feature-stats", edge=edge, num_examples=counts,
                          extra={"accuracy": accuracy, "cas": cas})
    save_bundle(stats_path, tensors, header)
    log(f"{edge}: feature statistics of {counts} held-out images")
    return counts


def step_evaluate(
    job: JobSpec,
    plan_path: str | Path,
    initial_state_path: str | Path,
    state_path: str | Path,
    stats_paths: list[str],
    report_path: str | Path,
    real_stats_path: str | Path,
    library=None,
    kfp_run_id: str | None = None,
) -> dict[str, dict[str, float]]:
    """In the cloud: merge the edges' statistics; score the starting and the trained generators.

    The merged real statistics are kept (`real_stats_path`) so that the next run can measure
    how related a new type is to the known ones under the same feature network."""
    plan = Plan.load(plan_path)
    per_type: dict[str, list[FeatureStats]] = {}
    features: dict[str, list[torch.Tensor]] = {}
    accuracy: dict[str, list[tuple[float, int]]] = {}
    cas: dict[str, dict[str, list[tuple[int, int]]]] = {}
    bundles, failed, refused = split_failures(stats_paths)
    if library is not None:
        _record_refused(library, job_run(library, kfp_run_id), Stage.EVAL, refused, "evaluation")
    failed.update(refused)
    for bundle in bundles:
        for t, n in bundle.header.num_examples.items():
            per_type.setdefault(t, []).append(FeatureStats.from_tensors(bundle.tensors, t))
            features.setdefault(t, []).append(bundle.tensors[f"{t}/features"])
            accuracy.setdefault(t, []).append((bundle.header.extra["accuracy"][t], n))
            for name, counts in bundle.header.extra["cas"][t].items():
                cas.setdefault(t, {}).setdefault(name, []).append(tuple(counts))
    initial, final = _load_state(initial_state_path), _load_state(state_path)
    net = strategies.load_feature_net(final, len(plan.evaluator_types), job.train, job.eval)
    report, real_tensors = {}, {}
    for t in plan.types:
        if t not in per_type:
            left_out = f" (left out: {'; '.join(f'{e}: {w}' for e, w in sorted(failed.items()))})" if failed else ""
            raise ValueError(f"no edge sent held-out statistics for type {t!r}{left_out}; fix the edges "
                             "that hold it and re-run")
        real = merge_stats(per_type[t])
        real_features = torch.cat(features[t])
        real_tensors.update(real.as_tensors(f"stats/{t}"))
        report[t] = {
            **_scores(job, net, strategies.load_generator(final, t, job.train), real, real_features, ""),
            **_scores(job, net, strategies.load_generator(initial, t, job.train), real, real_features, "baseline_"),
            "cas": cas_from_counts(cas[t]["candidate"]),
            "baseline_cas": cas_from_counts(cas[t]["baseline"]),
            # what the gate compares with: see _champion_set
            "champion_cas": cas_from_counts(cas[t].get("champion", cas[t]["baseline"])),
            "holdout_images": float(real.count),
            "train_images": float(plan.train_examples[t]),
            "evaluator_accuracy": sum(a * k for a, k in accuracy[t]) / sum(k for _, k in accuracy[t]),
        }
        r = report[t]
        log(f"{t}: FID {r['baseline_fid']:.2f} -> {r['fid']:.2f}, precision {r['precision']:.2f}, "
            f"recall {r['recall']:.2f}, CAS {r['baseline_cas']:.2f} -> {r['cas']:.2f}")
    Path(report_path).write_text(json.dumps(report, indent=2, sort_keys=True))
    save_bundle(real_stats_path, real_tensors, BundleHeader(kind="feature-stats", extra={"types": plan.types}))
    if library is not None:
        run_id = job_run(library, kfp_run_id)
        # `<type>.fid` is logged as a curve (one value per round) by _log_fid_per_round.
        library.log_metrics(run_id, {f"{t}.{k}": v for t, r in report.items() for k, v in r.items() if k != "fid"})
        _log_fid_per_round(job, library, run_id, net, per_type, report)
        record(library, run_id, Stage.EVAL, State.COMPLETED, detail=f"{len(report)} type(s) scored")
    return report


def _log_fid_per_round(job: JobSpec, library, run_id: str, net, per_type: dict[str, list[FeatureStats]],
                       report: dict[str, dict[str, float]]) -> None:
    """Log `<type>.fid` with step=round so that MLflow draws a curve: step 0 is the starting
    generator, step r the global generator after round r (as `step_aggregate` stored it), each
    scored like the final one, on the merged held-out statistics under the final feature network."""
    from entgan.registry import RegistryError

    library.log_metrics(run_id, {f"{t}.fid": r["baseline_fid"] for t, r in report.items()}, step=0)
    for round_ in range(1, job.train.rounds + 1):
        if round_ == job.train.rounds:  # the final generators: already scored
            library.log_metrics(run_id, {f"{t}.fid": r["fid"] for t, r in report.items()}, step=round_)
            break
        try:
            state = library.run_bundle(run_id, round_file(round_)).groups()
        except (LookupError, RegistryError):  # a round that stored no generators: a gap in the curve
            continue
        values = {}
        for t in report:
            rng = torch.Generator().manual_seed(job.train.seed)
            fakes = strategies.load_generator(state, t, job.train).sample(job.eval.num_generated, generator=rng)
            values[f"{t}.fid"] = fid_from_stats(net, merge_stats(per_type[t]), fakes)
        library.log_metrics(run_id, values, step=round_)


def _scores(job: JobSpec, net, generator, real: FeatureStats, real_features: torch.Tensor, prefix: str) -> dict:
    """FID, precision and recall of one generator against the merged real held-out data."""
    rng = torch.Generator().manual_seed(job.train.seed)
    fakes = generator.sample(job.eval.num_generated, generator=rng)
    k = min(job.eval.pr_k, len(real_features) - 1)
    precision, recall = precision_recall(real_features, embed(net, fakes), k=k)
    return {f"{prefix}fid": fid_from_stats(net, real, fakes), f"{prefix}precision": precision,
            f"{prefix}recall": recall}


# ---------------------------------------------------------------- deploy


def gate(job: JobSpec, scores: dict[str, float], has_champion: bool) -> tuple[bool, str]:
    """The deploy gate over FID, precision, recall and CAS; the champion was scored in this run
    on the same statistics (its scores are the `baseline_*` ones; its CAS is `champion_cas`)."""
    names = ("fid", "precision", "recall", "cas")
    candidate = {m: scores[m] for m in names}
    champion = {m: scores[f"baseline_{m}"] for m in ("fid", "precision", "recall")} if has_champion else None
    if champion is not None:
        champion["cas"] = scores.get("champion_cas", scores["baseline_cas"])
    promote, reasons = gate_decision(candidate, champion, job.deploy)
    return promote, "; ".join(reasons)


def step_deploy(
    job: JobSpec,
    plan_path: str | Path,
    state_path: str | Path,
    report_path: str | Path,
    real_stats_path: str | Path,
    kfp_run_id: str,
    summary_path: str | Path,
    samples_dir: str | Path,
    library,
) -> dict:
    """Register every trained type as a new version; move `champion` only past the gate."""
    run_id = job_run(library, kfp_run_id)
    record(library, run_id, Stage.DEPLOY, State.READY, State.STARTING, State.RUNNING)
    plan = Plan.load(plan_path)
    report = json.loads(Path(report_path).read_text())
    state = _load_state(state_path)
    samples_dir = Path(samples_dir)
    summary: dict = {"job": job.name, "mlflow_run_id": run_id, "kfp_run_id": kfp_run_id, "types": {}}
    for t in plan.types:
        folder = samples_dir / t
        folder.mkdir(parents=True, exist_ok=True)
        header = BundleHeader(kind="model", num_examples={t: plan.train_examples[t]},
                              extra={"data_type": t, "train": job.train.model_dump()})
        save_bundle(folder / "model.safetensors", pack({f"{t}/G": state[f"{t}/G"], f"{t}/D": state[f"{t}/D"]}), header)
        grid = save_sample_grid(strategies.load_generator(state, t, job.train), folder / "samples.png")
        r = report[t]
        library.log_files(run_id, folder, f"tasks/{t}")
        promote, reason = gate(job, r, has_champion=bool(plan.start.get(t)))
        edges = [e for e, types in plan.assignments.items() if t in types]
        parent = plan.parents.get(t, {})
        tags = {
            "entgan.job": job.name,
            "entgan.data_type": t,
            "entgan.strategy": job.train.strategy,
            "entgan.rounds": str(job.train.rounds),
            "entgan.edges": ",".join(edges),
            "entgan.train_images": str(plan.train_examples[t]),
            "entgan.holdout_images": str(plan.holdout_examples[t]),
            "entgan.new_samples": str(plan.new_samples.get(t, plan.train_examples[t])),
            **{f"entgan.{m}": f"{r[m]:.4f}" for m in ("fid", "precision", "recall", "cas")},
            "entgan.baseline_fid": f"{r['baseline_fid']:.4f}",
            "entgan.parent_version": plan.start.get(t) or "",
            "entgan.parent_task": f"{parent['type']} v{parent['version']}" if parent else "",
            # Lineage as a registry address: the model version this one started from.
            "entgan.parent_model": f"{library.model_name(parent['type'])}/{parent['version']}" if parent else
            (f"{library.model_name(t)}/{plan.start[t]}" if plan.start.get(t) else ""),
            "entgan.kfp_run_id": kfp_run_id,
            "entgan.mlflow_run_id": run_id,
            "entgan.gate": "promoted" if promote else "rejected",
            "entgan.gate_reason": reason,
        }
        info = {**r, "promoted": promote, "reason": reason, "parent_version": plan.start.get(t),
                "parent_task": tags["entgan.parent_task"]}
        description = version_description(t, info, job.name, job.train.strategy, job.train.rounds, edges, kfp_run_id)
        version = library.register(t, run_id, f"tasks/{t}", tags, description=description)
        if promote and not library.promote(t, version.version, replaces=plan.start.get(t)):
            # Another run moved the champion after this one planned: a stale candidate never replaces it.
            promote = False
            reason += "; the champion changed since this run started: kept it (re-run to compare against it)"
            library.tag_version(t, version.version, {"entgan.gate": "rejected", "entgan.gate_reason": reason})
        current = library.champion(t)
        champion = current.version if current else None
        library.describe_model(t, model_description(t, job.name, edges, champion, {**info, "version": version.version}))
        log(f"{t}: version {version.version} {'promoted' if promote else 'kept out'}: {reason}")
        summary["types"][t] = {**r, "version": version.version, "champion": champion,
                               "parent_version": plan.start.get(t), "parent_task": tags["entgan.parent_task"],
                               "promoted": promote, "reason": reason, "grid": str(grid)}
    _register_evaluator(job, plan, state, load_bundle(real_stats_path), run_id, samples_dir, library)
    summary["skipped"] = plan.skipped
    summary["uncertain"] = plan.uncertain
    Path(summary_path).write_text(json.dumps(summary, indent=2, sort_keys=True))
    library.log_json(run_id, summary, "summary.json")
    library.note_run(run_id, run_note(summary, job.train.strategy, job.train.rounds))
    record(library, run_id, Stage.DEPLOY, State.COMPLETED,
           detail=", ".join(f"{t} v{i['champion']}" for t, i in summary["types"].items()))
    return summary


def _register_evaluator(job: JobSpec, plan: Plan, state: dict, real_stats: Bundle, run_id: str,
                        samples_dir: Path, library) -> None:
    """The feature network with the per-type real statistics measured under it."""
    folder = samples_dir / "evaluator"
    folder.mkdir(parents=True, exist_ok=True)
    header = BundleHeader(kind="model", extra={"types": plan.evaluator_types, "eval": job.eval.model_dump()})
    save_bundle(folder / "model.safetensors", {**pack({FEATURES: state[FEATURES]}), **real_stats.tensors}, header)
    library.log_files(run_id, folder, "tasks/evaluator")
    version = library.register(
        "evaluator", run_id, "tasks/evaluator", {"entgan.types": json.dumps(plan.evaluator_types)},
        description="Domain feature network (classifier over the data types) used for FID.",
    )
    library.set_champion("evaluator", version.version)


def step_finish(job: JobSpec, kfp_run_id: str, pipeline_state: str, error: str, library) -> None:
    """The exit handler: a failed pipeline marks the stage in progress Failed; the run ends."""
    run_id = library.run_for(kfp_run_id)
    if run_id is None:  # the pipeline failed before `create job` opened a run
        log(f"no MLflow run for KFP run {kfp_run_id}; pipeline {pipeline_state}: {error}")
        return
    if pipeline_state not in ("SUCCEEDED", "SUCCESS"):
        # The first stage that is not Completed is where the run stopped (a killed edge task, a
        # failure before any stage started); a stage already Failed was recorded by its task.
        current = current_states(library.states(run_id))
        for stage in Stage:
            if current[stage] in (State.WAITING, State.READY, State.STARTING, State.RUNNING):
                record(library, run_id, stage, State.FAILED,
                       detail=redact(f"pipeline {pipeline_state}: {error}")[:2000])
            if current[stage] is not State.COMPLETED:
                break
    library.end_run(run_id, "FINISHED" if pipeline_state in ("SUCCEEDED", "SUCCESS") else "FAILED")


def copy_samples(summary: dict, dest: str | Path) -> dict[str, Path]:
    """Copy each type's sample grid to `dest/<type>.png` (a stable place for local runs)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for t, info in summary["types"].items():
        out[t] = Path(shutil.copyfile(info["grid"], dest / f"{t}.png"))
    return out
