"""Contenders for the training benchmarks, timed as a critical path, scored after every round.

Parallel edges are measured as the critical path: every edge's round is run for real, one after
the other, in this process on one torch thread, and timed on its own; a round costs its slowest
edge plus the cloud step. Centralized training is one node, so its cost is the sum of its work.
Scoring (the referee's domain-FID and KID in random features, `Referee.scores`) happens between
rounds and is never on the clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from benchmarks.common import Clock, Referee
from entgan.evaluation.two_sample import KID
from entgan.gan import strategies
from entgan.gan.aggregate import StateDict
from entgan.gan.train import train_local
from entgan.job.spec import EvalSpec, TrainSpec


@dataclass
class Curve:
    """Quality over time of one contender: one point per round (index 0: before training).

    Two readings per point, each the mean over the types: domain-FID under the referee (`fid`),
    and KID in the random feature space (`kid`) beside its real-vs-real floor (`kid_floor`, the
    same at every point: it depends on the real images only). Types with too few held-out images
    for KID (quick settings) are left out of the KID mean."""

    name: str
    cpu: list[float] = field(default_factory=list)  # critical-path CPU seconds so far
    wall: list[float] = field(default_factory=list)  # critical-path wall seconds so far
    fid: list[float] = field(default_factory=list)  # mean FID over the types
    fid_per_type: list[dict[str, float]] = field(default_factory=list)
    kid: list[float | None] = field(default_factory=list)  # mean KID (random features) over the types
    kid_per_type: list[dict[str, dict[str, float]]] = field(default_factory=list)  # type -> KID.as_dict()
    details: dict = field(default_factory=dict)

    def add(self, cpu: float, wall: float, fids: dict[str, float], kids: dict[str, KID] | None = None) -> None:
        kids = kids or {}
        self.cpu.append(cpu)
        self.wall.append(wall)
        self.fid_per_type.append(fids)
        self.fid.append(sum(fids.values()) / len(fids))
        self.kid_per_type.append({t: k.as_dict() for t, k in kids.items()})
        self.kid.append(sum(k.kid for k in kids.values()) / len(kids) if kids else None)

    @property
    def kid_floor(self) -> float | None:
        """Mean over the types of the real-vs-real floor (None without KID)."""
        last = self.kid_per_type[-1] if self.kid_per_type else {}
        return sum(k["kid_floor"] for k in last.values()) / len(last) if last else None

    @property
    def kid_floor_std(self) -> float | None:
        """Mean over the types of the floor's spread over subsets (the noise of one reading)."""
        last = self.kid_per_type[-1] if self.kid_per_type else {}
        return sum(k["kid_floor_std"] for k in last.values()) / len(last) if last else None

    def reached(self, target: float, metric: str = "fid") -> int | None:
        """The first point whose `metric` ("fid" or "kid") is at or below `target`, or None."""
        values = self.fid if metric == "fid" else self.kid
        return next((i for i, v in enumerate(values) if v is not None and v <= target), None)

    def as_dict(self, target: float | None = None, metric: str = "fid") -> dict:
        out = {"cpu_s": self.cpu, "wall_s": self.wall, "fid": self.fid, "fid_per_type": self.fid_per_type,
               "final_fid": self.fid[-1], "kid": self.kid, "kid_per_type": self.kid_per_type,
               "final_kid": self.kid[-1] if self.kid else None, "kid_floor": self.kid_floor,
               "kid_floor_std": self.kid_floor_std, **self.details}
        if target is not None:
            i = self.reached(target, metric)
            out.update(target_metric=metric, reached_at_round=i, time_to_target_s=None if i is None else self.cpu[i],
                       wall_to_target_s=None if i is None else self.wall[i])
        return out


def run_federated(
    name: str,
    edges: dict[str, dict[str, torch.Tensor]],
    types: list[str],
    train: TrainSpec,
    evaluation: EvalSpec,
    referee: Referee,
    *,
    start: dict[str, StateDict] | None = None,
) -> tuple[Curve, dict[str, StateDict]]:
    """`train.rounds` rounds of `train.strategy` over `edges` (edge -> type -> images)."""
    state = start or strategies.initial_state(types, train, evaluation)
    curve = Curve(name)
    curve.add(0.0, 0.0, *referee.scores({t: strategies.load_generator(state, t, train) for t in types}))
    rounds = []
    cpu_total = wall_total = 0.0
    for round_ in range(1, train.rounds + 1):
        updates, edge_cpu, edge_wall = [], {}, {}
        for edge, data in edges.items():
            clock = Clock()
            updates.append(strategies.edge_round(edge, state, data, types, train, evaluation, round_=round_))
            edge_cpu[edge], edge_wall[edge] = clock.lap()
        clock = Clock()
        state, _ = strategies.cloud_round(state, updates, train, round_=round_)
        cloud_cpu, cloud_wall = clock.lap()
        slowest = max(edge_cpu, key=edge_cpu.get)
        cpu_total += edge_cpu[slowest] + cloud_cpu
        wall_total += edge_wall[slowest] + cloud_wall
        rounds.append({"edge_cpu_s": edge_cpu, "cloud_cpu_s": cloud_cpu, "slowest_edge": slowest})
        generators = {t: strategies.load_generator(state, t, train) for t in types}
        curve.add(cpu_total, wall_total, *referee.scores(generators))
    curve.details = {"strategy": train.strategy, "edges": len(edges), "rounds": rounds,
                     "batch_per_edge": train.batch_size, "local_steps": train.local_steps,
                     "cloud_steps": train.cloud_steps if train.strategy == "entgan" else 0,
                     "types_per_edge": max(len(d) for d in edges.values())}
    return curve, state


def run_centralized(
    name: str, pooled: dict[str, torch.Tensor], train: TrainSpec, referee: Referee
) -> tuple[Curve, dict[str, StateDict]]:
    """`strategies.train_centralized`, step for step (same seeds), with a snapshot of each type's
    generator every `local_steps` steps: one node, so a point costs the sum over the types."""
    steps, every = train.rounds * train.local_steps, train.local_steps
    snapshots: dict[str, list[StateDict]] = {}
    times: dict[str, list[tuple[float, float]]] = {}
    state: dict[str, StateDict] = {}
    for i, (data_type, images) in enumerate(sorted(pooled.items())):
        torch.manual_seed(train.seed * 1000 + i)
        generator, discriminator = strategies.new_generator(train), strategies.new_discriminator(train)
        snapshots[data_type] = [{k: v.clone() for k, v in generator.state_dict().items()}]
        times[data_type] = [(0.0, 0.0)]
        clock, spent = Clock(), [0.0, 0.0]

        def checkpoint(step: int, _steps: int, _losses: dict, data_type=data_type, generator=generator,
                       clock=clock, spent=spent) -> None:
            if step % every == 0:
                cpu, wall = clock.lap()
                spent[0] += cpu
                spent[1] += wall
                times[data_type].append(tuple(spent))
                snapshots[data_type].append({k: v.detach().clone() for k, v in generator.state_dict().items()})
                clock.lap()  # the snapshot is not training time

        result = train_local(generator, discriminator, images, steps=steps, batch_size=train.batch_size,
                             lr=train.lr, seed=train.seed + i, progress=checkpoint)
        state[f"{data_type}/G"], state[f"{data_type}/D"] = result.generator, result.discriminator
    curve = Curve(name)
    types = sorted(pooled)
    for point in range(train.rounds + 1):
        generators = {}
        for t in types:
            generators[t] = strategies.new_generator(train)
            generators[t].load_state_dict(snapshots[t][point])
        curve.add(sum(times[t][point][0] for t in types), sum(times[t][point][1] for t in types),
                  *referee.scores(generators))
    curve.details = {"strategy": "centralized", "edges": 1, "batch": train.batch_size, "steps_per_type": steps,
                     "types_per_edge": len(types)}
    return curve, state
