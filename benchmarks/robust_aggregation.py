"""Robust aggregation against one bad edge out of four: the figures behind `train.aggregation`.

Four edges hold the demo's `box` images (IID shares). Every round each edge trains locally
(`strategies.edge_round`, the real edge code) and the cloud aggregates (`strategies.cloud_round`,
the real cloud code). In the attacked runs edge-4 sends, every round, weights that are
- `scaled`: multiplied by 10,
- `noisy`:  plus Gaussian noise (std 1),
- `nan`:    NaN everywhere
(its sample count is honest). The final global generator is scored by domain-feature FID
against the real held-out `box` images under one fixed referee feature network.

    python -m benchmarks.robust_aggregation            # ~10 min on 2 cores
    python -m benchmarks.robust_aggregation --quick    # fewer rounds, a smoke run

Prints one line per (aggregation, attack) and, per aggregation, the change against its own
clean run. In the pipeline a NaN update never reaches aggregation (bundle verification refuses
it and the edge is left out); here it is sent straight to the arithmetic to show what FedAvg
alone would do with it.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from entgan.evaluation.features import feature_stats, fid_from_stats
from entgan.gan.models import FeatureNet
from entgan.gan.strategies import cloud_round, edge_round, initial_state, load_generator
from entgan.gan.train import train_features
from entgan.job.data import demo_dataset, to_tensor
from entgan.job.spec import EvalSpec, TrainSpec

EDGES = ["edge-1", "edge-2", "edge-3", "edge-4"]
ATTACKER = "edge-4"
ATTACKS = ["none", "scaled", "noisy", "nan"]
AGGREGATIONS = {  # name -> TrainSpec settings
    "fedavg": {"aggregation": "fedavg", "clip_norm": None},
    "median": {"aggregation": "median", "clip_norm": "median"},
    "trimmed_mean": {"aggregation": "trimmed_mean", "clip_norm": "median", "trim_fraction": 0.25},
}


def attack(groups: dict, kind: str, seed: int) -> dict:
    """The weights a bad edge sends instead of its honest `groups`."""
    rng = torch.Generator().manual_seed(seed)
    out = {}
    for group, state in groups.items():
        out[group] = {}
        for key, t in state.items():
            if not t.is_floating_point() or kind == "none":
                out[group][key] = t
            elif kind == "scaled":
                out[group][key] = t * 10
            elif kind == "noisy":
                out[group][key] = t + torch.randn(t.shape, generator=rng)
            elif kind == "nan":
                out[group][key] = torch.full_like(t, float("nan"))
    return out


def referee(images: dict[str, torch.Tensor], holdout: torch.Tensor, evaluation: EvalSpec, steps: int):
    """A feature network trained on every demo type, fixed for all runs, and the real statistics."""
    types = sorted(images)
    torch.manual_seed(0)
    net = FeatureNet(len(types), evaluation.feature_dim, holdout.shape[-1])
    x = torch.cat([images[t] for t in types])
    y = torch.cat([torch.full((len(images[t]),), i) for i, t in enumerate(types)])
    state, _ = train_features(net, x, y, steps=steps, batch_size=64, seed=0)
    net.load_state_dict(state)
    return net, feature_stats(net, holdout)


def run(train: TrainSpec, evaluation: EvalSpec, shards: dict[str, torch.Tensor], kind: str) -> dict:
    state = initial_state(["box"], train, evaluation)
    for round_ in range(1, train.rounds + 1):
        updates = []
        for edge in EDGES:
            update = edge_round(edge, state, {"box": shards[edge]}, ["box"], train, evaluation, round_=round_)
            if edge == ATTACKER:
                update.groups = attack(update.groups, kind, seed=round_)
            updates.append(update)
        state, _ = cloud_round(state, updates, train, round_=round_)
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 20 steps (a smoke run)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds, steps = (2, 20) if args.quick else (6, 60)
    size = 16
    images, labels, names = demo_dataset()
    per_type = {}
    for i, name in enumerate(names):
        small = torch.nn.functional.interpolate(to_tensor(images[labels == i]), size=size, mode="area")
        per_type[name] = small
    box = per_type["box"][np.random.default_rng(0).permutation(len(per_type["box"]))]
    holdout, train_images = box[:80], box[80:]
    shards = {e: train_images[i::4] for i, e in enumerate(EDGES)}
    evaluation = EvalSpec(feature_dim=32, feature_steps=10)
    net, real = referee({t: x[80:] for t, x in per_type.items()}, holdout, evaluation, steps=60 if args.quick else 300)

    results: dict[str, dict[str, float]] = {}
    for name, settings in AGGREGATIONS.items():
        train = TrainSpec(rounds=rounds, local_steps=steps, batch_size=32, image_size=size, width=16,
                          latent_dim=32, lr=5e-4, **settings)
        for kind in ATTACKS:
            started = time.perf_counter()
            try:
                state = run(train, evaluation, shards, kind)
                fakes = load_generator(state, "box", train).sample(512, generator=torch.Generator().manual_seed(0))
                fid = fid_from_stats(net, real, fakes) if torch.isfinite(fakes).all() else math.nan
            except Exception as err:  # noqa: BLE001 - a broken aggregate is a result here
                print(f"  {name} / {kind}: {type(err).__name__}: {err}")
                fid = math.nan
            results.setdefault(name, {})[kind] = fid
            print(f"{name:<13} attack={kind:<7} FID {fid:8.2f}   ({time.perf_counter() - started:.0f} s)", flush=True)

    print("\nFID of the final generator (lower is better); change against the same aggregation's clean run")
    print(f"{'aggregation':<13} " + " ".join(f"{k:>16}" for k in ATTACKS))
    for name, row in results.items():
        clean = row["none"]
        cells = []
        for kind in ATTACKS:
            fid = row[kind]
            change = "" if kind == "none" or not math.isfinite(fid) else f" ({(fid - clean) / clean:+.0%})"
            cells.append(f"{fid:.2f}{change}" if math.isfinite(fid) else "NaN (broken)")
        print(f"{name:<13} " + " ".join(f"{c:>16}" for c in cells))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": rounds, "local_steps": steps, "image_size": size, "fid": results}, f, indent=2)


if __name__ == "__main__":
    main()
