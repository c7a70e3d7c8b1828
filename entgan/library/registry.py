"""The task library: MLflow's model registry, one registered model per data type.

`entgan-<job>-<type>` holds one version per run that trained the type; the alias `champion`
marks the deployed one. `entgan-<job>-evaluator` holds the domain feature network. Every
version's files (weights as safetensors, a sample grid, the model config) are artifacts of
the job's MLflow run that produced them. This module is the only one that talks to MLflow.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from entgan.gan.bundle import STORED_FORMATS, Bundle, BundleError, load_bundle

CHAMPION = "champion"
EVALUATOR = "evaluator"
MODEL_FILE = "model.safetensors"


# What MLflow's HTTP client says when no server answers (after its own retries).
_UNREACHABLE = ("Max retries exceeded", "Failed to establish a new connection", "Connection refused", "timed out")


class RegistryError(RuntimeError):
    """The task library cannot be reached or used; the message says which server and why."""


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str
    source: str
    tags: dict[str, str]
    model_id: str | None = None  # the MLflow 3 logged model behind the version, if it is one


def _mlflow_client(tracking_uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


class TaskLibrary:
    def __init__(self, tracking_uri: str, job: str, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.job = job
        self.artifact_root = artifact_root
        self.client = _mlflow_client(tracking_uri)

    # ------------------------------------------------------------------ names
    def model_name(self, data_type: str) -> str:
        return f"entgan-{self.job}-{data_type}"

    @property
    def experiment_name(self) -> str:
        return f"entgan-{self.job}"

    # ------------------------------------------------------------------ reading
    def _call(self, what: str, fn, *args, **kwargs):
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            if any(code in str(err.error_code) for code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")):
                raise LookupError(str(err)) from None
            failing = re.search(r"too many (5\d\d) error responses", err.message)
            if failing:  # the server is there: not "unreachable"
                raise RegistryError(f"MLflow at {self.tracking_uri} answered {failing.group(1)} while trying to "
                                    f"{what}; the server is up but failing: see its log and fix it") from None
            if any(s in err.message for s in _UNREACHABLE):
                raise RegistryError(f"MLflow at {self.tracking_uri} is unreachable while trying to {what}; start "
                                    "the server or fix mlflow_tracking_uri in the job file") from None
            raise RegistryError(f"MLflow at {self.tracking_uri}: {what} failed ({err.message})") from None
        except OSError as err:  # connection refused, DNS, ...
            raise RegistryError(
                f"MLflow at {self.tracking_uri} is unreachable while trying to {what} ({err}); "
                "start the server or fix mlflow_tracking_uri in the job file"
            ) from None

    def champion(self, data_type: str) -> Version | None:
        """The deployed version of a type, or None if the type has none yet."""
        return self._alias(self.model_name(data_type), CHAMPION)

    def evaluator(self) -> Version | None:
        return self._alias(self.model_name(EVALUATOR), CHAMPION)

    def _alias(self, name: str, alias: str) -> Version | None:
        try:
            mv = self._call("read alias", self.client.get_model_version_by_alias, name, alias)
        except LookupError:
            return None
        return _version(mv)

    def versions(self, data_type: str) -> list[Version]:
        try:
            found = self._call(
                "list versions", self.client.search_model_versions, f"name='{self.model_name(data_type)}'"
            )
        except LookupError:
            return []
        out = [_version(v) for v in found]
        return sorted(out, key=lambda v: int(v.version))

    def load(self, version: Version) -> Bundle:
        """Download and verify a version's weight bundle: the `weights` artifact of its MLflow
        Model, or, for versions registered before they were MLflow Models, the run's file."""
        with tempfile.TemporaryDirectory() as tmp:
            if version.model_id:
                local = self._call("download weights", self._download_model_file, version.model_id, MODEL_FILE, tmp)
            else:
                local = self._call(
                    "download weights",
                    self.client.download_artifacts,
                    version.run_id,
                    f"{_artifact_path(version)}/{MODEL_FILE}",
                    tmp,
                )
            return load_bundle(local, formats=STORED_FORMATS)  # champions of earlier versions too

    def _download_model_file(self, model_id: str, name: str, dst: str) -> str:
        """A file of a logged model's `artifacts/` folder (where pyfunc keeps its artifacts)."""
        from mlflow.artifacts import download_artifacts

        location = self.client.get_logged_model(model_id).artifact_location
        return download_artifacts(artifact_uri=f"{location}/artifacts/{name}", dst_path=dst,
                                  tracking_uri=self.tracking_uri)

    # ------------------------------------------------------------------ writing
    def start_run(
        self, run_name: str, params: dict[str, str], tags: dict[str, str], experiment: str | None = None
    ) -> str:
        """A new run in the job's experiment (or in `experiment`, e.g. the job's synthetic datasets)."""
        experiment_name = experiment or self.experiment_name
        experiment = self._call("read experiment", self.client.get_experiment_by_name, experiment_name)
        if experiment is None:
            experiment_id = self._call(
                "create experiment",
                self.client.create_experiment,
                experiment_name,
                artifact_location=self.artifact_root,
            )
        else:
            experiment_id = experiment.experiment_id
        run = self._call("start run", self.client.create_run, experiment_id, tags=tags, run_name=run_name)
        from mlflow.entities import Param

        self._call(
            "log params",
            self.client.log_batch,
            run.info.run_id,
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        self._call("log metrics", self.client.log_batch, run_id, metrics=batch)

    def log_files(self, run_id: str, folder: Path, artifact_path: str) -> None:
        self._call("upload files", self.client.log_artifacts, run_id, str(folder), artifact_path)

    def log_inputs(self, run_id: str, datasets: list, models: list) -> None:
        """MLflow dataset inputs (`DatasetInput`) and logged-model inputs (`LoggedModelInput`) of a run."""
        self._call("log inputs", self.client.log_inputs, run_id, datasets=datasets or None, models=models or None)

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self._call("end run", self.client.set_terminated, run_id, status)

    def register(
        self,
        data_type: str,
        run_id: str,
        artifact_path: str,
        tags: dict[str, str],
        description: str = "",
    ) -> Version:
        """A new version of the type's model from files already logged to `run_id`.

        A generator's version is an MLflow Model (`mlflow_model.log_generator_model`); the
        evaluator's, and one whose weights are not in the run, point at the run's files (the
        latter can never become champion: `set_champion` verifies the weights).
        Idempotent: if `run_id` already registered `artifact_path` (a retried deploy), that
        version is returned and no duplicate is created."""
        name = self.model_name(data_type)
        for existing in self.versions(data_type):
            if existing.run_id == run_id and existing.tags.get("entgan.artifact_path") == artifact_path:
                return existing
        try:
            self._call("read model", self.client.get_registered_model, name)
        except LookupError:
            self._call(
                "create model",
                self.client.create_registered_model,
                name,
                tags={"entgan.job": self.job, "entgan.data_type": data_type},
                description=f"EntGAN generator for data type '{data_type}' of job '{self.job}'.",
            )
        tags = {**tags, "entgan.artifact_path": artifact_path}
        logged = self._log_generator_model(data_type, run_id, artifact_path, tags) if data_type != EVALUATOR else None
        model_id = logged.model_id if logged else None
        if model_id:  # a generator: an MLflow Model that `mlflow models serve` can serve
            source = f"models:/{model_id}"  # how MLflow 3 links a version to its logged model
        else:
            run = self._call("read run", self.client.get_run, run_id)
            source = f"{run.info.artifact_uri}/{artifact_path}"
        with self._embedded_store_uri():
            mv = self._call(
                "create version",
                self.client.create_model_version,
                name,
                source,
                run_id=run_id,
                tags=tags,
                description=description,
                model_id=model_id,
            )
        return Version(mv.name, str(mv.version), run_id, source, tags, model_id)

    def _embedded_store_uri(self):
        """An embedded (SQLite) registry resolves a `models:/<id>` source through MLflow's
        process-wide tracking URI, not the client's (a TODO in MLflow's SqlAlchemyStore): point
        it at this library while the version is created (public `mlflow.set_tracking_uri`, put
        back after). A server resolves it on its own side."""
        from contextlib import contextmanager, nullcontext

        import mlflow

        if self.tracking_uri.startswith(("http://", "https://")):
            return nullcontext()

        @contextmanager
        def pointed_at(uri: str):
            before = mlflow.get_tracking_uri()
            mlflow.set_tracking_uri(uri)
            try:
                yield
            finally:
                mlflow.set_tracking_uri(before)

        return pointed_at(self.tracking_uri)

    def _log_generator_model(self, data_type: str, run_id: str, artifact_path: str, tags: dict[str, str]):
        """The run's `<artifact_path>/model.safetensors` logged again as an MLflow Model (its
        `weights` artifact); returns the `LoggedModel`, or None if the run has no such file."""
        from entgan.gan.sampling import ARCHITECTURE, bundle_bits
        from entgan.library.pyfunc import log_generator_model

        with tempfile.TemporaryDirectory() as tmp:
            try:
                weights = self._call("download weights", self.client.download_artifacts, run_id,
                                     f"{artifact_path}/{MODEL_FILE}", tmp)
            except LookupError:  # no weights: nothing to serve
                return None
            bundle = load_bundle(weights, formats=STORED_FORMATS)
            saved = bundle.header.extra.get("train") or {}
            train = {k: saved[k] for k in ARCHITECTURE if k in saved}  # the shape of G
            return self._call("log MLflow model", log_generator_model, self.client, run_id, data_type,
                              Path(weights), train, tags, bundle_bits(bundle))

    def latest_version(self, data_type: str) -> Version | None:
        """The newest version of a type, promoted or not (the last trained one)."""
        found = self.versions(data_type)
        return found[-1] if found else None

    def known_types(self) -> list[str]:
        """Every data type with a registered model in this job's library."""
        prefix = f"entgan-{self.job}-"
        models = self._call("list models", self.client.search_registered_models, f"name LIKE '{prefix}%'")
        types = [m.name.removeprefix(prefix) for m in models]
        return sorted(t for t in types if t != EVALUATOR)

    # ------------------------------------------------------------------ run records
    def record_state(self, run_id: str, change) -> None:
        """Append a stage state change to the run (params are immutable: append-only by design)."""
        from entgan.job.lifecycle import check_transition

        check_transition(self.states(run_id), change.stage, change.state)
        where = change.edge or "cloud"
        key = f"{STATE_PREFIX}{int(change.at * 1e6):d}.{change.stage.value}.{change.state.value}.{where}"
        self._call("record state", self.client.log_param, run_id, key, change.to_json())

    def states(self, run_id: str) -> list:
        from entgan.job.lifecycle import StateChange

        run = self._call("read run", self.client.get_run, run_id)
        changes = [StateChange.from_json(v) for k, v in run.data.params.items() if k.startswith(STATE_PREFIX)]
        return sorted(changes, key=lambda c: c.at)

    def recent_runs(self, limit: int = 5) -> list:
        """The job's newest MLflow runs (one per pipeline run), newest first."""
        experiment = self._call("read experiment", self.client.get_experiment_by_name, self.experiment_name)
        if experiment is None:
            return []
        return list(
            self._call(
                "list runs",
                self.client.search_runs,
                [experiment.experiment_id],
                order_by=["attributes.start_time DESC"],
                max_results=limit,
            )
        )

    def run_for(self, kfp_run_id: str) -> str | None:
        """The job's MLflow run opened for a KFP run, if any."""
        experiment = self._call("read experiment", self.client.get_experiment_by_name, self.experiment_name)
        if experiment is None:
            return None
        runs = self._call(
            "find run",
            self.client.search_runs,
            [experiment.experiment_id],
            filter_string=f"tags.`entgan.kfp_run_id` = '{kfp_run_id}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def log_json(self, run_id: str, data: dict, artifact_file: str) -> None:
        self._call("upload json", self.client.log_dict, run_id, data, artifact_file)

    def read_json(self, run_id: str, artifact_file: str) -> dict | None:
        import json

        with tempfile.TemporaryDirectory() as tmp:
            try:
                local = self._call("download json", self.client.download_artifacts, run_id, artifact_file, tmp)
            except (LookupError, RegistryError):
                return None
            return json.loads(Path(local).read_text())

    def set_champion(self, data_type: str, version: str) -> None:
        """Point `champion` at `version`, only once the version is READY and its weights download
        and verify (checksum): the alias never points at a half-written version."""
        name = self.model_name(data_type)
        mv = self._call("read version", self.client.get_model_version, name, version)
        if str(mv.status) != "READY":
            raise RegistryError(f"{name} v{version} is {mv.status}, not READY; champion not moved, re-run deploy")
        try:
            self.load(_version(mv))
        except (LookupError, BundleError) as err:
            raise RegistryError(f"{name} v{version}: its weights are missing or damaged ({err}); "
                                "champion not moved, re-run deploy") from None
        self._call("set alias", self.client.set_registered_model_alias, name, CHAMPION, version)

    def promote(self, data_type: str, version: str, replaces: str | None) -> bool:
        """Make `version` the champion if the champion is still `replaces` (the version it was
        gated against; None: there was none). Returns False, moving nothing, if another run
        changed the champion meanwhile: a stale candidate never replaces a newer champion.
        Promoting the version that is already champion (a retried deploy) returns True."""
        current = self.champion(data_type)
        now = current.version if current else None
        if now == str(version):
            return True
        if now != (str(replaces) if replaces is not None else None):
            return False
        self.set_champion(data_type, version)
        return True

    def tag_run(self, run_id: str, tags: dict[str, str]) -> None:
        """Set (overwrite) tags of a run, e.g. an edge task's progress mark."""
        for key, value in tags.items():
            self._call("tag run", self.client.set_tag, run_id, key, value)

    def run_tags(self, run_id: str) -> dict[str, str]:
        return dict(self._call("read run", self.client.get_run, run_id).data.tags)

    def tag_version(self, data_type: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._call(
                "tag version", self.client.set_model_version_tag, self.model_name(data_type), version, key, value
            )

    # ------------------------------------------------------------------ what the MLflow UI shows
    def describe_model(self, data_type: str, description: str) -> None:
        """The registered model's description (Markdown), shown on its registry page."""
        self._call("describe model", self.client.update_registered_model, self.model_name(data_type), description)

    def note_run(self, run_id: str, markdown: str) -> None:
        """The run's description on its MLflow page (the `mlflow.note.content` tag)."""
        self._call("describe run", self.client.set_tag, run_id, "mlflow.note.content", markdown)

    def log_bundle(self, run_id: str, tensors: dict, header, artifact_file: str) -> None:
        """Save a safetensors bundle as an artifact of the run (e.g. `rounds/round-003.safetensors`)."""
        from entgan.gan.bundle import save_bundle

        folder, name = artifact_file.rsplit("/", 1) if "/" in artifact_file else ("", artifact_file)
        with tempfile.TemporaryDirectory() as tmp:
            save_bundle(Path(tmp) / name, tensors, header)
            self._call("upload bundle", self.client.log_artifact, run_id, str(Path(tmp) / name), folder or None)

    def run_bundle(self, run_id: str, artifact_file: str) -> Bundle:
        """Download and verify a bundle that `log_bundle` stored on the run."""
        with tempfile.TemporaryDirectory() as tmp:
            return load_bundle(self._call("download bundle", self.client.download_artifacts, run_id, artifact_file, tmp))

    def metric_history(self, run_id: str, suffixes: tuple[str, ...] = ()) -> dict[str, list[tuple[int, float]]]:
        """{metric key: [(step, value)]} of a run, steps ascending; only keys ending in `.<suffix>`
        when `suffixes` is given (e.g. ("fid",) for the per-round FID curves)."""
        run = self._call("read run", self.client.get_run, run_id)
        keys = [k for k in run.data.metrics if not suffixes or k.rsplit(".", 1)[-1] in suffixes]
        out = {}
        for key in sorted(keys):
            points = self._call("read metric history", self.client.get_metric_history, run_id, key)
            out[key] = sorted((int(m.step), float(m.value)) for m in points)
        return out

    def trained_history(self, suffixes: tuple[str, ...], runs: int = 10) -> dict[str, list[tuple[int, float]]]:
        """The metric history of the job's newest run that trained (it has per-round FID)."""
        for run in self.recent_runs(runs):
            if any(k.endswith(".fid") for k in run.data.metrics):
                return self.metric_history(run.info.run_id, suffixes)
        return {}


STATE_PREFIX = "entgan.state."


def library_for(job) -> TaskLibrary:
    """The task library of a job; with the embedded SQLite store, artifacts go to state_dir."""
    artifact_root = None
    if job.tracking_uri.startswith("sqlite:"):
        artifact_root = (Path(job.state_dir).resolve() / "mlartifacts").as_uri()
    return TaskLibrary(job.tracking_uri, job.name, artifact_root)


def _version(mv) -> Version:
    """A registry ModelVersion as a Version; `model_id` is None for versions registered before
    EntGAN logged MLflow Models (they point at run artifacts)."""
    return Version(mv.name, str(mv.version), mv.run_id, mv.source, dict(mv.tags), mlflow_model_id(mv.source))


def mlflow_model_id(source: str) -> str | None:
    """The logged model id of a version registered as an MLflow Model (source `models:/m-<id>`),
    else None: versions registered before EntGAN logged MLflow Models point at run artifacts."""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None


def _artifact_path(version: Version) -> str:
    return version.tags.get("entgan.artifact_path") or version.source.rsplit("/artifacts/", 1)[-1]
