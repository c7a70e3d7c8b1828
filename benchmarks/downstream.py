"""Figure 8 — downstream gain: does synthetic data help a type classifier when real data is scarce?

A type classifier (the domain feature network's architecture, `entgan.evaluation.precision_recall_cas.train_cas_classifier`:
balanced batches, random flips and shifts) is trained on

- `real_10`: a random REAL_SHARE (10 %) of each type's real training images,
- `real_10_plus_synthetic`: the same images, with the champions' samples added (each batch half
  real, half synthetic, per type),
- `all_real`: every real training image,
- `synthetic_only`: only the champions' samples (this is CAS's classifier),

and tested on the real held-out images of every type. Each condition is trained with `seeds`
classifier seeds (the 10 % share is redrawn with the seed); the figure is the mean accuracy and
its spread (min, max, standard deviation). Target: adding the synthetic images raises the 10 %
classifier's mean accuracy by more than the spread of its seeds (the data factory's value).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from benchmarks.quality import RealImages
from entgan.evaluation.precision_recall_cas import cas_counts, train_cas_classifier

REAL_SHARE = 0.1
CONDITIONS = ("real_10", "real_10_plus_synthetic", "all_real", "synthetic_only")


class Mixed:
    """Samples half from real images and half from a generator (a batch of the augmented set)."""

    def __init__(self, real: torch.Tensor, generator) -> None:
        self.real, self.generator = real, generator

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        from_real = n // 2 + (n % 2) * int(torch.randint(0, 2, (1,), generator=generator))
        parts = [self.real[torch.randint(0, len(self.real), (from_real,), generator=generator)]]
        if n - from_real:
            parts.append(self.generator.sample(n - from_real, generator=generator))
        return torch.cat(parts)


def share(images: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """A random `fraction` of `images` (at least one image)."""
    keep = max(1, round(fraction * len(images)))
    return images[torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:keep]]


def sources(condition: str, types: list[str], pooled: dict[str, torch.Tensor], generators: dict, seed: int) -> dict:
    """What the classifier of `condition` samples its training batches from, per type."""
    if condition == "real_10":
        return {t: RealImages(share(pooled[t], REAL_SHARE, seed)) for t in types}
    if condition == "real_10_plus_synthetic":
        return {t: Mixed(share(pooled[t], REAL_SHARE, seed), generators[t]) for t in types}
    if condition == "all_real":
        return {t: RealImages(pooled[t]) for t in types}
    if condition == "synthetic_only":
        return {t: generators[t] for t in types}
    raise ValueError(f"unknown condition {condition!r}; use one of {CONDITIONS}")


def held_out_accuracy(classifier, types: list[str], holdout: dict[str, torch.Tensor]) -> float:
    counts = [cas_counts(classifier, holdout[t], i) for i, t in enumerate(types)]
    return sum(c for c, _ in counts) / sum(n for _, n in counts)


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "per_seed": values}


def measure(generators: dict, pooled: dict[str, torch.Tensor], holdout: dict[str, torch.Tensor], *,
            image_size: int, steps: int, batch_size: int, seeds: int) -> dict[str, dict]:
    """Held-out accuracy per condition over `seeds` classifier seeds."""
    types = sorted(generators)
    out = {}
    for condition in CONDITIONS:
        accuracies = []
        for seed in range(seeds):
            classifier = train_cas_classifier(sources(condition, types, pooled, generators, seed), types,
                                              image_size=image_size, steps=steps, batch_size=batch_size, seed=seed)
            accuracies.append(held_out_accuracy(classifier, types, holdout))
        out[condition] = spread(accuracies)
    return out


def run(settings, workdir: Path, generators: dict, pooled: dict[str, torch.Tensor],
        holdout: dict[str, torch.Tensor]) -> dict:
    """Figure 8 over the champions (type -> generator) and the pooled real images."""
    steps = settings.champion_cas_steps()
    seeds = max(settings.cas_seeds, 2) if settings.mode == "quick" else 3
    batch_size = 2 * settings.batch_size
    conditions = measure(generators, pooled, holdout, image_size=settings.image_size, steps=steps,
                         batch_size=batch_size, seeds=seeds)
    gain = conditions["real_10_plus_synthetic"]["mean"] - conditions["real_10"]["mean"]
    noise = max(conditions["real_10"]["std"], conditions["real_10_plus_synthetic"]["std"])
    types = sorted(generators)
    return {
        "what": f"held-out type accuracy of a classifier trained on {REAL_SHARE:.0%} of the real training images, "
                "with and without the champions' synthetic images; all real and synthetic only beside them",
        "how": f"entgan.evaluation.precision_recall_cas.train_cas_classifier ({steps} steps, batch {batch_size}, flips and shifts), "
               f"{seeds} seeds (the {REAL_SHARE:.0%} share redrawn per seed), tested on every real held-out image "
               f"of {', '.join(types)}",
        "types": types,
        "real_images_per_type": {t: len(pooled[t]) for t in types},
        "conditions": conditions,
        "gain": gain,
        "target": {"gain_above_seed_spread": True, "met": gain > noise},
    }
