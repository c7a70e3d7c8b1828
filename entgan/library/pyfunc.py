"""A registered generator version as an MLflow Model ("models from code": no pickle).

Each version of `entgan-<job>-<type>` holds an MLflow `python_function` model: the code file
`pyfunc_code.py` (it names `GeneratorModel`) and the version's safetensors bundle as the
artifact `weights`. So `mlflow.pyfunc.load_model("models:/entgan-<job>-<type>@champion")` and
`mlflow models serve` work with `entgan` installed, and EntGAN reads the same weights.

Request: rows of `n` (images, 1..MAX_IMAGES) and an optional `seed`. Response: one row per image
with `request` (the row it answers), `index` and `png` (PNG file bytes; base64 in REST JSON).
The PNGs have the generator's channels: 8-bit RGB, or grayscale (8-bit, or 16-bit for a type
trained on 16-bit depth data); the model's `model_config` (`channels`, `png`) and MLmodel
metadata say which.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

CODE_FILE = Path(__file__).with_name("pyfunc_code.py")
WEIGHTS = "weights"  # the artifact key of the safetensors bundle
MAX_IMAGES = 4096  # per request row: bounds a served request's memory
MODEL_TYPE = "entgan-generator"
INPUT_EXAMPLE = {"n": [4], "seed": [0]}


def signature():
    """Input: `n` (long, required), `seed` (long, optional). Output: `request`, `index`, `png`."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("long", "n"), ColSpec("long", "seed", required=False)]),
        outputs=Schema([ColSpec("long", "request"), ColSpec("long", "index"), ColSpec("binary", "png")]),
    )


class BadRequest(MlflowException, ValueError):
    """A request the model cannot answer. An MlflowException with INVALID_PARAMETER_VALUE, so that
    `mlflow models serve` answers 400 with this message (any other exception becomes MLflow's
    generic "unexpected error" and a stack trace); a ValueError for callers in Python."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


class GeneratorModel(PythonModel):
    """One data type's generator; `predict` draws images with `entgan.gan.sampling.sample_batches`."""

    def load_context(self, context) -> None:
        from entgan.gan.bundle import STORED_FORMATS, load_bundle
        from entgan.gan.sampling import bundle_bits, generator_from_bundle
        from entgan.job.spec import TrainSpec

        config = context.model_config or {}
        self.data_type = config["data_type"]
        bundle = load_bundle(context.artifacts[WEIGHTS], formats=STORED_FORMATS)  # verified, never unpickled
        fallback = TrainSpec.model_validate(config.get("train", {}))
        self.generator = generator_from_bundle(bundle, self.data_type, fallback, where=f"model {self.data_type}")
        self.bits = bundle_bits(bundle)

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One row per image: `request` (the input row it answers), `index`, `png` (file bytes)."""
        from entgan.gan.sampling import pngs, sample_batches

        rows = []
        for request, (n, seed) in enumerate(_requests(model_input)):
            index = 0
            for pixels in sample_batches(self.generator, n, seed=seed, bits=self.bits):
                for data in pngs(pixels):
                    rows.append({"request": request, "index": index, "png": data})
                    index += 1
        return pd.DataFrame(rows, columns=["request", "index", "png"])


def _requests(model_input) -> list[tuple[int, int | None]]:
    """(n, seed) per request row; a clear error for a bad count or seed."""
    frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
    if "n" not in frame.columns:
        raise BadRequest(f"request has no 'n' column (it has {list(frame.columns)}); send e.g. {INPUT_EXAMPLE}")
    out = []
    for record in frame.to_dict(orient="records"):
        n, seed = record["n"], record.get("seed")
        if pd.isna(n) or int(n) != n or not 1 <= int(n) <= MAX_IMAGES:
            raise BadRequest(f"n={n!r}: ask for a whole number of images from 1 to {MAX_IMAGES} per request row")
        if seed is not None and pd.isna(seed):
            seed = None
        if seed is not None and (int(seed) != seed or seed < 0):
            raise BadRequest(f"seed={seed!r}: use a whole number >= 0, or leave it out for random images")
        out.append((int(n), None if seed is None else int(seed)))
    return out


def requirements() -> list[str]:
    """What the model needs installed: EntGAN itself (it pulls in torch, safetensors, mlflow)."""
    import mlflow

    import entgan

    return [f"entgan=={entgan.__version__}", f"mlflow=={mlflow.__version__}"]


def image_metadata(train: dict, bits: int = 8) -> dict:
    """What the served PNGs are: {"channels": 1 or 3, "png": e.g. "16-bit grayscale"} (a saved
    TrainSpec without `channels` is from before channels existed: RGB)."""
    from entgan.gan.sampling import png_format

    channels = train.get("channels", 3)
    channels = 3 if channels == "auto" else int(channels)
    return {"channels": channels, "png": png_format(channels, bits)}


def save_generator_model(folder: Path, weights: Path, data_type: str, train: dict, mlflow_model=None,
                         bits: int = 8) -> None:
    """Write the MLflow Model of one generator version into `folder` (which must not exist).
    The image channels and PNG format are in `model_config` and the MLmodel's `metadata`."""
    import mlflow.pyfunc

    image = image_metadata(train, bits)
    mlflow.pyfunc.save_model(
        path=str(folder),
        python_model=str(CODE_FILE),
        artifacts={WEIGHTS: str(weights)},
        model_config={"data_type": data_type, "train": train, **image},
        metadata={"entgan": {"data_type": data_type, **image}},
        signature=signature(),
        input_example=INPUT_EXAMPLE,
        pip_requirements=requirements(),
        mlflow_model=mlflow_model,
    )
    for cache in Path(folder).rglob("__pycache__"):  # loading the code to check it may leave one
        shutil.rmtree(cache, ignore_errors=True)


def log_generator_model(client, run_id: str, data_type: str, weights: Path, train: dict, tags: dict[str, str],
                        bits: int = 8):
    """Log one generator version as an MLflow 3 logged model, an output of `run_id`; returns the
    `LoggedModel` (its `model_id` and `artifact_location` make the registry version)."""
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model

    run = client.get_run(run_id)
    logged = client.create_logged_model(
        run.info.experiment_id, name=data_type, source_run_id=run_id, tags=tags, model_type=MODEL_TYPE
    )
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
    meta = Model(artifact_path=logged.artifact_location, model_uuid=logged.model_id, run_id=run_id,
                 model_id=logged.model_id)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        save_generator_model(folder, weights, data_type, train, mlflow_model=meta, bits=bits)
        client.log_model_artifacts(logged.model_id, str(folder))
    return client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
