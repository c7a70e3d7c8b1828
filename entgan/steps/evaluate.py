"""Federated evaluation: the cloud prepares the eval kit (what edges need to score real images),
each edge computes its parts on its held-out images (no pixels leave), the cloud merges them
and scores every metric of `entgan.evaluation.metrics` for the trained and the starting generators."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from entgan.evaluation import metrics as quality_metrics
from entgan.evaluation.features import (
    FeatureStats,
    classification_accuracy,
    embed,
    feature_stats,
    fid_from_stats,
    merge_stats,
)
from entgan.evaluation.scoring import EdgeScoring, Scoring, champion_set
from entgan.gan import strategies
from entgan.gan.bundle import BundleHeader, load_bundle, pack, save_bundle
from entgan.job.data import load_edge
from entgan.job.lifecycle import Stage, State
from entgan.steps.common import TaskContext, configure_threads, load_state, log, round_file
from entgan.steps.plan import Plan
from entgan.steps.records import EdgeQuorum, job_run, record


@dataclass(frozen=True)
class PrepareFiles:
    plan: str  # in
    initial_state: str  # in: where training started
    global_state: str  # in: the trained state
    kit: str  # out: what the edges score with (e.g. CAS classifiers)


@dataclass(frozen=True)
class EdgeEvalFiles:
    plan: str  # in
    global_state: str  # in
    kit: str  # in
    stats: str  # out: the edge's statistics and metric parts


@dataclass(frozen=True)
class EvaluateFiles:
    plan: str  # in
    initial_state: str  # in
    global_state: str  # in
    stats: list[str]  # in: one per edge
    report: str  # out: JSON {type: {metric: value}}
    real_stats: str  # out: merged real statistics per type


def prepare_eval(ctx: TaskContext, files: PrepareFiles) -> None:
    """The eval stage starts: build the eval kit from the generator sets (see `entgan.evaluation.scoring`)."""
    plan = Plan.load(files.plan)
    job = ctx.job = plan.resolve(ctx.job)
    if ctx.library is not None:
        record(ctx.library, job_run(ctx.library, ctx.kfp_run_id), Stage.EVAL, State.READY, State.STARTING,
               State.RUNNING, detail="federated evaluation")
    final, initial = load_state(files.global_state), load_state(files.initial_state)
    sets = {name: {t: strategies.load_generator(state, t, job.train) for t in plan.types}
            for name, state in (("candidate", final), ("baseline", initial))}
    if champion_set(plan):
        sets["champion"] = {t: sets["baseline" if plan.start.get(t) else "candidate"][t] for t in plan.types}
    groups = {}
    for m in quality_metrics.METRICS:
        if m.prepare is not None:
            groups.update(m.prepare(job, plan, sets, log))
    save_bundle(files.kit, pack(groups), BundleHeader(kind="eval-kit", extra={"types": plan.types, "sets": list(sets)}))


def eval_edge(ctx: TaskContext, files: EdgeEvalFiles) -> dict[str, int]:
    """At the edge, on its real held-out images, per type: feature statistics and feature vectors
    (shared by FID and precision/recall), the evaluator's accuracy, and each metric's part. No
    pixels leave the edge; the feature vectors are the embeddings, not images."""
    configure_threads()
    plan = Plan.load(files.plan)
    job = ctx.job = plan.resolve(ctx.job)
    edge = ctx.edge
    types = plan.assignments.get(edge, [])
    data = load_edge(job.edge(edge).data, types, job.eval.holdout_fraction, job.train.image_size,
                     holdout=True, channels=job.train.image_channels) if types else {}
    net = strategies.load_feature_net(load_state(files.global_state), len(plan.evaluator_types), job.train, job.eval)
    scorer = EdgeScoring(job, plan, load_bundle(files.kit), edge)
    with_parts = [m for m in quality_metrics.METRICS if m.edge_part is not None]
    tensors, counts, accuracy = {}, {}, {}
    parts: dict[str, dict] = {m.name: {} for m in with_parts}
    for t, images in data.items():
        if len(images) == 0:
            continue
        tensors.update(feature_stats(net, images).as_tensors(t))
        tensors[f"{t}/features"] = embed(net, images)
        counts[t] = len(images)
        accuracy[t] = classification_accuracy(net, images, plan.label(t))
        for m in with_parts:
            part = m.edge_part(scorer, t, images)
            if isinstance(part, torch.Tensor):  # e.g. feature vectors: in the bundle's tensors
                tensors[f"{m.name}/{t}"], part = part, {"tensor": f"{m.name}/{t}"}
            parts[m.name][t] = part
    header = BundleHeader(kind="feature-stats", edge=edge, num_examples=counts, extra={"accuracy": accuracy, **parts})
    save_bundle(files.stats, tensors, header)
    log(f"{edge}: feature statistics of {counts} held-out images")
    return counts


def evaluate(ctx: TaskContext, files: EvaluateFiles) -> dict[str, dict[str, float]]:
    """In the cloud: merge the edges' statistics; score the starting and the trained generators.

    The merged real statistics are kept (`real_stats`) so that the next run can measure how
    related a new type is to the known ones under the same feature network."""
    plan = Plan.load(files.plan)
    job = ctx.job = plan.resolve(ctx.job)
    library = ctx.library
    per_type: dict[str, list[FeatureStats]] = {}
    features: dict[str, list[torch.Tensor]] = {}
    accuracy: dict[str, list[tuple[float, int]]] = {}
    with_parts = [m.name for m in quality_metrics.METRICS if m.edge_part is not None]
    parts: dict[str, dict[str, list]] = {name: {} for name in with_parts}
    bundles, failed = EdgeQuorum.of(job).collect(ctx, files.stats, Stage.EVAL, "evaluation")
    for bundle in bundles:
        for t, n in bundle.header.num_examples.items():
            per_type.setdefault(t, []).append(FeatureStats.from_tensors(bundle.tensors, t))
            features.setdefault(t, []).append(bundle.tensors[f"{t}/features"])
            accuracy.setdefault(t, []).append((bundle.header.extra["accuracy"][t], n))
            for name in with_parts:
                part = bundle.header.extra[name][t]
                if isinstance(part, dict) and set(part) == {"tensor"}:
                    part = bundle.tensors[part["tensor"]]
                parts[name].setdefault(t, []).append(part)
    for t in plan.types:
        if t not in per_type:
            left_out = f" (left out: {'; '.join(f'{e}: {w}' for e, w in sorted(failed.items()))})" if failed else ""
            raise ValueError(f"no edge sent held-out statistics for type {t!r}{left_out}; fix the edges "
                             "that hold it and re-run")
    final = load_state(files.global_state)
    net = strategies.load_feature_net(final, len(plan.evaluator_types), job.train, job.eval)
    real = {t: merge_stats(per_type[t]) for t in plan.types}
    scorer = Scoring(job, net, real, {t: torch.cat(features[t]) for t in plan.types},
                     {"candidate": final, "baseline": load_state(files.initial_state)}, parts)
    report, real_tensors = {}, {}
    for t in plan.types:
        real_tensors.update(real[t].as_tensors(f"stats/{t}"))
        report[t] = _scores(scorer, t)
        report[t].update({
            "holdout_images": float(real[t].count),
            "train_images": float(plan.train_examples[t]),
            "evaluator_accuracy": sum(a * k for a, k in accuracy[t]) / sum(k for _, k in accuracy[t]),
        })
        log(f"{t}: {quality_metrics.describe(report[t], before_arrow='->', bold=False)}")
    Path(files.report).write_text(json.dumps(report, indent=2, sort_keys=True))
    save_bundle(files.real_stats, real_tensors, BundleHeader(kind="feature-stats", extra={"types": plan.types}))
    if library is not None:
        run_id = job_run(library, ctx.kfp_run_id)
        # `<type>.fid` is logged as a curve (one value per round) by _log_fid_per_round.
        library.log_metrics(run_id, {f"{t}.{k}": v for t, r in report.items() for k, v in r.items() if k != "fid"})
        _log_fid_per_round(job, library, run_id, net, per_type, report)
        record(library, run_id, Stage.EVAL, State.COMPLETED, detail=f"{len(report)} type(s) scored")
    return report


def _scores(scorer: Scoring, data_type: str) -> dict[str, float]:
    """Every metric of one type: `<m>` (trained), `baseline_<m>` (starting) and, for metrics
    with their own champion set, `champion_<m>` (what the gate compares with). A score given
    as (value, standard error) is stored as `<key>` and `<key>_se`; one given as a dict
    {suffix: value} as `<key><suffix>` ("" is the value); None (not scored) stores nothing."""
    out = {}
    for m in quality_metrics.METRICS:
        sets = ("candidate", "baseline", "champion") if m.own_champion else ("candidate", "baseline")
        for which in sets:
            key = m.name if which == "candidate" else f"{which}_{m.name}"
            value = m.score(scorer, data_type, which)
            if isinstance(value, tuple):
                value = dict(zip(("", "_se"), value))
            if isinstance(value, dict):
                out.update({f"{key}{suffix}": v for suffix, v in value.items()})
            elif value is not None:
                out[key] = value
    return out


def _log_fid_per_round(job, library, run_id: str, net, per_type: dict[str, list[FeatureStats]],
                       report: dict[str, dict[str, float]]) -> None:
    """Log `<type>.fid` with step=round so that MLflow draws a curve: step 0 is the starting
    generator, step r the global generator after round r (as `aggregate` stored it), each
    scored like the final one, on the merged held-out statistics under the final feature network."""
    from entgan.library.registry import RegistryError

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
