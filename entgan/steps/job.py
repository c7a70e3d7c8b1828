"""Job creation (cloud) and each edge's inspection: the run's first two tasks."""

from __future__ import annotations

import json
from dataclasses import dataclass

from entgan.evaluation.features import feature_stats, uncertain_count
from entgan.gan import strategies
from entgan.gan.bundle import Bundle, BundleHeader, load_bundle, pack, save_bundle
from entgan.gan.models import feature_net_channels
from entgan.gan.strategies import FEATURES
from entgan.job.data import EdgeReport, load_edge
from entgan.job.data import inspect_edge as count_images
from entgan.job.lifecycle import Stage, State, driver_tags
from entgan.steps.common import TaskContext, configure_threads, log
from entgan.steps.records import record


@dataclass(frozen=True)
class CreateFiles:
    snapshot: str  # out: the library's evaluator and per-type statistics, for the edges


@dataclass(frozen=True)
class InspectFiles:
    snapshot: str  # in
    report: str  # out: the edge's counts (and statistics) per type


def create_job(ctx: TaskContext, files: CreateFiles) -> list[dict[str, str]]:
    """Job creation: open the job's MLflow run (every stage Waiting) and snapshot the library's
    evaluator and per-type statistics for the edges' inspection. Returns the fan-out items: one
    node selector per edge."""
    job, library = ctx.job, ctx.library
    trigger = job.trigger
    params = {
        "strategy": job.train.strategy,
        "rounds": job.train.rounds,
        "local_steps": job.train.local_steps,
        "cloud_steps": job.train.cloud_steps,
        "image_size": job.train.image_size,
        "width": job.train.width,
        "latent_dim": job.train.latent_dim,
        "mu": job.train.mu,
        "edges": ",".join(job.edge_names),
        "trigger": f"{trigger.scope} new samples {trigger.operator} {trigger.threshold}"
        + (f" within {trigger.window[0]}-{trigger.window[1]}" if trigger.window else ""),
    }
    note = (f"EntGAN job `{job.name}`, KFP run `{ctx.kfp_run_id}`: {job.train.rounds} rounds of "
            f"`{job.train.strategy}` on edges {', '.join(job.edge_names)}.")  # the run's description in the MLflow UI
    tags = {"entgan.kfp_run_id": ctx.kfp_run_id, "mlflow.note.content": note}
    tags.update(driver_tags())  # the local `entgan run` process, so `status` can spot a stale run
    run_id = library.start_run(f"kfp-{ctx.kfp_run_id}", params, tags)
    for stage in Stage:
        record(library, run_id, stage, State.WAITING, detail="job created")
    groups, extra = {}, {"evaluator_types": [], "evaluator_version": None}
    evaluator = library.evaluator()
    if evaluator:
        bundle = library.load(evaluator)
        groups = bundle.groups()
        extra = {"evaluator_types": bundle.header.extra.get("types", []), "evaluator_version": evaluator.version}
    save_bundle(files.snapshot, pack(groups), BundleHeader(kind="library", extra=extra))
    return [e.selector for e in job.edges]


def _evaluator_from(snapshot: Bundle, train, evaluation):
    """The library's feature network (built for the channels it was trained on) and its types."""
    types = snapshot.header.extra["evaluator_types"]
    if not types:
        return None, []
    features = snapshot.groups()[FEATURES]
    train = train.model_copy(update={"channels": feature_net_channels(features)})
    net = strategies.new_feature_net(len(types), train, evaluation)
    net.load_state_dict(features)
    return net, types


def inspect_edge(ctx: TaskContext, files: InspectFiles) -> EdgeReport:
    """At the edge: count images per type (decoding each, so a corrupt file is named now) and,
    when the library has an evaluator, feature statistics per type and how many images it cannot
    place confidently (possible unseen types). Only counts and statistics leave the edge."""
    configure_threads()
    job, edge = ctx.job, ctx.edge
    spec = job.edge(edge)
    report = count_images(edge, spec.data, job.eval.holdout_fraction, job.train.image_size)
    tensors = {}
    if files.snapshot is not None:
        net, _ = _evaluator_from(load_bundle(files.snapshot), job.train, job.eval)
        # The edge's images as the evaluator reads them; of another channel count, no statistics
        # (the plan then says what to do: entgan.steps.plan._check_library_channels).
        channels = report.channels() if job.train.channels == "auto" else {job.train.channels}
        if net is not None and channels == {net.image_channels}:
            images = load_edge(spec.data, sorted(report.types), 0.0, job.train.image_size, holdout=False,
                               channels=net.image_channels)
            for t, x in images.items():
                tensors.update(feature_stats(net, x).as_tensors(t))
                report.uncertain[t] = uncertain_count(net, x, job.eval.confidence)
    counts = ", ".join(f"{t}={c.train}+{c.holdout}" for t, c in report.types.items()) or "no images"
    log(f"{edge}: {counts} (train+held-out)")
    for t, n in report.uncertain.items():
        if n:
            log(f"{edge}: {n} {t} image(s) the evaluator cannot place confidently (possible unseen type)")
    header = BundleHeader(kind="edge-report", edge=edge, extra={"report": json.loads(report.to_json())})
    save_bundle(files.report, tensors, header)
    return report
