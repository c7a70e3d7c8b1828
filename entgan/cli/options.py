"""The options of every `entgan` verb, declared once: a typed dataclass per verb that checks
itself (as litgpt's `args.py` does) and drives that verb's argparse parser.

A field is one option: its name is the flag (`max_concurrency` -> `--max-concurrency`), its
annotation the type (`bool` is a switch, `list[str]` a repeatable option), its default the
default, and `arg(...)` adds the help text, short flags and choices. A field without a default
is a positional argument unless it has flags (then it is a required option). `check()` raises
`CliError` naming the flag and the fix; it runs when the options object is built, from the
command line or from Python.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field

from entgan.job.user_input import CliError, check_output_path  # noqa: F401  (re-exported for the verbs)


def arg(help: str, *flags: str, default=dataclasses.MISSING, choices=None, metavar: str | None = None):
    """A dataclass field that is a command-line option (see the module docstring)."""
    meta = {"help": help, "flags": flags, "choices": choices, "metavar": metavar}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def flag_of(f: dataclasses.Field) -> str:
    """How the user wrote the option: its long flag, or its name for a positional argument."""
    flags = f.metadata.get("flags") or ()
    long = [x for x in flags if x.startswith("--")]
    if long:
        return long[0]
    if flags:
        return flags[0]
    return f.name.upper() if f.default is dataclasses.MISSING else "--" + f.name.replace("_", "-")


class Options:
    """Base of the verbs' option objects: `check()` after construction; `flag(name)` for messages."""

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:  # overridden where a verb has rules beyond the types
        pass

    @classmethod
    def flag(cls, name: str) -> str:
        return flag_of({f.name: f for f in dataclasses.fields(cls)}[name])

    def at_least(self, name: str, low: int, fix: str, high: int | None = None) -> None:
        value = getattr(self, name)
        if value is not None and (value < low or (high is not None and value > high)):
            bounds = f"at least {low}" if high is None else f"{low}-{high}"
            raise CliError(f"{self.flag(name)} is {value}; it must be {bounds}: {fix}")

    def path_for_output(self, name: str, is_folder: bool, holds: str = "") -> None:
        """A path the verb will write: not under a file, not the wrong kind, in a writable place."""
        value = getattr(self, name)
        if value is None:
            return
        check_output_path(value, self.flag(name), is_folder, holds)


_KFP_HOST = "KFP API URL (default: $KFP_HOST); token from $KFP_TOKEN or $KFP_TOKEN_FILE"
_NAMESPACE = "KFP namespace (multi-user Kubeflow; default: $KFP_NAMESPACE)"
_JOB = "job file (YAML)"


@dataclass
class DataDemoOptions(Options):
    root: str = arg("folder to create <edge>/<type>/ in", default=".entgan/demo/edges")
    per_type: int | None = arg("use at most N images of each type", default=None)
    wave: int | None = arg("lifelong demo: 1 = first data, 2 = new arrivals", default=None, choices=[1, 2])

    def check(self) -> None:
        self.at_least("per_type", 1, "give how many images of each type to write, or leave it out for all")


@dataclass
class CompileOptions(Options):
    job: str = arg(_JOB)
    output: str | None = arg("output file (default: <job name>.pipeline.yaml)", "-o", "--output", default=None)

    def check(self) -> None:
        self.path_for_output("output", is_folder=False)


@dataclass
class RunOptions(Options):
    job: str = arg(_JOB)
    demo_data: bool = arg("write the demo edge folders first", default=False)
    verbose: bool = arg("show the KFP executors' full logs", "-v", "--verbose", default=False)
    fresh_processes: bool = arg(
        "start every task in a fresh Python, as plain kfp.local does (slower; by default tasks are forks "
        "of one process that has imported torch, MLflow and kfp)", default=False)


@dataclass
class GenerateOptions(Options):
    job: str = arg(_JOB, "--job")
    out: str = arg("output folder; images go to <out>/<type>/", "--out")
    types: list[str] = arg("data type (repeat; default: every type)", "--type", default=[], metavar="TYPE")
    n: int = arg("images per type (default 64)", "-n", default=64)
    seed: int | None = arg("noise seed for reproducible images", default=None)

    def check(self) -> None:
        self.at_least("n", 1, "give how many images to write per type, e.g. -n 64")
        self.path_for_output("out", is_folder=True, holds=" (images go to <folder>/<type>/)")


@dataclass
class StatusOptions(Options):
    job: str = arg(_JOB)
    runs: int = arg("how many recent runs to list (default 5)", default=5)

    def check(self) -> None:
        self.at_least("runs", 1, "give how many recent runs to list, e.g. --runs 5", high=1000)


@dataclass(kw_only=True)
class KfpTargetOptions(Options):
    """The options every verb that talks to a Kubeflow Pipelines backend shares."""

    job: str = arg(_JOB)
    host: str | None = arg(_KFP_HOST, default=None)
    namespace: str | None = arg(_NAMESPACE, default=None)


@dataclass(kw_only=True)
class UploadOptions(KfpTargetOptions):
    image: str | None = arg("component image to compile in (default: the job's image)", default=None)
    output: str | None = arg("where to write the compiled YAML (default: build/<job>.pipeline.yaml)",
                             "-o", "--output", default=None)
    dry_run: bool = arg("compile and say what would be uploaded; send nothing", default=False)
    skip_preflight: bool = arg("do not check the cluster and backend first", default=False)

    def check(self) -> None:
        if self.image is not None and (not self.image.strip() or any(c.isspace() for c in self.image)):
            raise CliError(f"--image {self.image!r} is not an image reference; "
                           "write e.g. registry.example.com/entgan:0.1.0")
        self.path_for_output("output", is_folder=False)


@dataclass(kw_only=True)
class ScheduleOptions(KfpTargetOptions):
    cron: str = arg("'M H DoM Mon DoW' or with seconds first, e.g. '0 */6 * * *'", "--cron")
    name: str | None = arg("recurring run name (default: entgan-<job>)", default=None)
    experiment: str | None = arg("KFP experiment (default: entgan-<job>; created if missing)", default=None)
    max_concurrency: int = arg("runs at once, 1-10 (default 1)", default=1)
    catchup: bool = arg("run missed schedules after a pause (default: no)", default=False)
    pipeline_root: str | None = arg("where runs keep artifacts, e.g. s3://entgan/kfp (default: KFP's)", default=None)
    service_account: str | None = arg("Kubernetes service account of the runs (default: KFP's)", default=None)
    dry_run: bool = arg("print the recurring run to create; send nothing", default=False)
    skip_preflight: bool = arg("do not check the cluster and backend first", default=False)

    def check(self) -> None:
        self.at_least("max_concurrency", 1, "KFP runs 1-10 of a recurring run at once", high=10)


@dataclass(kw_only=True)
class PreflightOptions(KfpTargetOptions):
    namespace: str | None = arg("namespace of the pipeline's pods (default: $KFP_NAMESPACE or kubeflow)", default=None)


@dataclass
class FiguresOptions(Options):
    job: str = arg(_JOB)
    out: str | None = arg("output folder (default: <state_dir>/figures)", default=None)

    def check(self) -> None:
        self.path_for_output("out", is_folder=True, holds=" for the figures")


# ---------------------------------------------------------------- options -> argparse


def _scalar(annotation) -> type:
    """str, int or float from `int | None`-style annotations."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def add_options(parser: argparse.ArgumentParser, options: type[Options]) -> None:
    """One argparse argument per field of `options` (see the module docstring)."""
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):
        meta, kind = f.metadata, hints[f.name]
        flags = list(meta.get("flags") or ())
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kwargs: dict = {"help": meta.get("help")}
        if not flags and required:  # a positional argument
            parser.add_argument(f.name, metavar=f.name.upper(), **kwargs)
            continue
        flags = flags or ["--" + f.name.replace("_", "-")]
        kwargs["dest"] = f.name
        if kind is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(kind) is list:
            kwargs.update(action="append", metavar=meta.get("metavar"))
        else:
            kwargs.update(type=_scalar(kind), choices=meta.get("choices"), metavar=meta.get("metavar"))
            if required:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
        parser.add_argument(*flags, **kwargs)


def options_from(namespace: argparse.Namespace, options: type[Options]) -> Options:
    """Build (and so check) the options object from parsed arguments."""
    values = {}
    for f in dataclasses.fields(options):
        value = getattr(namespace, f.name)
        if value is None and f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
        values[f.name] = value
    return options(**values)
