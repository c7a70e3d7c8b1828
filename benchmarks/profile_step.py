"""`python -m benchmarks.profile_step`: where one edge's training time goes, and how close the
step runs to the core's matrix-multiply rate.

Trains one type's GAN as an edge does (`entgan.gan.train.train_local`, the demo recipe unless
`--arch`/options say otherwise) on one thread under `torch.profiler`, and prints a table of
self CPU time by operation group (conv / transposed-conv forward and backward, batch norm,
activations, optimizer, EMA, augment, batch sampling, the rest), the step's GFLOP
(`torch.utils.flop_counter`) and ms, and a one-thread 1024^2 sgemm's GFLOPS measured in the
same process, interleaved with the steps. docs/performance.md holds its output.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import torch

from benchmarks.common import machine_info

GROUPS = [  # (group, predicate over an aten op name); the first match wins
    ("conv backward", lambda n: "convolution_backward" in n),
    ("conv forward", lambda n: "convolution" in n or "conv2d" in n or "conv_transpose" in n or "mkldnn_conv" in n),
    ("batch norm", lambda n: "batch_norm" in n or "native_batch_norm" in n),
    ("matmul", lambda n: n in ("aten::mm", "aten::addmm", "aten::bmm")),
    ("optimizer (Adam)", lambda n: n.startswith("aten::_foreach") or "adam" in n.lower()),
    ("activations", lambda n: any(a in n for a in ("relu", "leaky", "tanh", "sigmoid", "silu", "gelu", "glu"))),
    ("loss", lambda n: "binary_cross" in n or "log_sigmoid" in n or "softplus" in n),
    ("upsample / pool", lambda n: "upsample" in n or "pool" in n),
    ("random / sampling", lambda n: n in ("aten::randn", "aten::randint", "aten::rand", "aten::normal_",
                                          "aten::index", "aten::uniform_", "aten::random_")),
    ("copies / layout", lambda n: n in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to",
                                        "aten::_to_copy", "aten::empty_like", "aten::fill_", "aten::zero_",
                                        "aten::zeros_like", "aten::ones_like", "aten::empty", "aten::cat",
                                        "aten::stack", "aten::t", "aten::view", "aten::reshape")),
    ("elementwise", lambda n: n in ("aten::add_", "aten::add", "aten::mul", "aten::mul_", "aten::sub",
                                    "aten::div", "aten::addcmul_", "aten::addcdiv_", "aten::lerp_",
                                    "aten::sqrt", "aten::pow", "aten::sum", "aten::mean", "aten::where",
                                    "aten::neg", "aten::rsub", "aten::exp", "aten::abs", "aten::clamp")),
]


def group_of(name: str) -> str:
    for group, match in GROUPS:
        if match(name):
            return group
    return "other aten ops" if name.startswith("aten::") else "python / autograd / other"


def sgemm_gflops(seconds: float = 0.5, n: int = 1024) -> float:
    """One thread's fp32 matrix-multiply rate (the core's practical peak for these kernels)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    count, start = 0, time.process_time()  # CPU time, as the steps are timed: fair on a busy machine
    while time.process_time() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.process_time() - start) / 1e9


def build(arch: str, width: int, d_width: int | None, image_size: int, spectral_norm: bool):
    from entgan.gan.strategies import new_discriminator, new_generator
    from entgan.job.spec import TrainSpec

    train = TrainSpec(architecture=arch, width=width, d_width=d_width, image_size=image_size,
                      spectral_norm=spectral_norm)
    return new_generator(train), new_discriminator(train)


def step_flops(generator, discriminator, batch_size: int, recipe, steps: int = 1) -> float:
    """GFLOP of one D+G step (forward and backward, as torch's flop counter counts them)."""
    from torch.utils.flop_counter import FlopCounterMode

    from entgan.gan.train import train_local

    images = torch.rand(64, 3, generator_size(generator), generator_size(generator)) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        train_local(generator, discriminator, images, steps=steps, batch_size=batch_size, lr=5e-4, recipe=recipe)
    return counter.get_total_flops() / steps / 1e9


def step_cost(generator, discriminator, images, batch_size: int, recipe, *, repeats: int, steps: int,
              lr: float = 5e-4) -> dict:
    """One D+G step: its GFLOP, the best CPU ms of `repeats` x `steps`, and the best one-thread sgemm
    GFLOPS, measured interleaved with the steps (both on process CPU time) so both see the same machine."""
    import copy

    from entgan.gan.train import train_local

    gflop = step_flops(copy.deepcopy(generator), copy.deepcopy(discriminator), batch_size, recipe)
    train_local(generator, discriminator, images, steps=2, batch_size=batch_size, lr=lr, recipe=recipe)  # warm up
    ms, gemm = [], []
    for _ in range(repeats):
        gemm.append(sgemm_gflops())
        start = time.process_time()
        train_local(generator, discriminator, images, steps=steps, batch_size=batch_size, lr=lr, recipe=recipe)
        ms.append((time.process_time() - start) / steps * 1000)
    best = min(ms)
    return {"gflop": gflop, "ms": best, "ms_all": ms, "gflops": gflop / best * 1000, "sgemm_gflops": max(gemm),
            "gflops_ratio": gflop / best * 1000 / max(gemm)}


def generator_size(generator) -> int:
    with torch.no_grad():
        return generator.sample(1).shape[-1]


def profile(args) -> dict:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from entgan.gan.train import Recipe, train_local

    torch.set_num_threads(1)
    torch.manual_seed(0)
    recipe = Recipe(ema_decay=args.ema, augment=tuple(a for a in args.augment.split(",") if a), loss=args.loss)
    generator, discriminator = build(args.arch, args.width, args.d_width, args.image_size, args.spectral_norm)
    images = torch.rand(args.images, 3, args.image_size, args.image_size) * 2 - 1
    cost = step_cost(generator, discriminator, images, args.batch_size, recipe, repeats=args.repeats, steps=args.steps)
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        train_local(generator, discriminator, images, steps=args.steps, batch_size=args.batch_size, lr=5e-4,
                    recipe=recipe)
    groups: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        groups[group_of(event.key)] += event.self_cpu_time_total
    total = sum(groups.values())
    return {
        "machine": machine_info(), "arch": args.arch, "width": args.width, "d_width": args.d_width or args.width, "batch_size": args.batch_size,
        "image_size": args.image_size, "ema": args.ema, "step_gflop": cost["gflop"], "step_ms": cost["ms"],
        "step_ms_all": cost["ms_all"], "step_gflops": cost["gflops"], "sgemm_gflops": cost["sgemm_gflops"],
        "gflops_ratio": cost["gflops_ratio"],
        "groups": {g: t / total for g, t in sorted(groups.items(), key=lambda kv: -kv[1])},
        "params_g": sum(p.numel() for p in generator.parameters()),
        "params_d": sum(p.numel() for p in discriminator.parameters()),
    }


def print_report(r: dict) -> None:
    m = r["machine"]
    print(f"machine: {m['cpu_model']}, {m['cores']} cores, {' '.join(m['vector_extensions'])}; one torch thread; "
          f"load average {m['load_average_at_start']}")
    print(f"{r['arch']} width {r['width']} (D {r['d_width']}) batch {r['batch_size']} {r['image_size']} px EMA {r['ema']}: "
          f"G {r['params_g']:,} params, D {r['params_d']:,}")
    print(f"step: {r['step_gflop']:.3f} GFLOP, {r['step_ms']:.1f} ms -> {r['step_gflops']:.1f} GFLOPS; "
          f"sgemm {r['sgemm_gflops']:.1f} GFLOPS; ratio {r['gflops_ratio']:.2f}")
    print("| where the time goes (self CPU) | share |\n|---|---|")
    for group, share in r["groups"].items():
        print(f"| {group} | {share:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="dcgan", choices=["dcgan", "light"], help="train.architecture")
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--d-width", type=int, default=None, help="D's width (default: --width)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--ema", type=float, default=0.99)
    parser.add_argument("--augment", default="")
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--spectral-norm", action="store_true")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    print_report(profile(parser.parse_args()))


if __name__ == "__main__":
    main()
