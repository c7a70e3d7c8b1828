"""Peak memory of one pipeline step, measured in a fresh process (used by figure 3).

    python -m benchmarks.memory aggregate SPEC.json
    python -m benchmarks.memory centralized SPEC.json

The child imports what the step needs (and warms up torch's lazy imports), resets the kernel's peak-RSS mark (Linux
/proc/self/clear_refs), runs the step (reading its inputs from disk as the pipeline's task
would), and prints JSON: the RSS before, the peak during the step, and their difference.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
        return True
    except OSError:
        return False


def _warm_up() -> None:
    """Trigger torch's lazy imports (the first optimizer step imports torch._dynamo, ~150 MB)
    with a tiny model, so that they are not counted as the step's memory."""
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.zeros(2, 3, 8, 8)).sum().backward()
    optimizer.step()


def main(argv: list[str]) -> None:
    what, spec = argv[0], json.loads(Path(argv[1]).read_text())
    import gc

    import torch

    from entgan.gan.strategies import train_centralized
    from entgan.job.data import load_edge
    from entgan.job.spec import JobSpec
    from entgan.steps.common import TaskContext
    from entgan.steps.train import AggregateFiles, aggregate

    torch.set_num_threads(1)
    job = JobSpec.model_validate(spec["job"])
    _warm_up()
    gc.collect()
    before = _status_kb("VmRSS")
    exact = _reset_peak()
    if what == "aggregate":
        aggregate(TaskContext(job, round=1), AggregateFiles(spec["plan"], spec["state"], spec["updates"], spec["out"]))
    elif what == "centralized":
        images: dict[str, list[torch.Tensor]] = {}
        for edge in job.edges:  # the central node holds every edge's raw training images
            types = spec["types"][edge.name]
            for t, x in load_edge(edge.data, types, job.eval.holdout_fraction, job.train.image_size,
                                  holdout=False).items():
                images.setdefault(t, []).append(x)
        train_centralized({t: torch.cat(x) for t, x in images.items()}, job.train, steps=spec["steps"])
    else:
        raise SystemExit(f"unknown step {what!r}; use aggregate or centralized")
    peak = _status_kb("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"rss_before_kb": before, "peak_kb": peak, "step_peak_kb": peak - before,
                      "exact_peak_reset": exact}))


if __name__ == "__main__":
    main(sys.argv[1:])
