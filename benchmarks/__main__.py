"""`python -m benchmarks [--quick]`: run every figure, write results/latest.json and the plots.

    make bench         # full settings (about half an hour on 2 cores)
    make bench-quick   # the same harness on tiny settings (a smoke test; part of `make test`)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import (
    ablation,
    cost,
    downstream,
    efficiency,
    fidelity,
    orchestration,
    plots,
    quality,
    scale,
    speedup,
    throughput,
    transfer,
)
from benchmarks.common import (
    KNOWN_TYPES,
    MODES,
    NEW_TYPE,
    Clock,
    demo_edges,
    held_out_accuracy,
    machine_info,
    train_referee,
)

FIGURES = ("speedup", "transfer", "cost", "orchestration", "throughput", "quality", "fidelity", "downstream", "ablation",
           "efficiency", "scale")
REFEREE_FIGURES = {"speedup", "transfer", "quality", "fidelity", "downstream"}  # the ones scored by the referee
RESULTS = Path(__file__).resolve().parent / "results"


def run(mode: str, out: Path, workdir: Path, only: tuple[str, ...] = FIGURES) -> dict:
    settings = MODES[mode]
    torch.set_num_threads(1)  # every timed piece of work runs on one thread (see benchmarks.common)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"mode": mode, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "machine": machine_info(),
                     "settings": settings.as_dict(), "figures": {}, "seconds": {}}
    previous = out / "latest.json"
    if set(only) != set(FIGURES) and previous.exists():  # a partial run updates the figures it ran
        kept = json.loads(previous.read_text())
        if kept.get("mode") == mode:
            results["figures"], results["seconds"] = kept["figures"], kept["seconds"]
            if "referee" in kept:
                results["referee"] = kept["referee"]
            results["full_run_started"] = kept.get("full_run_started", kept["started"])
            results["partial_reruns"] = [*kept.get("partial_reruns", []), {"started": results["started"],
                                                                            "figures": list(only)}]

    def save() -> None:
        (out / "latest.json").write_text(json.dumps(results, indent=2, sort_keys=True))

    def timed(name: str, fn, *args):
        clock = Clock()
        print(f"[bench] {name} ...", flush=True)
        value = fn(*args)
        results["seconds"][name] = clock.lap()[1]
        print(f"[bench] {name} done in {results['seconds'][name]:.0f} s", flush=True)
        return value

    all_types = KNOWN_TYPES + [NEW_TYPE]
    referee = pooled = pool = None
    if REFEREE_FIGURES & set(only) or "referee" not in results:  # a partial run without them keeps the last one
        pool = demo_edges(workdir / "pool", {"pool": {t: 1.0 for t in all_types}}, settings)
        referee = timed("referee", train_referee, pool, all_types, settings)
        pooled = pool.pooled()
        results["referee"] = {"types": all_types, "steps": settings.referee_steps,
                              "held_out_accuracy": held_out_accuracy(referee, pool),
                              "holdout_images": {t: len(x) for t, x in pool.holdout.items()}}
    champions = None
    if "speedup" in only or "transfer" in only:
        results["figures"]["speedup"], champions = timed("speedup", speedup.run, settings, workdir, referee, pooled)
        save()
    if "transfer" in only:
        results["figures"]["transfer"] = timed("transfer", transfer.run, settings, workdir, referee, champions)
        save()
    if "cost" in only:
        results["figures"]["cost"] = timed("cost", cost.run, settings, workdir)
        save()
    if "orchestration" in only:
        results["figures"]["orchestration"] = timed("orchestration", orchestration.run, settings, workdir)
        save()
    if "throughput" in only:
        results["figures"]["throughput"] = timed("throughput", throughput.run, settings, workdir, champions)
        save()
    if {"quality", "fidelity", "downstream"} & set(only):  # all three score the same champions, trained once
        trained = timed("champions", quality.train_champions, settings, workdir, referee)
        generators = trained[0]
        if "quality" in only:
            results["figures"]["quality"] = timed("quality", quality.run, settings, workdir, referee, pooled,
                                                  pool.holdout, trained)
            save()
        if "fidelity" in only:
            results["figures"]["fidelity"] = timed("fidelity", fidelity.run, settings, workdir, referee, generators)
            save()
        if "downstream" in only:
            results["figures"]["downstream"] = timed("downstream", downstream.run, settings, workdir, generators,
                                                     pooled, pool.holdout)
            save()
    for name, figure in (("ablation", ablation), ("efficiency", efficiency), ("scale", scale)):  # each on its own
        if name in only:
            results["figures"][name] = timed(name, figure.run, settings, workdir)
            save()
    results["summary"] = plots.summary_rows(results)
    save()
    plots.draw_all(results, out)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test of the harness)")
    parser.add_argument("--out", type=Path, default=None, help=f"results folder (default {RESULTS})")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--only", nargs="+", choices=FIGURES, default=list(FIGURES), help="run only these figures")
    args = parser.parse_args()
    out = args.out or RESULTS
    with tempfile.TemporaryDirectory(prefix="entgan-bench-") as tmp:
        results = run("quick" if args.quick else "full", out, args.workdir or Path(tmp), tuple(args.only))
    print(plots.markdown_table(results["summary"]))
    print(f"results: {out / 'latest.json'}")


if __name__ == "__main__":
    main()
