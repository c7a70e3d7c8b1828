"""`entgan` command line: each verb is one plain function that tests and components can call too.

    entgan data demo [--root DIR]         write the demo edge folders
    entgan compile JOB [-o FILE]          compile the job's pipeline to KFP YAML
    entgan run JOB                        run the compiled pipeline locally (kfp.local)
    entgan status JOB                     stages, last runs and champions of a job
    entgan generate --job JOB -n N --out DIR [--type T]   images from the champions
    entgan upload JOB [--image IMG]       compile and upload the pipeline to Kubeflow Pipelines
    entgan schedule JOB --cron CRON       create or update its recurring run
    entgan figures JOB [--out DIR]        real vs generated samples per type, FID per round (PNG)
"""

from __future__ import annotations

import argparse
import builtins
import collections
import contextlib
import io
import json
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

from entgan.config import JobError, JobSpec, load_job
from entgan.data import DEMO_SPLIT, DataError, materialize_demo, materialize_wave
from entgan.kfp_client import KfpError
from entgan.redact import redact
from entgan.storage import StorageError


class CliError(RuntimeError):
    """An error shown to the user as one line, without a traceback."""


class TaskFailed(CliError):
    """A pipeline task failed: its own error as one line; `log` keeps the tail of the run's
    output (with the task's traceback) for --debug."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def data_demo(root: str | Path, per_type: int | None = None, wave: int | None = None) -> dict[str, dict[str, int]]:
    """Write the bundled demo set as non-IID edge folders under `root` (or one lifelong wave)."""
    counts = materialize_wave(root, wave) if wave else materialize_demo(root, DEMO_SPLIT, per_type=per_type)
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

    KEEP = ("[entgan ", "Executing task", "finished with status", "Running pipeline")
    # The last line of a Python traceback: `entgan.data.DataError: edge-1/box/x.png: cannot read image`.
    ERROR_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)): (.+)$")

    def __init__(self, target, progress=None) -> None:
        self.target, self.partial, self.progress = target, "", progress
        # kfp.local's parallel tasks are threads that print into this one object: `partial` and
        # the progress counts are shared, so one write at a time.
        self.lock = threading.Lock()
        self.hidden: collections.deque[str] = collections.deque(maxlen=80)
        self.error_lines: list[str] = []  # exception lines the tasks printed, in order

    def write(self, text: str) -> int:
        with self.lock:
            self._write(text)
        return len(text)

    def _write(self, text: str) -> None:
        lines = (self.partial + text).split("\n")
        self.partial = lines.pop()
        for line in lines:
            keep = any(k in line for k in self.KEEP)
            if self.ERROR_LINE.match(line.strip()):
                self.error_lines.append(line.strip())
                keep = True
            if self.progress is not None:
                self.progress.line(line.strip(), show=keep)
            elif keep:
                self.target.write(line.strip() + "\n")
                self.target.flush()
            if not keep:
                self.hidden.append(line)

    def failure(self, err: Exception) -> TaskFailed:
        """One line for a failed run: the failed task and its own error (without the traceback)."""
        from entgan.progress import ANSI

        failed = re.findall(r"Inner task failed: (.+?)\.?$", ANSI.sub("", str(err)))
        where = f"task {failed[0].split(' inside ')[0]} failed" if failed else "the pipeline failed"
        cause = self.ERROR_LINE.match(self.error_lines[-1]).group(3) if self.error_lines else ANSI.sub("", str(err))
        return TaskFailed(f"{where}: {cause} (the task's log is above; rerun with -v for the full log "
                          "or --debug for the traceback)", "\n".join(self.hidden))

    def flush(self) -> None:
        self.target.flush()


@contextlib.contextmanager
def _thread_safe_kfp_logging():
    """Work around a race in kfp.local (2.17): every task swaps the root logger's handlers in
    and out (`logging_utils.local_logger_context`), and two edge tasks run in threads. When one
    task restores the handlers (`clear()`, then `addHandler`) at the moment the other logs
    "Task ... finished", that line goes to no handler and is lost: the progress bar ends short
    and counts from the log are wrong. While a run is in progress, this swaps in a version that
    installs kfp's handler once, for as long as any task is inside it.

    The same race in `logging_utils.indented_print` (each task swaps `builtins.print` for a
    wrapper that indents and calls the print it found) is worse: when two tasks overlap, the
    later one restores the earlier one's wrapper, which stays installed, and the next tasks wrap
    it again. Each wrapper calls the one below it twice (the indent, then the text), so a print
    costs 2**depth writes: after enough overlaps a run spins on indentation (seen in CI: 14
    leaked wrappers, a test hung for 20 minutes). Here one print wrapper is installed for the run
    and the indent is per thread."""
    from kfp.local import logging_utils

    lock, depth, saved = threading.Lock(), [0], {}

    @contextlib.contextmanager
    def shared_context():
        root = logging.getLogger()
        with lock:
            if depth[0] == 0:
                saved.update(level=root.level, handlers=root.handlers[:])
                handler = logging.StreamHandler(sys.stdout)
                handler.setFormatter(logging_utils.MillisecondFormatter(
                    fmt="%(asctime)s - %(levelname)s - %(message)s", datefmt="%H:%M:%S.%f"))
                root.handlers = [handler]  # one assignment: a thread logging now sees old or new
                root.setLevel(logging.INFO)
            depth[0] += 1
        try:
            yield
        finally:
            with lock:
                depth[0] -= 1
                if depth[0] == 0:
                    root.handlers = saved["handlers"]
                    root.setLevel(saved["level"])

    this_thread, builtin_print = threading.local(), builtins.print

    def print_indented(*args, **kwargs):
        indent = getattr(this_thread, "indent", 0)
        if indent:  # in the same write as the text, so that parallel tasks' lines do not interleave
            args = (" " * indent + (str(args[0]) if args else ""), *args[1:])
        return builtin_print(*args, **kwargs)

    @contextlib.contextmanager
    def indented_print(num_spaces: int = 4):
        this_thread.indent = getattr(this_thread, "indent", 0) + num_spaces
        try:
            yield
        finally:
            this_thread.indent -= num_spaces

    originals = logging_utils.local_logger_context, logging_utils.indented_print
    logging_utils.local_logger_context, logging_utils.indented_print = shared_context, indented_print
    builtins.print = print_indented
    try:
        yield
    finally:
        builtins.print = builtin_print
        logging_utils.local_logger_context, logging_utils.indented_print = originals


def run_local(job: JobSpec, base: Path | None = None, verbose: bool = False, fresh_processes: bool = False) -> dict:
    """Compile the job's pipeline and run that YAML with kfp.local (one process per task).

    Relative paths in the job are taken from `base` (default: the current folder). Returns the
    deploy step's summary; sample grids are copied to `<state_dir>/samples/<type>.png`.
    Tasks start as forks of a pre-warmed server (`entgan.forkserver`, which imports torch, MLflow
    and kfp once instead of once per task) unless `fresh_processes` or ENTGAN_FORK_SERVER=0.
    """
    from entgan import forkserver

    job = job.with_local_paths(base or Path.cwd())
    state_dir = Path(job.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Two edge tasks run at once locally; give each one core's worth of threads.
    os.environ.setdefault("ENTGAN_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    with contextlib.ExitStack() as stack:
        if forkserver.enabled() and not fresh_processes:  # it starts importing now, while we compile
            stack.enter_context(forkserver.serving())
        return _run_compiled(job, state_dir, verbose)


def _run_compiled(job: JobSpec, state_dir: Path, verbose: bool) -> dict:
    import kfp.local
    import yaml
    from kfp import components

    from entgan.progress import ProgressOutput, RunProgress, count_tasks
    from entgan.report import write_figures
    from entgan.steps.deploy import copy_samples

    pipeline_file = compile_pipeline(job, state_dir / f"{job.name}.pipeline.yaml")
    pipeline = components.load_component_from_file(str(pipeline_file))
    warnings.filterwarnings("ignore", message=".*non-Python base image.*")
    warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
    kfp.local.init(
        runner=kfp.local.SubprocessRunner(use_venv=False),
        pipeline_root=str(state_dir / "kfp"),
        raise_on_error=True,
    )
    started = time.perf_counter()
    progress = ProgressOutput(sys.stdout, RunProgress(
        count_tasks(next(yaml.safe_load_all(pipeline_file.read_text())), len(job.edges)),
        job.train.rounds, len(job.edges)))
    quiet = _QuietStdout(sys.stdout, progress)
    try:
        with contextlib.redirect_stdout(sys.stdout if verbose else quiet), _thread_safe_kfp_logging():
            pipeline()
    except Exception as err:
        raise quiet.failure(err) from err
    finally:
        progress.close()
    summary = latest_summary(job)
    summary["seconds"] = time.perf_counter() - started
    grids = copy_samples(summary, state_dir / "samples")
    for t, path in grids.items():
        summary["types"][t]["grid"] = str(path)
    if summary["types"]:  # the README's pictures: real vs generated per type, FID per round
        summary["figures"] = {k: str(v) for k, v in write_figures(job, state_dir / "figures").items()}
    return summary


def generate(job: JobSpec, types: list[str] | None, n: int, out: str | Path, seed: int | None = None) -> dict:
    """`entgan generate`: n images per type from each type's current champion (ImageFolder layout).

    The champion is looked up on every call, so a newly promoted one is used without a restart."""
    from entgan.generate import generate_from_library
    from entgan.registry import library_for

    written = generate_from_library(library_for(job.with_local_paths(Path.cwd())), job.train, types, n, Path(out), seed)
    for t, files in written.items():
        print(f"{t}: {len(files)} images in {Path(out) / t}")
    return written


def figures(job: JobSpec, out: str | Path | None = None) -> dict[str, Path]:
    """`entgan figures`: the samples figure and the FID curves of a job, as PNG files."""
    from entgan.report import write_figures

    job = job.with_local_paths(Path.cwd())
    written = write_figures(job, out or Path(job.state_dir) / "figures")
    for name, path in written.items():
        print(f"{name.replace('_', ' ')}: {path}")
    return written


def show_status(job: JobSpec, runs: int = 5) -> str:
    """`entgan status`: stages of the last runs and each type's champion, from the task library."""
    from entgan.registry import library_for
    from entgan.status import format_status, job_status

    return format_status(job_status(library_for(job.with_local_paths(Path.cwd())), runs=runs))


def latest_summary(job: JobSpec) -> dict:
    """The summary of the job's newest run from the task library; a run that waited (trigger
    not met) has no types and says why."""
    from entgan.registry import library_for

    library = library_for(job)
    runs = library.recent_runs(1)
    if not runs:
        raise CliError(f"job {job.name!r} has no run in {job.tracking_uri}")
    run_id = runs[0].info.run_id
    summary = library.read_json(run_id, "summary.json") or {"job": job.name, "types": {}, "mlflow_run_id": run_id}
    summary["states"] = [c.to_json() for c in library.states(run_id)]
    waiting = [c for c in library.states(run_id) if c.stage.value == "train" and c.detail.startswith("trigger")]
    if waiting and not summary["types"]:
        summary["waiting"] = waiting[-1].detail
    return summary


def format_summary(summary: dict) -> str:
    """The per-type table `entgan run` ends with."""
    from entgan.metrics import summary_columns, summary_rows

    if summary.get("waiting"):
        return f"train stage Waiting: {summary['waiting']}; nothing was trained"
    rows = [tuple(summary_columns())] + [
        (r.data_type, r.started_from, *r.metrics, r.version, r.champion, r.reason) for r in summary_rows(summary)
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines += ["", "sample grids:"] + [f"  {t}: {i['grid']}" for t, i in sorted(summary["types"].items())]
    lines += [f"figure ({name.replace('_', ' ')}): {path}" for name, path in summary.get("figures", {}).items()]
    lines += [f"skipped {t}: {why}" for t, why in summary.get("skipped", {}).items()]
    lines += [
        f"possible unseen types: {n} image(s) at '{t}' the evaluator could not place confidently"
        for t, n in summary.get("uncertain", {}).items()
    ]
    if "seconds" in summary:
        lines.append(f"pipeline wall time: {summary['seconds']:.0f} s")
    return "\n".join(lines)


# ---------------------------------------------------------------- Kubeflow: upload, schedule


def upload(
    job: JobSpec,
    *,
    host: str | None = None,
    namespace: str | None = None,
    image: str | None = None,
    output: str | Path | None = None,
    dry_run: bool = False,
):
    """Compile the job's pipeline (with `image` if given) and upload it to the KFP API: a new
    pipeline, or a new version of it. Host and token from the flags or KFP_HOST / KFP_TOKEN."""
    from entgan import kfp_client

    if image is not None:
        if not image.strip() or any(c.isspace() for c in image):
            raise CliError(f"--image {image!r} is not an image reference; write e.g. registry.example.com/entgan:0.1.0")
        job = job.model_copy(update={"image": image})
    path = compile_pipeline(job, output or Path("build") / f"{job.name}.pipeline.yaml")
    name = kfp_client.pipeline_name(job.name)
    if dry_run:
        where = host or os.environ.get(kfp_client.HOST_ENV) or f"${kfp_client.HOST_ENV}"
        print(f"dry run: would upload {path} to {where} as pipeline {name!r}, version "
              f"{kfp_client.version_name(name, path)!r} (image {job.image}); nothing was sent")
        return None
    api = kfp_client.KfpApi(kfp_client.target_from_env(host, namespace))
    result = kfp_client.upload(api, path, name, f"EntGAN job {job.name!r} (image {job.image})")
    print(f"{result.action}: pipeline {name!r} ({result.pipeline_id}), version {result.version_name!r} "
          f"({result.version_id}) on {api.target.host}")
    return result


def schedule(
    job: JobSpec,
    cron: str,
    *,
    name: str | None = None,
    experiment: str | None = None,
    max_concurrency: int = 1,
    catchup: bool = False,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    host: str | None = None,
    namespace: str | None = None,
    dry_run: bool = False,
):
    """Create or update the recurring run of the job's uploaded pipeline (newest version)."""
    from entgan import kfp_client

    pipeline = kfp_client.pipeline_name(job.name)
    wanted = kfp_client.Schedule(
        name=name or pipeline,
        cron=cron,
        experiment=experiment or pipeline,
        max_concurrency=max_concurrency,
        no_catchup=not catchup,
        pipeline_root=pipeline_root,
        service_account=service_account,
        description=f"EntGAN job {job.name!r}: check the trigger and train on schedule",
    )
    if dry_run:
        body = wanted.body(f"<id of pipeline {pipeline}>", "<id of its newest version>",
                           f"<id of experiment {wanted.experiment}>")
        print(json.dumps(body, indent=2))
        print("dry run: nothing was sent")
        return body
    api = kfp_client.KfpApi(kfp_client.target_from_env(host, namespace))
    result = kfp_client.schedule(api, pipeline, wanted)
    print(f"{result.action}: recurring run {wanted.name!r} ({result.recurring_run_id}), cron "
          f"'{wanted.cron}', experiment {wanted.experiment!r}, version {result.pipeline_version_id} "
          f"on {api.target.host}")
    return result


# ---------------------------------------------------------------- argument parsing


_EPILOG = """\
examples:
  entgan data demo && entgan run jobs/demo.yaml     the local demo (what `make run` does)
  entgan status jobs/demo.yaml                      stages, runs and champions of a job
  entgan generate --job jobs/demo.yaml -n 100 --out synth/
  entgan upload jobs/cluster.yaml --image REGISTRY/entgan:TAG && entgan schedule jobs/cluster.yaml --cron '0 */6 * * *'

Errors are one line saying what is wrong and how to fix it (exit status 2, or 1 for an
unexpected error); add --debug for the traceback. `entgan VERB --help` documents each verb."""


def _verb(group, name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its one-line purpose; --debug works after it too."""
    sub = group.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}.", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback on errors")
    return sub


def _parser() -> argparse.ArgumentParser:
    about = "EntGAN: federated GAN training on Kubeflow Pipelines with an MLflow task library.\n"
    parser = argparse.ArgumentParser(prog="entgan", description=about + __doc__.split("\n", 1)[1], epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    data = _verb(verbs, "data", "demo data").add_subparsers(dest="data_verb", required=True, metavar="WHAT")
    demo = _verb(data, "demo", "write the bundled demo images as edge folders",
                 "example: entgan data demo --root .entgan/demo/edges --per-type 100")
    demo.add_argument("--root", default=".entgan/demo/edges", help="folder to create <edge>/<type>/ in")
    demo.add_argument("--per-type", type=int, default=None, help="use at most N images of each type")
    demo.add_argument("--wave", type=int, choices=[1, 2], help="lifelong demo: 1 = first data, 2 = new arrivals")

    comp = _verb(verbs, "compile", "compile a job's pipeline to KFP YAML (for upload to Kubeflow)",
                 "example: entgan compile jobs/cluster.yaml -o build/cluster.pipeline.yaml")
    comp.add_argument("job", help="job file (YAML)")
    comp.add_argument("-o", "--output", help="output file (default: <job name>.pipeline.yaml)")

    run = _verb(verbs, "run", "run a job's pipeline locally with kfp.local",
                "Compiles the job, runs that YAML (one process per task) against the job's MLflow task\n"
                "library and prints a table per type; a progress bar on a terminal, plain lines otherwise.\n"
                "Figures (real vs generated, FID per round) go to <state_dir>/figures/.\n\n"
                "example: entgan run jobs/demo.yaml")
    run.add_argument("job", help="job file (YAML)")
    run.add_argument("--demo-data", action="store_true", help="write the demo edge folders first")
    run.add_argument("-v", "--verbose", action="store_true", help="show the KFP executors' full logs")
    run.add_argument("--fresh-processes", action="store_true",
                     help="start every task in a fresh Python, as plain kfp.local does (slower; by default "
                          "tasks are forks of one process that has imported torch, MLflow and kfp)")

    gen = _verb(verbs, "generate", "write images from the champion generators (ImageFolder layout)",
                "example: entgan generate --job jobs/demo.yaml --type box -n 100 --out synth/")
    gen.add_argument("--job", required=True, help="job file (YAML)")
    gen.add_argument("--type", dest="types", action="append", help="data type (repeat; default: every type)")
    gen.add_argument("-n", type=int, default=64, help="images per type (default 64)")
    gen.add_argument("--out", required=True, help="output folder; images go to <out>/<type>/")
    gen.add_argument("--seed", type=int, default=None, help="noise seed for reproducible images")

    st = _verb(verbs, "status", "show a job's stages, last runs and champions (from the task library)",
               "example: entgan status jobs/demo.yaml --runs 3")
    st.add_argument("job", help="job file (YAML)")
    st.add_argument("--runs", type=int, default=5, help="how many recent runs to list (default 5)")

    kfp_help = "KFP API URL (default: $KFP_HOST); token from $KFP_TOKEN or $KFP_TOKEN_FILE"
    up = _verb(verbs, "upload", "compile a job's pipeline and upload it to Kubeflow Pipelines",
               "example: KFP_HOST=http://localhost:8888 entgan upload jobs/cluster.yaml --image REGISTRY/entgan:0.1.0")
    up.add_argument("job", help="job file (YAML)")
    up.add_argument("--host", help=kfp_help)
    up.add_argument("--namespace", help="KFP namespace (multi-user Kubeflow; default: $KFP_NAMESPACE)")
    up.add_argument("--image", help="component image to compile in (default: the job's image)")
    up.add_argument("-o", "--output", help="where to write the compiled YAML (default: build/<job>.pipeline.yaml)")
    up.add_argument("--dry-run", action="store_true", help="compile and say what would be uploaded; send nothing")

    sch = _verb(verbs, "schedule", "create or update the recurring run of a job's uploaded pipeline",
                "example: KFP_HOST=http://localhost:8888 entgan schedule jobs/cluster.yaml --cron '0 */6 * * *'")
    sch.add_argument("job", help="job file (YAML)")
    sch.add_argument("--cron", required=True, help="'M H DoM Mon DoW' or with seconds first, e.g. '0 */6 * * *'")
    sch.add_argument("--name", help="recurring run name (default: entgan-<job>)")
    sch.add_argument("--experiment", help="KFP experiment (default: entgan-<job>; created if missing)")
    sch.add_argument("--max-concurrency", type=int, default=1, help="runs at once, 1-10 (default 1)")
    sch.add_argument("--catchup", action="store_true", help="run missed schedules after a pause (default: no)")
    sch.add_argument("--pipeline-root", help="where runs keep artifacts, e.g. s3://entgan/kfp (default: KFP's)")
    sch.add_argument("--service-account", help="Kubernetes service account of the runs (default: KFP's)")
    sch.add_argument("--host", help=kfp_help)
    sch.add_argument("--namespace", help="KFP namespace (multi-user Kubeflow; default: $KFP_NAMESPACE)")
    sch.add_argument("--dry-run", action="store_true", help="print the recurring run to create; send nothing")

    fig = _verb(verbs, "figures", "draw a job's figures: real vs generated samples per type, FID per round",
                "Reads the champions and the newest training run from the task library and the real\n"
                "held-out images from the edges' data folders (run it where those are reachable).\n\n"
                "example: entgan figures jobs/demo.yaml --out docs/figures   (the README's pictures)")
    fig.add_argument("job", help="job file (YAML)")
    fig.add_argument("--out", help="output folder (default: <state_dir>/figures)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.debug:  # MLflow's INFO lines (e.g. creating a new store) are not for this terminal
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        if args.verb == "data":
            data_demo(args.root, args.per_type, args.wave)
        elif args.verb == "compile":
            job = load_job(args.job)
            compile_pipeline(job, args.output or f"{job.name}.pipeline.yaml")
        elif args.verb == "run":
            job = load_job(args.job)
            if args.demo_data:
                data_demo(Path(job.state_dir) / "edges")
            print(format_summary(run_local(job, verbose=args.verbose, fresh_processes=args.fresh_processes)))
        elif args.verb == "generate":
            generate(load_job(args.job), args.types, args.n, args.out, args.seed)
        elif args.verb == "status":
            print(show_status(load_job(args.job), runs=args.runs))
        elif args.verb == "figures":
            figures(load_job(args.job), args.out)
        elif args.verb == "upload":
            upload(load_job(args.job), host=args.host, namespace=args.namespace, image=args.image,
                   output=args.output, dry_run=args.dry_run)
        elif args.verb == "schedule":
            schedule(load_job(args.job), args.cron, name=args.name, experiment=args.experiment,
                     max_concurrency=args.max_concurrency, catchup=args.catchup,
                     pipeline_root=args.pipeline_root, service_account=args.service_account,
                     host=args.host, namespace=args.namespace, dry_run=args.dry_run)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted; run the command again to start over", file=sys.stderr)
        return 130
    except (JobError, DataError, CliError, KfpError, StorageError, LookupError) as err:
        if args.debug:
            if isinstance(err, TaskFailed):
                print(err.log, file=sys.stderr)
            raise
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - one clear line unless --debug
        if args.debug:
            raise
        print(f"error: {type(err).__name__}: {redact(str(err))} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
