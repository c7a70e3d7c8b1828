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
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from entgan.gan.aggregate import StateDict, proximal_term
from entgan.gan.augment import diff_augment
from entgan.gan.models import Discriminator, FeatureNet, Generator

Progress = Callable[[int, int, dict[str, float]], None]  # (step, steps, losses)


@dataclass(frozen=True)
class Recipe:
    """How the GAN steps train (TrainSpec's recipe fields; docs/training-recipe.md).

    The defaults are the plain DCGAN recipe on the CPU, whose seeded results do not change.
    """

    augment: tuple[str, ...] = ()  # DiffAugment policy (entgan.gan.augment), applied to all D inputs
    loss: str = "bce"  # "bce" (non-saturating) or "hinge"
    r1_gamma: float = 0.0  # R1 penalty on real images
    ema_decay: float | None = None  # per-step EMA of G
    device: str = "cpu"  # a torch device string
    amp: str = "off"  # "off", "bf16", "fp16": mixed precision, on CUDA only
    d_lr_scale: float = 1.0  # D's learning rate is lr x this (TTUR)


@dataclass(frozen=True)
class LocalResult:
    generator: StateDict
    discriminator: StateDict
    num_examples: int
    d_loss: float
    g_loss: float
    generator_ema: StateDict | None = None


def _adam(module: nn.Module, lr: float) -> torch.optim.Adam:
    """DCGAN's Adam. `foreach`: one kernel per operation over all parameters (CPU's default is a
    loop per tensor); bit-identical results. `fused` would be faster still but changes the
    numbers (docs/performance.md)."""
    return torch.optim.Adam(module.parameters(), lr=lr, betas=(0.5, 0.999), foreach=True)


def _batch(images: torch.Tensor, batch_size: int, rng: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, images.shape[0], (min(batch_size, images.shape[0]),), generator=rng)
    return images[idx.to(images.device)]


def _state(module: nn.Module) -> StateDict:
    """A CPU copy of the module's weights; floating-point tensors as float32, in the default
    (contiguous) layout whatever layout training used (what travels)."""
    return {k: (v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu())
            .clone(memory_format=torch.contiguous_format) for k, v in module.state_dict().items()}


def memory_format(device: torch.device) -> torch.memory_format:
    """The layout the training step's 4-D tensors use. On the CPU, channels-last (NHWC): a step
    takes 0.91-0.93x the CPU of NCHW on one thread, 0.85x in `make run` (docs/performance.md). The
    numbers differ from NCHW's in the last bits (another kernel), not in what is learnt; seeded
    runs stay reproducible on one machine. On CUDA the default layout is kept."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def _in_layout(tensor: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    return tensor.contiguous(memory_format=layout) if tensor.dim() == 4 else tensor


def d_loss_of(loss: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """D's loss: BCE (real -> 1, fake -> 0) or hinge (mean relu(1 - real) + mean relu(1 + fake))."""
    if loss == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def g_loss_of(loss: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """G's loss: non-saturating BCE (fake -> 1) or hinge's -mean D(G(z))."""
    if loss == "hinge":
        return -fake_logits.mean()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def r1_penalty(discriminator: nn.Module, real: torch.Tensor) -> torch.Tensor:
    """(1/2) E ||grad_x D(x)||^2 on real images x (Mescheder et al. 2018)."""
    real = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(real).float().sum(), real, create_graph=True)
    return 0.5 * grad.float().pow(2).flatten(1).sum(1).mean()


class _Precision:
    """Autocast and (for fp16) a gradient scaler per optimiser; a no-op off CUDA or with amp off."""

    def __init__(self, recipe: Recipe) -> None:
        device = torch.device(recipe.device)
        self.enabled = recipe.amp != "off" and device.type == "cuda"
        self.device_type = device.type
        self.dtype = torch.float16 if recipe.amp == "fp16" else torch.bfloat16
        self.scaling = self.enabled and recipe.amp == "fp16"

    def autocast(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler("cuda") if self.scaling else None


def _step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    if scaler is None:
        loss.backward()
        opt.step()
        return
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()


def _ema(generator: Generator, decay: float | None, start: StateDict | None) -> AveragedModel | None:
    """An EMA of `generator`'s parameters and buffers that starts from `start` (else G itself)."""
    if decay is None:
        return None
    ema = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if start is not None:
        ema.module.load_state_dict(start)
    ema.n_averaged.fill_(1)  # the copy above is the first average: no "copy on first update"
    return ema


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
    recipe: Recipe = Recipe(),
    ema_start: StateDict | None = None,
) -> LocalResult:
    """Train one type's GAN on an edge's real images for `steps` D+G steps.

    `anchor` is the knowledge base's discriminator: with `mu > 0` a proximal term
    (mu/2)||D - D_anchor||^2 keeps the local D from drifting away from what the library
    knows (the lifelong optimizer of the proposal; FedProx-style).
    `recipe` adds DiffAugment, hinge loss, R1, a per-step EMA of G (from `ema_start`, else from
    G's starting weights), a device and mixed precision. All random draws come from one CPU
    generator seeded with `seed`, whatever the device.
    """
    if images.shape[0] == 0:
        raise ValueError("train_local needs at least one real image")
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    device = torch.device(recipe.device)
    layout = memory_format(device)
    generator.to(device, memory_format=layout)
    discriminator.to(device, memory_format=layout)
    images = _in_layout(images.to(device), layout)
    opt_d, opt_g = _adam(discriminator, lr * recipe.d_lr_scale), _adam(generator, lr)
    anchor = anchor if anchor is not None else _state(discriminator)
    anchor = {k: _in_layout(v.to(device), layout) for k, v in anchor.items()}
    precision = _Precision(recipe)
    scaler_d, scaler_g = precision.scaler(), precision.scaler()
    ema = _ema(generator, recipe.ema_decay, ema_start)

    def view(x: torch.Tensor) -> torch.Tensor:
        """What D sees of a batch: the batch with the recipe's DiffAugment (identity when off)."""
        return diff_augment(x, recipe.augment, rng)

    generator.train()
    discriminator.train()
    self_supervised = hasattr(discriminator, "logits_and_reconstruction")
    d_loss = g_loss = torch.zeros(())
    for step in range(1, steps + 1):
        real = _batch(images, batch_size, rng)
        n = real.shape[0]
        z = torch.randn(n, generator.latent_dim, generator=rng).to(device)
        with precision.autocast():
            fake = generator(z)

        # (1) Update D: maximize log(D(x)) + log(1 - D(G(z))) (or the hinge), + R1, + the proximal term
        #     (+ the reconstruction of real images for a self-supervised D, entgan.gan.fastgan)
        opt_d.zero_grad()
        discriminator.requires_grad_(True)
        with precision.autocast():
            real_seen = view(real)
            if self_supervised:
                real_logits, reconstruction = discriminator.logits_and_reconstruction(real_seen)
            else:
                real_logits, reconstruction = discriminator(real_seen), None
            fake_logits = discriminator(view(fake.detach()))  # detach: this phase must not move G
            d_loss = d_loss_of(recipe.loss, real_logits.float(), fake_logits.float())
        if reconstruction is not None:
            d_loss = d_loss + reconstruction
        if recipe.r1_gamma > 0:
            d_loss = d_loss + recipe.r1_gamma * r1_penalty(discriminator, real_seen)
        if mu > 0:
            d_loss = d_loss + mu * proximal_term(discriminator, anchor)
        _step(d_loss, opt_d, scaler_d)

        # (2) Update G: maximize log(D(G(z))) (the non-saturating loss) or D(G(z)) (hinge).
        #     D's weights need no gradient here (the next D phase zeroes them): freezing them
        #     skips D's weight-gradient convolutions, ~8 % of the step, with the same G update.
        opt_g.zero_grad()
        discriminator.requires_grad_(False)
        with precision.autocast():
            fake_logits = discriminator(view(fake))
            g_loss = g_loss_of(recipe.loss, fake_logits.float())
        _step(g_loss, opt_g, scaler_g)
        if ema is not None:
            ema.update_parameters(generator)
        if progress:
            progress(step, steps, {"d_loss": d_loss.item(), "g_loss": g_loss.item()})
    discriminator.requires_grad_(True)
    return LocalResult(
        generator=_state(generator),
        discriminator=_state(discriminator),
        num_examples=int(images.shape[0]),
        d_loss=float(d_loss.item()),
        g_loss=float(g_loss.item()),
        generator_ema=_state(ema.module) if ema is not None else None,
    )


def train_generator(
    generator: Generator,
    discriminator: Discriminator,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    recipe: Recipe = Recipe(),
    ema_start: StateDict | None = None,
) -> tuple[StateDict, float, StateDict | None]:
    """The cloud's global G update (strategy `entgan`): train G against a fixed, aggregated D.

    Needs no real data. D is a frozen copy, so its weights (and batch-norm buffers) are
    left exactly as aggregated. With `recipe.augment` the fakes are augmented as at the edges;
    with `recipe.ema_decay` the EMA `ema_start` (the averaged edge EMAs) goes on over these steps.
    Returns the new G state, the last G loss and the EMA state (None without EMA).
    """
    rng = torch.Generator().manual_seed(seed)
    device = torch.device(recipe.device)
    generator.to(device)
    critic = copy.deepcopy(discriminator).to(device).train()
    critic.requires_grad_(False)
    opt_g = _adam(generator, lr)
    precision = _Precision(recipe)
    scaler = precision.scaler()
    ema = _ema(generator, recipe.ema_decay, ema_start)
    generator.train()
    g_loss = torch.zeros(())
    for _ in range(steps):
        z = torch.randn(batch_size, generator.latent_dim, generator=rng).to(device)
        opt_g.zero_grad()
        with precision.autocast():
            logits = critic(diff_augment(generator(z), recipe.augment, rng))
            g_loss = g_loss_of(recipe.loss, logits.float())
        _step(g_loss, opt_g, scaler)
        if ema is not None:
            ema.update_parameters(generator)
    return _state(generator), float(g_loss.item()), (_state(ema.module) if ema is not None else None)


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
