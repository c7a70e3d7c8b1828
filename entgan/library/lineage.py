"""Synthetic datasets with lineage: what `entgan generate` wrote, recorded in MLflow.

Every generation opens a run `generate-<time>` in the experiment `entgan-<job>-synthetic` whose
input is an MLflow dataset `entgan-<job>-synthetic`: where the files are (a local folder or an
object-store URI), a digest of their bytes, and a profile naming, per type, the champion version
that drew them (registered model, version, logged model id, training run, edges), the seed and
the count. The champions' MLflow Models are inputs of the same run, so the MLflow UI links the
images to the generator versions, and from there to the training run and the edges' data.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from urllib.parse import urlparse

DATASET_CONTEXT = "synthetic"  # the run input's `mlflow.data.context` tag
OBJECT_STORES = {"s3": "s3", "minio": "s3", "gs": "gs"}  # URI scheme -> MLflow dataset source type


def experiment_name(job: str) -> str:
    """The experiment of a job's generation runs, apart from its pipeline runs (`entgan-<job>`),
    which `entgan status` lists."""
    return f"entgan-{job}-synthetic"


def files_digest(files: dict[str, list[Path]]) -> str:
    """sha256 (first 16 hex digits) over the written files' names and bytes, types in order."""
    digest = hashlib.sha256()
    for data_type in sorted(files):
        for path in files[data_type]:
            digest.update(f"{data_type}/{Path(path).name}".encode())
            digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def source_of(location: str) -> tuple[str, str]:
    """(MLflow dataset source type, source JSON) of where the images are: a URI or a folder."""
    scheme = urlparse(location).scheme
    kind = OBJECT_STORES.get(scheme, "local" if scheme in ("", "file") else scheme)
    return kind, json.dumps({"uri": location})


def profile(versions: dict, files: dict[str, list[Path]], seed: int) -> dict:
    """What the dataset holds and what drew it: per type the count and the champion version."""
    return {
        "seed": seed,
        "num_images": {t: len(p) for t, p in sorted(files.items())},
        "generators": {
            t: {
                "model": v.name,
                "version": v.version,
                "model_id": v.model_id,
                "training_run": v.run_id,
                "edges": v.tags.get("entgan.edges", ""),
                "kfp_run_id": v.tags.get("entgan.kfp_run_id", ""),
            }
            for t, v in sorted(versions.items())
        },
    }


def record_synthetic_dataset(library, versions: dict, files: dict[str, list[Path]], seed: int, location: str) -> str:
    """Record one generation in the job's experiment; returns the MLflow run id."""
    from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

    if not files or not sum(len(p) for p in files.values()):
        raise ValueError("a synthetic dataset with no image is not recorded: generate at least one image first")
    kind, source = source_of(location)
    info = profile(versions, files, seed)
    dataset = Dataset(name=f"entgan-{library.job}-synthetic", digest=files_digest(files), source_type=kind,
                      source=source, profile=json.dumps(info, sort_keys=True))
    params = {"seed": seed, "location": location, "types": ",".join(sorted(files)),
              **{f"num_images.{t}": n for t, n in info["num_images"].items()},
              **{f"generator.{t}": f"{v.name}/{v.version}" for t, v in versions.items()}}
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    run_id = library.start_run(f"generate-{stamp}", params, {"entgan.kind": "generate", "entgan.job": library.job},
                               experiment=experiment_name(library.job))
    library.log_inputs(run_id, [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", DATASET_CONTEXT)])],
                       [LoggedModelInput(v.model_id) for v in versions.values() if v.model_id])
    library.note_run(run_id, _note(info, location))
    library.end_run(run_id)
    return run_id


def _note(info: dict, location: str) -> str:
    lines = [f"Synthetic images in `{location}` (seed {info['seed']}), ImageFolder layout.", "",
             "| type | images | generator | training run |", "|---|---|---|---|"]
    for t, g in info["generators"].items():
        lines.append(f"| {t} | {info['num_images'][t]} | {g['model']} v{g['version']} | {g['training_run']} |")
    return "\n".join(lines)
