"""`entgan` command line: each verb is one plain function that tests and components can call too;
its options are one typed object (`entgan.cli.options`) that also builds its parser.

    entgan data demo [--root DIR]         write the demo edge folders
    entgan compile JOB [-o FILE]          compile the job's pipeline to KFP YAML
    entgan run JOB                        run the compiled pipeline locally (kfp.local)
    entgan status JOB                     stages, last runs and champions of a job
    entgan generate --job JOB -n N --out DIR [--type T]   images from the champions
    entgan upload JOB [--image IMG]       compile and upload the pipeline to Kubeflow Pipelines
    entgan schedule JOB --cron CRON       create or update its recurring run
    entgan preflight JOB                  check that the cluster can run the job (nodes, GPUs, Secret, MLflow, KFP)
    entgan figures JOB [--out DIR]        real vs generated samples per type, FID per round (PNG)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path

from entgan.cli.options import (
    CliError,
    CompileOptions,
    DataDemoOptions,
    FiguresOptions,
    GenerateOptions,
    Options,
    PreflightOptions,
    RunOptions,
    ScheduleOptions,
    StatusOptions,
    UploadOptions,
    add_options,
    options_from,
)
from entgan.cluster.kfp_api import KfpError
from entgan.job.data import DEMO_SPLIT, DataError, materialize_demo, materialize_wave
from entgan.job.machine import machine_line
from entgan.job.redact import redact
from entgan.job.spec import JobError, JobSpec, load_job
from entgan.job.storage import StorageError
from entgan.job.user_input import check_outside_edges
from entgan.library.registry import RegistryError
from entgan.library.server_check import TrackingServerUnreachable
from entgan.local.kfp_output import TaskFailed, thread_safe_kfp_logging
from entgan.local.run import compile_pipeline, latest_summary, preflight, run_local
from pipelines.package_size import PipelineTooLarge

_thread_safe_kfp_logging = thread_safe_kfp_logging  # the name tests/local/test_terminal.py imports
__all__ = ["CliError", "TaskFailed", "compile_pipeline", "latest_summary", "main", "run_local"]


def data_demo(root: str | Path, per_type: int | None = None, wave: int | None = None) -> dict[str, dict[str, int]]:
    """Write the bundled demo set as non-IID edge folders under `root` (or one lifelong wave)."""
    DataDemoOptions(root=str(root), per_type=per_type, wave=wave)
    root = Path(root).expanduser()
    counts = materialize_wave(root, wave) if wave else materialize_demo(root, DEMO_SPLIT, per_type=per_type)
    for edge, types in counts.items():
        print(f"{root / edge}: " + ", ".join(f"{t}={n}" for t, n in types.items()))
    return counts


def _check_types(job: JobSpec, types: list[str] | None, known: list[str]) -> None:
    """CliError naming each --type the job does not have, and the ones it has."""
    unknown = [t for t in types or [] if t not in known]
    if unknown:
        listed = ", ".join(known) if known else "none yet (run the job first)"
        raise CliError(f"--type {', '.join(unknown)}: not a data type of job {job.name!r}; its types: {listed}")


def generate(job: JobSpec, types: list[str] | None, n: int, out: str | Path, seed: int | None = None) -> dict:
    """`entgan generate`: n images per type from each type's current champion (ImageFolder layout).

    The champion is looked up on every call, so a newly promoted one is used without a restart."""
    from entgan.library.generate import generate_from_library
    from entgan.library.registry import library_for

    GenerateOptions(job="", out=str(out), types=list(types or []), n=n, seed=seed)
    job = job.with_local_paths(Path.cwd())
    check_outside_edges(out, "--out", [(e.name, e.data) for e in job.edges])
    if isinstance(job.data_types, list):  # the job lists its types: no server needed to check --type
        _check_types(job, types, job.data_types)
    preflight(job)
    library = library_for(job)
    if not isinstance(job.data_types, list):
        _check_types(job, types, library.known_types())
    written = generate_from_library(library, job.train, list(types or []) or None, n, Path(out).expanduser(), seed)
    for t, files in written.items():
        print(f"{t}: {len(files)} images in {Path(out) / t}")
    return written


def figures(job: JobSpec, out: str | Path | None = None) -> dict[str, Path]:
    """`entgan figures`: the samples figure and the FID curves of a job, as PNG files."""
    from entgan.library.report import write_figures

    job = job.with_local_paths(Path.cwd())
    preflight(job)
    written = write_figures(job, Path(out).expanduser() if out else Path(job.state_dir) / "figures")
    for name, path in written.items():
        print(f"{name.replace('_', ' ')}: {path}")
    return written


def show_status(job: JobSpec, runs: int = 5) -> str:
    """`entgan status`: stages of the last runs and each type's champion, from the task library.
    A run still RUNNING whose `entgan run` process is gone shows as STALE."""
    from entgan.library.registry import library_for
    from entgan.library.status import format_status, job_status
    from entgan.local.interrupted import mark_stale

    StatusOptions(job="", runs=runs)
    job = job.with_local_paths(Path.cwd())
    preflight(job)
    library = library_for(job)
    return format_status(mark_stale(job_status(library, runs=runs), library))


def format_summary(summary: dict) -> str:
    """The per-type table `entgan run` ends with."""
    from entgan.evaluation.metrics import in_table, summary_columns, summary_rows

    if summary.get("waiting"):
        return f"train stage Waiting: {summary['waiting']}; nothing was trained"
    shown = summary_rows(summary, select=in_table)
    rows = [tuple(summary_columns(select=in_table))] + [
        (r.data_type, r.started_from, *r.metrics, r.version, r.champion, r.reason) for r in shown
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    lines += [f"NO CHAMPION for {r.data_type}: its first version {r.version} failed the gate (above); it is "
              f"registered but not deployed, so `entgan generate --type {r.data_type}` has nothing to serve yet"
              for r in shown if r.champion == "-"]
    lines += ["", "sample grids:"] + [f"  {t}: {i['grid']}" for t, i in sorted(summary["types"].items())]
    lines += [f"figure ({name.replace('_', ' ')}): {path}" for name, path in summary.get("figures", {}).items()]
    lines += [f"skipped {t}: {why}" for t, why in summary.get("skipped", {}).items()]
    lines += [
        f"possible unseen types: {n} image(s) at '{t}' the evaluator could not place confidently"
        for t, n in summary.get("uncertain", {}).items()
    ]
    if "seconds" in summary:
        lines.append(f"pipeline wall time: {summary['seconds']:.0f} s")
    if summary.get("train_cpu", {}).get("steps"):
        cpu = summary["train_cpu"]
        lines.append(f"train CPU: {cpu['cpu_s']:.0f} s for {cpu['steps']} D+G steps = "
                     f"{1000 * cpu['cpu_s'] / cpu['steps']:.1f} ms per step on {machine_line()}")
    if summary.get("left_out"):
        lines.append("edges left out: " + ", ".join(f"{e} ({why})" for e, why in summary["left_out"].items()))
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
    skip_preflight: bool = False,
):
    """Compile the job's pipeline (with `image` if given) and upload it to the KFP API: a new
    pipeline, or a new version of it. Host and token from the flags or KFP_HOST / KFP_TOKEN.
    The cluster and the backend are checked first (`preflight`) unless `skip_preflight`."""
    from entgan.cluster import kfp_api as kfp_client

    if image is not None:
        UploadOptions(job="", image=image)  # checks the reference
        job = job.model_copy(update={"image": image})
    path = compile_pipeline(job, output or Path("build") / f"{job.name}.pipeline.yaml")
    name = kfp_client.pipeline_name(job.name)
    if dry_run:
        where = host or os.environ.get(kfp_client.HOST_ENV) or f"${kfp_client.HOST_ENV}"
        print(f"dry run: would upload {path} to {where} as pipeline {name!r}, version "
              f"{kfp_client.version_name(name, path)!r} (image {job.image}); nothing was sent")
        return None
    api = kfp_client.KfpApi(kfp_client.target_from_env(host, namespace))
    if not skip_preflight:
        check_cluster(job, namespace=namespace, api=api)
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
    skip_preflight: bool = False,
):
    """Create or update the recurring run of the job's uploaded pipeline (newest version),
    after checking the cluster and the backend (`preflight`) unless `skip_preflight`."""
    from entgan.cluster import kfp_api as kfp_client

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
    if not skip_preflight:
        check_cluster(job, namespace=namespace, api=api)
    result = kfp_client.schedule(api, pipeline, wanted)
    print(f"{result.action}: recurring run {wanted.name!r} ({result.recurring_run_id}), cron "
          f"'{wanted.cron}', experiment {wanted.experiment!r}, version {result.pipeline_version_id} "
          f"on {api.target.host}")
    return result


def check_cluster(job: JobSpec, *, host: str | None = None, namespace: str | None = None, api=None) -> None:
    """Check that the job can run on the cluster (entgan.cluster.preflight): one line per check."""
    from entgan.cluster import kfp_api as kfp_client
    from entgan.cluster import preflight

    pods_namespace = namespace or os.environ.get(kfp_client.NAMESPACE_ENV) or preflight.DEFAULT_NAMESPACE
    checks = preflight.run(
        job, pods_namespace, lambda: api or kfp_client.KfpApi(kfp_client.target_from_env(host, namespace))
    )
    print(preflight.report(checks))
    failed = sum(not c.ok for c in checks)
    if failed:
        raise CliError(f"{failed} of {len(checks)} preflight checks failed; fix them (or pass --skip-preflight "
                       "to upload/schedule if you know better)")


# ---------------------------------------------------------------- verbs: options -> function


def _run(job: JobSpec, demo_data: bool = False, verbose: bool = False, fresh_processes: bool = False) -> None:
    if demo_data:
        data_demo(Path(job.state_dir) / "edges")
    print(format_summary(run_local(job, verbose=verbose, fresh_processes=fresh_processes)))


def _status(job: JobSpec, runs: int = 5) -> None:
    print(show_status(job, runs=runs))


@dataclasses.dataclass(frozen=True)
class Verb:
    """One verb: its options object, the function it calls (with the loaded job first when the
    options have a `job`), and its --help texts."""

    name: str
    options: type[Options]
    function: object
    help: str
    epilog: str


VERBS = [
    Verb("data demo", DataDemoOptions, data_demo, "write the bundled demo images as edge folders",
         "example: entgan data demo --root .entgan/demo/edges --per-type 100"),
    Verb("compile", CompileOptions, compile_pipeline,
         "compile a job's pipeline to KFP YAML (for upload to Kubeflow)",
         "example: entgan compile jobs/cluster.yaml -o build/cluster.pipeline.yaml"),
    Verb("run", RunOptions, _run, "run a job's pipeline locally with kfp.local",
         "Compiles the job, runs that YAML (one process per task) against the job's MLflow task\n"
         "library and prints a table per type; a progress bar on a terminal, plain lines otherwise.\n"
         "Figures (real vs generated, FID per round) go to <state_dir>/figures/. Ctrl-C records the\n"
         "stage in progress as Failed (interrupted) and ends the MLflow run as KILLED.\n\n"
         "example: entgan run jobs/demo.yaml"),
    Verb("generate", GenerateOptions, generate, "write images from the champion generators (ImageFolder layout)",
         "example: entgan generate --job jobs/demo.yaml --type box -n 100 --out synth/"),
    Verb("status", StatusOptions, _status, "show a job's stages, last runs and champions (from the task library)",
         "example: entgan status jobs/demo.yaml --runs 3"),
    Verb("upload", UploadOptions, upload, "compile a job's pipeline and upload it to Kubeflow Pipelines",
         "example: KFP_HOST=http://localhost:8888 entgan upload jobs/cluster.yaml --image REGISTRY/entgan:0.1.0"),
    Verb("schedule", ScheduleOptions, schedule, "create or update the recurring run of a job's uploaded pipeline",
         "example: KFP_HOST=http://localhost:8888 entgan schedule jobs/cluster.yaml --cron '0 */6 * * *'"),
    Verb("preflight", PreflightOptions, check_cluster,
         "check that a job can run on the cluster (nodes, GPUs, Secret, MLflow, KFP)",
         "example: KFP_HOST=http://localhost:8888 entgan preflight jobs/cluster.yaml --namespace kubeflow"),
    Verb("figures", FiguresOptions, figures,
         "draw a job's figures: real vs generated samples per type, FID per round",
         "Reads the champions and the newest training run from the task library and the real\n"
         "held-out images from the edges' data folders (run it where those are reachable).\n\n"
         "example: entgan figures jobs/demo.yaml --out docs/figures   (the README's pictures)"),
]

_EPILOG = """\
examples:
  entgan data demo && entgan run jobs/demo.yaml     the local demo (what `make run` does)
  entgan status jobs/demo.yaml                      stages, runs and champions of a job
  entgan generate --job jobs/demo.yaml -n 100 --out synth/
  entgan upload jobs/cluster.yaml --image REGISTRY/entgan:TAG && entgan schedule jobs/cluster.yaml --cron '0 */6 * * *'

Errors are one line saying what is wrong and how to fix it (exit status 2, or 1 for an
unexpected error); add --debug for the traceback. `entgan VERB --help` documents each verb."""


def _sub(group, name: str, help: str, epilog: str | None = None) -> argparse.ArgumentParser:
    """A subcommand whose --help starts with its one-line purpose; --debug works after it too."""
    sub = group.add_parser(name, help=help, description=f"{help[0].upper()}{help[1:]}.", epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback on errors")
    return sub


def _parser() -> argparse.ArgumentParser:
    """The parser of every verb, built from VERBS (a two-word verb is a group and its member)."""
    about = "EntGAN: federated GAN training on Kubeflow Pipelines with an MLflow task library.\n"
    parser = argparse.ArgumentParser(prog="entgan", description=about + __doc__.split("\n", 2)[2], epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    top = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    groups: dict[str, argparse._SubParsersAction] = {}
    for verb in VERBS:
        group, _, member = verb.name.partition(" ")
        if member:
            if group not in groups:
                groups[group] = _sub(top, group, f"{group} commands").add_subparsers(
                    dest=f"{group}_verb", required=True, metavar="WHAT")
            sub = _sub(groups[group], member, verb.help, verb.epilog)
        else:
            sub = _sub(top, group, verb.help, verb.epilog)
        add_options(sub, verb.options)
        sub.set_defaults(_verb=verb)
    return parser


def _call(verb: Verb, args: argparse.Namespace) -> None:
    """Build the verb's options (they check themselves), load the job if it has one, call it."""
    values = dataclasses.asdict(options_from(args, verb.options))
    if "job" in values:
        values["job"] = load_job(values["job"])
    verb.function(**values)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.debug:  # MLflow's INFO lines (e.g. creating a new store) are not for this terminal
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    try:
        _call(args._verb, args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("error: interrupted; run the command again to start over", file=sys.stderr)
        return 130
    except (JobError, DataError, CliError, KfpError, PipelineTooLarge, StorageError, LookupError, RegistryError,
            TrackingServerUnreachable) as err:
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
