"""Deploy: register every trained type as a new version in the task library, and move its
`champion` alias only past the gate (`entgan.evaluation.metrics.gate_decision`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from entgan.evaluation import metrics
from entgan.evaluation.features import save_sample_grid
from entgan.gan import strategies
from entgan.gan.bundle import Bundle, BundleHeader, load_bundle, pack, save_bundle
from entgan.gan.sampling import png_format
from entgan.gan.strategies import FEATURES
from entgan.job.lifecycle import Stage, State
from entgan.job.spec import JobSpec
from entgan.library.report import model_description, run_note, version_description
from entgan.steps.common import TaskContext, load_state, log
from entgan.steps.plan import Plan
from entgan.steps.records import edges_left_out, job_run, record


@dataclass(frozen=True)
class DeployFiles:
    plan: str  # in
    global_state: str  # in: the trained state
    report: str  # in: the evaluation report
    real_stats: str  # in
    summary: str  # out: JSON, what `entgan run` prints
    samples: str  # out: a folder, per type its weights and sample grid


def gate(job: JobSpec, scores: dict[str, float], has_champion: bool) -> tuple[bool, str]:
    """The deploy gate over every metric of a type's evaluation report."""
    candidate, champion = metrics.gate_inputs(scores, has_champion)
    promote, reasons = metrics.gate_decision(candidate, champion, job.deploy)
    return promote, "; ".join(reasons)


def deploy(ctx: TaskContext, files: DeployFiles) -> dict:
    """Register every trained type as a new version; move `champion` only past the gate."""
    plan = Plan.load(files.plan)
    job = ctx.job = plan.resolve(ctx.job)
    library, kfp_run_id = ctx.library, ctx.kfp_run_id
    run_id = job_run(library, kfp_run_id)
    record(library, run_id, Stage.DEPLOY, State.READY, State.STARTING, State.RUNNING)
    report = json.loads(Path(files.report).read_text())
    state = load_state(files.global_state)
    samples_dir = Path(files.samples)
    summary: dict = {"job": job.name, "mlflow_run_id": run_id, "kfp_run_id": kfp_run_id, "types": {}}
    for t in plan.types:
        summary["types"][t] = _deploy_type(ctx, plan, t, report[t], state, samples_dir / t, run_id)
    _register_evaluator(job, plan, state, load_bundle(files.real_stats), run_id, samples_dir, library)
    summary["skipped"] = plan.skipped
    summary["uncertain"] = plan.uncertain
    summary["left_out"] = edges_left_out(library.states(run_id), plan.failed_edges)
    Path(files.summary).write_text(json.dumps(summary, indent=2, sort_keys=True))
    library.log_json(run_id, summary, "summary.json")
    library.note_run(run_id, run_note(summary, job.train.strategy, job.train.rounds))
    record(library, run_id, Stage.DEPLOY, State.COMPLETED,
           detail=", ".join(f"{t} v{i['champion']}" if i["champion"] else f"{t} no champion"
                            for t, i in summary["types"].items()))
    return summary


def _deploy_type(ctx: TaskContext, plan: Plan, t: str, r: dict, state: dict, folder: Path, run_id: str) -> dict:
    """Register one type's version (weights, sample grid, tags, description); promote it past
    the gate unless another run moved the champion meanwhile. Returns its summary entry."""
    job, library, kfp_run_id = ctx.job, ctx.library, ctx.kfp_run_id
    folder.mkdir(parents=True, exist_ok=True)
    header = BundleHeader(kind="model", num_examples={t: plan.train_examples[t]},
                          extra={"data_type": t, "train": job.train.model_dump(), "bits": plan.bits.get(t, 8)})
    save_bundle(folder / "model.safetensors", pack(strategies.deploy_groups(state, t)), header)
    grid = save_sample_grid(strategies.load_generator(state, t, job.train), folder / "samples.png")
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
        "entgan.channels": str(job.train.image_channels),
        "entgan.png": png_format(job.train.image_channels, plan.bits.get(t, 8)),
        "entgan.train_images": str(plan.train_examples[t]),
        "entgan.holdout_images": str(plan.holdout_examples[t]),
        "entgan.new_samples": str(plan.new_samples.get(t, plan.train_examples[t])),
        **metrics.version_tags(r),
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
            "parent_task": tags["entgan.parent_task"], "png": tags["entgan.png"]}
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
    return {**r, "version": version.version, "champion": champion, "parent_version": plan.start.get(t),
            "parent_task": tags["entgan.parent_task"], "promoted": promote, "reason": reason, "grid": str(grid)}


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


def copy_samples(summary: dict, dest: str | Path) -> dict[str, Path]:
    """Copy each type's sample grid to `dest/<type>.png` (a stable place for local runs)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    return {t: Path(shutil.copyfile(info["grid"], dest / f"{t}.png")) for t, info in summary["types"].items()}
