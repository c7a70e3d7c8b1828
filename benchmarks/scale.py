"""Figure 11 — scale: how a run's cost grows with edges, types, rounds and image size.

Each point is one real run of the whole pipeline in this process (`entgan.steps.local.LocalRun`:
the steps the KFP components call, in pipeline order) on tiny models and tiny random images,
with the embedded SQLite task library, plus the pipeline compiled as for Kubeflow. From one
base job (4 edges, 4 types, 8 rounds, 32 px; quick mode: 2, 1, 1, 8 px) one axis at a time
moves: edges 4 / 16 / 64, types 4 / 16, rounds 8 / 32 / 64, image size 32 / 64 / 128.

Measured at every point (times are CPU seconds of this process, on one torch thread, as the
harness times training: other jobs on the machine barely move them; wall seconds beside them as
`*_wall_s`):
- `cloud_round_s`: seconds of one round's cloud step (`entgan.steps.train.aggregate`:
  verify each update, streaming FedAvg (`entgan.gan.aggregate.FedAvgSum`) and the cloud G
  steps, write the state, log to MLflow), mean over the run's rounds;
- `cloud_peak_mib`: the rise of resident memory during round 1's aggregate, run again
  on that round's files in a fresh process (`benchmarks.memory`; quick mode: in this process);
- `edge_bytes`: the bytes one edge sends per round (its update bundle; model bytes per edge-round);
- `compile_s`, `ir_bytes`: compiling the KFP pipeline, and its YAML;
- `workflow_bytes`: the Argo Workflow the KFP backend would store (spec plus compressed node
  status of a run on these edges, `pipelines.workflow_size`), against Argo's 1 MiB;
- `mlflow_calls`, `mlflow_s`: MlflowClient calls of the whole run and their seconds (SQLite's
  work in this process included; every public method wrapped; a call made inside another
  counts once);
- `eval_s`: seconds of the evaluation stage (prepare eval, eval at each edge, evaluate).

The growth exponent of a quantity along an axis is the least-squares slope of log(quantity) on
log(axis value): 0 is flat, 1 linear. Target: streaming FedAvg keeps the cloud's peak memory
flat in the number of edges (exponent <= 0.25).
"""

from __future__ import annotations

import functools
import inspect
import json
import resource
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from benchmarks.common import Settings

AXES_FULL = {"edges": (4, 16, 64), "types": (4, 16), "rounds": (8, 32, 64), "image_size": (32, 64, 128)}
AXES_QUICK = {"edges": (2, 4), "types": (1, 2), "rounds": (1, 2), "image_size": (8, 16)}
ORDER = ("edges", "types", "rounds", "image_size")
QUANTITIES = ("cloud_round_s", "cloud_peak_mib", "edge_bytes", "compile_s", "ir_bytes", "workflow_bytes",
              "mlflow_calls", "mlflow_s", "eval_s")
MEMORY_EXPONENT_TARGET = 0.25
IMAGES_PER_TYPE = 5  # per edge: 4 to train on, 1 held out


@contextmanager
def counted_mlflow():
    """Count MlflowClient calls (outermost only) and their CPU and wall seconds while the block runs."""
    from mlflow.tracking import MlflowClient

    counts = {"calls": 0, "seconds": 0.0, "wall_seconds": 0.0, "by_method": {}}
    local = threading.local()
    originals = {n: f for n, f in vars(MlflowClient).items() if not n.startswith("_") and inspect.isfunction(f)}

    def wrap(name, fn):
        @functools.wraps(fn)
        def counted(*args, **kwargs):
            depth = getattr(local, "depth", 0)
            local.depth = depth + 1
            cpu, wall = time.process_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                local.depth = depth
                if depth == 0:
                    counts["calls"] += 1
                    counts["seconds"] += time.process_time() - cpu
                    counts["wall_seconds"] += time.perf_counter() - wall
                    counts["by_method"][name] = counts["by_method"].get(name, 0) + 1
        return counted

    for name, fn in originals.items():
        setattr(MlflowClient, name, wrap(name, fn))
    try:
        yield counts
    finally:
        for name, fn in originals.items():
            setattr(MlflowClient, name, fn)


def _write_images(root: Path, edges: int, types: list[str], size: int, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for e in range(1, edges + 1):
        for t in types:
            folder = root / f"edge-{e}" / t
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(IMAGES_PER_TYPE):
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def _job(root: Path, state: Path, edges: int, types: int, rounds: int, image_size: int):
    """The point's job: its own edges' images under `root`, the task library shared by every
    point in `state` (a new SQLite store costs seconds of schema set-up once, not per run)."""
    from entgan.job.spec import parse_job

    names = [f"type-{i:02d}" for i in range(types)]
    data = root / "edges"
    _write_images(data, edges, names, image_size, seed=edges * 1000 + types)
    job = parse_job({
        "name": f"scale-{root.name}", "data_types": names,
        "edges": [{"name": f"edge-{e}", "data": str(data / f"edge-{e}")} for e in range(1, edges + 1)],
        "train": {"rounds": 1, "local_steps": 1, "cloud_steps": 1, "batch_size": 4, "image_size": image_size,
                  "width": 4, "latent_dim": 8, "ema_decay": None, "min_edges": 1},
        # KID needs at least half as many fakes as held-out real images, which grow with the edges
        # (one per edge and type here): the job has to raise num_generated with its fleet.
        "eval": {"feature_steps": 1, "num_generated": max(16, edges), "feature_dim": 8, "c2st_steps": 1,
                 "cas_steps": 1},
        "deploy": {"min_cas_ratio": None, "max_kid_random": None},
        "state_dir": str(state),
    }, source="benchmark job scale")
    # More rounds than `train.rounds` allows on a cluster are still measured here: the cap is
    # what the Workflow model says (`workflow_bytes` against 1 MiB), not a limit of this run.
    return job.model_copy(update={"train": job.train.model_copy(update={"rounds": rounds})})


def _compile(job, folder: Path) -> dict:
    from kfp import compiler

    from pipelines.entgan_pipeline import build_pipeline
    from pipelines.package_size import package_workflow_size
    from pipelines.workflow_size import BUDGET, MAX_WORKFLOW_SIZE

    path = folder / "pipeline.yaml"
    cpu, wall = time.process_time(), time.perf_counter()
    compiler.Compiler().compile(build_pipeline(job), str(path))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    size = package_workflow_size(path)
    return {"compile_s": cpu, "compile_wall_s": wall, "ir_bytes": path.stat().st_size, "workflow_bytes": size.total,
            "workflow_spec_bytes": size.spec_bytes, "workflow_status_bytes": size.status_bytes,
            "workflow_nodes": size.nodes, "fits_argo": size.total <= MAX_WORKFLOW_SIZE,
            "fits_budget": size.total <= BUDGET}


def _memory(job, files: Path, in_process: bool) -> float:
    """MiB round 1's aggregate adds to resident memory at its peak (every round's is the same work;
    `benchmarks.memory` runs round 1)."""
    from benchmarks.cost import _measure

    r = 1
    updates = sorted(str(p) for p in files.glob(f"update-{r}-edge-*"))
    job = job.model_copy(update={"train": job.train.model_copy(update={"rounds": 1})})  # a job file's bound
    spec = {"job": json.loads(job.model_dump_json()), "plan": str(files / "plan"),
            "state": str(files / f"state-{r - 1}"), "updates": updates, "out": str(files / "memory-state")}
    if not in_process:
        return _measure("aggregate", spec, files)["step_peak_kb"] / 1024
    from benchmarks.memory import _reset_peak, _status_kb
    from entgan.steps.common import TaskContext
    from entgan.steps.train import AggregateFiles, aggregate

    before = _status_kb("VmRSS")
    exact = _reset_peak()
    aggregate(TaskContext(job, round=r), AggregateFiles(spec["plan"], spec["state"], updates, spec["out"]))
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(0.0, (peak - before) / 1024)


def measure_point(job, folder: Path, in_process_memory: bool) -> dict:
    """Every quantity of figure 11 for one job (a whole in-process run, then the compile)."""
    from entgan.steps.local import LocalRun

    seconds: dict[str, list[float]] = {}  # CPU seconds per call of each step
    walls: dict[str, list[float]] = {}

    def timed(task, edge, round_, work):
        cpu, wall = time.process_time(), time.perf_counter()
        try:
            return work()
        finally:
            seconds.setdefault(task, []).append(time.process_time() - cpu)
            walls.setdefault(task, []).append(time.perf_counter() - wall)

    files = folder / "files"
    with counted_mlflow() as calls:
        run = LocalRun(job, files, "scale-1", around=timed).run()
    if run.error is not None:
        raise RuntimeError(f"figure 11: the run {folder.name} failed: {run.error}") from run.error
    sent = [p.stat().st_size for p in files.glob("update-1-edge-*")]
    evaluation = ("prepare_eval", "eval_edge", "evaluate")
    point = {
        "cloud_round_s": sum(seconds["aggregate"]) / len(seconds["aggregate"]),
        "cloud_round_wall_s": sum(walls["aggregate"]) / len(walls["aggregate"]),
        "cloud_peak_mib": _memory(job, files, in_process_memory),
        "edge_bytes": sum(sent) / len(sent),
        "mlflow_calls": calls["calls"], "mlflow_s": calls["seconds"], "mlflow_wall_s": calls["wall_seconds"],
        "mlflow_top": dict(sorted(calls["by_method"].items(), key=lambda kv: -kv[1])[:5]),
        "eval_s": sum(sum(seconds.get(t, [])) for t in evaluation),
        "eval_wall_s": sum(sum(walls.get(t, [])) for t in evaluation),
        "run_s": sum(sum(v) for v in seconds.values()),
        "run_wall_s": sum(sum(v) for v in walls.values()),
        "task_s": {task: sum(v) for task, v in seconds.items()},
    }
    point.update(_compile(job, folder))
    return point


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x); None when a value is not positive."""
    if len(xs) < 2 or min(ys) <= 0:
        return None
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def run(settings: Settings, workdir: Path) -> dict:
    axes = AXES_QUICK if settings.mode == "quick" else AXES_FULL
    base = {axis: values[0] for axis, values in axes.items()}
    measured: dict[tuple, dict] = {}
    points: dict[str, list[dict]] = {}
    state = workdir / "scale" / "state"
    # Not measured: one tiny run first (the shared task library's SQLite schema, lazy imports and
    # first calls of every step and of the compiler), or the base point, where every axis starts,
    # would carry them.
    warm = workdir / "scale" / "warm-up"
    warm.mkdir(parents=True, exist_ok=True)
    measure_point(_job(warm, state, edges=2, types=1, rounds=1, image_size=8), warm, in_process_memory=True)
    for axis, values in axes.items():
        points[axis] = []
        for value in values:
            at = {**base, axis: value}
            key = tuple(at[a] for a in axes)
            if key not in measured:
                folder = workdir / "scale" / "-".join(f"{a[0]}{v}" for a, v in at.items())
                folder.mkdir(parents=True, exist_ok=True)
                print(f"[bench] scale: {at}", flush=True)
                done = folder / "point.json"  # a point measured before (a run that stopped) is kept
                if not done.exists():
                    done.write_text(json.dumps(measure_point(_job(folder, state, **at), folder,
                                                             settings.mode == "quick")))
                measured[key] = json.loads(done.read_text())
            points[axis].append({"value": value, **measured[key]})
    exponents = {axis: {q: exponent([p["value"] for p in pts], [p[q] for p in pts]) for q in QUANTITIES}
                 for axis, pts in points.items()}
    memory = exponents["edges"]["cloud_peak_mib"]
    return {
        "what": "how a run's cost grows with edges, types, rounds and image size: per-round cloud time and "
                "peak memory, bytes an edge sends, compile time, IR and Argo Workflow bytes, MLflow calls "
                "and seconds per run, evaluation time; each axis' growth exponent (log-log slope)",
        "how": "one whole in-process run per point (entgan.steps.local, tiny models: width 4, latent 8, one "
               "local step; random images, 4 per type and edge to train on), embedded SQLite MLflow with "
               "MlflowClient calls counted; round 1's aggregate again in a fresh process for memory "
               "(quick: in process); the KFP pipeline compiled and its Argo Workflow modelled "
               "(pipelines.workflow_size); one axis moved at a time from the base point",
        "base": base, "axes": {a: list(v) for a, v in axes.items()}, "points": points, "exponents": exponents,
        "target": {"what": f"cloud peak memory flat in edges: exponent <= {MEMORY_EXPONENT_TARGET}",
                   "memory_exponent_edges": memory,
                   "met": memory is not None and memory <= MEMORY_EXPONENT_TARGET},
    }


# ---------------------------------------------------------------- summary row and plot

SHORT = {"cloud_round_s": "cloud s/round", "cloud_peak_mib": "cloud peak MiB", "edge_bytes": "edge bytes",
         "compile_s": "compile s", "ir_bytes": "IR bytes", "workflow_bytes": "Workflow bytes",
         "mlflow_calls": "MLflow calls", "mlflow_s": "MLflow s", "eval_s": "eval s"}


def summary_row(figure: dict) -> dict:
    e = figure["exponents"]

    def fmt(axis: str, q: str) -> str:
        v = e[axis][q]
        return "n/a" if v is None else f"{v:.2f}"

    measured = "; ".join(
        f"{axis}: memory {fmt(axis, 'cloud_peak_mib')}, cloud time {fmt(axis, 'cloud_round_s')}, "
        f"MLflow calls {fmt(axis, 'mlflow_calls')}, Workflow {fmt(axis, 'workflow_bytes')}"
        for axis in ORDER if axis in figure["exponents"])
    return {"figure": "11. scale (growth exponents, log-log slope)", "measured": measured,
            "target": f"cloud memory flat in edges (exponent <= {MEMORY_EXPONENT_TARGET})",
            "met": figure["target"]["met"]}


def growth_table(figure: dict) -> str:
    """Markdown: one row per quantity, one column per axis, the exponent and the values."""
    axes = [a for a in ORDER if a in figure["points"]]
    head = "| quantity | " + " | ".join(f"{a} {'/'.join(str(v) for v in figure['axes'][a])}" for a in axes) + " |"
    rows = [head, "|---|" + "---|" * len(axes)]
    for q in QUANTITIES:
        cells = []
        for a in axes:
            e = figure["exponents"][a][q]
            values = "/".join(_short(p[q]) for p in figure["points"][a])
            cells.append(f"{'n/a' if e is None else f'{e:.2f}'} ({values})")
        rows.append(f"| {SHORT[q]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _short(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1024:.0f}k"
    return f"{value:.3g}"


def plot(plt, figure: dict):
    """One panel per axis: each quantity relative to the axis' first point, log-log."""
    axes = [a for a in ORDER if a in figure["points"]]
    fig, panels = plt.subplots(1, len(axes), figsize=(4 * len(axes), 3.8), squeeze=False)
    for ax, axis in zip(panels[0], axes):
        pts = figure["points"][axis]
        xs = [p["value"] for p in pts]
        for q in QUANTITIES:
            ys = [p[q] for p in pts]
            if min(ys) <= 0:
                continue
            slope = figure["exponents"][axis][q]
            ax.plot(xs, [y / ys[0] for y in ys], marker="o",
                    label=f"{SHORT[q]} ({'n/a' if slope is None else f'{slope:.2f}'})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.minorticks_off()
        ax.set_xticks(xs)
        ax.set_xticklabels([str(x) for x in xs])
        ax.set(xlabel=axis, ylabel="relative to the first point", title=f"growth with {axis}")
        ax.legend(fontsize=6)
    return fig
