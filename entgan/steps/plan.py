"""Planning: which types train, which edge trains which, where each type starts.

`make_plan` and `apply_trigger` are pure policy over the edges' counts; `plan_job` is the
task: it reads the edges' reports, applies them, and writes the plan and the starting global
state (a known type from its champion, a new type from its nearest known type, else scratch).
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from entgan.evaluation.features import FeatureStats, frechet_distance, merge_stats
from entgan.gan import strategies
from entgan.gan.bundle import Bundle, load_bundle
from entgan.gan.models import feature_net_channels
from entgan.gan.strategies import FEATURES
from entgan.job.data import DataError, EdgeReport, resolve_channels
from entgan.job.lifecycle import TYPES_TAG, Stage, State, evaluate_trigger, parse_clock
from entgan.job.spec import JobSpec
from entgan.library.outcome import TRIGGER_NOT_MET
from entgan.steps.common import TaskContext, log, save_state
from entgan.steps.records import EdgeQuorum, job_run, record


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
    channels: int = 3  # image channels of every model this run trains and scores (train.channels resolved)
    bits: dict[str, int] = field(default_factory=dict)  # type -> 16 for 16-bit grayscale data, else 8

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls(**json.loads(Path(path).read_text()))

    def label(self, data_type: str) -> int:
        return self.evaluator_types.index(data_type)

    def resolve(self, job: JobSpec) -> JobSpec:
        """The job with train.channels set to the data's count: what every step after the plan
        builds, loads and scores with (`train.channels: auto` is resolved here, once)."""
        return job.with_channels(self.channels)


@dataclass(frozen=True)
class PlanFiles:
    reports: list[str]  # in: one per edge
    snapshot: str  # in
    plan: str  # out
    global_state: str  # out: where training starts


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
        raise DataError(f"job {job.name!r}: no data type can be trained ({reasons}); training images per edge: "
                        + "; ".join(f"{r.edge} {_counts(r)}" for r in reports))
    assignments = {r.edge: [t for t in types if t in r.types and r.types[t].train > 0] for r in reports}
    uncertain = {t: sum(r.uncertain.get(t, 0) for r in reports) for t in seen}
    channels, bits = resolve_channels(job.train.channels, reports, [t for t in wanted if t in seen])
    return Plan(
        types,
        assignments,
        {t: train_n[t] for t in types},
        {t: held_n[t] for t in types},
        skipped=skipped,
        uncertain={t: n for t, n in uncertain.items() if n},
        channels=channels,
        bits={t: bits[t] for t in types},
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


# A new type starts from its nearest known type only when it is this much closer to it than the
# known types are to each other (median pairwise distance); calibrated on the demo types
# (docs/training-recipe.md, "Warm starts"): pillar, at 0.27-0.34, lost to scratch from round 4.
WARM_START_MAX_RELATIVE = 0.2


def relative_distance(distance: float, known: dict[str, FeatureStats]) -> float | None:
    """`distance` over the median distance between the known types (None: fewer than two known)."""
    names = sorted(known)
    pairs = [frechet_distance(known[a], known[b]) for i, a in enumerate(names) for b in names[i + 1:]]
    scale = statistics.median(pairs) if pairs else 0.0
    return distance / scale if scale > 0 else None


def warm_start_parent(new: FeatureStats, known: dict[str, FeatureStats]) -> tuple[str, float, float | None, bool]:
    """The warm-start rule: (nearest known type, its distance, relative distance, warm start?).

    Warm start only when the relative distance is at most WARM_START_MAX_RELATIVE; a far parent
    (or no scale to judge by: fewer than two known types) trains from scratch."""
    parent, distance = nearest_task(new, known)
    relative = relative_distance(distance, known)
    return parent, distance, relative, relative is not None and relative <= WARM_START_MAX_RELATIVE


def plan_job(ctx: TaskContext, files: PlanFiles, now: dt.time | None = None) -> Plan:
    """Collect the edges' reports, apply the trigger, and write the plan and the starting
    global state. Fails when fewer than `train.min_edges` edges could be inspected."""
    job, library = ctx.job, ctx.library
    run_id = job_run(library, ctx.kfp_run_id)
    quorum = EdgeQuorum.of(job)
    bundles, failed = quorum.collect(ctx, files.reports, Stage.TRAIN, "inspection")
    bundles = sorted(bundles, key=lambda b: b.header.edge)
    quorum.require(len(bundles), failed, lambda reasons: DataError(
        f"only {len(bundles)} of {quorum.edges} edges could be inspected, fewer than "
        f"train.min_edges={quorum.min_edges} ({reasons}); fix those edges or lower min_edges"))
    reports = [EdgeReport.from_json(json.dumps(b.header.extra["report"])) for b in bundles]
    _refuse_same_images(reports)
    plan = make_plan(job, reports)
    plan.failed_edges = failed
    last = {t: library.latest_version(t) for t in plan.types}
    trained_before = {t: int(v.tags.get("entgan.train_images", 0)) for t, v in last.items() if v}
    apply_trigger(job, plan, trained_before, now)
    snapshot = load_bundle(files.snapshot)
    known_types = snapshot.header.extra["evaluator_types"]
    plan.evaluator_types = known_types + sorted(set(plan.types) - set(known_types))
    plan.evaluator_version = snapshot.header.extra["evaluator_version"]
    for t, n in plan.uncertain.items():
        log(f"{n} image(s) of {t} could not be placed confidently by the evaluator: possible unseen types")
    if plan.decision == "wait":
        record(library, run_id, Stage.TRAIN, State.WAITING, detail=f"{TRIGGER_NOT_MET}: {plan.trigger_reason}")
        plan.save(files.plan)
        save_state(files.global_state, {}, round_=0, types=[])
        return plan
    _require_training_edges(quorum, plan, reports)
    _check_library_channels(plan, snapshot, ctx.library)
    ctx.job = plan.resolve(job)
    log(f"images: {plan.channels} channel(s) (train.channels: {job.train.channels})"
        + "".join(f"; {t} is 16-bit" for t, b in sorted(plan.bits.items()) if b == 16))
    state = _starting_state(ctx, plan, snapshot, bundles, known_types)
    for t, why in plan.skipped.items():
        log(f"type {t} not trained: {why}")
    for edge, types in plan.assignments.items():
        log(f"{edge} trains {types or 'nothing'}")
    plan.save(files.plan)
    save_state(files.global_state, state, round_=0, types=plan.types)
    library.tag_run(run_id, {TYPES_TAG: ",".join(plan.types)})  # what an interrupted deploy reports on
    record(library, run_id, Stage.TRAIN, State.READY, State.STARTING, detail=plan.trigger_reason)
    return plan


def _check_library_channels(plan: Plan, snapshot: Bundle, library) -> None:
    """A job's registered models (its evaluator, and the champions trained with it) have one
    channel count; data of the other kind cannot continue them."""
    features = snapshot.groups().get(FEATURES)
    if not features:
        return
    registered = feature_net_channels(features)
    if registered != plan.channels:
        where = library.model_name("evaluator") if library is not None else "the task library"
        raise DataError(f"this run's images are {plan.channels}-channel but the job's registered models ({where} "
                        f"and its champions) are {registered}-channel; set train.channels: {registered} to convert "
                        "the images as they are read, or train the new kind of images under a new job name")


def _counts(report: EdgeReport) -> str:
    """An edge's training images per type, e.g. 'box=3, table=12'."""
    return ", ".join(f"{t}={c.train}" for t, c in sorted(report.types.items()))


def _refuse_same_images(reports: list[EdgeReport]) -> None:
    """Two edges whose images are the same (one folder under two names, or a copy) would count
    every image twice; the job file's check catches equal paths, this one equal contents."""
    first: dict[str, str] = {}
    for r in reports:
        if r.fingerprint in first:
            raise DataError(f"edges {first[r.fingerprint]!r} and {r.edge!r} hold the same images ({_counts(r)}: "
                            "same file names and bytes); their images would be counted twice: give each edge "
                            "its own data")
        if r.fingerprint:
            first[r.fingerprint] = r.edge


def _require_training_edges(quorum: EdgeQuorum, plan: Plan, reports: list[EdgeReport]) -> None:
    """An edge none of whose types trains sends empty updates; with fewer than `min_edges`
    edges left to train, round 1 would fail without naming why. Say it now, per edge."""
    idle = {}
    for r in reports:
        if not plan.assignments.get(r.edge):
            why = "; ".join(f"{t}: {plan.skipped[t].split('; ')[0] if t in plan.skipped else 'all held out here'}"
                            for t in sorted(r.types))
            idle[r.edge] = f"holds {_counts(r)} training images, and none of its types trains ({why})"
    training = len(reports) - len(idle)
    quorum.require(training, idle, lambda reasons: DataError(
        f"only {training} of {quorum.edges} edges hold a type that trains, fewer than train.min_edges="
        f"{quorum.min_edges} ({reasons}); add images at those edges, or lower train.min_edges"))


def _starting_state(ctx: TaskContext, plan: Plan, snapshot: Bundle, bundles: list[Bundle],
                    known_types: list[str]) -> dict:
    """The global state training starts from; fills `plan.start` and `plan.parents`."""
    job, library = ctx.job, ctx.library
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
            _start_ema_at_g(job, state, t)
            continue
        candidates = {k: s for k, s in known_stats.items() if k != t and library.champion(k)}
        if not candidates or t not in new_stats:
            log(f"new type {t}: no related known type, training from scratch")
            continue
        parent, distance, relative, warm = warm_start_parent(new_stats[t], candidates)
        scale = "no scale" if relative is None else f"{relative:.2f} of the known types' median distance"
        if warm:
            parent_version = library.champion(parent)
            groups = library.load(parent_version).groups()
            state[f"{t}/G"], state[f"{t}/D"] = groups[f"{parent}/G"], groups[f"{parent}/D"]
            _start_ema_at_g(job, state, t)
            plan.parents[t] = {"type": parent, "version": parent_version.version, "distance": distance}
            log(f"new type {t}: warm start from {parent} v{parent_version.version} (feature distance {distance:.2f}, "
                f"{scale})")
        else:
            log(f"new type {t}: training from scratch: nearest known type {parent} is too far (feature distance "
                f"{distance:.2f}, {scale}; warm start needs <= {WARM_START_MAX_RELATIVE})")
    return state


def _start_ema_at_g(job, state: dict, data_type: str) -> None:
    """A type that starts from a registered G (its champion, or a warm start's parent) starts its
    EMA there too: `<type>/G_ema` is what the evaluation scores as the run's "before" and the gate
    as the champion, so the fresh EMA of `initial_state` would make every champion read as untrained."""
    if job.train.ema_decay is not None:
        strategies.start_ema_at_g(state, data_type)


def _merged_report_stats(bundles: list[Bundle]) -> dict[str, FeatureStats]:
    per_type: dict[str, list[FeatureStats]] = {}
    for b in bundles:
        for key in b.tensors:
            if key.endswith("/count"):
                t = key.rsplit("/", 1)[0]
                per_type.setdefault(t, []).append(FeatureStats.from_tensors(b.tensors, t))
    return {t: merge_stats(parts) for t, parts in per_type.items()}
