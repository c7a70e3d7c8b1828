"""Fidelity metrics that see what a person sees: a classifier two-sample test and KID with a floor.

- **C2ST** (classifier two-sample test): a small CNN learns to tell a type's real held-out
  images from a candidate's samples; its accuracy on images it did not train on is the metric
  (0.5: indistinguishable, 1.0: every image told apart). Real images never leave the edge: each
  edge trains and tests its own classifier on its held-out images (`c2st_edge_part`, two-fold
  cross-fitting so that every real image is tested once) and sends only two counts; the cloud
  adds the counts of every edge holding the type (`merge_c2st`) and reports the accuracy with a
  Wilson 95 % interval. `c2st_fedavg` is the alternative that trains one classifier per type by
  averaging weights across the edges (pixels still stay home); docs/evaluation.md compares their
  power.
- **KID** (kernel inception distance, the unbiased polynomial-kernel MMD², torchmetrics'
  `poly_mmd`) in two feature spaces: the domain feature network (`FeatureNet.embed`) and
  `RandomFeatures`, a fixed, seeded, untrained multi-scale CNN whose channel means and spreads
  keep low-level statistics (colour, contrast, sharpness, texture). An edge sends the features
  of its held-out real images (`kid_edge_part`); the cloud concatenates them and scores samples
  against them (`kid_with_floor`), always beside the *floor*: the same estimator between two
  random halves of the real images, i.e. what "as good as real" reads at this sample size.

Pure functions over tensors: no I/O, no MLflow.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


# ---------------------------------------------------------------- confidence interval from counts


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (good at small n and near 0 or 1)."""
    if total <= 0 or not 0 <= correct <= total:
        raise ValueError(f"wilson_interval: invalid counts (correct={correct}, total={total})")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # p inside despite rounding


# ---------------------------------------------------------------- C2ST


@dataclass(frozen=True)
class C2STCounts:
    """What an edge sends for one type: test images classified correctly, and test images."""

    correct: int
    total: int

    def as_dict(self) -> dict[str, int]:
        return {"correct": self.correct, "total": self.total}


def c2st_classifier(seed: int = 0, channels: int = 3) -> nn.Module:
    """The real-vs-synthetic classifier: image (N, C, S, S) -> logit (N,), high for real."""
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left alone
        torch.manual_seed(seed)
        return nn.Sequential(
            # C x S x S -> 16 x S x S (full resolution: blur and speckle live in single pixels)
            nn.Conv2d(channels, 16, 3, 1, 1),
            nn.LeakyReLU(0.2),
            # -> 32 x S/2 x S/2
            nn.Conv2d(16, 32, 3, 2, 1),
            nn.LeakyReLU(0.2),
            # -> 64 x S/4 x S/4
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.LeakyReLU(0.2),
            # -> 64 (global average) -> 1
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 1),
            nn.Flatten(0),
        )


def _flip(images: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    flip = torch.rand(images.shape[0], generator=rng) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


def c2st_train(model: nn.Module, real: torch.Tensor, fake: torch.Tensor, *, steps: int, batch_size: int,
               rng: torch.Generator, lr: float = 2e-3) -> nn.Module:
    """`steps` Adam steps on balanced batches (half real, half fake, drawn with replacement and
    randomly flipped), logistic loss. Trains `model` in place and returns it."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    half = max(1, batch_size // 2)
    labels = torch.cat([torch.ones(half), torch.zeros(half)])
    model.train()
    for _ in range(steps):
        batch = torch.cat([real[torch.randint(0, len(real), (half,), generator=rng)],
                           fake[torch.randint(0, len(fake), (half,), generator=rng)]])
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(_flip(batch, rng)), labels).backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def c2st_counts(model: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> C2STCounts:
    """How many of `real` the model calls real plus how many of `fake` it calls fake."""
    model.eval()
    correct = int((model(real) > 0).sum()) + int((model(fake) <= 0).sum())
    return C2STCounts(correct, len(real) + len(fake))


def _check_sets(real: torch.Tensor, fake: torch.Tensor, folds: int, cross_fit: bool = True) -> None:
    if folds < 2:
        raise ValueError(f"c2st: folds must be at least 2 (train on some, test on the rest), got {folds}")
    for name, x in (("real_images", real), ("fake_images", fake)):
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"c2st: {name} must be (N, C, S, S) with C = 1 or 3, got shape {tuple(x.shape)}")
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"c2st: real images are {tuple(real.shape[1:])} but fakes {tuple(fake.shape[1:])}; "
                         "sample the generator at the edge's image size")
    if len(real) < (2 * folds if cross_fit else 1):
        raise ValueError(f"c2st: {len(real)} real images are too few for {folds} folds; need at least {2 * folds}")
    if len(fake) < len(real):
        raise ValueError(f"c2st: {len(fake)} fake images for {len(real)} real ones; sample at least as many fakes")


def fold_indices(n: int, folds: int, rng: torch.Generator) -> list[torch.Tensor]:
    """A random partition of range(n) into `folds` nearly equal parts."""
    return list(torch.randperm(n, generator=rng).tensor_split(folds))


def _not_in(n: int, part: torch.Tensor) -> torch.Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[part] = False
    return keep.nonzero().flatten()


def c2st_edge_part(real_images: torch.Tensor, fake_images: torch.Tensor, seed: int = 0, *, steps: int = 200,
                   batch_size: int = 32, folds: int = 2, train_images: torch.Tensor | None = None) -> C2STCounts:
    """An edge's C2ST for one type: (correct, total) over all its held-out real images.

    With `train_images` (the edge's real training images; the design with power at ~40 held-out
    images, see docs/evaluation.md) one classifier trains on them against as many fakes and is
    tested on every held-out image and as many other fakes: `fake_images` must hold at least
    len(train_images) + len(real_images) samples.

    Without it, cross-fitting on the held-out images alone: they are split into `folds` parts;
    for every fold a fresh classifier trains on the other parts against as many fakes and is
    tested on this part and as many other fakes. Either way every held-out image is tested
    exactly once, by a classifier that never saw it, and only the two counts leave the edge.
    """
    _check_sets(real_images, fake_images, folds, cross_fit=train_images is None)
    rng = torch.Generator().manual_seed(seed)
    if train_images is not None:
        return _c2st_on_training_images(real_images, fake_images, train_images, seed, steps, batch_size, rng)
    n = len(real_images)
    real_parts = fold_indices(n, folds, rng)
    fakes = fake_images[torch.randperm(len(fake_images), generator=rng)[:n]]
    correct = total = 0
    for k, test in enumerate(real_parts):
        # as many fakes as real images on both sides: the classifier can memorise either class equally
        model = c2st_classifier(seed + k, real_images.shape[1])
        rest = _not_in(n, test)
        c2st_train(model, real_images[rest], fakes[rest], steps=steps, batch_size=batch_size, rng=rng)
        counts = c2st_counts(model, real_images[test], fakes[test])
        correct, total = correct + counts.correct, total + counts.total
    return C2STCounts(correct, total)


def _c2st_on_training_images(real_images, fake_images, train_images, seed, steps, batch_size, rng) -> C2STCounts:
    """Train on the edge's real *training* images against as many fakes, test on every held-out
    image against as many other fakes."""
    n, m = len(real_images), len(train_images)
    if len(fake_images) < n + m:
        raise ValueError(f"c2st: {len(fake_images)} fakes are too few to train against {m} training images and "
                         f"test against {n} held-out ones; sample at least {n + m}")
    order = torch.randperm(len(fake_images), generator=rng)
    model = c2st_train(c2st_classifier(seed, real_images.shape[1]), train_images, fake_images[order[:m]], steps=steps,
                       batch_size=batch_size, rng=rng)
    return c2st_counts(model, real_images, fake_images[order[m : m + n]])


def merge_c2st(parts: list[C2STCounts]) -> tuple[float, float, float]:
    """The cloud's C2ST for one type: (accuracy, low, high), pooled over the edges' counts, with
    the Wilson 95 % interval. 0.5 means the classifier could not tell samples from real images."""
    if not parts:
        raise ValueError("merge_c2st needs the counts of at least one edge")
    correct, total = sum(p.correct for p in parts), sum(p.total for p in parts)
    low, high = wilson_interval(correct, total)
    return correct / total, low, high


def average_states(states: list[dict[str, torch.Tensor]], weights: list[int]) -> dict[str, torch.Tensor]:
    """Weighted average of state dicts with the same keys (FedAvg)."""
    total = float(sum(weights))
    return {k: sum(s[k] * (w / total) for s, w in zip(states, weights)) for k in states[0]}


def c2st_fedavg(edges: list[tuple[torch.Tensor, torch.Tensor]], seed: int = 0, *, rounds: int = 4,
                local_steps: int = 50, batch_size: int = 32, folds: int = 2) -> list[C2STCounts]:
    """C2ST with one classifier per fold trained by federated averaging over the edges.

    `edges` holds each edge's (real held-out images, fake samples) of one type. Per fold, every
    round each edge trains the shared classifier `local_steps` steps on its training part; the
    cloud averages the weights (by real-image count). Each edge then counts on its test part.
    Returns the per-edge counts (merge them with `merge_c2st`). Simulates the edges in-process.
    """
    for real, fake in edges:
        _check_sets(real, fake, folds)
    rng = torch.Generator().manual_seed(seed)
    splits = [(fold_indices(len(r), folds, rng), fold_indices(len(f), folds, rng)) for r, f in edges]
    tallies = [[0, 0] for _ in edges]
    for k in range(folds):
        shared = c2st_classifier(seed + k, edges[0][0].shape[1])
        for _ in range(rounds):
            states, weights = [], []
            for (real, fake), (real_parts, fake_parts) in zip(edges, splits):
                local = copy.deepcopy(shared)
                c2st_train(local, real[_not_in(len(real), real_parts[k])], fake[_not_in(len(fake), fake_parts[k])],
                           steps=local_steps, batch_size=batch_size, rng=rng)
                states.append(local.state_dict())
                weights.append(len(real))
            shared.load_state_dict(average_states(states, weights))
        for tally, (real, fake), (real_parts, fake_parts) in zip(tallies, edges, splits):
            counts = c2st_counts(shared, real[real_parts[k]], fake[fake_parts[k][: len(real_parts[k])]])
            tally[0] += counts.correct
            tally[1] += counts.total
    return [C2STCounts(c, t) for c, t in tallies]


# ---------------------------------------------------------------- KID with a floor


class RandomFeatures(nn.Module):
    """A fixed, randomly initialised multi-scale CNN: no training, no download, same at every edge.

    Three stages of 3x3 convolutions + ReLU at full, half and quarter resolution. Half of each
    stage's filters are made zero-mean (they respond to edges and texture only), half are left
    as drawn (they also respond to colour and brightness). The feature vector is each channel's
    spatial mean and standard deviation at every stage: 2 x 3 x `width` numbers that move with
    colour, contrast, sharpness and texture, which a type classifier's features ignore.
    `channels`: the images' (3, or 1 for grayscale and depth; another seeded network).
    """

    def __init__(self, seed: int = 0, width: int = 32, channels: int = 3) -> None:
        super().__init__()
        rng = torch.Generator().manual_seed(seed)
        self.stages = nn.ModuleList()
        for _ in range(3):
            conv = nn.Conv2d(channels, width, 3, 1, 1)
            weight = torch.randn(width, channels, 3, 3, generator=rng) / math.sqrt(channels * 9)
            weight[: width // 2] -= weight[: width // 2].mean(dim=(2, 3), keepdim=True)
            conv.weight.data.copy_(weight)
            conv.bias.data.copy_(0.1 * torch.randn(width, generator=rng))
            self.stages.append(conv)
            channels = width
        self.num_features = 3 * width
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        stats, x = [], images
        for i, conv in enumerate(self.stages):
            if i:
                x = F.avg_pool2d(x, 2)  # the next stage sees half the resolution
            x = F.relu(conv(x))
            half = x.shape[1] // 2
            # zero-mean filters: log spread (texture, sharpness); raw filters: mean (colour, brightness)
            stats += [x[:, :half].std(dim=(2, 3)).add(1e-3).log(), x[:, half:].mean(dim=(2, 3))]
        return torch.cat(stats, dim=1)


class DomainFeatures(nn.Module):
    """The domain feature network's embedding as a feature module (eval mode, no gradients)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.net.eval()
        return self.net.embed(images)


def feature_spaces(domain_net: nn.Module | None, seed: int = 0, channels: int = 3) -> dict[str, nn.Module]:
    """The KID feature spaces: `random` (RandomFeatures(seed)) and, if given, `domain`."""
    spaces: dict[str, nn.Module] = {"random": RandomFeatures(seed, channels=channels)}
    if domain_net is not None:
        spaces["domain"] = DomainFeatures(domain_net)
    return spaces


@torch.no_grad()
def extract(space: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Features (N, d) as float32, computed in batches."""
    return torch.cat([space(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).float()


def kid_edge_part(real_images: torch.Tensor, spaces: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """What an edge sends for KID: its held-out real images' features in every space, float32
    (N x d x 4 bytes each). Features are global averages, not pixels; no image can be redrawn
    from them."""
    if real_images.dim() != 4 or len(real_images) == 0:
        raise ValueError(f"kid_edge_part: real_images must be a non-empty (N, C, S, S) batch, got {tuple(real_images.shape)}")
    return {name: extract(space, real_images) for name, space in spaces.items()}


def merge_kid_parts(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The cloud's real features per space: the edges' parts stacked (order does not matter)."""
    if not parts:
        raise ValueError("merge_kid_parts needs the features of at least one edge")
    names = set(parts[0])
    if any(set(p) != names for p in parts):
        raise ValueError(f"merge_kid_parts: edges sent different feature spaces {[sorted(p) for p in parts]}")
    return {name: torch.cat([p[name] for p in parts]) for name in sorted(names)}


@dataclass(frozen=True)
class KID:
    """KID of samples against real images, beside the real-vs-real floor, at the same subset size.

    `kid` and `floor` are means over random subsets of the unbiased estimate; `kid_std` and
    `floor_std` their spread over the subsets (the noise one reading carries)."""

    kid: float
    kid_std: float
    floor: float
    floor_std: float
    subset_size: int

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}kid": self.kid, f"{prefix}kid_std": self.kid_std,
                f"{prefix}kid_floor": self.floor, f"{prefix}kid_floor_std": self.floor_std}


def kid_with_floor(real_features: torch.Tensor, fake_features: torch.Tensor, *, subsets: int = 100,
                   seed: int = 0) -> KID:
    """Unbiased polynomial-kernel KID (torchmetrics' `poly_mmd`: (x.y/d + 1)^3) with its floor.

    Subset size k = half the real images. Each subset draws a random half of the real images
    (the other half gives the floor's second sample) and k samples; the KID reading compares
    the half with the samples, the floor compares the two real halves. Both readings thus use
    the same k, so the floor is what an indistinguishable generator would score.
    """
    from torchmetrics.image.kid import poly_mmd  # slow import: only here

    n = len(real_features)
    if n < 4 or len(fake_features) < n // 2:
        raise ValueError(f"kid_with_floor: needs at least 4 real feature rows and half as many fakes, got "
                         f"{n} real and {len(fake_features)} fake")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"kid_with_floor: real features have {real_features.shape[1]} dimensions, fakes "
                         f"{fake_features.shape[1]}; extract both with the same feature space")
    k = n // 2
    real, fake = real_features.double(), fake_features.double()
    rng = torch.Generator().manual_seed(seed)
    kid, floor = [], []
    for _ in range(subsets):
        order = torch.randperm(n, generator=rng)
        half, other = real[order[:k]], real[order[k : 2 * k]]
        samples = fake[torch.randperm(len(fake), generator=rng)[:k]]
        kid.append(poly_mmd(half, samples))
        floor.append(poly_mmd(half, other))
    kid_t, floor_t = torch.stack(kid), torch.stack(floor)
    return KID(float(kid_t.mean()), float(kid_t.std()), float(floor_t.mean()), float(floor_t.std()), k)


def kid_scores(real: dict[str, torch.Tensor], fake_images: torch.Tensor, spaces: dict[str, nn.Module],
               *, subsets: int = 100, seed: int = 0) -> dict[str, KID]:
    """The cloud's KID per feature space: merged real features against the candidate's samples."""
    missing = set(spaces) - set(real)
    if missing:
        raise ValueError(f"kid_scores: no real features for space(s) {sorted(missing)}; the edges sent {sorted(real)}")
    out = {}
    for name, space in spaces.items():
        real_z, fake_z = standardize(real[name], extract(space, fake_images))
        out[name] = kid_with_floor(real_z, fake_z, subsets=subsets, seed=seed)
    return out


def standardize(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sets z-scored by the real features' per-dimension mean and spread, so that every
    feature weighs the same in the kernel. Spreads are floored at a tenth of the average spread,
    so a feature that is nearly constant on real images cannot blow up."""
    spread = real.std(0)
    mean, std = real.mean(0), spread.clamp_min(0.1 * float(spread.mean()) + 1e-12)
    return (real - mean) / std, (fake - mean) / std
