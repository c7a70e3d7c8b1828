"""DCGAN-family generator and discriminator, and the small domain feature network.

All three are sized by arguments (image size, latent size, base width); nothing reads globals.
Images are float tensors in [-1, 1], shape (N, 3, S, S).
"""

from __future__ import annotations

import math

import torch
from torch import nn

CHANNELS = 3  # RGB


def _num_blocks(image_size: int) -> int:
    blocks = int(math.log2(image_size)) - 2  # 4x4 -> image_size by doubling
    if image_size < 8 or 2 ** (blocks + 2) != image_size:
        raise ValueError(f"image_size must be a power of two >= 8, got {image_size}")
    return blocks


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Generator(nn.Module):
    """z (N, latent_dim) -> image (N, 3, S, S) in [-1, 1]."""

    def __init__(self, latent_dim: int = 64, width: int = 32, image_size: int = 32) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        blocks = _num_blocks(image_size)
        channels = width * 2 ** (blocks - 1)
        layers: list[nn.Module] = [
            # z as (latent_dim) x 1 x 1 -> state size. (width * 2^(blocks-1)) x 4 x 4
            nn.ConvTranspose2d(latent_dim, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        ]
        for _ in range(blocks - 1):
            # state size. channels x s x s -> (channels / 2) x 2s x 2s
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        # state size. width x S/2 x S/2 -> 3 x S x S
        layers += [nn.ConvTranspose2d(channels, CHANNELS, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.latent_dim, 1, 1))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from fresh noise, without gradients, in eval mode (running BN statistics)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator)
            images = self(z)
        self.train(was_training)
        return images


class Discriminator(nn.Module):
    """image (N, 3, S, S) -> logit (N,): high for real, low for fake."""

    def __init__(self, width: int = 32, image_size: int = 32) -> None:
        super().__init__()
        blocks = _num_blocks(image_size)
        channels = width
        layers: list[nn.Module] = [
            # 3 x S x S -> state size. width x S/2 x S/2 (no batch norm on the input layer)
            nn.Conv2d(CHANNELS, channels, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        for _ in range(blocks - 1):
            # state size. channels x s x s -> (2 channels) x s/2 x s/2
            layers += [
                nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels *= 2
        # state size. channels x 4 x 4 -> 1 x 1 x 1
        layers += [nn.Conv2d(channels, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).view(-1)


class FeatureNet(nn.Module):
    """The domain feature network: a small CNN classifier over the data types.

    `embed` gives the feature vector used for FID and precision/recall; `forward` gives class
    logits. Group norm (not batch norm) keeps it well-behaved under FedAvg on non-IID edges.
    """

    def __init__(self, num_classes: int, feature_dim: int = 64, image_size: int = 32) -> None:
        super().__init__()
        _num_blocks(image_size)
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            # 3 x S x S -> 32 x S/2 x S/2
            nn.Conv2d(CHANNELS, 32, 3, 2, 1),
            nn.GroupNorm(8, 32),
            nn.SiLU(),
            # -> 64 x S/4 x S/4
            nn.Conv2d(32, 64, 3, 2, 1),
            nn.GroupNorm(8, 64),
            nn.SiLU(),
            # -> 128 x S/8 x S/8
            nn.Conv2d(64, 128, 3, 2, 1),
            nn.GroupNorm(8, 128),
            nn.SiLU(),
            # -> 128 (global average) -> feature_dim
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, feature_dim),
            nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(images))


class FeatureExtractor(nn.Module):
    """Adapter for torchmetrics' FID: forward returns `FeatureNet.embed` features."""

    def __init__(self, net: FeatureNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = net.feature_dim

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed(images)
