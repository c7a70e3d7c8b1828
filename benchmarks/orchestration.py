"""Figure 4 — orchestration overhead: `entgan run` (kfp.local) vs the same steps in-process.

Every contender runs the same job on the demo's edges (4; 2 in quick mode) with a fresh task library:
- pipeline: `entgan run JOB` as a child process, exactly as a user runs it (compile, then one
  process per task, two edge tasks at once; each task a fork of the task server, which has
  imported torch, MLflow and kfp once: `entgan.local.forkserver`). Wall time, and the CPU time of it
  and all its children (`RUSAGE_CHILDREN`; the server waits for its forks, so theirs is in it).
- fresh processes: the same with `entgan run --fresh-processes`: every task a new Python that
  imports everything again, which is what kfp.local does by itself (the figure before the server).
- in-process: the `entgan.steps` functions the components call, in pipeline order, in this
  process (imports done beforehand), each timed (`entgan.steps.local`: the same task list the
  pipeline is compiled from).

Every task is held to one torch thread on both sides (OMP_NUM_THREADS=1, ENTGAN_NUM_THREADS=1),
so CPU seconds compare like for like. Figures: pipeline wall / in-process wall sum (the issue's
figure, target <= 1.15), pipeline wall / in-process makespan (the same steps scheduled two edge
tasks at a time, as kfp.local does), pipeline CPU / in-process CPU, and the overhead per task.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from benchmarks.common import Clock, Settings, bench_job, demo_edges, edge_split, pipeline_sections
from entgan.local.progress import FINISHED

OVERHEAD_TARGET = 1.15
PARALLEL_EDGE_TASKS = 2  # kfp.local runs at most two iterations of a ParallelFor at once


def _edge_stage(times: list[float]) -> float:
    """Makespan of a ParallelFor stage: tasks start in order on PARALLEL_EDGE_TASKS slots."""
    slots = [0.0] * PARALLEL_EDGE_TASKS
    for t in times:
        i = slots.index(min(slots))
        slots[i] += t
    return max(slots)


def _task_name(task: str, edge: str | None, round_: int) -> tuple[str, str]:
    """The figure's name and stage of a step (`entgan.steps.local`): edge steps are grouped per
    ParallelFor (inspect, train-<round>, eval), cloud steps are sequential."""
    short = {"create_job": "create job", "inspect_edge": "inspect", "train_edge": "train", "eval_edge": "eval",
             "prepare_eval": "prepare eval"}.get(task, task)
    if edge is None:
        return (f"{short} r{round_}" if round_ else short), "cloud"
    return (f"{short} {edge}" + (f" r{round_}" if round_ else "")), (f"{short}-{round_}" if round_ else short)


def in_process(job) -> dict:
    """The pipeline's steps in one process, in order (the same task list the pipeline is
    compiled from: `entgan.steps.local`); per step CPU and wall seconds."""
    from entgan.steps.local import LocalRun

    timings: list[dict] = []

    def timed(task, edge, round_, work):
        clock = Clock()
        out = work()
        cpu, wall = clock.lap()
        name, stage = _task_name(task, edge, round_)
        timings.append({"task": name, "stage": stage, "cpu_s": cpu, "wall_s": wall})
        return out

    run = LocalRun(job, Path(job.state_dir) / "files", "in-process-1", around=timed).run()
    if run.error is not None:
        raise RuntimeError(f"the in-process run failed: {run.error}") from run.error
    makespan = 0.0
    stages: dict[str, list[float]] = {}
    for t in timings:
        if t["stage"] == "cloud":
            makespan += t["wall_s"]
        else:
            stages.setdefault(t["stage"], []).append(t["wall_s"])
    makespan += sum(_edge_stage(s) for s in stages.values())
    return {"tasks": timings, "cpu_s": sum(t["cpu_s"] for t in timings),
            "wall_s": sum(t["wall_s"] for t in timings), "makespan_s": makespan}


def pipeline(job, job_file: Path, fresh_processes: bool = False) -> dict:
    """`entgan run JOB` in a child process; wall time and CPU time of it and its children.
    `fresh_processes`: every task a fresh Python (plain kfp.local), not a fork of the task server."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ENTGAN_NUM_THREADS": "1"}
    entgan = Path(sys.executable).with_name("entgan")
    command = [str(entgan) if entgan.exists() else sys.executable, *([] if entgan.exists() else
               ["-m", "entgan.cli"]), "run", str(job_file), *(["--fresh-processes"] if fresh_processes else [])]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=job_file.parent)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise RuntimeError(f"entgan run {job_file} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    finished = FINISHED.findall(out.stdout)  # kfp.local's "Task 'x' finished" lines (not the pipeline's)
    return {"wall_s": wall, "cpu_s": cpu, "tasks": len(finished), "task_names": finished,
            "stdout_tail": out.stdout[-1500:]}


# What every task process pays before its step starts when it is a fresh Python (`--fresh-processes`;
# forks of the task server have it done), measured as the CPU time of a fresh interpreter doing
# only that (each line includes the ones above it that it needs).
STARTUP = {
    "python": "pass",
    "kfp executor (python -m kfp.dsl.executor_main)": "import kfp.dsl.executor_main",
    "torch (every step imports entgan.steps.wiring)": "import entgan.steps.wiring",
    "MLflow client (cloud tasks: import + open the store)": (
        "import sys; from entgan.job.spec import JobSpec; from entgan.library.registry import library_for; "
        "library_for(JobSpec.model_validate_json(open(sys.argv[1]).read())).champion('box')"),
}


def startup_costs(job) -> dict[str, float]:
    """CPU seconds of each kind of per-task start-up work (see STARTUP), in fresh processes."""
    job_json = Path(job.state_dir) / "job.json"
    job_json.write_text(job.model_dump_json())
    costs = {}
    for name, code in STARTUP.items():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", code, str(job_json)], check=True, capture_output=True,
                       cwd=Path(__file__).resolve().parents[1])
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        costs[name] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return costs


def _overheads(piped: dict, inproc: dict) -> dict:
    tasks = piped["tasks"] or len(inproc["tasks"])
    return {"overhead_per_task_cpu_s": (piped["cpu_s"] - inproc["cpu_s"]) / tasks,
            "overhead_per_task_wall_s": (piped["wall_s"] - inproc["makespan_s"]) / tasks}


def run(settings: Settings, workdir: Path) -> dict:
    split = edge_split(settings.pipeline_edges)
    root = workdir / f"edges-{settings.pipeline_edges}"
    demo_edges(root, split, settings)
    train, evaluation = pipeline_sections(settings)
    piped = bench_job("orchestration", root, list(split), workdir / "pipeline-state", train, evaluation)
    job_file = workdir / "orchestration.yaml"
    job_file.write_text(yaml.safe_dump(piped.model_dump(mode="json")))
    local = bench_job("orchestration", root, list(split), workdir / "inprocess-state", train, evaluation)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        inproc = in_process(local)
    finally:
        torch.set_num_threads(threads)
    piped_run = pipeline(piped, job_file)
    # The same again with every task a fresh Python (what kfp.local does by itself), fresh library.
    shutil.rmtree(piped.state_dir)
    fresh_run = pipeline(piped, job_file, fresh_processes=True)
    startup = startup_costs(piped)  # after the run: its task library exists, as for a cloud task
    ratio = piped_run["wall_s"] / inproc["wall_s"]
    return {
        "what": "kfp.local pipeline wall time vs the same steps' compute in-process",
        "how": "same job all ways, fresh task library each; one torch thread per task on every side; "
               "pipeline = `entgan run` as a child process (2 edge tasks at once; tasks are forks of the "
               "pre-warmed task server, entgan.local.forkserver); fresh_processes = the same with "
               "`--fresh-processes` (every task a new Python, as plain kfp.local); in-process = the "
               "entgan.steps functions in pipeline order; makespan = in-process times scheduled 2 edge tasks "
               "at a time",
        "job": {"train": train, "eval": evaluation, "edges": len(split)},
        "pipeline": piped_run,
        "fresh_processes": {**fresh_run, "ratio_wall_vs_sum": fresh_run["wall_s"] / inproc["wall_s"],
                            **_overheads(fresh_run, inproc)},
        "in_process": inproc,
        "ratio_wall_vs_sum": ratio,
        "ratio_wall_vs_makespan": piped_run["wall_s"] / inproc["makespan_s"],
        "ratio_cpu": piped_run["cpu_s"] / inproc["cpu_s"],
        **_overheads(piped_run, inproc),
        "startup_cpu_s": startup,
        "cloud_tasks": sum(t["stage"] == "cloud" for t in inproc["tasks"]),
        "target": {"ratio_wall_vs_sum_at_most": OVERHEAD_TARGET, "met": ratio <= OVERHEAD_TARGET},
    }
