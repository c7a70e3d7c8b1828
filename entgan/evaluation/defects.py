"""Known defects applied to real images, to calibrate fidelity metrics (and to test the gate).

Each function maps images (N, C, S, S) in [-1, 1] to images of the same shape and range (the
colour shift needs C = 3: grayscale images have no colour to shift); a
metric that reads "as good as real" on their output is blind to that defect. `CORRUPTIONS`
names the calibration set of docs/evaluation.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation `sigma` pixels (kernel 2*ceil(3 sigma)+1, reflected edges)."""
    from torchvision.transforms.functional import gaussian_blur as blur

    size = 2 * math.ceil(3 * sigma) + 1
    return blur(images, [size, size], [sigma, sigma])


def additive_noise(images: torch.Tensor, std: float = 0.1, seed: int = 0) -> torch.Tensor:
    """Independent Gaussian noise on every pixel and channel (std in the [-1, 1] scale)."""
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))
    return (images + std * noise).clamp(-1, 1)


def checkerboard(images: torch.Tensor, amplitude: float = 0.1) -> torch.Tensor:
    """A one-pixel checkerboard added to every image: the transposed-convolution artifact."""
    size = images.shape[-1]
    index = torch.arange(size)
    pattern = ((index[:, None] + index[None, :]) % 2).float() * 2 - 1
    return (images + amplitude * pattern).clamp(-1, 1)


def colour_shift(images: torch.Tensor, shift: tuple[float, float, float] = (0.2, 0.0, -0.2)) -> torch.Tensor:
    """A constant offset per RGB channel (warmer images)."""
    if images.shape[1] != 3:
        raise ValueError(f"colour_shift needs RGB images (N, 3, S, S), got {tuple(images.shape)}: "
                         "grey ones have no colour")
    return (images + torch.tensor(shift).view(1, 3, 1, 1)).clamp(-1, 1)


def mode_collapse(images: torch.Tensor, modes: int = 4) -> torch.Tensor:
    """Only the first `modes` images, repeated to the original count (a generator with few outputs)."""
    return images[:modes].repeat((len(images) + modes - 1) // modes, 1, 1, 1)[: len(images)]


CORRUPTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x,
    "blur 0.6": lambda x: gaussian_blur(x, 0.6),
    "blur 1.0": lambda x: gaussian_blur(x, 1.0),
    "noise 0.1": additive_noise,
    "checkerboard": checkerboard,
    "colour shift 0.2": colour_shift,
    "mode collapse": mode_collapse,
}
