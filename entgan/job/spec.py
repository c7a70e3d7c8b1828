"""The job file: a YAML document validated into a `JobSpec`.

A job is EntGAN's counterpart of Sedna's LifelongLearningJob: it names the edges and where their
images live, the data types, how to train, evaluate and deploy, and where the task library
(MLflow) and local state live. Every error names the field and what to do about it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from entgan.job.reader import (
    JobError,
    UniqueKeyLoader,
    check_kept_apart,
    check_local_folder,
    check_tracking_uri,
    describe_errors,
    expand_path,
    no_credentials,
)

__all__ = ["AUGMENTATIONS", "DEFAULT_IMAGE", "EDGE_LABEL", "NAME_HINT", "NAME_PATTERN", "DeploySpec", "EdgeSpec",
           "EvalSpec", "JobError", "JobSpec", "TrainSpec", "TriggerSpec", "expand_path", "load_job", "parse_job"]

# Names become Kubernetes label values, MLflow registered-model names and folder names,
# so they are restricted to DNS-label-like strings.
NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"
NAME_HINT = "use 1-40 lowercase letters, digits and '-', starting and ending with a letter or digit"
EDGE_LABEL = "entgan.io/edge"  # node label that pins an edge's tasks to its node
DEFAULT_IMAGE = "ghcr.io/entgan/entgan:0.1.0"
AUGMENTATIONS = ("color", "translation", "cutout")  # train.augment; see entgan.gan.augment


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # .nan and .inf are refused


def _check_name(value: str, what: str) -> str:
    if not re.match(NAME_PATTERN, value):
        raise ValueError(f"{what} {value!r} is not a safe name: {NAME_HINT}")
    return value


# Kubernetes label syntax: an optional DNS-subdomain prefix and '/', then a name of at most 63
# characters; values are such names or empty.
_LABEL_NAME = r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^{_LABEL_NAME}?$")


class EdgeSpec(_Strict):
    """One edge node: where its images are and how its training task is placed."""

    name: str = Field(description="edge name; also the value of the node label entgan.io/edge")
    data: str = Field(description="folder (or s3:// prefix) with <type>/*.png below it")
    node_selector: dict[str, str] = Field(default_factory=dict, description="extra node labels")
    gpus: int = Field(default=0, ge=0, le=8, description="GPUs requested by the edge's tasks")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "edge name")

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("data is empty; give the edge's image folder or s3:// prefix")
        return check_local_folder(expand_path(no_credentials(v, "data")), "data")

    @field_validator("node_selector")
    @classmethod
    def _selector(cls, v: dict[str, str]) -> dict[str, str]:
        for key, value in v.items():
            if not _LABEL_KEY.match(key):
                raise ValueError(f"node label key {key!r} is not a Kubernetes label key; write e.g. "
                                 "'entgan.io/gpu' (letters, digits, '-', '_', '.', one optional '<prefix>/')")
            if not _LABEL_VALUE.match(value):
                raise ValueError(f"node label value {value!r} of {key!r} is not a Kubernetes label value; "
                                 "use at most 63 letters, digits, '-', '_' and '.'")
            if key == EDGE_LABEL:
                raise ValueError(f"{EDGE_LABEL} is set from the edge's name; remove it from node_selector")
        return v

    @property
    def selector(self) -> dict[str, str]:
        """The full node selector of this edge's tasks (its own label plus the extra ones)."""
        return {EDGE_LABEL: self.name, **self.node_selector}


# The most rounds whose Argo Workflow fits the KFP backend for the smallest job (one edge): Argo's
# MAX_WORKFLOW_SIZE, modelled in pipelines/workflow_size.py. More edges fit fewer rounds; compile
# refuses a job over its own cap and names it (pipelines.entgan_pipeline.most_rounds;
# tests/pipelines/test_compile.py tests the cap and one past it).
MAX_ROUNDS = 50


class TrainSpec(_Strict):
    strategy: Literal["entgan", "fedgan"] = "entgan"
    rounds: int = Field(default=4, ge=1, le=MAX_ROUNDS)
    local_steps: int = Field(default=100, ge=1, description="D+G steps per edge per round")
    cloud_steps: int | None = Field(
        default=None, ge=1, validate_default=True,
        description="global G steps per round (entgan); default local_steps/50, at least 1",
    )
    batch_size: int = Field(default=32, ge=1, le=4096)
    lr: float = Field(default=5e-4, gt=0, lt=1)
    mu: float = Field(default=0.01, ge=0, description="proximal weight toward the library's D")
    latent_dim: int = Field(default=64, ge=2, le=1024)
    width: int = Field(default=32, ge=4, le=512, description="base channel count of G (and of D unless d_width)")
    d_width: int | None = Field(default=None, ge=4, le=512, description="base channel count of D; null: width "
                                "(a lean D costs less than half the step: docs/performance.md)")
    architecture: Literal["dcgan", "light"] = Field(
        default="dcgan", description="dcgan: DCGAN's G and D; light: FastGAN's skip-layer excitation in G and "
        "a self-supervised D that also reconstructs real images (entgan.gan.fastgan)",
    )
    image_size: int = Field(
        default=32, description="side of the square images in pixels: a power of two from 8 to 512 "
        "(G and D gain one block per doubling; see docs/training-recipe.md)",
    )
    channels: Literal["auto", 1, 3] = Field(
        default="auto", description="image channels of G, D and the evaluators: 1 (grayscale, infrared, depth), "
        "3 (RGB), or auto: the data's, detected when the edges inspect it (one count per job)",
    )
    min_edges: int = Field(default=1, ge=1, description="fewest edge updates a round needs")
    min_images_per_type: int = Field(default=8, ge=1, description="fewer images: type is skipped")
    seed: int = 0
    aggregation: Literal["fedavg", "median", "trimmed_mean"] = Field(
        default="fedavg",
        description="fedavg (sample-weighted mean) or a robust one: coordinate-wise median or trimmed mean",
    )
    clip_norm: float | Literal["median"] | None = Field(
        default=None,
        description="bound on the L2 norm of each edge's update per network; 'median': the round's "
        "median update norm; null: no clipping",
    )
    trim_fraction: float = Field(
        default=0.25, ge=0, lt=0.5, description="trimmed_mean: share of values cut at each end, per weight"
    )

    # The data-efficient recipe (docs/training-recipe.md); all off by default.
    augment: str = Field(
        default="",
        description="DiffAugment of everything D sees, real and fake, in D and G steps: a comma list of "
        "color, translation, cutout (e.g. 'color,translation,cutout'); empty: off",
    )
    loss: Literal["bce", "hinge"] = Field(
        default="bce", description="GAN loss: bce (non-saturating) or hinge (pair it with spectral_norm)"
    )
    spectral_norm: bool = Field(
        default=False, description="spectral normalisation of D's convolutions (and no batch norm in D)"
    )
    d_lr_scale: float = Field(default=1.0, gt=0, le=100, description="D's learning rate is lr x this "
                              "(two time-scale update; 2-4 with spectral_norm)")
    r1_gamma: float = Field(default=0.0, ge=0, le=1000, description="R1 penalty weight on real images; 0: off")
    ema_decay: float | None = Field(
        default=0.99, description="per-step EMA of G's weights; the EMA G is what is evaluated "
        "and deployed; null: off",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="where edges and cloud train: auto uses a GPU when the pod has one"
    )
    amp: Literal["off", "bf16", "fp16"] = Field(
        default="off", description="mixed precision on a GPU (bf16 autocast, or fp16 with a grad scaler); "
        "ignored on CPU",
    )

    @property
    def image_channels(self) -> int:
        """The channel count models are built with. The plan resolves `auto` to the data's count
        (`JobSpec.with_channels`) before anything trains; unresolved, `auto` reads as 3, the RGB
        layout of every bundle saved before channels existed."""
        return 3 if self.channels == "auto" else self.channels

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int) -> int:
        if v < 8 or v > 512 or v & (v - 1):
            raise ValueError(f"image_size is {v}; use a power of two from 8 to 512, e.g. 32, 64, 128 or 256")
        return v

    @field_validator("augment")
    @classmethod
    def _augment(cls, v: str) -> str:
        names = [p.strip() for p in v.split(",") if p.strip()]
        unknown = [p for p in names if p not in AUGMENTATIONS]
        if unknown:
            raise ValueError(f"unknown augmentation {unknown}; write a comma list of {', '.join(AUGMENTATIONS)} "
                             "(e.g. 'color,translation,cutout') or '' for none")
        return ",".join(names)

    @field_validator("ema_decay")
    @classmethod
    def _ema_decay(cls, v: float | None) -> float | None:
        if v is not None and not 0 < v < 1:
            raise ValueError(f"ema_decay is {v}; use a number between 0 and 1 such as 0.99, or null (off)")
        return v

    @field_validator("clip_norm")
    @classmethod
    def _clip_norm(cls, v: float | str | None) -> float | str | None:
        if isinstance(v, float) and not v > 0:
            raise ValueError(f"clip_norm is {v}; use a positive number, 'median' or null (no clipping)")
        return v

    @field_validator("cloud_steps")
    @classmethod
    def _cloud_steps(cls, v: int | None, info: ValidationInfo) -> int | None:
        """Unset: a few steps per round (local_steps / 50); a long G update against one fixed,
        averaged D lets G exploit it (docs/design.md, "Measured design choices")."""
        if v is None and "local_steps" in info.data:
            return max(1, info.data["local_steps"] // 50)
        return v


class EvalSpec(_Strict):
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1, description="real images kept out")
    feature_steps: int = Field(default=40, ge=1, description="evaluator steps per edge per round")
    feature_dim: int = Field(default=64, ge=2, le=2048)
    num_generated: int = Field(default=512, ge=16, description="fake images per FID")
    cas_steps: int = Field(default=300, ge=1, description="steps of the CAS classifier (synthetic images only)")
    batch_size: int = Field(
        default=16, ge=1,
        description="batch of the evaluator's own networks (the domain feature network behind FID, and the CAS "
        "classifiers); apart from train.batch_size, so a change to the GAN's batch leaves the metrics as they were",
    )
    cas_seeds: int = Field(
        default=3, ge=1,
        description="CAS classifiers per set of generators (seeds train.seed, +1, ...), their counts pooled: "
        "one classifier's per-type CAS moves by up to ±0.15 with its seed",
    )
    pr_k: int = Field(default=3, ge=1, description="k of the k-NN manifolds of precision and recall")
    c2st_steps: int = Field(default=500, ge=1, description="steps of each edge's real-vs-synthetic classifier (C2ST)")
    confidence: float = Field(
        default=0.5, gt=0, lt=1, description="below this top-class probability an image is 'uncertain'"
    )


class TriggerSpec(_Strict):
    """When a run trains (Sedna's trainSpec.trigger). The default trains on every run."""

    operator: Literal["gt", "ge", "eq", "ne", "le", "lt"] = Field(
        default="ge", description="how new samples compare with threshold"
    )
    threshold: int = Field(default=0, ge=0, description="new samples since the last trained version")
    scope: Literal["type", "total"] = Field(
        default="type", description="'type': each type on its own count; 'total': all on the sum"
    )
    window: tuple[str, str] | None = Field(
        default=None, description="daily [start, end) as HH:MM, may wrap midnight, e.g. [22:00, 06:00]"
    )

    @field_validator("window")
    @classmethod
    def _window(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        if v is not None:
            from entgan.job.lifecycle import parse_clock

            for t in v:
                parse_clock(t)
        return v


class DeploySpec(_Strict):
    """The deploy gate: what a candidate must satisfy to become champion.

    Metrics: `fid` (domain-feature FID), `c2st` (real-vs-synthetic classifier accuracy),
    `kid_random` (KID, random features), lower is better; `precision`, `recall` and `cas`
    (classification accuracy score), higher is better (docs/evaluation.md). The champion is
    scored again in the same run, on the same statistics. A rule set to null or false is off;
    the `min_`/`max_` floors apply to a type's first version too.
    """

    fid_must_not_rise: bool = Field(
        default=True, description="with a champion, the candidate's FID must be lower than the champion's"
    )
    max_fid: float | None = Field(default=None, gt=0, description="the candidate's FID must be at or below this")
    min_precision: float | None = Field(
        default=None, ge=0, le=1, description="the candidate's improved precision must be at least this"
    )
    min_recall: float | None = Field(
        default=None, ge=0, le=1, description="the candidate's improved recall must be at least this"
    )
    cas_must_not_drop: bool = Field(
        default=True,
        description="with a champion, the candidate's CAS must be at least the champion's minus cas_tolerance",
    )
    cas_tolerance: float = Field(
        default=0.0, ge=0, le=1, description="how far CAS may fall below the champion's and still pass"
    )
    min_cas_ratio: float | None = Field(
        default=0.3, ge=0, le=1,
        description="every candidate's CAS must be at least this share of the real-data classifier's accuracy",
    )
    c2st_must_not_rise: bool = Field(
        default=True, description="with a champion, the candidate's C2ST must not exceed the champion's 95 % interval"
    )
    max_c2st: float | None = Field(default=None, ge=0.5, le=1, description="every candidate's C2ST must be at most this")
    kid_must_not_rise: bool = Field(
        default=True, description="with a champion, the candidate's KID (random features) must not rise beyond its SE"
    )
    kid_stderr_multiple: float = Field(default=1.0, ge=0, description="how many KID standard errors a rise may be")
    max_kid_random: float | None = Field(
        default=20.0, gt=0, description="every candidate's KID (random features) must be at most this"
    )


class JobSpec(_Strict):
    """A whole EntGAN job (the LifelongLearningJob of Sedna)."""

    name: str
    edges: list[EdgeSpec] = Field(min_length=1)
    data_types: list[str] | Literal["discover"] = "discover"
    trigger: TriggerSpec = TriggerSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec()
    deploy: DeploySpec = DeploySpec()
    mlflow_tracking_uri: str | None = Field(
        default=None, description="default: an embedded SQLite store in state_dir"
    )
    state_dir: str = ".entgan"
    image: str = DEFAULT_IMAGE

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _check_name(v, "job name")

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _tracking_uri(cls, v: str | None) -> str | None:
        return None if v is None else check_tracking_uri(v)

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("state_dir is empty; give a folder for EntGAN's local state, e.g. .entgan")
        if "://" in v:
            raise ValueError(f"state_dir {v!r} is a URI; give a local folder (artifacts go to MLflow)")
        path = Path(expand_path(v))
        blocker = next((p for p in [path, *path.parents] if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise ValueError(f"state_dir {v}: {blocker} is a file, not a folder; set state_dir to a folder you can write")
        return str(path) if v.startswith("~") else v

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if not v.strip() or any(c.isspace() for c in v):
            raise ValueError(f"image {v!r} is not an image reference; write e.g. registry.example.com/entgan:0.1.0")
        return v

    @field_validator("data_types")
    @classmethod
    def _types(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list):
            if not v:
                raise ValueError("list no data types, or write data_types: discover")
            for t in v:
                _check_name(t, "data type")
            if len(set(v)) != len(v):
                raise ValueError("a data type is listed twice; list each once")
        return v

    @model_validator(mode="after")
    def _edges_unique(self) -> JobSpec:
        names = [e.name for e in self.edges]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"edge names must be unique; {dupes} appear more than once")
        if self.train.min_edges > len(self.edges):
            raise ValueError(
                f"train.min_edges is {self.train.min_edges} but the job has only "
                f"{len(self.edges)} edges; lower min_edges or add edges"
            )
        check_kept_apart([(e.name, e.data) for e in self.edges], self.state_dir)
        return self

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{Path(self.state_dir).resolve() / 'mlflow.db'}"

    def edge(self, name: str) -> EdgeSpec:
        for e in self.edges:
            if e.name == name:
                return e
        raise JobError(f"edge {name!r} is not in job {self.name!r}; known: {self.edge_names}")

    @property
    def edge_names(self) -> list[str]:
        return [e.name for e in self.edges]

    def with_channels(self, channels: int) -> JobSpec:
        """This job with `train.channels` resolved to `channels` (the plan's detected count)."""
        if self.train.channels == channels:
            return self
        return self.model_copy(update={"train": self.train.model_copy(update={"channels": channels})})

    def with_local_paths(self, base: Path) -> JobSpec:
        """Relative data folders and state_dir made absolute against `base` (for local runs)."""

        def absolute(p: str) -> str:
            return p if "://" in p or Path(p).is_absolute() else str((base / p).resolve())

        edges = [e.model_copy(update={"data": absolute(e.data)}) for e in self.edges]
        return self.model_copy(update={"edges": edges, "state_dir": absolute(self.state_dir)})


def parse_job(data: object, source: str = "job") -> JobSpec:
    """Validate an already-parsed job document."""
    if not isinstance(data, dict):
        raise JobError(f"{source}: a job file must be a YAML mapping (name: ..., edges: ...)")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as err:
        raise JobError(describe_errors(err, source)) from None


def load_job(path: str | Path) -> JobSpec:
    """Read and validate a job file (UTF-8 YAML; a key written twice is an error)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise JobError(f"{path}: job file not found; pass the path of a YAML job file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise JobError(f"{path}: line {line}: byte 0x{err.object[err.start]:02x} is not UTF-8; save the job file "
                       "as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    except OSError as err:
        raise JobError(f"{path}: cannot read the job file ({err.strerror}); check its permissions") from None
    loader = UniqueKeyLoader(text)
    loader.name = str(path)
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as err:
        raise JobError(f"{path}: not valid YAML ({err}); fix the syntax") from None
    finally:
        loader.dispose()
    return parse_job(data, str(path))
