"""Training steps: the edge's local GAN update, the cloud's global G update, the evaluator.

Each function takes modules that already hold the starting weights and returns what the
caller needs to ship or aggregate. No I/O here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from entgan.aggregate import StateDict, proximal_term
from entgan.models import Discriminator, FeatureNet, Generator

Progress = Callable[[int, int, dict[str, float]], None]  # (step, steps, losses)


@dataclass(frozen=True)
class LocalResult:
    generator: StateDict
    discriminator: StateDict
    num_examples: int
    d_loss: float
    g_loss: float


def _adam(module: nn.Module, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(0.5, 0.999))


def _batch(images: torch.Tensor, batch_size: int, rng: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=rng)
    return images[idx]


def _state(module: nn.Module) -> StateDict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_local(
    generator: Generator,
    discriminator: Discriminator,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    mu: float = 0.0,
    anchor: StateDict | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> LocalResult:
    """Train one type's GAN on an edge's real images for `steps` D+G steps.

    `anchor` is the knowledge base's discriminator: with `mu > 0` a proximal term
    (mu/2)||D - D_anchor||^2 keeps the local D from drifting away from what the library
    knows (the lifelong optimizer of the proposal; FedProx-style).
    """
    if images.shape[0] == 0:
        raise ValueError("train_local needs at least one real image")
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt_d, opt_g = _adam(discriminator, lr), _adam(generator, lr)
    anchor = anchor if anchor is not None else _state(discriminator)
    generator.train()
    discriminator.train()
    d_loss = g_loss = torch.zeros(())
    for step in range(1, steps + 1):
        real = _batch(images, batch_size, rng)
        n = real.shape[0]
        z = torch.randn(n, generator.latent_dim, generator=rng)
        fake = generator(z)

        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z))), plus the proximal term
        opt_d.zero_grad()
        real_logits = discriminator(real)
        fake_logits = discriminator(fake.detach())  # detach: this phase must not move G
        d_loss = F.binary_cross_entropy_with_logits(
            real_logits, torch.ones_like(real_logits)
        ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        if mu > 0:
            d_loss = d_loss + mu * proximal_term(discriminator, anchor)
        d_loss.backward()
        opt_d.step()

        # (2) Update G: maximize log(D(G(z))) (the non-saturating loss)
        opt_g.zero_grad()
        fake_logits = discriminator(fake)
        g_loss = F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
        g_loss.backward()
        opt_g.step()
        if progress:
            progress(step, steps, {"d_loss": d_loss.item(), "g_loss": g_loss.item()})
    return LocalResult(
        generator=_state(generator),
        discriminator=_state(discriminator),
        num_examples=int(images.shape[0]),
        d_loss=float(d_loss.item()),
        g_loss=float(g_loss.item()),
    )


def train_generator(
    generator: Generator,
    discriminator: Discriminator,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
) -> tuple[StateDict, float]:
    """The cloud's global G update (strategy `entgan`): train G against a fixed, aggregated D.

    Needs no real data. D is a frozen copy, so its weights (and batch-norm buffers) are
    left exactly as aggregated. Returns the new G state and the last G loss.
    """
    rng = torch.Generator().manual_seed(seed)
    critic = copy.deepcopy(discriminator).train()
    critic.requires_grad_(False)
    opt_g = _adam(generator, lr)
    generator.train()
    g_loss = torch.zeros(())
    for _ in range(steps):
        z = torch.randn(batch_size, generator.latent_dim, generator=rng)
        opt_g.zero_grad()
        logits = critic(generator(z))
        g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        g_loss.backward()
        opt_g.step()
    return _state(generator), float(g_loss.item())


def train_features(
    net: FeatureNet,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    lr: float = 1e-3,
    seed: int = 0,
) -> tuple[StateDict, float]:
    """Local steps of the domain feature network (a classifier over data types)."""
    rng = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=rng)
        x = images[idx]
        # light augmentation: random horizontal flips (a robot sees obstacles from both sides)
        flip = torch.rand(x.shape[0], generator=rng) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        opt.zero_grad()
        loss = F.cross_entropy(net(x), labels[idx])
        loss.backward()
        opt.step()
    return _state(net), float(loss.item())
