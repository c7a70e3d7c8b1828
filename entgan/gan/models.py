"""DCGAN-family generator and discriminator, and the small domain feature network.

All three are sized by arguments (image size, latent size, base width, image channels); nothing
reads globals. Images are float tensors in [-1, 1], shape (N, C, S, S): C = 3 (RGB, the default,
so bundles saved before channels existed load as they are) or 1 (grayscale, infrared, depth).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

CHANNELS = 3  # RGB: the default image channels (1: grayscale, infrared, depth)


MAX_IMAGE_SIZE = 512
WIDTH_CAP = 8  # no layer is wider than WIDTH_CAP * width channels


def _num_blocks(image_size: int) -> int:
    blocks = int(math.log2(image_size)) - 2 if image_size > 0 else 0  # 4x4 -> image_size by doubling
    if image_size < 8 or image_size > MAX_IMAGE_SIZE or 2 ** (blocks + 2) != image_size:
        raise ValueError(f"image_size must be a power of two from 8 to {MAX_IMAGE_SIZE}, got {image_size}")
    return blocks


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale, depth) or 3 (RGB), got {channels}")
    return channels


def feature_net_channels(state: dict) -> int:
    """The image channels a FeatureNet state dict was built for (its first convolution's input)."""
    return int(state["body.0.weight"].shape[1])


def channels_at(resolution: int, image_size: int, width: int) -> int:
    """Channels of G's and D's feature maps at `resolution` (4 .. image_size/2).

    The DCGAN rule: `width` channels at half the image size, doubling each time the resolution
    halves, capped at WIDTH_CAP * width. Up to 64x64 the cap is never reached (the original
    DCGAN widths); at 128 and 256 the coarse layers stay at 8 * width instead of 16-32 * width,
    so depth grows by one block per doubling while parameters grow slowly.
    """
    return width * min(WIDTH_CAP, image_size // 2 // resolution)


def weights_init(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02).
    Spectrally normalised convs are initialised before they are wrapped (`_sn_conv`)."""
    if parametrize.is_parametrized(module):
        return
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class Samples:
    """`sample(n)`: what every generator architecture offers the evaluation and deploy side."""

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images from fresh noise, without gradients, in eval mode (running BN statistics).
        The noise is drawn on the CPU; the images come back on the CPU whatever G's device."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=generator)
            images = self(z.to(device)).float().cpu()
        self.train(was_training)
        return images


class Generator(Samples, nn.Module):
    """z (N, latent_dim) -> image (N, C, S, S) in [-1, 1], C = `channels`.

    One transposed-conv block per doubling from 4x4 to S/2, then the image layer; channel counts
    from `channels_at` (e.g. S=128, width=16: 128@4, 128@8, 64@16, 32@32, 16@64, then 3@128).
    """

    def __init__(self, latent_dim: int = 64, width: int = 32, image_size: int = 32, channels: int = CHANNELS) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_channels = _check_channels(channels)
        _num_blocks(image_size)
        channels = channels_at(4, image_size, width)
        layers: list[nn.Module] = [
            # z as (latent_dim) x 1 x 1 -> state size. channels_at(4) x 4 x 4
            nn.ConvTranspose2d(latent_dim, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        ]
        resolution = 4
        while resolution < image_size // 2:
            # state size. channels x r x r -> channels_at(2r) x 2r x 2r
            out = channels_at(resolution * 2, image_size, width)
            layers += [
                nn.ConvTranspose2d(channels, out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(True),
            ]
            channels, resolution = out, resolution * 2
        # state size. width x S/2 x S/2 -> C x S x S
        layers += [nn.ConvTranspose2d(channels, self.image_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.view(z.shape[0], self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """image (N, C, S, S) -> logit (N,): high for real, low for fake; C = `channels`.

    The mirror of the generator: one strided conv per halving from S to 4x4, channel counts from
    `channels_at`. With `spectral_norm`, every conv's weight is divided by its largest singular
    value (`torch.nn.utils.parametrizations.spectral_norm`) and batch norm is left out (SN-GAN);
    the state dict then holds `<conv>.parametrizations.weight.original` and the power
    iteration's `_u`/`_v` vectors in place of `<conv>.weight`.
    """

    def __init__(self, width: int = 32, image_size: int = 32, spectral_norm: bool = False,
                 channels: int = CHANNELS) -> None:
        super().__init__()
        _num_blocks(image_size)
        image_channels = _check_channels(channels)
        conv = _sn_conv if spectral_norm else nn.Conv2d
        channels = channels_at(image_size // 2, image_size, width)
        layers: list[nn.Module] = [
            # C x S x S -> state size. width x S/2 x S/2 (no batch norm on the input layer)
            conv(image_channels, channels, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        resolution = image_size // 2
        while resolution > 4:
            # state size. channels x r x r -> channels_at(r/2) x r/2 x r/2
            out = channels_at(resolution // 2, image_size, width)
            layers += [
                conv(channels, out, 4, 2, 1, bias=False),
                nn.Identity() if spectral_norm else nn.BatchNorm2d(out),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels, resolution = out, resolution // 2
        # state size. channels x 4 x 4 -> 1 x 1 x 1
        layers += [conv(channels, 1, 4, 1, 0, bias=False)]
        self.main = nn.Sequential(*layers)
        self.apply(weights_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.main(images).view(-1)


def _sn_conv(*args: int, bias: bool) -> nn.Module:
    """A Conv2d with DCGAN initialisation, wrapped in spectral normalisation."""
    layer = nn.Conv2d(*args, bias=bias)
    nn.init.normal_(layer.weight, 0.0, 0.02)
    return nn.utils.parametrizations.spectral_norm(layer)


class FeatureNet(nn.Module):
    """The domain feature network: a small CNN classifier over the data types.

    `embed` gives the feature vector used for FID and precision/recall; `forward` gives class
    logits. Group norm (not batch norm) keeps it well-behaved under FedAvg on non-IID edges.
    """

    def __init__(self, num_classes: int, feature_dim: int = 64, image_size: int = 32, channels: int = CHANNELS) -> None:
        super().__init__()
        _num_blocks(image_size)
        self.image_channels = _check_channels(channels)
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            # C x S x S -> 32 x S/2 x S/2
            nn.Conv2d(self.image_channels, 32, 3, 2, 1),
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
