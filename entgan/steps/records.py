"""Stage states and failure records in the job's MLflow run, and the `min_edges` policy.

A failure is recorded in one way (`record_failure`) whether a cloud task fails
(`recorded_failure`), an edge task fails (`run_edge_task`) or the cloud refuses what an edge
sent (`EdgeQuorum.collect`). Each edge task also marks its progress (`EdgeProgress`): Running
first, Completed or Failed last, so that `finish` can name an edge that stopped while running
(its pod killed, its node lost, or the run terminated or past its deadline).
How many edges must answer is the job's `train.min_edges`, held by `EdgeQuorum` (as Flower's
strategies hold `min_fit_clients`) and checked only there.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from entgan.gan.bundle import Bundle, BundleError, BundleHeader, load_bundle, read_header, save_bundle
from entgan.job.lifecycle import Stage, State, StateChange, current_states, edge_failures
from entgan.job.redact import redact
from entgan.job.spec import JobSpec
from entgan.steps.common import log

EDGE_FAILURE = "edge-failure"  # the bundle kind an edge task writes in place of its output when it fails
TRANSIENT_ERRORS = (ConnectionError, TimeoutError)  # retried in the task before it counts as a failure
_PROGRESS = [State.READY, State.STARTING, State.RUNNING, State.COMPLETED]


def _now() -> float:
    return time.time()


def job_run(library, kfp_run_id: str) -> str:
    """The MLflow run that `create job` opened for this KFP run."""
    run_id = library.run_for(kfp_run_id)
    if run_id is None:
        raise LookupError(f"no MLflow run is tagged entgan.kfp_run_id={kfp_run_id}; `create job` opens it first")
    return run_id


def record(library, run_id: str, stage: Stage, *states: State, detail: str = "") -> None:
    """Append state changes of one stage to the job's MLflow run, in order. A state the stage
    has already reached is skipped, so a retried task records nothing twice."""
    at = _now()
    reached = current_states(library.states(run_id))[stage]
    for i, state in enumerate(states):
        if state in _PROGRESS and reached in _PROGRESS and _PROGRESS.index(state) <= _PROGRESS.index(reached):
            continue
        library.record_state(run_id, StateChange(stage, state, at + i * 1e-6, detail))
        log(f"{stage.value} stage: {state.value}{' - ' + detail if detail else ''}")


def record_failure(job: JobSpec, library, kfp_run_id: str | None, stage: Stage, detail: str,
                   edge: str | None, error: str) -> None:
    """Record `stage` Failed (at `edge`, with `error`) in the job's MLflow run. Best effort: a
    task that cannot reach MLflow still fails (or goes on) with its own error. `library` None:
    open the job's task library (edge tasks do not hold one)."""
    try:
        if library is None:
            from entgan.library.registry import library_for

            library = library_for(job)
        change = StateChange(stage, State.FAILED, _now(), detail, edge, redact(error)[:2000])
        library.record_state(job_run(library, kfp_run_id), change)
    except Exception as record_err:  # noqa: BLE001 - never hide the task's own error
        log(f"could not record the failure in MLflow: {redact(str(record_err))}")


@contextlib.contextmanager
def recorded_failure(job: JobSpec, kfp_run_id: str, stage: Stage, edge: str | None = None):
    """Record `stage` Failed (with the edge and the error) if the body raises, then re-raise."""
    try:
        yield
    except Exception as err:
        log(f"{stage.value} stage: Failed{' at ' + edge if edge else ''}: {err}")
        record_failure(job, None, kfp_run_id, stage, "task failed", edge, f"{type(err).__name__}: {err}")
        raise


EDGE_PROGRESS_TAG = "entgan.edge_progress"  # run tag `<prefix>.<stage>.<edge>`: that edge task's last mark


@dataclass
class EdgeProgress:
    """An edge task's marks in the job's MLflow run: Running when it starts, Completed or Failed
    when it ends. A pod that is killed (out of memory, evicted, node lost) leaves Running behind,
    which is how `finish` names the edge (`lost_edges`). One run tag per stage and edge, holding
    only the last mark (a tag, not a stage-state record: it is overwritten every round).
    Best effort: an edge that cannot reach MLflow still does its work (and stops trying)."""

    job: JobSpec
    kfp_run_id: str | None
    stage: Stage
    edge: str
    round: int = 0
    library: object = None
    _run_id: str | None = None
    _unreachable: bool = False

    def mark(self, state: State) -> None:
        if self._unreachable:
            return
        try:
            if self.library is None:
                from entgan.library.registry import library_for

                self.library = library_for(self.job)
            self._run_id = self._run_id or job_run(self.library, self.kfp_run_id)
            value = json.dumps({"state": state.value, "round": self.round, "at": _now()})
            self.library.tag_run(self._run_id, {f"{EDGE_PROGRESS_TAG}.{self.stage.value}.{self.edge}": value})
        except Exception as err:  # noqa: BLE001 - progress marks never fail the edge's work
            self._unreachable = True
            log(f"{self.edge}: could not mark {state.value} in MLflow: {redact(str(err))}")


def lost_edges(tags: dict[str, str]) -> dict[Stage, dict[str, int]]:
    """From a run's tags: per stage, the edges whose last mark is Running (-> their round);
    their pods stopped without finishing or recording a failure."""
    lost: dict[Stage, dict[str, int]] = {}
    for key, value in tags.items():
        if not key.startswith(EDGE_PROGRESS_TAG + "."):
            continue
        stage, _, edge = key[len(EDGE_PROGRESS_TAG) + 1:].partition(".")
        mark = json.loads(value)
        if mark.get("state") == State.RUNNING.value:
            lost.setdefault(Stage(stage), {})[edge] = int(mark.get("round", 0))
    return lost


def edges_left_out(history: list[StateChange], inspection: dict[str, str]) -> dict[str, str]:
    """{edge: where and why it was left out} over a whole run, for its summary: the edge
    failures in the stage states ('inspection: ...', 'round 2: ...', 'evaluation: ...'), and the
    plan's `inspection` failures (kept even when an edge could not reach MLflow to record one)."""
    found: dict[str, list[str]] = {}
    for change in edge_failures(history):
        where = change.detail.removesuffix(": edge left out")
        found.setdefault(change.edge, []).append(f"{where}: {change.error}" if change.error else where)
    for edge, why in inspection.items():
        found.setdefault(edge, [f"inspection: {why}"])
    return {edge: "; ".join(dict.fromkeys(whys)) for edge, whys in sorted(found.items())}


def run_edge_task(job: JobSpec, kfp_run_id: str, stage: Stage, edge: str, output_path: str | Path, work,
                  round_: int = 0, retries: int = 2, delay: float = 2.0, library=None):
    """Run an edge task's `work()` so that a failing edge does not fail the round; returns what
    `work()` returned, or None when the edge failed.

    A transient error (connection, timeout) is retried `retries` times with doubling delays.
    Any other error, or the last transient one, makes the edge's output a failure record (a
    bundle of kind `edge-failure` naming the edge and the error), records the edge's failure in
    the stage states, and returns None: the task itself succeeds, and the cloud step that
    collects the edges' outputs decides whether enough edges answered (`EdgeQuorum`).
    A task that is killed (out of memory, node lost) writes nothing but its Running mark; KFP
    retries it (`set_retry`). `library`: the task library, if the caller holds one.
    """
    progress = EdgeProgress(job, kfp_run_id, stage, edge, round_, library)
    progress.mark(State.RUNNING)
    for attempt in range(retries + 1):
        try:
            result = work()
            progress.mark(State.COMPLETED)
            return result
        except TRANSIENT_ERRORS as err:
            if attempt == retries:
                error = err
                break
            log(f"{edge}: transient error ({type(err).__name__}: {redact(str(err))}); "
                f"retry {attempt + 1}/{retries} in {delay:.0f}s")
            time.sleep(delay)
            delay *= 2
        except Exception as err:  # noqa: BLE001 - every failure of an edge becomes a record
            error = err
            break
    message = redact(f"{type(error).__name__}: {error}")[:2000]
    save_bundle(output_path, {}, BundleHeader(kind=EDGE_FAILURE, round=round_, edge=edge, extra={"error": message}))
    where = f"round {round_}" if round_ else ("inspection" if stage is Stage.TRAIN else "evaluation")
    log(f"{edge}: {where} failed, going on without this edge: {message}")
    record_failure(job, progress.library, kfp_run_id, stage, f"{where}: edge left out", edge, message)
    progress.mark(State.FAILED)
    return None


def split_failures(paths: list[str]) -> tuple[list[Bundle], dict[str, str], dict[str, str]]:
    """Load the bundles the edges sent: (verified bundles, {edge: its own failure record},
    {edge: why the cloud refused its bundle}). Both kinds of failure leave that edge out.
    A refused bundle (checksum, dtypes, finite values) is named by the edge in its header."""
    bundles, failed, refused = [], {}, {}
    for p in paths:
        try:
            bundle = load_bundle(p)
        except BundleError as err:
            header = read_header(p)
            refused[header.edge if header and header.edge else str(p)] = f"bundle refused: {err}"
            continue
        if bundle.header.kind == EDGE_FAILURE:
            failed[bundle.header.edge or str(p)] = str(bundle.header.extra.get("error", "unknown error"))
        else:
            bundles.append(bundle)
    return bundles, failed, refused


@dataclass(frozen=True)
class EdgeQuorum:
    """How many edges must answer for a cloud step to go on: the job's `train.min_edges`."""

    min_edges: int
    edges: int  # how many edges the job has

    @classmethod
    def of(cls, job: JobSpec) -> EdgeQuorum:
        return cls(job.train.min_edges, len(job.edges))

    @staticmethod
    def refuse(ctx, stage: Stage, refused: dict[str, str], where: str) -> None:
        """Record edges whose output the cloud refused (their own failures are recorded by them)."""
        for edge, why in refused.items():
            log(f"{edge}: {where}: left out: {why}")
            if ctx.library is not None:
                record_failure(ctx.job, ctx.library, ctx.kfp_run_id, stage, f"{where}: edge left out", edge, why)

    def collect(self, ctx, paths: list[str], stage: Stage, where: str) -> tuple[list[Bundle], dict[str, str]]:
        """The edges' verified bundles and {edge: why it is left out}; refusals are recorded."""
        bundles, failed, refused = split_failures(paths)
        self.refuse(ctx, stage, refused, where)
        return bundles, {**failed, **refused}

    def require(self, usable: int, failed: dict[str, str], error: Callable[[str], Exception],
                nobody: str = "") -> None:
        """Raise `error(reasons)` when fewer than `min_edges` edges are usable."""
        if usable < self.min_edges:
            raise error("; ".join(f"{e}: {why}" for e, why in sorted(failed.items())) or nobody)
