"""Differentiable augmentation of what the discriminator sees (DiffAugment, Zhao et al. 2020).

With a few hundred images per type, D memorises the real set and stops teaching G. Augmenting
*every* image D sees, real and fake, in D steps and in G steps, with transforms that gradients
pass through, keeps D from memorising without teaching G the augmentations (they are applied to
fakes too, so G is never rewarded for producing them).

Three transforms, each drawn per image from `rng` (a CPU `torch.Generator`, so a seeded run
draws the same augmentations on CPU and GPU):
- colour: brightness shift in [-0.5, 0.5], saturation scale in [0, 2], contrast scale in
  [0.5, 1.5] (the reference implementation's ranges, which also works on [-1, 1] images);
  a 1-channel image has no saturation: it gets brightness and contrast only;
- translation: shift by up to 1/8 of the side, zero padding;
- cutout: one square of half the side set to zero.
Images are (N, C, S, S) in [-1, 1] (C = 3 or 1); the policy is a comma list such as "color,translation,cutout".
"""

from __future__ import annotations

import torch

from entgan.job.spec import AUGMENTATIONS as POLICIES


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation' -> ('color', 'translation'); '' -> (); an unknown name is an error."""
    names = tuple(p.strip() for p in policy.split(",") if p.strip())
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown}; use a comma list of {list(POLICIES)}")
    return names


def _uniform(n: int, rng: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """(n, 1, 1, 1) uniform [0, 1) draws from the CPU generator, on `like`'s device and dtype."""
    return torch.rand(n, 1, 1, 1, generator=rng).to(device=like.device, dtype=like.dtype)


def color(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Random brightness, saturation and contrast per image (DiffAugment's ranges, on [-1, 1]);
    no saturation for 1-channel images (and no draw for it: grey stays grey)."""
    n = x.shape[0]
    x = x + (_uniform(n, rng, x) - 0.5)  # brightness
    if x.shape[1] > 1:
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (_uniform(n, rng, x) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, rng, x) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side in x and y; vacated pixels are zero."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sy, sy + 1, (n, 1, 1), generator=rng).to(x.device)
    tx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=rng).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + ty  # (n, h, 1) source row per output row
    cols = torch.arange(w, device=x.device).view(1, 1, w) + tx  # (n, 1, w)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))  # index 0 and S+1 are the zero border
    rows = (rows + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (cols + 1).clamp(0, w + 1).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, rng: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` times the side per image, centred anywhere in the image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=rng).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=rng).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows - cy).abs() <= ch // 2) & ((cols - cx).abs() <= cw // 2)  # (n, h, w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], rng: torch.Generator) -> torch.Tensor:
    """`x` with the transforms of `policy` applied in order; the identity for an empty policy."""
    for name in policy:
        x = _TRANSFORMS[name](x, rng)
    return x
