"""What every stage shares: the task's context, progress lines, threads, the global state file."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from entgan.gan.bundle import BundleHeader, load_bundle, pack, save_bundle
from entgan.job.spec import JobSpec


@dataclass
class TaskContext:
    """Who runs a task: the job, its KFP run (the key of its MLflow run), and where.

    `library` is the task library (cloud tasks open it; None records nothing); `edge` and
    `round` are set for edge tasks and per-round tasks."""

    job: JobSpec
    kfp_run_id: str | None = None
    library: object = None
    edge: str | None = None
    round: int = 0


def log(message: str) -> None:
    """Progress for humans: one flushed line (KFP and kfp.local show task stdout)."""
    print(f"[entgan {time.strftime('%H:%M:%S')}] {message}", flush=True)


def configure_threads() -> None:
    """Edge steps honour ENTGAN_NUM_THREADS (set by `entgan run` so that the two edge tasks that
    kfp.local runs at once share the cores); cloud steps run alone and use them all."""
    threads = os.environ.get("ENTGAN_NUM_THREADS")
    if threads:
        torch.set_num_threads(max(1, int(threads)))


def save_state(path: str | Path, state: dict, round_: int, types: list[str], extra: dict | None = None) -> None:
    """Write a global state (generators, discriminators, feature network) as a bundle."""
    header = BundleHeader(kind="global-state", round=round_, extra={"types": types, **(extra or {})})
    save_bundle(path, pack(state), header)


def load_state(path: str | Path) -> dict:
    return load_bundle(path).groups()


def round_file(round_: int) -> str:
    """Where the job's MLflow run keeps the global generators after `round_`."""
    return f"rounds/round-{round_:03d}.safetensors"
