"""What every benchmark shares: settings, the clock, the demo data on edges, the referee.

- `Settings`: one object per mode (`full` for `make bench`, `quick` for `make bench-quick`).
- `Clock`: process CPU time and wall time together. Each piece of work is timed on one torch
  thread, so its CPU time is what it would take alone on a dedicated core; that keeps ratios
  honest on a machine that other jobs share. Wall time is recorded beside it.
- `demo_edges`: the bundled demo set written as edge folders with `entgan.job.data.materialize_demo`
  and read back with `entgan.job.data.load_edge`, exactly as an edge task reads it.
- `Referee`: one domain feature network trained on the pooled real training images of every
  demo type, fixed for all contenders, with the real held-out statistics per type. Every FID in
  the benchmarks is `entgan.evaluation.features.fid_from_stats` under this referee. Beside it the referee
  holds the real held-out images' features in the random multi-scale CNN space
  (`entgan.evaluation.two_sample.feature_spaces`), and scores KID (random) with its real-vs-real floor
  (`entgan.evaluation.two_sample.kid_scores`) on the same samples as the FID.
- `federated_c2st`: a generator's C2ST for one type, read as the pipeline reads it (every edge
  holding the type trains a classifier on its training images and tests it on its held-out
  images; counts pooled).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from entgan.evaluation.features import FeatureStats, feature_stats, fid_from_stats
from entgan.evaluation.two_sample import KID, c2st_edge_part, feature_spaces, kid_edge_part, kid_scores, merge_c2st
from entgan.gan.models import FeatureNet, Generator
from entgan.gan.train import train_features
from entgan.job.data import DEMO_SPLIT, is_holdout, load_edge, materialize_demo
from entgan.job.spec import EvalSpec, TrainSpec, load_job

REPO = Path(__file__).resolve().parents[1]
KNOWN_TYPES = ["box", "clutter", "robot", "table"]  # the demo's first four types (entgan.job.data.DEMO_SPLIT)
NEW_TYPE = "pillar"  # arrives later (entgan.job.data.DEMO_WAVES wave 2)


@dataclass(frozen=True)
class Settings:
    """Sizes of one benchmark mode. `batch_size` is the centralized batch; an edge that shares a
    type with `holders - 1` others uses batch_size // holders (the same global batch per step)."""

    mode: str
    per_type: int | None  # demo images per type (None: all 400)
    image_size: int
    width: int
    latent_dim: int
    rounds: int
    local_steps: int
    cloud_steps: int
    batch_size: int
    lr: float
    mu: float
    referee_steps: int
    num_generated: int  # fake images per FID
    target_slack: float  # figures 1-2: target KID = floor + slack x the baseline's final distance above it
    edge_counts: tuple[int, ...]
    transfer_rounds: int
    cas_steps: int  # CAS classifier steps of figure 4's job (and figure 6's second reading)
    cas_seeds: int  # figure 6 trains each CAS classifier this many times (seeds 0, 1, ...) and averages
    throughput_images: int
    throughput_repeats: int
    pipeline: dict  # the train/eval section of the job that figure 4 runs through kfp.local
    pipeline_edges: int  # edges of that job (the demo's split for 1, 2, 4 or 8)
    champion_job: str | None  # job file (from the repo root) whose train section trains figure 6's champions

    def train(self, strategy: str = "entgan", batch_size: int | None = None, **kw) -> TrainSpec:
        """The train section of figures 1-5: the plain G (`ema_decay` None unless given), so these
        figures measure the federated protocol as they always have; the recipe is figure 9's."""
        kw.setdefault("ema_decay", None)
        return TrainSpec(
            strategy=strategy,
            rounds=self.rounds,
            local_steps=self.local_steps,
            cloud_steps=self.cloud_steps,
            batch_size=batch_size or self.batch_size,
            lr=self.lr,
            mu=self.mu,
            latent_dim=self.latent_dim,
            width=self.width,
            image_size=self.image_size,
            **kw,
        )

    def champion_train(self) -> TrainSpec:
        """How figure 6's champions are trained: the train section of `champion_job` (the demo
        job: what `make run` deploys), or, without one, this mode's own settings at the edges'
        half batch (as figures 1 and 2 train)."""
        if self.champion_job is None:
            return self.train("entgan", batch_size=max(1, self.batch_size // 2))
        train = load_job(REPO / self.champion_job).train
        if train.image_size != self.image_size:
            raise ValueError(f"{self.champion_job}: image_size {train.image_size} is not the benchmark's "
                             f"{self.image_size}; the referee scores {self.image_size}x{self.image_size} images")
        return train

    def champion_cas_steps(self) -> int:
        """Steps of figure 6's CAS classifiers: the champion job's `eval.cas_steps` (what the
        pipeline's own CAS uses), or this mode's `cas_steps` without one."""
        return load_job(REPO / self.champion_job).eval.cas_steps if self.champion_job else self.cas_steps

    def evaluation(self) -> EvalSpec:
        # The benchmarks score with the referee, so the edges' own evaluator gets one step a round.
        return EvalSpec(feature_steps=1, feature_dim=64, num_generated=self.num_generated)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


FULL = Settings(
    mode="full", per_type=None, image_size=32, width=16, latent_dim=64,
    rounds=8, local_steps=75, cloud_steps=3, batch_size=32, lr=5e-4, mu=0.01,
    referee_steps=400, num_generated=512, target_slack=1.25, edge_counts=(1, 2, 4, 8),
    transfer_rounds=8, cas_steps=150, cas_seeds=5, throughput_images=4096, throughput_repeats=3,
    pipeline={"rounds": 1, "local_steps": 150, "cloud_steps": 3, "batch_size": 32, "image_size": 32,
              "width": 16, "latent_dim": 64, "feature_steps": 60, "num_generated": 512},
    pipeline_edges=4, champion_job="jobs/demo.yaml",
)

QUICK = Settings(
    mode="quick", per_type=24, image_size=16, width=8, latent_dim=8,
    rounds=2, local_steps=3, cloud_steps=1, batch_size=8, lr=5e-4, mu=0.01,
    referee_steps=5, num_generated=32, target_slack=1.25, edge_counts=(1, 2, 4, 8),
    transfer_rounds=2, cas_steps=3, cas_seeds=2, throughput_images=64, throughput_repeats=1,
    pipeline={"rounds": 1, "local_steps": 2, "cloud_steps": 1, "batch_size": 8, "image_size": 16,
              "width": 8, "latent_dim": 8, "feature_steps": 2, "num_generated": 32},
    pipeline_edges=2, champion_job=None,
)

MODES = {"full": FULL, "quick": QUICK}


# ---------------------------------------------------------------- the clock


class Clock:
    """CPU and wall seconds since `start()`; `lap()` returns both since the last lap."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def lap(self) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        out = (cpu - self.cpu, wall - self.wall)
        self.cpu, self.wall = cpu, wall
        return out


def machine_info() -> dict:
    import kfp
    import mlflow
    import numpy

    from entgan.job.machine import machine

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        **machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_start": load,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "versions": {"torch": torch.__version__, "kfp": kfp.__version__, "mlflow": mlflow.__version__,
                     "numpy": numpy.__version__},
    }


# ---------------------------------------------------------------- data on edges


def edge_split(num_edges: int) -> dict[str, dict[str, float]]:
    """The demo's layout for 1, 2, 4 or 8 edges. Four edges is the demo's own DEMO_SPLIT (every
    type on two edges, 60/40, two types per edge); with two or eight edges every type still lives
    on two edges (four types or one type per edge); one edge holds everything."""
    order = ["box", "table", "robot", "clutter"]  # DEMO_SPLIT's ring order
    if num_edges == 1:
        return {"edge-1": {t: 1.0 for t in order}}
    if num_edges == 2:
        return {"edge-1": {t: (0.6 if i % 2 == 0 else 0.4) for i, t in enumerate(order)},
                "edge-2": {t: (0.4 if i % 2 == 0 else 0.6) for i, t in enumerate(order)}}
    if num_edges == 4:
        return {e: dict(s) for e, s in DEMO_SPLIT.items()}
    if num_edges == 8:
        return {f"edge-{2 * i + 1 + j}": {t: share} for i, t in enumerate(order) for j, share in enumerate((0.6, 0.4))}
    raise ValueError(f"edge_split knows 1, 2, 4 or 8 edges, not {num_edges}")


@dataclass
class EdgeData:
    """Training images per edge and type, and held-out images per type (pooled over edges) and
    per edge and type."""

    train: dict[str, dict[str, torch.Tensor]]  # edge -> type -> images
    holdout: dict[str, torch.Tensor]  # type -> images
    image_bytes: dict[str, int]  # edge -> bytes of its training PNG files
    held: dict[str, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)  # edge -> type -> images

    def pooled(self) -> dict[str, torch.Tensor]:
        types = sorted({t for d in self.train.values() for t in d})
        return {t: torch.cat([d[t] for d in self.train.values() if t in d]) for t in types}

    def holders(self, data_type: str) -> int:
        return sum(data_type in d for d in self.train.values())


def demo_edges(root: Path, split_plan: dict[str, dict[str, float]], settings: Settings,
               holdout_fraction: float = 0.2) -> EdgeData:
    """Write the demo images as edge folders and read them back like an edge task does."""
    materialize_demo(root, split_plan, per_type=settings.per_type)
    train, holdout, sizes, held = {}, {}, {}, {}
    for edge, shares in split_plan.items():
        types = sorted(shares)
        train[edge] = load_edge(root / edge, types, holdout_fraction, settings.image_size, holdout=False)
        held[edge] = load_edge(root / edge, types, holdout_fraction, settings.image_size, holdout=True)
        for t, x in held[edge].items():
            holdout[t] = torch.cat([holdout[t], x]) if t in holdout else x
        sizes[edge] = sum(f.stat().st_size for t in types for f in (root / edge / t).iterdir()
                          if not is_holdout(f.name, holdout_fraction))
    return EdgeData(train, holdout, sizes, held)


# ---------------------------------------------------------------- the referee


KID_MIN_REAL = 4  # kid_with_floor needs at least 4 real images (two halves of two)


@dataclass
class Referee:
    net: FeatureNet
    types: list[str]
    real: dict[str, FeatureStats]  # type -> statistics of its real held-out images
    num_generated: int
    kid_real: dict[str, dict[str, torch.Tensor]] = dataclasses.field(default_factory=dict)  # type -> space -> features
    kid_spaces: dict[str, torch.nn.Module] = dataclasses.field(default_factory=dict)  # {"random": RandomFeatures(0)}

    def fid(self, generator: Generator, data_type: str, seed: int = 0) -> float:
        rng = torch.Generator().manual_seed(seed)
        return fid_from_stats(self.net, self.real[data_type], generator.sample(self.num_generated, generator=rng))

    def fids(self, generators: dict[str, Generator]) -> dict[str, float]:
        return {t: self.fid(g, t) for t, g in generators.items()}

    def score(self, generator: Generator, data_type: str, seed: int = 0) -> tuple[float, KID | None]:
        """Domain-FID and KID (random features, with its floor) of one set of samples; KID is
        None for a type with fewer than KID_MIN_REAL held-out images (quick settings only)."""
        rng = torch.Generator().manual_seed(seed)
        fakes = generator.sample(self.num_generated, generator=rng)
        fid = fid_from_stats(self.net, self.real[data_type], fakes)
        if data_type not in self.kid_real:
            return fid, None
        return fid, kid_scores(self.kid_real[data_type], fakes, self.kid_spaces, seed=seed)["random"]

    def scores(self, generators: dict[str, Generator]) -> tuple[dict[str, float], dict[str, KID]]:
        """FID per type, and KID (random) per type that has one."""
        fids, kids = {}, {}
        for t, g in generators.items():
            fids[t], kid = self.score(g, t)
            if kid is not None:
                kids[t] = kid
        return fids, kids


def train_referee(data: EdgeData, types: list[str], settings: Settings, seed: int = 0) -> Referee:
    """A domain feature network over `types`, trained on their pooled real training images."""
    pooled = data.pooled()
    images = torch.cat([pooled[t] for t in types])
    labels = torch.cat([torch.full((len(pooled[t]),), i) for i, t in enumerate(types)])
    torch.manual_seed(seed)
    net = FeatureNet(len(types), 64, settings.image_size)
    state, _ = train_features(net, images, labels, steps=settings.referee_steps, batch_size=64, seed=seed)
    net.load_state_dict(state)
    net.eval()
    real = {t: feature_stats(net, data.holdout[t]) for t in types}
    spaces = {"random": feature_spaces(None)["random"]}
    kid_real = {t: kid_edge_part(data.holdout[t], spaces) for t in types if len(data.holdout[t]) >= KID_MIN_REAL}
    return Referee(net, types, real, settings.num_generated, kid_real, spaces)


def federated_c2st(generator: Generator, data: EdgeData, data_type: str, *, steps: int, seed: int = 0,
                   rng: torch.Generator | None = None) -> dict | None:
    """The generator's C2ST for `data_type` as the pipeline reads it: at every edge of `data`
    holding the type, a classifier trains `steps` steps on the edge's training images against as
    many samples and is tested on the edge's held-out images against as many other samples
    (`c2st_edge_part`); the counts are pooled (`merge_c2st`, Wilson 95 %). None if no edge has a
    held-out image of the type. `data` is anything with EdgeData's `train` and `held`; samples
    come from `rng` (default: a generator seeded with `seed`)."""
    rng = rng or torch.Generator().manual_seed(seed)
    parts = []
    for edge, types in data.train.items():
        held = data.held.get(edge, {}).get(data_type)
        if data_type not in types or held is None or len(held) == 0:
            continue
        train = types[data_type]
        parts.append(c2st_edge_part(held, generator.sample(len(held) + len(train), generator=rng), seed, steps=steps,
                                    train_images=train))
    if not parts:
        return None
    accuracy, low, high = merge_c2st(parts)
    return {"c2st": accuracy, "c2st_low": low, "c2st_high": high, "c2st_counts": [p.as_dict() for p in parts]}


def held_out_accuracy(referee: Referee, data: EdgeData) -> float:
    """How well the referee tells the types apart on held-out images (a sanity figure)."""
    correct = total = 0
    with torch.no_grad():
        for i, t in enumerate(referee.types):
            predicted = referee.net(data.holdout[t]).argmax(1)
            correct += int((predicted == i).sum())
            total += len(predicted)
    return correct / total


def bench_job(name: str, root: Path, edges: list[str], state_dir: Path, train: dict, evaluation: dict):
    """A JobSpec over the edge folders under `root` (what `entgan run` would be given)."""
    from entgan.job.spec import parse_job

    return parse_job({
        "name": name,
        "edges": [{"name": e, "data": str(root / e)} for e in edges],
        "train": train,
        "eval": evaluation,
        "state_dir": str(state_dir),
    }, source=f"benchmark job {name}")


def pipeline_sections(settings: Settings) -> tuple[dict, dict]:
    """The train and eval sections of the job that figures 3 and 4 run (settings.pipeline)."""
    p = settings.pipeline
    train = {k: p[k] for k in ("rounds", "local_steps", "cloud_steps", "batch_size", "image_size", "width",
                               "latent_dim")}
    train.update(lr=settings.lr, mu=settings.mu, min_edges=1)
    evaluation = {"feature_steps": p["feature_steps"], "num_generated": p["num_generated"],
                  "cas_steps": settings.cas_steps}
    return train, evaluation
