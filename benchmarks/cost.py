"""Figure 3 — cloud and network cost.

Peak memory: the cloud's aggregation step (`entgan.steps.train.aggregate`: read the 4 edges'
update bundles, FedAvg, the global G update, write the new state) vs centralized training
(`entgan.gan.strategies.train_centralized` on every edge's raw training images, which a central node
would have to hold). Each runs in a fresh process (`benchmarks.memory`); the figure is the rise of
resident memory above the process's state after its imports (kernel peak-RSS mark, reset just
before the step). Target: aggregation <= 0.5x centralized.

Network: the bytes each edge sends per round (its update bundle as written by
`entgan.steps.train.train_edge`) vs the bytes of its raw training images (PNG files, and as
uint8 pixels), and what the cloud sends back (the global state bundle).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import Settings, bench_job, demo_edges, edge_split, pipeline_sections
from entgan.gan import strategies
from entgan.gan.bundle import BundleHeader, pack, save_bundle
from entgan.job.data import inspect_edge
from entgan.steps.common import TaskContext
from entgan.steps.plan import make_plan
from entgan.steps.train import TrainFiles, train_edge

MEMORY_TARGET = 0.5
CENTRALIZED_STEPS = 20  # per type: the peak is reached in the first steps


def _measure(what: str, spec: dict, workdir: Path) -> dict:
    path = workdir / f"memory-{what}.json"
    path.write_text(json.dumps(spec))
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", what, str(path)], check=True,
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(settings: Settings, workdir: Path) -> dict:
    split = edge_split(4)
    data = demo_edges(workdir / "edges-4", split, settings)
    train, evaluation = pipeline_sections(settings)
    train.update(local_steps=2, rounds=1)  # sizes and the cloud's memory do not depend on local steps
    job = bench_job("cost", workdir / "edges-4", list(split), workdir / "cost-state", train, evaluation)
    files = workdir / "cost"
    files.mkdir(parents=True, exist_ok=True)
    reports = [inspect_edge(e.name, e.data, job.eval.holdout_fraction, job.train.image_size) for e in job.edges]
    plan = make_plan(job, reports)
    plan.evaluator_types = list(plan.types)
    plan.save(files / "plan.json")
    state = strategies.initial_state(plan.types, job.train, job.eval)
    save_bundle(files / "state-0.safetensors", pack(state),
                BundleHeader(kind="global-state", round=0, extra={"types": plan.types}))
    updates, per_edge = [], {}
    for edge in job.edge_names:
        path = files / f"update-{edge}.safetensors"
        train_edge(TaskContext(job, edge=edge, round=1), TrainFiles(files / "plan.json", files / "state-0.safetensors", path))
        updates.append(str(path))
        images = sum(len(x) for x in data.train[edge].values())
        pixels = images * 3 * settings.image_size**2
        sent = path.stat().st_size
        per_edge[edge] = {"types": sorted(data.train[edge]), "update_bytes": sent, "training_images": images,
                          "png_bytes": data.image_bytes[edge], "pixel_bytes": pixels,
                          "update_vs_png": sent / data.image_bytes[edge], "update_vs_pixels": sent / pixels}
    spec = {"job": json.loads(job.model_dump_json()), "plan": str(files / "plan.json"),
            "state": str(files / "state-0.safetensors"), "updates": updates,
            "out": str(files / "state-1.safetensors"), "steps": CENTRALIZED_STEPS,
            "types": {e: sorted(split[e]) for e in split}}
    aggregate = _measure("aggregate", spec, workdir)
    centralized = _measure("centralized", spec, workdir)
    ratio = aggregate["step_peak_kb"] / centralized["step_peak_kb"]
    mean = lambda key: sum(e[key] for e in per_edge.values()) / len(per_edge)  # noqa: E731
    return {
        "what": "peak memory of the cloud aggregation step vs centralized training; bytes an edge sends "
                "per round vs its raw images",
        "how": "each step in a fresh process, rise of resident memory above the post-import state (Linux "
               "VmHWM after /proc/self/clear_refs); update sizes are the bundle files step_edge_train writes",
        "memory": {"aggregate": aggregate, "centralized": centralized, "ratio": ratio,
                   "centralized_steps_per_type": CENTRALIZED_STEPS},
        "network": {"per_edge": per_edge, "state_bytes_down": (files / "state-1.safetensors").stat().st_size,
                    "mean_update_bytes": mean("update_bytes"), "mean_png_bytes": mean("png_bytes"),
                    "mean_update_vs_png": mean("update_vs_png")},
        "target": {"memory_ratio_at_most": MEMORY_TARGET, "met": ratio <= MEMORY_TARGET},
    }
