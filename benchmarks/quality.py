"""Figure 6 — quality of the champions, per type, against real held-out images.

Champions: figure 1's `entgan` generators on 4 edges (box, clutter, robot, table) and figure 2's
warm-started pillar. Per type, under the referee: domain-FID (`fid_from_stats`), improved
precision and recall with k=3 (`entgan.quality.precision_recall`), and the classification
accuracy score: a classifier trained only on generated images (`train_cas_classifier`) is tested
on the real held-out images (`cas_counts`), and so is the same classifier trained, with the
same steps, batches and augmentation (`train_cas_classifier` flips and shifts every batch,
`entgan.quality.augment`), on the real training images instead. The figure is their ratio
(synthetic / real), overall and per type. Target: overall ratio >= 0.85.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.common import Referee, Settings
from entgan.evaluate import embed
from entgan.models import Generator
from entgan.quality import cas_counts, precision_recall, train_cas_classifier

CAS_TARGET = 0.85
PR_K = 3


class RealImages:
    """Samples real training images the way a generator samples fakes (for the real-data CAS)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.images[torch.randint(0, len(self.images), (n,), generator=generator)]


def _accuracy(classifier, types: list[str], holdout: dict[str, torch.Tensor]) -> dict[str, float]:
    per_type = {t: cas_counts(classifier, holdout[t], i) for i, t in enumerate(types)}
    out = {t: c / n for t, (c, n) in per_type.items()}
    out["all"] = sum(c for c, _ in per_type.values()) / sum(n for _, n in per_type.values())
    return out


def run(settings: Settings, workdir: Path, referee: Referee, generators: dict[str, Generator],
        pooled: dict[str, torch.Tensor], holdout: dict[str, torch.Tensor]) -> dict:
    types = sorted(generators)
    per_type = {}
    for t in types:
        rng = torch.Generator().manual_seed(0)
        fakes = generators[t].sample(settings.num_generated, generator=rng)
        real_features = embed(referee.net, holdout[t])
        k = min(PR_K, len(real_features) - 1)
        precision, recall = precision_recall(real_features, embed(referee.net, fakes), k=k)
        per_type[t] = {"fid": referee.fid(generators[t], t), "precision": precision, "recall": recall}
    common = {"image_size": settings.image_size, "steps": settings.cas_steps, "batch_size": 2 * settings.batch_size,
              "seed": 0}
    synthetic = train_cas_classifier(generators, types, **common)
    real = train_cas_classifier({t: RealImages(pooled[t]) for t in types}, types, **common)
    cas_synthetic, cas_real = _accuracy(synthetic, types, holdout), _accuracy(real, types, holdout)
    for t in types:
        per_type[t].update(cas_synthetic=cas_synthetic[t], cas_real=cas_real[t],
                           cas_ratio=cas_synthetic[t] / cas_real[t] if cas_real[t] else None)
    ratio = cas_synthetic["all"] / cas_real["all"]
    return {
        "what": "per-type domain-FID, precision, recall (k=3) and classification accuracy score of the champions "
                "vs real held-out images",
        "how": "referee feature network; CAS = accuracy on real held-out images of a classifier trained only on "
               "generated images, divided by that of the same classifier trained on real training images "
               f"({settings.cas_steps} steps, batch {2 * settings.batch_size}, balanced over the types; both "
               "classifiers see the same random flips and shifts, entgan.quality.augment)",
        "types": per_type,
        "cas_synthetic": cas_synthetic["all"],
        "cas_real": cas_real["all"],
        "cas_ratio": ratio,
        "target": {"cas_ratio_at_least": CAS_TARGET, "met": ratio >= CAS_TARGET},
    }
