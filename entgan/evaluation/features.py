"""Evaluation that needs no download: domain-feature statistics and FID, sample grids.

Edges compute first and second moments of the feature network's embeddings of their *real*
held-out images (`feature_stats`); only these statistics leave the edge. The cloud merges
them (`merge_stats`) and scores each generator against them with torchmetrics' FID, using
the domain feature network as its custom feature extractor (`fid_from_stats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from entgan.gan.models import FeatureExtractor, FeatureNet, Generator
from entgan.job.data import to_uint8


@dataclass(frozen=True)
class FeatureStats:
    """Sufficient statistics of a set of feature vectors: sum, sum of outer products, count."""

    total: torch.Tensor  # (d,) float64
    outer: torch.Tensor  # (d, d) float64
    count: int

    def as_tensors(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}/total": self.total,
            f"{prefix}/outer": self.outer,
            f"{prefix}/count": torch.tensor(self.count, dtype=torch.int64),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], prefix: str) -> FeatureStats:
        return cls(
            tensors[f"{prefix}/total"].to(torch.float64),
            tensors[f"{prefix}/outer"].to(torch.float64),
            int(tensors[f"{prefix}/count"]),
        )

    def mean_cov(self) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        cov = (self.outer - self.count * torch.outer(mean, mean)) / max(self.count - 1, 1)
        return mean, cov


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Fréchet distance between the Gaussians of two sets of statistics (the FID formula).

    Used as the distance between data types for task-relation discovery."""
    (mu1, s1), (mu2, s2) = a.mean_cov(), b.mean_cov()
    root = torch.linalg.eigvals(s1 @ s2).sqrt().real.sum()
    return float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * root)


@torch.no_grad()
def embed(net: FeatureNet, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The feature network's embeddings (N, d) of `images`, computed in batches, in eval mode."""
    net.eval()
    return torch.cat([net.embed(images[i : i + batch_size]) for i in range(0, len(images), batch_size)])


def feature_stats(net: FeatureNet, images: torch.Tensor) -> FeatureStats:
    """Statistics of the embeddings of `images` (computed where the images are)."""
    features = embed(net, images).to(torch.float64)
    return FeatureStats(features.sum(0), features.T @ features, int(features.shape[0]))


def merge_stats(parts: list[FeatureStats]) -> FeatureStats:
    """Statistics of the union of the sets behind `parts` (exact, order-free)."""
    if not parts:
        raise ValueError("merge_stats needs at least one set of statistics")
    return FeatureStats(
        torch.stack([p.total for p in parts]).sum(0),
        torch.stack([p.outer for p in parts]).sum(0),
        sum(p.count for p in parts),
    )


def fid_from_stats(net: FeatureNet, real: FeatureStats, fake_images: torch.Tensor) -> float:
    """Domain-feature FID between merged real statistics and generated images.

    torchmetrics keeps exactly these sufficient statistics as its state, so the real side is
    loaded into it directly; the fake side goes through `update` as usual.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance  # slow import (~4 s): only here

    if real.count < 2:
        raise ValueError(f"FID needs at least 2 real held-out images, got {real.count}")
    net.eval()
    metric = FrechetInceptionDistance(
        feature=FeatureExtractor(net),
        reset_real_features=False,
        input_img_size=tuple(fake_images.shape[1:]),
    )
    metric.real_features_sum = real.total.clone()
    metric.real_features_cov_sum = real.outer.clone()
    metric.real_features_num_samples = torch.tensor(real.count)
    with torch.no_grad():
        for i in range(0, len(fake_images), 256):
            metric.update(fake_images[i : i + 256], real=False)
    return float(metric.compute())


def classification_accuracy(net: FeatureNet, images: torch.Tensor, label: int) -> float:
    """Share of `images` the feature network assigns to class `label`."""
    if len(images) == 0:
        return float("nan")
    net.eval()
    with torch.no_grad():
        return float((net(images).argmax(1) == label).float().mean())


def uncertain_count(net: FeatureNet, images: torch.Tensor, confidence: float) -> int:
    """How many images the feature network cannot place: top class probability < `confidence`."""
    if len(images) == 0:
        return 0
    net.eval()
    with torch.no_grad():
        top = torch.cat([net(images[i : i + 256]).softmax(1).amax(1) for i in range(0, len(images), 256)])
    return int((top < confidence).sum())


def image_grid(images: torch.Tensor, columns: int = 8, scale: int = 2, pad: int = 1) -> Image.Image:
    """Tile images (N, C, S, S) in [-1, 1] into one RGB PIL image on white, enlarged `scale` times
    (1-channel images are drawn grey: make_grid repeats their channel).

    `torchvision.utils.make_grid` lays the tiles out (`columns` per row, `pad` pixels between
    them); a grid is always at least `columns` wide, so grids of one width line up."""
    if len(images) < columns:  # make_grid narrows a short row; blank (white) tiles keep the width
        images = torch.cat([images, images.new_ones(columns - len(images), *images.shape[1:])])
    grid = make_grid(images.detach().clamp(-1, 1), nrow=columns, padding=pad, pad_value=1.0)
    picture = Image.fromarray(to_uint8(grid[None])[0])
    return picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)


def save_sample_grid(generator: Generator, path: str | Path, n: int = 64, seed: int = 0) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = torch.Generator().manual_seed(seed)
    image_grid(generator.sample(n, generator=rng)).save(path)
    return path
