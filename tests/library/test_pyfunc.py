"""Every registered generator version is an MLflow Model: loadable with `mlflow.pyfunc` in a fresh
Python, servable with the real `mlflow models serve` on 127.0.0.1, never unpickled; versions
registered before that stay readable; `entgan generate` records what it wrote as an MLflow dataset.

The library is the tiny job's (conftest), its versions registered through `TaskLibrary.register`,
the call the deploy stage makes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from PIL import Image

from entgan.cli.verbs import generate
from entgan.gan.bundle import BundleHeader, pack, save_bundle
from entgan.gan.models import Discriminator, Generator
from entgan.job.spec import parse_job
from entgan.library.generate import generate_from_library
from entgan.library.registry import TaskLibrary, library_for
from entgan.library.status import job_status
from tests.conftest import hang_guard, tiny_job_dict, write_job
from tests.servers import HOST, _start, _stop, _wait, free_port

CHAMPION_URI = "models:/entgan-demo-box@champion"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _files(job, data_type: str, folder: Path, seed: int) -> Path:
    """A trained type's files as the deploy stage writes them: the bundle of G and D."""
    torch.manual_seed(seed)
    t = job.train
    groups = {f"{data_type}/G": Generator(t.latent_dim, t.width, t.image_size).state_dict(),
              f"{data_type}/D": Discriminator(t.width, t.image_size).state_dict()}
    folder.mkdir(parents=True)
    header = BundleHeader(kind="model", extra={"data_type": data_type, "train": t.model_dump()})
    save_bundle(folder / "model.safetensors", pack(groups), header)
    return folder


def _deploy(library: TaskLibrary, job, data_type: str, folder: Path, seed: int, old_layout: bool = False) -> str:
    """Log a version's files to a new run and register them (the deploy stage's calls); with
    `old_layout`, the way EntGAN registered versions before they were MLflow Models."""
    run_id = library.start_run(f"deploy-{folder.name}", {}, {"entgan.kfp_run_id": folder.name})
    library.log_files(run_id, _files(job, data_type, folder, seed), f"tasks/{data_type}")
    tags = {"entgan.edges": "edge-1", "entgan.kfp_run_id": folder.name}
    register = _register_old_layout if old_layout else TaskLibrary.register
    version = register(library, data_type, run_id, f"tasks/{data_type}", tags)
    library.set_champion(data_type, version.version)
    return version.version


def _register_old_layout(library: TaskLibrary, data_type: str, run_id: str, artifact_path: str, tags: dict):
    """The body of `TaskLibrary.register` before versions were MLflow Models (commit fb539a6):
    the version's source is the run's artifact folder, which holds no MLmodel."""
    name = library.model_name(data_type)
    try:
        library.client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        library.client.create_registered_model(name)
    run = library.client.get_run(run_id)
    source = f"{run.info.artifact_uri}/{artifact_path}"
    tags = {**tags, "entgan.artifact_path": artifact_path}
    mv = library.client.create_model_version(name, source, run_id=run_id, tags=tags)
    return library.versions(data_type)[int(mv.version) - 1]


@pytest.fixture(scope="module")
def demo(demo_edges, tmp_path_factory):
    """Job `demo`: box v1 (registered the old way, no MLmodel), then box v2 (the champion) and
    table v1, both MLflow Models."""
    root = tmp_path_factory.mktemp("mlflow-model")
    data = tiny_job_dict(demo_edges, ["edge-1"], name="demo")
    data["state_dir"] = str(root / "state")
    job = parse_job(data)
    library = library_for(job)
    _deploy(library, job, "box", root / "run-1", seed=1, old_layout=True)
    _deploy(library, job, "box", root / "run-2", seed=2)
    _deploy(library, job, "table", root / "run-3", seed=3)
    return job, library, root


@contextmanager
def _tracking(job):
    """MLflow's fluent API (`mlflow.pyfunc`, `mlflow.models`) pointed at the job's store."""
    mlflow.set_tracking_uri(job.tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(None)


def _env(job) -> dict[str, str]:
    """A fresh process's environment: the job's store, this checkout, the venv's tools (uvicorn)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return {**env, "MLFLOW_TRACKING_URI": job.tracking_uri, "PYTHONPATH": str(Path(__file__).parents[2]), "PATH": path}


def _pngs_of(out: Path, data_type: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted((out / data_type).iterdir())]


# ---------------------------------------------------------------- an MLflow Model


NO_UNPICKLING = """
import pickle, _pickle
def refuse(*args, **kwargs):
    raise AssertionError("something was unpickled")
class Refused:
    def __init__(self, *args, **kwargs):
        refuse()
pickle.load = pickle.loads = _pickle.load = _pickle.loads = refuse
pickle.Unpickler = _pickle.Unpickler = Refused
"""

LOAD_AND_PREDICT = NO_UNPICKLING + """
import base64, json, sys
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict({"n": [3], "seed": [5]})
print(json.dumps({"model_id": model.metadata.model_id, "columns": list(out.columns),
                  "pngs": [base64.b64encode(b).decode() for b in out["png"]]}))
"""


def test_the_champion_loads_in_a_fresh_python_without_unpickling(demo, tmp_path):
    """`mlflow.pyfunc.load_model` in a new interpreter where every pickle loader raises: the
    images are those `entgan generate` writes with the same seed."""
    job, library, _ = demo

    # Execute
    done = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, CHAMPION_URI], env=_env(job),
                          capture_output=True, text=True, timeout=hang_guard(300))
    written = generate(job, ["box"], 3, tmp_path / "out", seed=5)

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert reply["columns"] == ["request", "index", "png"]
    assert reply["model_id"] == library.champion("box").model_id
    assert [base64.b64decode(p) for p in reply["pngs"]] == [p.read_bytes() for p in written["box"]]


def test_a_version_is_a_logged_model_of_its_run_with_signature_and_example(demo):
    job, library, _ = demo
    champion = library.champion("box")

    logged = library.client.get_logged_model(champion.model_id)
    run = library.client.get_run(champion.run_id)
    with _tracking(job):
        info = mlflow.models.get_model_info(CHAMPION_URI)

    assert champion.source == f"models:/{champion.model_id}"
    assert logged.source_run_id == champion.run_id and logged.name == "box"
    assert champion.model_id in [o.model_id for o in run.outputs.model_outputs]
    assert info.signature.inputs.input_names() == ["n", "seed"]
    assert info.signature.outputs.input_names() == ["request", "index", "png"]
    assert info.saved_input_example_info is not None


def test_no_pickle_is_written_in_a_versions_artifacts(demo, tmp_path):
    """Models from code: the MLflow Model is a Python file, the safetensors weights and text."""
    job, library, _ = demo
    with _tracking(job):
        folder = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path)))

    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert {"MLmodel", "pyfunc_code.py", "artifacts/model.safetensors"} <= set(files)
    for name in files:
        head = (folder / name).read_bytes()[:2]
        assert not name.endswith((".pkl", ".pickle")), name
        assert not (head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05"), f"{name} is a pickle stream"
    pyfunc = json.dumps(__import__("yaml").safe_load((folder / "MLmodel").read_text())["flavors"]["python_function"])
    assert "model_code_path" in pyfunc and "python_model.pkl" not in pyfunc


def test_a_bad_request_is_refused_with_what_to_send(demo):
    job, _, _ = demo
    with _tracking(job):
        model = mlflow.pyfunc.load_model(CHAMPION_URI)

    with pytest.raises(ValueError, match=r"n=0: ask for a whole number of images from 1 to 4096"):
        model.predict({"n": [0]})
    with pytest.raises(ValueError, match=r"seed=-1: use a whole number >= 0"):
        model.predict({"n": [1], "seed": [-1]})


# ---------------------------------------------------------------- serving over REST


def test_mlflow_models_serve_answers_with_the_champions_images(demo, tmp_path):
    """The real `mlflow models serve` on a free loopback port; the request and reply are MLflow's
    scoring protocol (`dataframe_records` in, `predictions` out, binary columns as base64)."""
    job, _, _ = demo
    port = free_port()
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", CHAMPION_URI,
           "--env-manager", "local", "-h", HOST, "-p", str(port), "-w", "1"]
    log = tmp_path / "serve.log"
    proc = _start(cmd, _env(job), tmp_path, log)
    url = f"http://{HOST}:{port}"
    try:
        _wait(lambda: _answers(f"{url}/ping"), proc, log, "mlflow models serve", timeout=hang_guard(180))
        body = json.dumps({"dataframe_records": [{"n": 4, "seed": 9}]}).encode()
        request = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as reply:
            predictions = json.load(reply)["predictions"]
        refusals = {n: _refusal(f"{url}/invocations", {"dataframe_records": [{"n": n}]}) for n in (-3, 100_000_000)}
    finally:
        _stop(proc)
    written = generate(job, ["box"], 4, tmp_path / "out", seed=9)

    # A bad request: 400 with the model's own message, not MLflow's generic one and a stack trace
    for n, (status, reply) in refusals.items():
        assert status == 400 and reply["error_code"] == "INVALID_PARAMETER_VALUE", reply
        assert f"n={n}: ask for a whole number of images from 1 to 4096 per request row" in reply["message"]
        assert "unexpected error" not in reply["message"] and "stack_trace" not in reply

    images = [base64.b64decode(p["png"]) for p in predictions]
    assert [(p["request"], p["index"]) for p in predictions] == [(0, i) for i in range(4)]
    for data in images:
        with Image.open(BytesIO(data)) as img:
            assert np.asarray(img).shape == (job.train.image_size, job.train.image_size, 3)
    assert images == [p.read_bytes() for p in written["box"]]


def _refusal(url: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON body) of a request the server refuses."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as reply:
            return reply.status, json.load(reply)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


# ---------------------------------------------------------------- older versions


def test_versions_registered_the_old_way_stay_readable_and_untouched(demo, tmp_path):
    job, library, _ = demo
    old = library.versions("box")[0]
    assert old.model_id is None and "/artifacts/tasks/box" in old.source  # the old layout

    # Execute: promote the old version back, re-register it (a retried deploy), generate, status
    library.set_champion("box", old.version)
    again = library.register("box", old.run_id, "tasks/box", {})
    written = generate_from_library(library, job.train, ["box"], 2, tmp_path / "out", seed=4)
    status = job_status(library)
    library.set_champion("box", library.versions("box")[-1].version)  # the module's champion again

    # Assert: read as before, nothing rewritten or added
    assert again == old
    assert [v.version for v in library.versions("box")] == ["1", "2"]
    assert library.versions("box")[0] == old
    assert status["types"]["box"]["champion"] == "1"
    assert [Image.open(p).size for p in written["box"]] == [(16, 16), (16, 16)]
    run_files = [f.path for f in library.client.list_artifacts(old.run_id, "tasks/box")]
    assert run_files == ["tasks/box/model.safetensors"]


# ---------------------------------------------------------------- synthetic datasets with lineage


def test_generate_records_a_synthetic_dataset_traced_to_the_champions(demo, tmp_path):
    job, library, _ = demo
    box, table = library.champion("box"), library.champion("table")

    # Execute: once into a local folder, once as if writing a KFP artifact on object storage
    local = generate(job, None, 3, tmp_path / "local", seed=11)
    generate_from_library(library, job.train, ["box"], 2, tmp_path / "kfp", seed=12, location="s3://bucket/synth")

    # Assert
    runs = library.client.search_runs(
        [library.client.get_experiment_by_name("entgan-demo-synthetic").experiment_id],
        order_by=["attributes.start_time DESC"])
    by_seed = {r.data.params["seed"]: r for r in runs}
    run = library.client.get_run(by_seed["11"].info.run_id)  # search_runs leaves out model inputs
    (given,) = run.inputs.dataset_inputs
    profile = json.loads(given.dataset.profile)
    assert given.dataset.name == "entgan-demo-synthetic"
    assert json.loads(given.dataset.source) == {"uri": (tmp_path / "local").resolve().as_uri()}
    assert given.dataset.source_type == "local"
    assert {t.key: t.value for t in given.tags} == {"mlflow.data.context": "synthetic"}
    assert profile["num_images"] == {"box": 3, "table": 3} == {t: len(p) for t, p in local.items()}
    assert profile["generators"]["box"] == {"model": "entgan-demo-box", "version": box.version,
                                            "model_id": box.model_id, "training_run": box.run_id,
                                            "edges": "edge-1", "kfp_run_id": "run-2"}
    assert profile["generators"]["table"]["version"] == table.version
    assert sorted(m.model_id for m in run.inputs.model_inputs) == sorted([box.model_id, table.model_id])
    assert run.data.params["generator.box"] == f"entgan-demo-box/{box.version}"
    s3 = by_seed["12"].inputs.dataset_inputs[0].dataset
    assert (s3.source_type, json.loads(s3.source)) == ("s3", {"uri": "s3://bucket/synth"})
    assert s3.digest != given.dataset.digest
    assert all(r.info.run_name.startswith("generate-") for r in runs)
    assert not any(r.data.tags.get("entgan.kind") == "generate" for r in library.recent_runs(20))


def test_entgan_generate_without_type_writes_every_champion_through_its_argv(demo, tmp_path, capsys):
    """The README's command line (issue 26: without --type it wrote nothing, exited 0 and recorded
    an empty synthetic dataset)."""
    from entgan.cli.verbs import main

    job, library, _ = demo
    job_file = write_job(tmp_path / "job.yaml", json.loads(job.model_dump_json()))

    code = main(["generate", "--job", str(job_file), "-n", "3", "--seed", "1", "--out", str(tmp_path / "synth")])

    out = capsys.readouterr().out
    assert code == 0
    assert {p.name: len(list(p.iterdir())) for p in (tmp_path / "synth").iterdir()} == {"box": 3, "table": 3}
    assert "box: 3 images in" in out and "table: 3 images in" in out
    runs = library.client.search_runs(
        [library.client.get_experiment_by_name("entgan-demo-synthetic").experiment_id],
        filter_string=f"params.location = '{(tmp_path / 'synth').resolve().as_uri()}'")
    assert len(runs) == 1 and runs[0].data.params["types"] == "box,table"


def test_the_generate_component_outputs_an_image_folder_dataset_traced_in_mlflow(demo, tmp_path, monkeypatch):
    """The KFP `generate` component run by kfp.local's real subprocess runner: a Dataset artifact
    in ImageFolder layout, recorded in MLflow at the artifact's URI."""
    import kfp.local

    from components import build

    job, library, _ = demo
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parents[2]))
    kfp.local.init(runner=kfp.local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
                   raise_on_error=True)

    task = build("entgan:test").generate(job=job.model_dump_json(), types=["table"], num_images=3)

    images = task.outputs["images"]
    assert images.schema_title == "system.Dataset"
    assert sorted(p.relative_to(images.path).as_posix() for p in Path(images.path).rglob("*.png")) == [
        f"table/table-{i:06d}.png" for i in range(3)]
    assert images.metadata["table"] == 3
    runs = library.client.search_runs(
        [library.client.get_experiment_by_name("entgan-demo-synthetic").experiment_id],
        filter_string=f"params.location = '{images.uri}'")
    assert len(runs) == 1 and runs[0].data.params["generator.table"] == "entgan-demo-table/1"


# entgan 0.1's code file (a578639: entgan/mlflow_model_code.py), as MLflow copied it into every version
# registered before the package layout: it names `entgan.mlflow_model`, a path that must keep working.
CODE_FILE_0_1 = '''"""The code of every registered EntGAN generator version (MLflow "models from code").

MLflow copies this file into each version's artifacts and runs it on load: it names the model
class, nothing is unpickled. The weights are the version's `model.safetensors` artifact.
"""

from mlflow.models import set_model

from entgan.mlflow_model import GeneratorModel

set_model(GeneratorModel())
'''


def test_a_version_registered_before_the_package_layout_loads_with_mlflow_pyfunc(demo, tmp_path):
    """The champion's model as entgan 0.1 stored it (its code file `mlflow_model_code.py` importing
    `entgan.mlflow_model`), loaded with `mlflow.pyfunc` in a fresh Python: the same images."""
    job, _, _ = demo
    # Prepare: the champion's artifacts with 0.1's code file in place of today's
    with _tracking(job):
        folder = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path / "model")))
    (folder / "pyfunc_code.py").unlink()
    (folder / "mlflow_model_code.py").write_text(CODE_FILE_0_1)
    mlmodel = (folder / "MLmodel").read_text()
    assert "pyfunc_code.py" in mlmodel
    (folder / "MLmodel").write_text(mlmodel.replace("pyfunc_code.py", "mlflow_model_code.py"))

    # Execute
    done = subprocess.run([sys.executable, "-c", LOAD_AND_PREDICT, str(folder)], env=_env(job),
                          capture_output=True, text=True, timeout=hang_guard(300))
    written = generate(job, ["box"], 3, tmp_path / "out", seed=5)

    # Assert
    assert done.returncode == 0, done.stderr[-3000:]
    reply = json.loads(done.stdout.strip().splitlines()[-1])
    assert [base64.b64decode(p) for p in reply["pngs"]] == [p.read_bytes() for p in written["box"]]
