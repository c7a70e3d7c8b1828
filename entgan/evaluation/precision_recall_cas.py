"""The deploy gate's quality metrics besides FID (the gate itself: `entgan.evaluation.metrics`).

- Improved precision and recall (Kynkäänniemi et al. 2019): each set of feature vectors spans a
  manifold, the union of balls around its samples whose radius is the distance to the sample's
  k-th nearest neighbour in its own set. Precision is the share of generated samples inside the
  real manifold (are the fakes realistic?), recall the share of real samples inside the fake
  manifold (does the generator cover the data?). FID alone mixes both into one number.
- Classification accuracy score, CAS (Ravuri & Vinyals 2019): a classifier trained *only* on
  generated images is tested on real held-out images. It drops when a generator loses the
  features that make its type recognisable. The cloud trains the classifier
  (`train_cas_classifier`); each edge counts its correct predictions (`cas_counts`) and sends
  only the counts; the cloud merges them (`cas_from_counts`).

Pure functions over tensors and dicts: no I/O, no MLflow.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from torchvision.transforms.v2 import functional as TF

from entgan.gan.models import FeatureNet, Generator

CHUNK_ROWS = 1024  # rows per distance block: 1024 x 5000 float64 distances are 40 MB


# ---------------------------------------------------------------- improved precision and recall


def _check_features(real: torch.Tensor, fake: torch.Tensor, k: int) -> None:
    if k < 1:
        raise ValueError(f"precision_recall: k must be at least 1, got {k}")
    for name, x in (("real_features", real), ("fake_features", fake)):
        if x.dim() != 2:
            raise ValueError(
                f"precision_recall: {name} must be 2-D (num_examples, feature_dim), got shape {tuple(x.shape)}; "
                "embed the images first (entgan.evaluation.features.embed)"
            )
        if x.shape[0] < k + 1:
            raise ValueError(
                f"precision_recall: {name} has {x.shape[0]} rows but k={k} needs at least {k + 1}; "
                "use more images or a smaller k"
            )
        if not torch.isfinite(x).all():
            raise ValueError(f"precision_recall: {name} holds NaN or infinite values")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"precision_recall: real_features have dimension {real.shape[1]} but fake_features "
            f"{fake.shape[1]}; embed both sets with the same feature network"
        )


def knn_radii(features: torch.Tensor, k: int, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Distance from each row to its k-th nearest neighbour among the other rows, shape (N,)."""
    radii = []
    for start in range(0, features.shape[0], chunk_rows):
        distances = torch.cdist(features[start : start + chunk_rows], features)
        # the row itself is its own nearest neighbour (distance 0), hence k + 1
        radii.append(distances.topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def inside_manifold(
    queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk_rows: int = CHUNK_ROWS
) -> torch.Tensor:
    """For each query row: does it lie within `radii[j]` of some support row j? Bool (M,)."""
    inside = []
    for start in range(0, queries.shape[0], chunk_rows):
        distances = torch.cdist(queries[start : start + chunk_rows], support)
        inside.append((distances <= radii[None, :]).any(dim=1))
    return torch.cat(inside)


def precision_recall(real_features: torch.Tensor, fake_features: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of generated against real feature vectors.

    precision: share of fakes within the k-NN radius of at least one real sample;
    recall: share of reals within the k-NN radius of at least one fake sample.
    Both inputs are (num_examples, feature_dim); distances are computed in row blocks, so
    5000 x 5000 samples need tens of megabytes, not the full distance matrix.
    """
    _check_features(real_features, fake_features, k)
    real = real_features.detach().to(torch.float64)
    fake = fake_features.detach().to(torch.float64)
    precision = inside_manifold(fake, real, knn_radii(real, k)).double().mean()
    recall = inside_manifold(real, fake, knn_radii(fake, k)).double().mean()
    return float(precision), float(recall)


# ---------------------------------------------------------------- classification accuracy score


def _check_generators(generators: dict[str, Generator], types: list[str], image_size: int, channels: int) -> None:
    if not types:
        raise ValueError("train_cas_classifier needs at least one data type")
    if len(set(types)) != len(types):
        raise ValueError(f"train_cas_classifier: types {types} list a data type twice")
    missing = [t for t in types if t not in generators]
    if missing:
        raise ValueError(
            f"train_cas_classifier: no generator for type(s) {missing}; generators are given for "
            f"{sorted(generators)}"
        )
    for t in types:
        probe = generators[t].sample(1, generator=torch.Generator().manual_seed(0))
        if tuple(probe.shape[1:]) != (channels, image_size, image_size):
            raise ValueError(
                f"train_cas_classifier: the generator of {t!r} makes images of shape "
                f"{tuple(probe.shape[1:])}, expected ({channels}, {image_size}, {image_size}); pass its "
                "image_size and channels"
            )


def augment(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random horizontal flips and shifts of up to 1/10 of the image side (edges replicated).

    The CAS classifier sees only synthetic images; without this it learns the generators'
    pixel-exact artifacts and fails on real images (docs/design.md, "CAS").

    Built from `torchvision.transforms.v2.functional`, with one flip and one shift drawn per
    image from `rng`: the `v2` transform classes draw one set of parameters per call (a whole
    batch would flip and move together) and from the global RNG, not from `rng`.
    """
    n, _, size, _ = images.shape
    flip = torch.rand(n, generator=rng) < 0.5
    images = torch.where(flip[:, None, None, None], TF.horizontal_flip(images), images)
    pad = max(1, size // 10)
    padded = TF.pad(images, [pad], padding_mode="edge")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, n), generator=rng).tolist()
    return torch.stack([TF.crop(padded[i], dy[i], dx[i], size, size) for i in range(n)])


def train_cas_classifier(
    generators: dict[str, Generator],
    types: list[str],
    *,
    image_size: int,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
    feature_dim: int = 64,
    channels: int = 3,
) -> FeatureNet:
    """A fresh classifier over `types` trained only on generated images (the "train" half of CAS).

    Each step draws fresh samples, batch_size // len(types) (at least one) of every type, with
    label `types.index(type)`, randomly flipped and shifted (`augment`). Generators are sampled
    in eval mode without gradients and are left unchanged. Returns the classifier in eval mode.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"train_cas_classifier: steps and batch_size must be >= 1, got {steps} and {batch_size}")
    _check_generators(generators, types, image_size, channels)
    rng = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left alone
        torch.manual_seed(seed)
        classifier = FeatureNet(len(types), feature_dim, image_size, channels=channels)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    per_type = max(1, batch_size // len(types))
    labels = torch.arange(len(types)).repeat_interleave(per_type)
    classifier.train()
    for _ in range(steps):
        images = augment(torch.cat([generators[t].sample(per_type, generator=rng) for t in types]), rng)
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(images), labels)
        loss.backward()
        optimizer.step()
    return classifier.eval()


@torch.no_grad()
def cas_counts(classifier: FeatureNet, images: torch.Tensor, label: int, batch_size: int = 256) -> tuple[int, int]:
    """(correct, total): how many real held-out `images` of class `label` the classifier gets
    right. Runs at the edge; only these two numbers leave it."""
    if not 0 <= label < classifier.num_classes:
        raise ValueError(f"cas_counts: label {label} is outside the classifier's {classifier.num_classes} classes")
    classifier.eval()
    correct = 0
    for start in range(0, images.shape[0], batch_size):
        predicted = classifier(images[start : start + batch_size]).argmax(dim=1)
        correct += int((predicted == label).sum())
    return correct, int(images.shape[0])


def cas_from_counts(parts: list[tuple[int, int]]) -> float:
    """Classification accuracy score over the edges' (correct, total) counts."""
    for correct, total in parts:
        if not 0 <= correct <= total:
            raise ValueError(f"cas_from_counts: invalid counts (correct={correct}, total={total})")
    total = sum(t for _, t in parts)
    if total == 0:
        raise ValueError("cas_from_counts: no held-out images were counted; CAS needs at least one real image")
    return sum(c for c, _ in parts) / total
