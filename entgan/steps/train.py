"""A training round: every edge trains its types from the global state; the cloud verifies and
aggregates their updates into the next global state."""

from __future__ import annotations

import time
from dataclasses import dataclass

from entgan.gan import strategies
from entgan.gan.aggregate import AggregationError, check_update
from entgan.gan.bundle import BundleHeader, pack, save_bundle
from entgan.gan.strategies import EdgeUpdate
from entgan.job.data import load_edge
from entgan.job.lifecycle import Stage, State
from entgan.steps.common import TaskContext, configure_threads, load_state, log, round_file, save_state
from entgan.steps.plan import Plan
from entgan.steps.records import EdgeQuorum, job_run, record, split_failures


@dataclass(frozen=True)
class TrainFiles:
    plan: str  # in
    global_state: str  # in: the round's starting state
    update: str  # out: the edge's update bundle


@dataclass(frozen=True)
class AggregateFiles:
    plan: str  # in
    global_state: str  # in
    updates: list[str]  # in: one per edge
    new_state: str  # out


def train_edge(ctx: TaskContext, files: TrainFiles) -> EdgeUpdate:
    """An edge's round: train its types from the global state, write its update bundle."""
    configure_threads()
    plan = Plan.load(files.plan)
    job = ctx.job = plan.resolve(ctx.job)
    edge, round_ = ctx.edge, ctx.round
    types = plan.assignments.get(edge, [])
    # an edge left out at inspection sends an empty update
    data = load_edge(job.edge(edge).data, types, job.eval.holdout_fraction, job.train.image_size,
                     holdout=False, channels=job.train.image_channels) if types else {}
    state = load_state(files.global_state)
    if types:
        log(f"{edge} round {round_}/{job.train.rounds}: {strategies.describe_device(job.train)}")
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
    save_bundle(files.update, pack(update.groups), header)
    log(f"{edge} round {round_}: sent {sorted(update.groups)} in {time.perf_counter() - started:.1f}s")
    return update


def _log_step(edge: str, round_: int, rounds: int, data_type: str, step: int, steps: int,
              losses: dict[str, float]) -> None:
    """A progress line four times per type and round (`entgan run` turns them into a bar)."""
    if step * 4 // steps > (step - 1) * 4 // steps:  # at 25, 50, 75 and 100 %
        log(f"{edge} round {round_}/{rounds}: {data_type} step {step}/{steps} "
            f"(D loss {losses['d_loss']:.2f}, G loss {losses['g_loss']:.2f})")


def aggregate(ctx: TaskContext, files: AggregateFiles) -> dict[str, float]:
    """The cloud's round: verify and aggregate the edges' updates into the next global state.

    Round 1 marks the train stage Running; the last round marks it Completed."""
    plan = Plan.load(files.plan)
    job = ctx.job = plan.resolve(ctx.job)
    library, round_ = ctx.library, ctx.round
    run_id = job_run(library, ctx.kfp_run_id) if library is not None else None
    if library is not None and round_ == 1:
        record(library, run_id, Stage.TRAIN, State.RUNNING, detail="edge updates of round 1 arrived")
    state = load_state(files.global_state)
    if job.train.strategy == "entgan":
        log(f"round {round_}/{job.train.rounds}: cloud G steps "
            f"{strategies.describe_device(job.train, strict=False)}")
    cloud = strategies.CloudRound(state, job.train, round_=round_)
    failed, refused, arrived, cloud_seconds = {}, {}, 0, 0.0
    updates_losses: list[dict] = []
    for path in files.updates:  # one bundle at a time: with FedAvg each is folded in, then dropped
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
                updates_losses.append(h.extra.get("losses", {}))
                cloud_seconds += time.perf_counter() - started
        del bundles
    quorum = EdgeQuorum.of(job)
    quorum.refuse(ctx, Stage.TRAIN, refused, f"round {round_}")
    failed.update(refused)
    quorum.require(cloud.contributing, failed, lambda reasons: AggregationError(
        f"round {round_}: {cloud.contributing} usable edge update(s), fewer than train.min_edges="
        f"{quorum.min_edges} ({reasons}); nothing is aggregated or registered: fix those edges "
        "or lower train.min_edges, then re-run"), nobody="no edge holds a type to train")
    started = time.perf_counter()
    new_state, metrics = cloud.finish()
    metrics["cloud_seconds"] = cloud_seconds + time.perf_counter() - started
    # the edges' training CPU this round (entgan run's last line divides it by the steps)
    metrics["train_cpu_s"] = sum(v.get("train_cpu_s", 0.0) for u in updates_losses for v in u.values())
    metrics["train_steps"] = float(sum(v.get("steps", 0) for u in updates_losses for v in u.values()))
    metrics["failed_edges"] = float(len(failed))
    save_state(files.new_state, new_state, round_, plan.types, {"metrics": metrics})
    if library is not None:
        library.log_metrics(run_id, metrics, step=round_)
        # Each round's generators, for the FID-per-round curves that evaluation draws.
        library.log_bundle(run_id, pack({f"{t}/G": strategies.deployed_generator(new_state, t) for t in plan.types}),
                           BundleHeader(kind="round-generators", round=round_), round_file(round_))
        if round_ == job.train.rounds:
            record(library, run_id, Stage.TRAIN, State.COMPLETED, detail=f"{round_} rounds")
    left_out = f"; left out: {', '.join(sorted(failed))}" if failed else ""
    log(f"round {round_}/{job.train.rounds} aggregated from {arrived} edge(s) ({job.train.strategy}, "
        f"{job.train.aggregation}){left_out}")
    return metrics
