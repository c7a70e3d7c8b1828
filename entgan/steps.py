"""The pipeline's steps as plain functions over files: what each KFP component calls.

inspect (edge) -> plan (cloud) -> rounds of [train (edge) -> aggregate (cloud)]
-> eval (edge) -> evaluate (cloud) -> deploy (cloud)

Every argument that crosses a node is a file path: weight bundles and feature statistics are
safetensors, reports and plans are JSON. The same functions run in-process (tests,
benchmarks) and inside the components.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from entgan import strategies
from entgan.bundle import BundleHeader, load_bundle, pack, save_bundle
from entgan.config import JobSpec
from entgan.data import DataError, EdgeReport, inspect_edge, load_edge
from entgan.evaluate import (
    FeatureStats,
    classification_accuracy,
    feature_stats,
    generator_fid,
    merge_stats,
    save_sample_grid,
)
from entgan.strategies import FEATURES, EdgeUpdate


def log(message: str) -> None:
    """Progress for humans: one flushed line (KFP and kfp.local show task stdout)."""
    print(f"[entgan {time.strftime('%H:%M:%S')}] {message}", flush=True)


def configure_threads() -> None:
    """Edge steps honour ENTGAN_NUM_THREADS (set by `entgan run` so that the two edge tasks that
    kfp.local runs at once share the cores); cloud steps run alone and use them all."""
    threads = os.environ.get("ENTGAN_NUM_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))


# ---------------------------------------------------------------- plan


@dataclass
class Plan:
    """Job creation's decision: which types exist, which edge trains which, where each starts."""

    types: list[str]
    assignments: dict[str, list[str]]  # edge -> types it trains
    train_examples: dict[str, int]  # type -> training images over all edges
    holdout_examples: dict[str, int]  # type -> held-out images over all edges
    start: dict[str, str | None] = field(default_factory=dict)  # type -> champion version or None
    evaluator_version: str | None = None
    skipped: dict[str, str] = field(default_factory=dict)  # type -> why it is not trained

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls(**json.loads(Path(path).read_text()))


def step_inspect(job: JobSpec, edge: str, report_path: str | Path) -> EdgeReport:
    spec = job.edge(edge)
    report = inspect_edge(edge, spec.data, job.eval.holdout_fraction, job.train.image_size)
    counts = ", ".join(f"{t}={c.train}+{c.holdout}" for t, c in report.types.items()) or "no images"
    log(f"{edge}: {counts} (train+held-out)")
    Path(report_path).write_text(report.to_json())
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
    assignments = {
        r.edge: [t for t in types if t in r.types and r.types[t].train > 0] for r in reports
    }
    return Plan(types, assignments, {t: train_n[t] for t in types}, {t: held_n[t] for t in types}, skipped=skipped)


def step_plan(
    job: JobSpec, report_paths: list[str], plan_path: str | Path, state_path: str | Path, library=None
) -> Plan:
    """Job creation: collect the edges' reports, decide, and write the starting global state.

    A type with a champion in the task library starts from it; a new type starts fresh.
    """
    reports = sorted((EdgeReport.from_json(Path(p).read_text()) for p in report_paths), key=lambda r: r.edge)
    plan = make_plan(job, reports)
    state = strategies.initial_state(plan.types, job.train, job.eval)
    if library is not None:
        for t in plan.types:
            champion = library.champion(t)
            plan.start[t] = champion.version if champion else None
            if champion:
                state.update(library.load(champion).groups())
        evaluator = library.evaluator()
        if evaluator and json.loads(evaluator.tags.get("entgan.types", "[]")) == plan.types:
            state[FEATURES] = library.load(evaluator).groups()[FEATURES]
            plan.evaluator_version = evaluator.version
    for t, why in plan.skipped.items():
        log(f"type {t} skipped: {why}")
    for edge, types in plan.assignments.items():
        log(f"{edge} trains {types or 'nothing'}")
    plan.save(plan_path)
    _save_state(state_path, state, round_=0, types=plan.types)
    return plan


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
    data = load_edge(job.edge(edge).data, types, job.eval.holdout_fraction, job.train.image_size, holdout=False)
    state = _load_state(state_path)
    started = time.perf_counter()
    update = strategies.edge_round(
        edge,
        state,
        data,
        plan.types,
        job.train,
        job.eval,
        round_=round_,
        on_type=lambda t: log(f"{edge} round {round_}/{job.train.rounds}: training {t} ({len(data[t])} images)"),
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


def step_aggregate(
    job: JobSpec,
    plan_path: str | Path,
    state_path: str | Path,
    update_paths: list[str],
    round_: int,
    out_state_path: str | Path,
) -> dict[str, float]:
    """The cloud's round: verify and aggregate the edges' updates into the next global state."""
    plan = Plan.load(plan_path)
    updates = []
    for p in update_paths:
        bundle = load_bundle(p)  # verifies checksum and finite values
        h = bundle.header
        if h.kind != "edge-update" or h.round != round_:
            raise ValueError(f"{p}: expected an edge update of round {round_}, got {h.kind} round {h.round}")
        updates.append(EdgeUpdate(h.edge or "?", bundle.groups(), h.num_examples, h.extra.get("losses", {})))
    state = _load_state(state_path)
    started = time.perf_counter()
    new_state, metrics = strategies.cloud_round(state, updates, job.train, round_=round_)
    metrics["cloud_seconds"] = time.perf_counter() - started
    _save_state(out_state_path, new_state, round_, plan.types, {"metrics": metrics})
    log(f"round {round_}/{job.train.rounds} aggregated from {len(updates)} edge(s) ({job.train.strategy})")
    return metrics


# ---------------------------------------------------------------- evaluation


def step_edge_eval(
    job: JobSpec, edge: str, plan_path: str | Path, state_path: str | Path, stats_path: str | Path
) -> dict[str, int]:
    """At the edge: feature statistics of the real held-out images, per type. No pixels leave."""
    configure_threads()
    plan = Plan.load(plan_path)
    types = [t for t in plan.assignments.get(edge, [])]
    data = load_edge(job.edge(edge).data, types, job.eval.holdout_fraction, job.train.image_size, holdout=True)
    net = strategies.load_feature_net(_load_state(state_path), len(plan.types), job.train, job.eval)
    tensors, counts, accuracy = {}, {}, {}
    for t, images in data.items():
        if len(images) == 0:
            continue
        tensors.update(feature_stats(net, images).as_tensors(t))
        counts[t] = len(images)
        accuracy[t] = classification_accuracy(net, images, plan.types.index(t))
    save_bundle(stats_path, tensors, BundleHeader(kind="feature-stats", edge=edge, num_examples=counts,
                                                  extra={"accuracy": accuracy}))
    log(f"{edge}: feature statistics of {counts} held-out images")
    return counts


def step_evaluate(
    job: JobSpec,
    plan_path: str | Path,
    initial_state_path: str | Path,
    state_path: str | Path,
    stats_paths: list[str],
    report_path: str | Path,
) -> dict[str, dict[str, float]]:
    """In the cloud: merge the edges' statistics; FID of the starting and the trained generators."""
    plan = Plan.load(plan_path)
    per_type: dict[str, list[FeatureStats]] = {}
    accuracy: dict[str, list[tuple[float, int]]] = {}
    for p in stats_paths:
        bundle = load_bundle(p)
        for t, n in bundle.header.num_examples.items():
            per_type.setdefault(t, []).append(FeatureStats.from_tensors(bundle.tensors, t))
            accuracy.setdefault(t, []).append((bundle.header.extra["accuracy"][t], n))
    initial, final = _load_state(initial_state_path), _load_state(state_path)
    net = strategies.load_feature_net(final, len(plan.types), job.train, job.eval)
    report = {}
    for t in plan.types:
        if t not in per_type:
            raise ValueError(f"no edge sent held-out statistics for type {t!r}")
        real = merge_stats(per_type[t])
        n = job.eval.num_generated
        report[t] = {
            "fid": generator_fid(net, strategies.load_generator(final, t, job.train), real, n),
            "baseline_fid": generator_fid(net, strategies.load_generator(initial, t, job.train), real, n),
            "holdout_images": float(real.count),
            "train_images": float(plan.train_examples[t]),
            "evaluator_accuracy": sum(a * k for a, k in accuracy[t]) / sum(k for _, k in accuracy[t]),
        }
        log(f"{t}: FID {report[t]['baseline_fid']:.2f} -> {report[t]['fid']:.2f}")
    Path(report_path).write_text(json.dumps(report, indent=2, sort_keys=True))
    return report


# ---------------------------------------------------------------- deploy


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str


def deploy_gate(fid: float, champion_fid: float | None, max_fid: float | None) -> GateDecision:
    """Deploy only what beats the current champion (both scored now, on the same statistics)."""
    if max_fid is not None and fid > max_fid:
        return GateDecision(False, f"FID {fid:.2f} is above deploy.max_fid {max_fid:.2f}")
    if champion_fid is None:
        return GateDecision(True, f"first version (FID {fid:.2f})")
    if fid < champion_fid:
        return GateDecision(True, f"FID {fid:.2f} beats the champion's {champion_fid:.2f}")
    return GateDecision(False, f"FID {fid:.2f} does not beat the champion's {champion_fid:.2f}")


def step_deploy(
    job: JobSpec,
    plan_path: str | Path,
    state_path: str | Path,
    report_path: str | Path,
    kfp_run_id: str,
    summary_path: str | Path,
    samples_dir: str | Path,
    library,
) -> dict:
    """Register every trained type as a new version; move `champion` only past the gate."""
    plan = Plan.load(plan_path)
    report = json.loads(Path(report_path).read_text())
    state = _load_state(state_path)
    samples_dir = Path(samples_dir)
    params = {
        "strategy": job.train.strategy,
        "rounds": job.train.rounds,
        "local_steps": job.train.local_steps,
        "image_size": job.train.image_size,
        "width": job.train.width,
        "latent_dim": job.train.latent_dim,
        "mu": job.train.mu,
        "edges": ",".join(job.edge_names),
    }
    run_id = library.start_run(f"kfp-{kfp_run_id}", params, {"entgan.kfp_run_id": kfp_run_id})
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
        library.log_metrics(run_id, {f"{t}.fid": r["fid"], f"{t}.baseline_fid": r["baseline_fid"]})
        champion_fid = r["baseline_fid"] if plan.start.get(t) else None
        decision = deploy_gate(r["fid"], champion_fid, job.deploy.max_fid)
        edges = [e for e, types in plan.assignments.items() if t in types]
        tags = {
            "entgan.job": job.name,
            "entgan.data_type": t,
            "entgan.strategy": job.train.strategy,
            "entgan.rounds": str(job.train.rounds),
            "entgan.edges": ",".join(edges),
            "entgan.train_images": str(plan.train_examples[t]),
            "entgan.holdout_images": str(plan.holdout_examples[t]),
            "entgan.fid": f"{r['fid']:.4f}",
            "entgan.baseline_fid": f"{r['baseline_fid']:.4f}",
            "entgan.parent_version": plan.start.get(t) or "",
            "entgan.kfp_run_id": kfp_run_id,
            "entgan.gate": "promoted" if decision.promote else "rejected",
            "entgan.gate_reason": decision.reason,
        }
        version = library.register(t, run_id, f"tasks/{t}", tags, description=decision.reason)
        if decision.promote:
            library.set_champion(t, version.version)
        champion = version.version if decision.promote else plan.start.get(t)
        log(f"{t}: version {version.version} {'promoted' if decision.promote else 'kept out'}: {decision.reason}")
        summary["types"][t] = {**r, "version": version.version, "champion": champion,
                               "parent_version": plan.start.get(t),
                               "promoted": decision.promote, "reason": decision.reason, "grid": str(grid)}
    _register_evaluator(job, plan, state, run_id, samples_dir, library)
    library.end_run(run_id)
    summary["skipped"] = plan.skipped
    Path(summary_path).write_text(json.dumps(summary, indent=2, sort_keys=True))
    return summary


def _register_evaluator(job: JobSpec, plan: Plan, state: dict, run_id: str, samples_dir: Path, library) -> None:
    folder = samples_dir / "evaluator"
    folder.mkdir(parents=True, exist_ok=True)
    header = BundleHeader(kind="model", extra={"types": plan.types, "eval": job.eval.model_dump()})
    save_bundle(folder / "model.safetensors", pack({FEATURES: state[FEATURES]}), header)
    library.log_files(run_id, folder, "tasks/evaluator")
    version = library.register(
        "evaluator", run_id, "tasks/evaluator", {"entgan.types": json.dumps(plan.types)},
        description="Domain feature network (classifier over the data types) used for FID.",
    )
    library.set_champion("evaluator", version.version)


def copy_samples(summary: dict, dest: str | Path) -> dict[str, Path]:
    """Copy each type's sample grid to `dest/<type>.png` (a stable place for local runs)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = {}
    for t, info in summary["types"].items():
        out[t] = Path(shutil.copyfile(info["grid"], dest / f"{t}.png"))
    return out
