"""How long things may take on a cluster, and how often a dying task is tried again.

The pipeline compiles these in (pipelines/entgan_pipeline.py); `finish` reads the run deadline to
say when a run stopped because it had passed. The product is bounded: every try of an edge task
may use its whole pod deadline, so `tries x edge_task_s` plus the backoffs must end before the
run deadline, or a hung edge would turn into a run that only the run deadline stops, with no
round left to finish (docs/kubeflow.md, "GPUs and deadlines").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Deadlines:
    """`edge_task_s`: one edge task's pod, counted from when it runs on its node (a hung
    training); `run_s`: the whole run, Pending pods included (an edge that no node accepts).
    `retries`, with a backoff of `backoff_s` doubling up to `backoff_max_s`: what KFP's
    `set_retry` gives a task whose pod dies (Argo retries `Failed` pods: OOM kill, eviction,
    its own deadline; a lost node is `Error` and is not retried)."""

    edge_task_s: int = 6 * 3600
    run_s: int = 24 * 3600
    retries: int = 2
    backoff_s: int = 30
    backoff_max_s: int = 300

    def __post_init__(self) -> None:
        if self.worst_edge_task_s() > self.run_s:
            raise ValueError(
                f"an edge task may take {self.retries + 1} tries x {self.edge_task_s} s plus backoff = "
                f"{self.worst_edge_task_s()} s, longer than the run deadline of {self.run_s} s: lower "
                "edge_task_s or retries, or raise run_s")

    def backoffs_s(self) -> list[int]:
        return [min(self.backoff_s * 2**i, self.backoff_max_s) for i in range(self.retries)]

    def worst_edge_task_s(self) -> int:
        """The longest one edge task can hold its round: every try hits its pod deadline."""
        return (self.retries + 1) * self.edge_task_s + sum(self.backoffs_s())
