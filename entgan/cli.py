"""`entgan` command line: each verb is one plain function that tests and components can call too.

    entgan data demo [--root DIR]         write the demo edge folders
    entgan compile JOB [-o FILE]          compile the job's pipeline to KFP YAML
    entgan run JOB                        run the compiled pipeline locally (kfp.local)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path

from entgan.config import JobError, JobSpec, load_job
from entgan.data import DEMO_SPLIT, DataError, materialize_demo


class CliError(RuntimeError):
    """An error shown to the user as one line, without a traceback."""


def data_demo(root: str | Path, per_type: int | None = None) -> dict[str, dict[str, int]]:
    """Write the bundled demo set as non-IID edge folders under `root`."""
    counts = materialize_demo(root, DEMO_SPLIT, per_type=per_type)
    for edge, types in counts.items():
        print(f"{Path(root) / edge}: " + ", ".join(f"{t}={n}" for t, n in types.items()))
    return counts


def compile_pipeline(job: JobSpec, output: str | Path) -> Path:
    from pipelines.entgan_pipeline import compile_job

    path = compile_job(job, output)
    print(f"pipeline of job {job.name!r} written to {path}")
    return path


class _QuietStdout(io.TextIOBase):
    """Shows EntGAN's progress lines and kfp.local's task status; hides the KFP executor's JSON
    dumps. The hidden tail is kept and shown if the run fails."""

    KEEP = ("[entgan ", "Executing task", "finished with status", "Running pipeline", "Traceback", "Error")

    def __init__(self, target) -> None:
        self.target, self.partial = target, ""
        self.hidden: collections.deque[str] = collections.deque(maxlen=80)

    def write(self, text: str) -> int:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if any(k in line for k in self.KEEP):
                self.target.write(line.strip() + "\n")
                self.target.flush()
            else:
                self.hidden.append(line)
        return len(text)

    def flush(self) -> None:
        self.target.flush()


def run_local(job: JobSpec, base: Path | None = None, verbose: bool = False) -> dict:
    """Compile the job's pipeline and run that YAML with kfp.local (one subprocess per task).

    Relative paths in the job are taken from `base` (default: the current folder). Returns the
    deploy step's summary; sample grids are copied to `<state_dir>/samples/<type>.png`.
    """
    import kfp.local
    from kfp import components

    from entgan.steps import copy_samples

    job = job.with_local_paths(base or Path.cwd())
    state_dir = Path(job.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    pipeline_file = compile_pipeline(job, state_dir / f"{job.name}.pipeline.yaml")
    pipeline = components.load_component_from_file(str(pipeline_file))
    # Two edge tasks run at once locally; give each one core's worth of threads.
    os.environ.setdefault("ENTGAN_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(state_dir / "kfp"),
        raise_on_error=True,
    )
    started = time.perf_counter()
    quiet = _QuietStdout(sys.stdout)
    try:
        with contextlib.redirect_stdout(sys.stdout if verbose else quiet):
            task = pipeline()
    except Exception:
        print("\n".join(quiet.hidden), file=sys.stderr)
        raise
    summary_path = Path(task.output.path)
    summary = json.loads(summary_path.read_text())
    summary["seconds"] = time.perf_counter() - started
    grids = copy_samples(summary, state_dir / "samples")
    for t, path in grids.items():
        summary["types"][t]["grid"] = str(path)
    return summary


def format_summary(summary: dict) -> str:
    rows = [("type", "FID before", "FID after", "version", "champion", "gate")]
    for t, info in sorted(summary["types"].items()):
        rows.append(
            (
                t,
                f"{info['baseline_fid']:.2f}",
                f"{info['fid']:.2f}",
                str(info["version"]),
                str(info["champion"] or "-"),
                info["reason"],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines.append("")
    lines.append("sample grids:")
    lines += [f"  {t}: {info['grid']}" for t, info in sorted(summary["types"].items())]
    for t, why in summary.get("skipped", {}).items():
        lines.append(f"skipped {t}: {why}")
    if "seconds" in summary:
        lines.append(f"pipeline wall time: {summary['seconds']:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------- argument parsing


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="entgan", description=__doc__.split("\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = verbs.add_parser("data", help="demo data").add_subparsers(dest="data_verb", required=True)
    demo = data.add_parser("demo", help="write the bundled demo images as edge folders")
    demo.add_argument("--root", default=".entgan/demo/edges", help="folder to create <edge>/<type>/ in")
    demo.add_argument("--per-type", type=int, default=None, help="use at most N images of each type")

    comp = verbs.add_parser("compile", help="compile a job's pipeline to KFP YAML")
    comp.add_argument("job", help="job file (YAML)")
    comp.add_argument("-o", "--output", help="output file (default: <job name>.pipeline.yaml)")

    run = verbs.add_parser("run", help="run a job's pipeline locally with kfp.local")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--demo-data", action="store_true", help="write the demo edge folders first")
    run.add_argument("-v", "--verbose", action="store_true", help="show the KFP executors' full logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.verb == "data":
            data_demo(args.root, args.per_type)
        elif args.verb == "compile":
            job = load_job(args.job)
            compile_pipeline(job, args.output or f"{job.name}.pipeline.yaml")
        elif args.verb == "run":
            job = load_job(args.job)
            if args.demo_data:
                data_demo(Path(job.state_dir) / "edges")
            print(format_summary(run_local(job, verbose=args.verbose)))
    except (JobError, DataError, CliError) as err:
        if args.debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one clear line unless --debug
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {err} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
