"""Figure 2 — lifelong transfer: a new type warm-started from its nearest known task vs scratch.

The known types' champions are the final generators and discriminators of figure 1's `entgan`
run on 4 edges. The new type (`pillar`) arrives at edge-2 and edge-4, half each (the lifelong
demo's wave 2). Its nearest known task is found as the pipeline's plan step finds it
(`entgan.steps.plan.nearest_task`: Fréchet distance between feature statistics, here under the
referee). Both contenders then train pillar with strategy `entgan` on those two edges for the
same rounds: one from the parent's G and D (warm), one from fresh weights (scratch).

Quality is read as in figure 1: KID in random multi-scale CNN features, beside its real-vs-real
floor, with the target on the distance above the floor (`speedup.kid_target`, scratch's curve in
centralized's place):

    target KID = floor + target_slack x max(scratch's final KID - floor, floor spread)

The ratio is warm's time to target over scratch's (critical-path CPU time, as in figure 1).
Target: <= 0.5. Recorded beside it: what the plan's warm-start rule
(`entgan.steps.plan.warm_start_parent`: warm only when the parent's relative distance is at most
WARM_START_MAX_RELATIVE) chooses for the new type here, and domain-FID at every round.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.common import KNOWN_TYPES, NEW_TYPE, Referee, Settings, demo_edges
from benchmarks.speedup import kid_target
from benchmarks.training import run_federated
from entgan.evaluation.features import feature_stats
from entgan.gan import strategies
from entgan.gan.aggregate import StateDict
from entgan.steps.plan import WARM_START_MAX_RELATIVE, nearest_task, relative_distance

TRANSFER_TARGET = 0.5
ARRIVAL = {"edge-2": {NEW_TYPE: 0.5}, "edge-4": {NEW_TYPE: 0.5}}  # entgan.job.data.DEMO_WAVES[2]


def nearest_known(referee: Referee, arrived: torch.Tensor) -> tuple[str, float]:
    """The known type closest to the new type's images, and the distance (as the plan step finds it)."""
    return nearest_task(feature_stats(referee.net, arrived), {t: referee.real[t] for t in KNOWN_TYPES})


def warm_start(scratch_start: dict[str, StateDict], champions: dict[str, StateDict], parent: str) -> dict:
    """`scratch_start` with the new type's G and D taken from the parent's champion."""
    start = dict(scratch_start)
    start[f"{NEW_TYPE}/G"], start[f"{NEW_TYPE}/D"] = champions[f"{parent}/G"], champions[f"{parent}/D"]
    return start


def run(settings: Settings, workdir: Path, referee: Referee, champions: dict[str, StateDict]) -> dict:
    data = demo_edges(workdir / "edges-new", ARRIVAL, settings)
    parent, distance = nearest_known(referee, data.pooled()[NEW_TYPE])
    train = settings.train("entgan", batch_size=max(1, settings.batch_size // 2))
    train = train.model_copy(update={"rounds": settings.transfer_rounds})
    evaluation = settings.evaluation()
    scratch_start = strategies.initial_state([NEW_TYPE], train, evaluation)
    curves = {}
    curves["warm"], _ = run_federated("warm", data.train, [NEW_TYPE], train, evaluation, referee,
                                      start=warm_start(scratch_start, champions, parent))
    curves["scratch"], _ = run_federated("scratch", data.train, [NEW_TYPE], train, evaluation, referee,
                                         start=scratch_start)
    target = kid_target(curves["scratch"], settings.target_slack)
    entries = {name: c.as_dict(target["target_kid"], "kid") for name, c in curves.items()}
    warm, scratch = entries["warm"], entries["scratch"]
    time_ratio = rounds_ratio = None
    if warm["reached_at_round"] is not None and scratch["time_to_target_s"]:
        time_ratio = warm["time_to_target_s"] / scratch["time_to_target_s"]
        rounds_ratio = warm["reached_at_round"] / scratch["reached_at_round"]
    relative = relative_distance(distance, {t: referee.real[t] for t in KNOWN_TYPES})
    rule = "warm" if relative is not None and relative <= WARM_START_MAX_RELATIVE else "scratch"
    figure = {
        "what": f"rounds and critical-path CPU time for a new type ({NEW_TYPE}) to reach the target KID in random "
                "multi-scale CNN features (beside its real-vs-real floor), "
                "warm-started from its nearest known task vs from scratch",
        "how": "2 edges (edge-2, edge-4, half the images each), strategy entgan, batch_size//2 per edge; "
               "known champions = figure 1's entgan-4 final state; nearest task by Fréchet distance of "
               "referee feature statistics (entgan.steps.plan.nearest_task)",
        "new_type": NEW_TYPE,
        "parent": parent,
        "parent_distance": distance,
        # What the plan step's warm-start rule (entgan.steps.plan.warm_start_parent) would choose here.
        "relative_distance": relative,
        "warm_start_max_relative": WARM_START_MAX_RELATIVE,
        "rule_chooses": rule,
        **{k: v for k, v in target.items() if k != "centralized_final_excess"},
        "scratch_final_excess": target["centralized_final_excess"],
        "target_rule": f"floor + {settings.target_slack} x max(scratch's final mean KID - floor, floor spread)",
        "contenders": entries,
        "time_ratio": time_ratio,
        "rounds_ratio": rounds_ratio,
        "target": {"time_ratio_at_most": TRANSFER_TARGET,
                   "met": bool(time_ratio is not None and time_ratio <= TRANSFER_TARGET)},
        "settings": train.model_dump(),
    }
    return figure
