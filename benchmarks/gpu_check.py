"""GPU check: run on a machine with a CUDA GPU (not part of `make test` or `make bench`).

    python -m benchmarks.gpu_check [--out gpu_check.json] [--size 128] [--steps 50]

1. shapes: G, D (plain and spectrally normalised) and the feature network at 16..256 px on CUDA;
2. one federated round at `--size` px on two simulated edges (the demo images upscaled), with the
   cluster job's recipe (DiffAugment, EMA, bf16), through `entgan.gan.strategies` on CUDA; checks
   that every tensor that would travel is float32 (or an integer counter) on the CPU;
3. training throughput, images per second (real images seen by D), of `entgan.gan.train.train_local`
   against a bare torch DCGAN loop with the same networks, batch and precision.
Without a GPU it prints why and exits 0, unless `--cpu` asks for a (slow, tiny) dry run on CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch
from torch.nn import functional as F

from entgan.gan import strategies
from entgan.gan.models import Discriminator, FeatureNet, Generator
from entgan.gan.train import Recipe, train_local
from entgan.job.data import demo_dataset, to_tensor
from entgan.job.spec import EvalSpec, TrainSpec


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def check_shapes(device: str, width: int) -> dict[str, list[int]]:
    shapes = {}
    for size in (16, 32, 64, 128, 256):
        g = Generator(64, width, size).to(device)
        images = g(torch.randn(2, 64, device=device))
        assert images.shape == (2, 3, size, size), images.shape
        for sn in (False, True):
            assert Discriminator(width, size, spectral_norm=sn).to(device)(images).shape == (2,)
        assert FeatureNet(5, 64, size).to(device)(images).shape == (2, 5)
        shapes[str(size)] = list(images.shape)
    return shapes


def demo_images(size: int, per_type: int) -> dict[str, torch.Tensor]:
    images, labels, names = demo_dataset()
    x = to_tensor(images)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False) if size != x.shape[-1] else x
    return {names[t]: x[torch.from_numpy(labels == t)][:per_type] for t in range(2)}


def one_round(train: TrainSpec, per_type: int) -> dict[str, object]:
    ev = EvalSpec(feature_steps=5)
    data = demo_images(train.image_size, per_type)
    types = sorted(data)
    state = strategies.initial_state(types, train, ev)
    started = time.perf_counter()
    halves = {e: {t: x[i::2] for t, x in data.items()} for i, e in enumerate(("edge-a", "edge-b"))}
    updates = [strategies.edge_round(e, state, d, types, train, ev, round_=1) for e, d in halves.items()]
    new_state, metrics = strategies.cloud_round(state, updates, train, round_=1)
    seconds = time.perf_counter() - started
    bad = [f"{u.edge}:{g}/{k} {t.dtype} {t.device}" for u in updates for g, s in u.groups.items()
           for k, t in s.items() if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.int64)]
    assert not bad, f"tensors that would travel are not float32 on the CPU: {bad[:5]}"
    return {"device": strategies.describe_device(train), "seconds": round(seconds, 2),
            "groups": sorted(new_state), "cloud_g_loss": {k: round(v, 3) for k, v in metrics.items() if "cloud" in k}}


def bare_loop(g: Generator, d: Discriminator, images: torch.Tensor, steps: int, batch: int, amp: str) -> None:
    """The plain DCGAN loop: BCE, Adam, autocast when asked; nothing else."""
    device = images.device
    opt_d = torch.optim.Adam(d.parameters(), 5e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), 5e-4, betas=(0.5, 0.999))
    ctx = lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16")  # noqa: E731
    for _ in range(steps):
        real = images[torch.randint(0, len(images), (batch,), device=device)]
        with ctx():
            fake = g(torch.randn(batch, g.latent_dim, device=device))
            real_logits, fake_logits = d(real).float(), d(fake.detach()).float()
            d_loss = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
                F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        with ctx():
            logits = d(fake).float()
            g_loss = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()


def throughput(device: str, size: int, width: int, steps: int, batch: int, amp: str) -> dict[str, float]:
    images = demo_images(size, 256)
    x = torch.cat(list(images.values())).to(device)
    out = {}
    for name in ("bare", "entgan", "entgan+recipe"):
        torch.manual_seed(0)
        g, d = Generator(64, width, size).to(device), Discriminator(width, size).to(device)
        warm = max(2, steps // 10)
        for n, timed in ((warm, False), (steps, True)):
            _sync(device)
            started = time.perf_counter()
            if name == "bare":
                bare_loop(g, d, x, n, batch, amp)
            else:
                recipe = Recipe(device=device, amp=amp) if name == "entgan" else \
                    Recipe(augment=("color", "translation", "cutout"), ema_decay=0.999, device=device, amp=amp)
                train_local(g, d, x, steps=n, batch_size=batch, lr=5e-4, mu=0.01, recipe=recipe)
            _sync(device)
            if timed:
                out[f"{name}_images_per_s"] = round(n * batch / (time.perf_counter() - started), 1)
    out["entgan_vs_bare"] = round(out["entgan_images_per_s"] / out["bare_images_per_s"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=50, help="timed D+G steps per contender")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--amp", default="bf16", choices=["off", "bf16"])
    p.add_argument("--cpu", action="store_true", help="dry run on the CPU (tiny; for testing the script)")
    p.add_argument("--out", help="write the figures as JSON here too")
    args = p.parse_args(argv)
    if not torch.cuda.is_available() and not args.cpu:
        print("gpu_check: no CUDA device visible; nothing checked (use --cpu for a dry run)")
        return 0
    device = "cpu" if args.cpu else "cuda"
    train = TrainSpec(image_size=args.size, width=args.width, local_steps=args.steps, batch_size=args.batch,
                      augment="color,translation,cutout", ema_decay=0.999, device=device, amp=args.amp)
    report = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "shapes": check_shapes(device, width=8),
        "round": one_round(train, per_type=64),
        "throughput": throughput(device, args.size, args.width, args.steps, args.batch, args.amp),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
