"""Figure 9 — the training-recipe ablation: which ingredients make the demo's champions closer to real?

Every variant trains the demo's types federated on the demo's four edges (entgan.job.data.DEMO_SPLIT,
the demo job's 300 images per type, 20 % held out), in this process on one torch thread
(`strategies.edge_round` / `cloud_round`), starting from the demo job's train section with a few
fields changed (VARIANTS). Then each variant's deployed generators (the EMA G when it keeps one)
are read with the project's evaluation:

- C2ST, federated: at every edge holding the type a classifier (`common.federated_c2st`,
  `C2ST_STEPS` steps) trains on the edge's training images against samples and is tested on the
  edge's held-out images against other samples; counts pooled (`merge_c2st`). 0.5: indistinguishable.
- KID in the random feature space beside its real-vs-real floor (`fidelity.kid_scores`).
- CAS ratio: a classifier trained on samples only, tested on real held-out images, over the
  same classifier trained on the real training images (benchmarks.quality).
- Downstream gain: accuracy of a classifier trained on 10 % of the real images plus samples,
  minus the 10 %-only classifier (benchmarks.downstream).
- CPU seconds of the training (process time, all edges and the cloud one after the other).

`python -m benchmarks.ablation --types box robot --rounds 4 --variants today ema` screens a few
variants at reduced settings; `python -m benchmarks --only ablation` runs the figure.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import downstream
from benchmarks.common import REPO, federated_c2st
from benchmarks.quality import RealImages
from entgan.evaluation.precision_recall_cas import cas_counts, train_cas_classifier
from entgan.evaluation.two_sample import feature_spaces, kid_edge_part, kid_scores, merge_kid_parts
from entgan.gan import strategies
from entgan.job.data import DEMO_SPLIT, load_edge, materialize_demo
from entgan.job.spec import EvalSpec, TrainSpec, load_job

DEMO_JOB = "jobs/demo.yaml"
C2ST_STEPS = {"full": 500, "quick": 5}
PER_TYPE = {"full": 300, "quick": 80}  # wave 1 of `make run`
CAS_SEEDS = {"full": 2, "quick": 1}
BASELINE = {  # the recipe before this figure (jobs/demo.yaml before it changed)
    "strategy": "entgan", "rounds": 8, "local_steps": 150, "cloud_steps": 3, "batch_size": 32, "lr": 5e-4,
    "image_size": 32, "width": 16, "latent_dim": 64, "mu": 0.01, "min_edges": 2, "augment": "", "loss": "bce",
    "spectral_norm": False, "r1_gamma": 0.0, "ema_decay": None, "d_lr_scale": 1.0,
}
DIFFAUG = "color,translation,cutout"
VARIANTS: dict[str, dict] = {
    "today": {},
    "ema": {"ema_decay": 0.99},
    "diffaug": {"augment": DIFFAUG},
    "diffaug_tc": {"augment": "translation,cutout"},
    "sn_hinge_dlr2": {"spectral_norm": True, "loss": "hinge", "d_lr_scale": 2.0},
    "sn_hinge_dlr4": {"spectral_norm": True, "loss": "hinge", "d_lr_scale": 4.0},
    "r1": {"r1_gamma": 0.1},
    "combination": {"augment": DIFFAUG, "ema_decay": 0.99, "r1_gamma": 0.1},
    "width32_fewer_steps": {"width": 32, "local_steps": 70},
    "fedgan": {"strategy": "fedgan"},
    "cloud_steps_30": {"cloud_steps": 30},
    # phase 3: width 32 at half the batch per edge (a type's two edges average to 32 images a step)
    "width32_batch16": {"width": 32, "batch_size": 16, "ema_decay": 0.99},
    "width32_batch16_ema995": {"width": 32, "batch_size": 16, "ema_decay": 0.995},
    "width32_batch16_225_steps": {"width": 32, "batch_size": 16, "ema_decay": 0.99, "local_steps": 225},
    # phase 4 (docs/performance.md), against DEMO_A578639: a lean D, FastGAN's SLE + self-supervised D
    "demo_a578639": {},
    "d_width16": {"d_width": 16},
    "light": {"architecture": "light"},
    "light_d_width16": {"architecture": "light", "d_width": 16},
    "d_width16_150_steps": {"d_width": 16, "local_steps": 150},
    "light_d_width16_150_steps": {"architecture": "light", "d_width": 16, "local_steps": 150},
    "light_d_width16_diffaug": {"architecture": "light", "d_width": 16, "augment": "translation,cutout"},
    "batch8": {"batch_size": 8},
    "light_batch8": {"architecture": "light", "batch_size": 8},
}
# The demo's recipe at a578639 (width 32, batch 16, 225 local steps, EMA 0.99): phase 4's base.
DEMO_A578639 = {**BASELINE, "width": 32, "batch_size": 16, "local_steps": 225, "ema_decay": 0.99}
BASES = {"baseline": BASELINE, "demo_a578639": DEMO_A578639}


@dataclass
class DemoData:
    """The demo's edges: training images per edge and type, held-out images per edge and type."""

    train: dict[str, dict[str, torch.Tensor]]
    held: dict[str, dict[str, torch.Tensor]]

    def of_type(self, t: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(held-out, training) images of `t` at every edge holding it."""
        return [(self.held[e][t], self.train[e][t]) for e in self.train if t in self.train[e]]

    def pooled(self, t: str, which: str = "train") -> torch.Tensor:
        parts = self.train if which == "train" else self.held
        return torch.cat([d[t] for d in parts.values() if t in d])


def demo_data(root: Path, types: list[str], per_type: int, image_size: int) -> DemoData:
    materialize_demo(root, DEMO_SPLIT, per_type=per_type)
    train, held = {}, {}
    for edge, shares in DEMO_SPLIT.items():
        mine = sorted(t for t in shares if t in types)
        if mine:
            train[edge] = load_edge(root / edge, mine, 0.2, image_size, holdout=False)
            held[edge] = load_edge(root / edge, mine, 0.2, image_size, holdout=True)
    return DemoData(train, held)


def train_variant(data: DemoData, types: list[str], train: TrainSpec) -> tuple[dict, float]:
    """Federated training of `types`; the final state and the training's CPU seconds."""
    evaluation = EvalSpec(feature_steps=1, feature_dim=64)
    state = strategies.initial_state(types, train, evaluation)
    start = time.process_time()
    for round_ in range(1, train.rounds + 1):
        updates = [strategies.edge_round(e, state, d, types, train, evaluation, round_=round_)
                   for e, d in data.train.items()]
        state, _ = strategies.cloud_round(state, updates, train, round_=round_)
    return state, time.process_time() - start


def score(generators: dict, data: DemoData, types: list[str], *, c2st_steps: int, cas_steps: int,
          cas_seeds: int, image_size: int, real_cas: dict | None = None) -> dict:
    """Per type C2ST and KID/floor; CAS ratio and downstream gain over the types."""
    spaces = feature_spaces(None)
    out: dict = {"types": {}}
    for t in types:
        rng = torch.Generator().manual_seed(0)
        g = generators[t]
        c2st = federated_c2st(g, data, t, steps=c2st_steps, rng=rng)
        real = merge_kid_parts([kid_edge_part(h, spaces) for h, _ in data.of_type(t)])
        kid = kid_scores(real, g.sample(512, generator=rng), spaces)["random"]
        out["types"][t] = {"c2st": c2st["c2st"], "c2st_low": c2st["c2st_low"], "c2st_high": c2st["c2st_high"],
                           "kid": kid.kid, "kid_floor": kid.floor,
                           "kid_over_floor": kid.kid / kid.floor if kid.floor > 0 else None}
    pooled = {t: data.pooled(t) for t in types}
    holdout = {t: data.pooled(t, "held") for t in types}
    real_cas = real_cas or cas_of({t: RealImages(pooled[t]) for t in types}, types, holdout,
                                  steps=cas_steps, seeds=cas_seeds, image_size=image_size)
    synthetic = cas_of(generators, types, holdout, steps=cas_steps, seeds=cas_seeds, image_size=image_size)
    out["cas_ratio"] = synthetic / real_cas if real_cas else None
    out["real_cas"] = real_cas
    conditions = downstream.measure(generators, pooled, holdout, image_size=image_size, steps=cas_steps,
                                    batch_size=64, seeds=cas_seeds)
    out["downstream_gain"] = conditions["real_10_plus_synthetic"]["mean"] - conditions["real_10"]["mean"]
    out["c2st_mean"] = sum(r["c2st"] for r in out["types"].values()) / len(types)
    return out


def cas_of(sources: dict, types: list[str], holdout: dict, *, steps: int, seeds: int, image_size: int) -> float:
    """Held-out accuracy of a type classifier trained on `sources` only, mean over seeds."""
    accuracies = []
    for seed in range(seeds):
        net = train_cas_classifier(sources, types, image_size=image_size, steps=steps, batch_size=64, seed=seed)
        counts = [cas_counts(net, holdout[t], i) for i, t in enumerate(types)]
        accuracies.append(sum(c for c, _ in counts) / sum(n for _, n in counts))
    return sum(accuracies) / len(accuracies)


def variant_train(name: str, base: dict, **overrides) -> TrainSpec:
    return TrainSpec(**{**base, **VARIANTS[name], **overrides})


def ablation(workdir: Path, mode: str, types: list[str], variants: list[str], *, base: dict | None = None,
             rounds: int | None = None, samples: Path | None = None, log=print) -> dict:
    """Every variant trained and scored; `base` is the recipe the variants change (BASELINE)."""
    base = dict(base or BASELINE)
    cas_steps = load_job(REPO / DEMO_JOB).eval.cas_steps
    if mode == "quick":
        base.update(rounds=1, local_steps=2, cloud_steps=1, batch_size=8, image_size=16, width=8, latent_dim=8)
        cas_steps = 3
    if rounds:
        base["rounds"] = rounds
    data = demo_data(workdir / "demo", types, PER_TYPE[mode], base["image_size"])
    pooled = {t: data.pooled(t) for t in types}
    holdout = {t: data.pooled(t, "held") for t in types}
    real_cas = cas_of({t: RealImages(pooled[t]) for t in types}, types, holdout,
                      steps=cas_steps, seeds=CAS_SEEDS[mode], image_size=base["image_size"])
    rows = {}
    for name in variants:
        train = variant_train(name, base, **({"width": 8, "local_steps": 2} if mode == "quick" and
                                             name == "width32_fewer_steps" else {}))
        state, cpu = train_variant(data, types, train)
        generators = {t: strategies.load_generator(state, t, train) for t in types}
        row = score(generators, data, types, c2st_steps=C2ST_STEPS[mode], cas_steps=cas_steps,
                    cas_seeds=CAS_SEEDS[mode], image_size=train.image_size, real_cas=real_cas)
        row.update(train_cpu_s=cpu, changes=VARIANTS[name])
        rows[name] = row
        log(f"[ablation] {name}: cpu {cpu:.0f}s c2st {row['c2st_mean']:.3f} "
            + " ".join(f"{t}={r['c2st']:.2f} (KID {r['kid']:.3f}, floor {r['kid_floor']:.3f})" for t, r in row["types"].items())
            + f" cas {row['cas_ratio']:.2f} gain {row['downstream_gain']:+.3f}")
        if samples is not None:
            save_grid(generators, samples / f"{name}.png")
    met = {name: meets_target(row) for name, row in rows.items()}
    return {"what": "training-recipe ablation on the demo data: per type federated C2ST, KID/floor, CAS ratio, "
                    "downstream gain and training CPU seconds per variant",
            "how": f"{base['rounds']} rounds x {base['local_steps']} local steps on the demo's 4 edges, "
                   f"{PER_TYPE[mode]} images per type; C2ST {C2ST_STEPS[mode]} steps; CAS {cas_steps} steps x "
                   f"{CAS_SEEDS[mode]} seeds; one torch thread",
            "base": base, "types": types, "variants": rows,
            "target": {**TARGET, "met_by": [n for n, ok in met.items() if ok], "met": any(met.values())}}


TARGET = {"c2st_mean_max": 0.80, "c2st_type_max": 0.90, "cas_ratio_min": 0.90, "downstream_gain_min": 0.0}


def meets_target(row: dict) -> bool:
    """Issue 16's target for the demo champions."""
    return (row["c2st_mean"] <= TARGET["c2st_mean_max"]
            and all(r["c2st"] < TARGET["c2st_type_max"] for r in row["types"].values())
            and (row["cas_ratio"] or 0) >= TARGET["cas_ratio_min"] and row["downstream_gain"] > 0)


def save_grid(generators: dict, path: Path) -> None:
    """Eight samples per type, one row per type."""
    from torchvision.utils import save_image
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [g.sample(8, generator=torch.Generator().manual_seed(1)) for g in generators.values()]
    save_image(torch.cat(rows) * 0.5 + 0.5, path, nrow=8, padding=1)


def run(settings, workdir: Path) -> dict:
    """Figure 9 as part of `python -m benchmarks`: every variant on the demo's four types (quick
    mode: three variants on two types, a smoke test)."""
    if settings.mode == "quick":
        return ablation(workdir / "ablation", "quick", ["box", "robot"], ["today", "combination", "fedgan"])
    return ablation(workdir / "ablation", settings.mode, ["box", "clutter", "robot", "table"], list(VARIANTS))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--types", nargs="+", default=["box", "clutter", "robot", "table"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--base", choices=list(BASES), default="baseline", help="the recipe the variants change")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = ablation(args.workdir, "quick" if args.quick else "full", args.types, args.variants,
                      base=BASES[args.base], rounds=args.rounds, samples=args.out.with_suffix(""))
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
