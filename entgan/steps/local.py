"""The pipeline in this process: `wiring.describe` walked by calling the steps directly, with
the same failure handling as the components (edge steps through `run_edge_task`, a cloud
step's error ends the run, the exit step always last). For tests (tests/steps_driver.py) and
benchmarks (benchmarks/orchestration.py): a step in the middle of a run is reached in seconds.

Files go to one folder, named after the step's output (`plan`, `kit`, `report`), with the
round and the edge when the step has them (`update-2-edge-1`, `stats-edge-3`); the global
states are `state-0` (where training starts) and `state-<round>`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from entgan.job.spec import JobSpec
from entgan.steps.common import TaskContext
from entgan.steps.finish import finish
from entgan.steps.records import run_edge_task
from entgan.steps.wiring import TASKS, describe


class PodKilled(BaseException):
    """Stands for an edge task's pod that the kubelet killed (out of memory, evicted, node
    lost): raised from a step, it passes `run_edge_task` (which catches `Exception`), so the
    edge leaves only its Running mark, and the run fails as it does on a KFP backend."""


_FILE_NAMES = {"global_state": "state-0", "new_state": "state-{round}", "real_stats": "real"}


@dataclass
class Handle:
    """A step's files and what it returned; for edge steps, one per edge."""

    files: list
    results: list

    def out(self, name: str) -> str:
        return getattr(self.files[0], name)

    def collected(self, name: str) -> list[str]:
        return [getattr(f, name) for f in self.files]


def _just_call(task: str, edge: str | None, round_: int, work: Callable):
    return work()


@dataclass
class LocalRun:
    """Runs a job's pipeline in this process. `before(task, round)` runs before each step (to
    break things mid-run); `around(task, edge, round, work)` calls each step (to time it).
    After `run()`: `error` (the exception that ended the run, or None), `summary` (deploy's),
    and `calls[task]`: the last (context, files) each step was called with."""

    job: JobSpec
    work: Path
    kfp_run_id: str = "run-1"
    library: object = None
    before: Callable | None = None
    around: Callable = _just_call
    error: Exception | None = None
    summary: dict | None = None
    calls: dict = field(default_factory=dict)

    def run(self) -> LocalRun:
        self.work.mkdir(parents=True, exist_ok=True)
        describe(self, self.job.train.rounds)
        return self

    def _library(self):
        if self.library is None:  # opened by the first cloud step, as each component opens it
            from entgan.library.registry import library_for

            self.library = library_for(self.job)
        return self.library

    def _files(self, task: str, inputs: dict, edge: str | None, round_: int):
        cls = TASKS[task][1]
        values = {}
        for f in fields(cls):
            if f.name in inputs:
                values[f.name] = inputs[f.name]
                continue
            name = _FILE_NAMES.get(f.name, f.name + (f"-{round_}" if round_ else "")).format(round=round_)
            values[f.name] = str(self.work / (f"{name}-{edge}" if edge else name))
        return cls(**values)

    def _step(self, task: str, ctx: TaskContext, files, work: Callable):
        if self.before is not None:
            self.before(task, ctx.round)
        self.calls[task] = (ctx, files)
        return self.around(task, ctx.edge, ctx.round, work)

    def cloud(self, task: str, display: str, retry: bool = False, round_number: int = 0, **inputs) -> Handle:
        step = TASKS[task][0]
        files = self._files(task, inputs, None, round_number)
        ctx = TaskContext(self.job, self.kfp_run_id, None, None, round_number)

        def work():
            ctx.library = self._library()
            return step(ctx, files)

        result = self._step(task, ctx, files, work)
        if task == "deploy":
            self.summary = result
        return Handle([files], [result])

    def each_edge(self, created, task: str, display: str, gpus: bool = False, round_number: int = 0,
                  **inputs) -> Handle:
        step, _, stage = TASKS[task]
        handle = Handle([], [])
        for edge in self.job.edge_names:
            files = self._files(task, inputs, edge, round_number)
            (output,) = [getattr(files, f.name) for f in fields(files) if f.name not in inputs]
            ctx = TaskContext(self.job, self.kfp_run_id, None, edge, round_number)
            result = self._step(task, ctx, files, lambda ctx=ctx, files=files, output=output: run_edge_task(
                self.job, self.kfp_run_id, stage, ctx.edge, output, lambda: step(ctx, files), round_=ctx.round,
                library=self._library()))
            handle.files.append(files)
            handle.results.append(result)
        return handle

    def if_trained(self, planned: Handle, body: Callable) -> None:
        if planned.results[0].decision == "train":
            body()

    def exit_handler(self, task: str, display: str, body: Callable) -> None:
        ctx = TaskContext(self.job, self.kfp_run_id, None)
        try:
            body()
            state, error = "SUCCEEDED", ""
        except (Exception, PodKilled) as err:  # noqa: BLE001 - the run fails here, as the pipeline would
            self.error = err
            state, error = "FAILED", f"{type(err).__name__}: {err}"

        def work():
            ctx.library = self._library()
            finish(ctx, state, error)

        self.around(task, None, 0, work)
