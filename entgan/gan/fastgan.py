"""A light, few-shot G and D (`train.architecture: light`), after FastGAN (Liu et al., ICLR 2021).

FastGAN trains from fewer than 100 images with two ideas that cost little compute:
- **Skip-layer excitation (SLE)** in G: a coarse feature map (4x4, 8x8, ...) gates the channels
  of the map two doublings finer (`x_fine * sigmoid(f(x_coarse))`), so the coarse shape steers
  the fine texture through a short gradient path.
- **A self-supervised D**: besides its real/fake logit, D decodes its 8x8 feature map of a real
  image back into the image (here at half size); the reconstruction error is added to D's loss
  on real images only. D must keep features that describe the images, not only what tells them
  apart from today's fakes, which is what over-fits on a few hundred images.
FastGAN's up-blocks (nearest upsample + 3x3 conv + GLU) are built for 256-1024 px; at 32-64 px
they cost 2-4x a transposed convolution per output, so G keeps DCGAN's transposed convolutions
and widths (`models.channels_at`) and adds SLE. D is DCGAN's (batch norm, strided convs) plus
the decoder; its width is `train.d_width` (default `width`), so a lean D can be chosen apart
from G. Both stay `nn.Sequential`-shaped for FedAvg: every parameter and buffer averages by key.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from entgan.gan.models import CHANNELS, Samples, _check_channels, _num_blocks, channels_at, weights_init


class SkipExcitation(nn.Module):
    """FastGAN's SLE: channel gates for a fine map from a coarse one (pool to 4x4, 4x4 conv, 1x1 conv)."""

    def __init__(self, coarse: int, fine: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            # coarse x r x r -> coarse x 4 x 4 -> coarse x 1 x 1 -> fine x 1 x 1, in (0, 1)
            nn.AdaptiveAvgPool2d(4),
            nn.Conv2d(coarse, coarse, 4, 1, 0, bias=False),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(coarse, fine, 1, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        return fine * self.gate(coarse)


def _up(cin: int, cout: int) -> nn.Sequential:
    # state size. cin x r x r -> cout x 2r x 2r
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True))


class LightGenerator(Samples, nn.Module):
    """z (N, latent_dim) -> image (N, C, S, S) in [-1, 1]: DCGAN's blocks plus skip-layer excitation
    from each map at r to the map at 4r (4 -> 16, 8 -> 32, ...)."""

    def __init__(self, latent_dim: int = 64, width: int = 32, image_size: int = 32, channels: int = CHANNELS) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.image_channels = _check_channels(channels)
        _num_blocks(image_size)
        sizes = [4]
        while sizes[-1] < image_size // 2:
            sizes.append(sizes[-1] * 2)
        channels = [channels_at(r, image_size, width) for r in sizes]
        # z as (latent_dim) x 1 x 1 -> channels[0] x 4 x 4
        self.start = nn.Sequential(nn.ConvTranspose2d(latent_dim, channels[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(channels[0]), nn.ReLU(True))
        self.ups = nn.ModuleList(_up(a, b) for a, b in zip(channels, channels[1:]))
        # SLE from the map at index i to the map at i + 2 (two doublings finer)
        self.excite = nn.ModuleList(SkipExcitation(channels[i], channels[i + 2]) for i in range(len(sizes) - 2))
        # state size. width x S/2 x S/2 -> C x S x S
        self.to_image = nn.Sequential(nn.ConvTranspose2d(channels[-1], self.image_channels, 4, 2, 1, bias=False),
                                      nn.Tanh())
        self.apply(weights_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        maps = [self.start(z.view(z.shape[0], self.latent_dim, 1, 1))]
        for i, up in enumerate(self.ups):
            x = up(maps[-1])
            if i >= 1:  # map i + 1 is two doublings finer than map i - 1
                x = self.excite[i - 1](maps[i - 1], x)
            maps.append(x)
        return self.to_image(maps[-1])



class LightDiscriminator(nn.Module):
    """image (N, C, S, S) -> logit (N,); `reconstruction_loss(real)` decodes D's 8x8 features of
    real images back to the images at half size (mean squared error), FastGAN's self-supervision."""

    def __init__(self, width: int = 32, image_size: int = 32, channels: int = CHANNELS) -> None:
        super().__init__()
        _num_blocks(image_size)
        image_channels = _check_channels(channels)
        if image_size < 16:
            raise ValueError(f"architecture 'light' needs image_size >= 16 (an 8x8 map to decode), got {image_size}")
        channels = channels_at(image_size // 2, image_size, width)
        down: list[nn.Module] = [
            # C x S x S -> width x S/2 x S/2 (no batch norm on the input layer)
            nn.Conv2d(image_channels, channels, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        resolution = image_size // 2
        while resolution > 8:
            # channels x r x r -> channels_at(r/2) x r/2 x r/2
            out = channels_at(resolution // 2, image_size, width)
            down += [nn.Conv2d(channels, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True)]
            channels, resolution = out, resolution // 2
        self.to_8 = nn.Sequential(*down)  # -> channels x 8 x 8
        out = channels_at(4, image_size, width)
        self.head = nn.Sequential(
            # channels x 8 x 8 -> out x 4 x 4 -> 1 x 1 x 1
            nn.Conv2d(channels, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(out, 1, 4, 1, 0, bias=False),
        )
        hidden = max(8, channels // 2)
        self.decoder = nn.Sequential(
            # channels x 8 x 8 -> hidden x 16 x 16 -> C x 16 x 16
            nn.ConvTranspose2d(channels, hidden, 4, 2, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(True),
            nn.Conv2d(hidden, image_channels, 3, 1, 1, bias=False), nn.Tanh(),
        )
        self.apply(weights_init)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.to_8(images)).view(-1)

    def logits_and_reconstruction(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Real images' logits and the reconstruction loss of their 8x8 features (one pass through D)."""
        features = self.to_8(real)
        target = F.adaptive_avg_pool2d(real, 16)
        return self.head(features).view(-1), F.mse_loss(self.decoder(features).float(), target.float())
