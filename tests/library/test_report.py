"""What people see: the KFP run page's HTML report, the registry's descriptions, the README's
figures, and the per-round metric history they are drawn from (a real embedded MLflow store)."""

import base64
import re

import pytest
import torch
from PIL import Image

from entgan.evaluation.features import image_grid
from entgan.gan.bundle import BundleHeader
from entgan.library.registry import TaskLibrary
from entgan.library.report import (
    deploy_metrics,
    fid_curves_figure,
    model_description,
    round_rows,
    run_note,
    run_report_html,
    samples_figure,
    version_description,
)

HISTORY = {
    "box.fid": [(0, 40.0), (1, 12.5), (2, 3.25)],
    "box.edge_d_loss": [(1, 1.2), (2, 1.1)],
    "box.edge_g_loss": [(1, 0.8), (2, 0.9)],
    "table.fid": [(0, 30.0), (1, 20.0), (2, 25.0)],
}


def _summary(tmp_path):
    grid = tmp_path / "box.png"
    image_grid(torch.rand(16, 3, 8, 8) * 2 - 1, columns=4).save(grid)
    info = {"fid": 3.25, "baseline_fid": 40.0, "precision": 0.5, "recall": 0.25, "cas": 0.75, "train_images": 80.0,
            "holdout_images": 20.0}
    return {
        "job": "demo", "kfp_run_id": "run-7", "mlflow_run_id": "abc",
        "types": {
            "box": {**info, "version": "2", "champion": "2", "promoted": True, "reason": "FID 3.25 < 5.00",
                    "parent_version": "1", "parent_task": "", "grid": str(grid)},
            "table": {**info, "fid": 25.0, "version": "3", "champion": "1", "promoted": False,
                      "reason": "FID 25.00 >= 20.00 <b>", "parent_version": "1", "parent_task": "", "grid": None},
        },
    }


def test_round_rows_put_each_round_on_a_row():
    rows = round_rows(HISTORY, ["box", "table"])
    assert rows == [
        ["0", "40.00", "-", "30.00", "-"],
        ["1", "12.50", "1.20 / 0.80", "20.00", "-"],
        ["2", "3.25", "1.10 / 0.90", "25.00", "-"],
    ]


def test_html_report_has_results_rounds_and_inline_sample_grids(tmp_path):
    summary = _summary(tmp_path)
    page = run_report_html(summary, HISTORY)
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(images) == 1  # box has a grid, table has none
    assert base64.b64decode(images[0]) == (tmp_path / "box.png").read_bytes()
    assert "Round by round" in page and "<td>12.50</td>" in page and "<td>1.10 / 0.90</td>" in page
    assert "promoted</span>: FID 3.25 &lt; 5.00" in page and "kept out</span>" in page
    assert "<b>" not in page  # text from the run is escaped
    assert "http" not in page  # self-contained: nothing to fetch


def test_html_report_of_a_run_that_trained_nothing():
    assert "Nothing was trained" in run_report_html({"job": "demo", "types": {}}, {})


def test_descriptions_and_metrics_say_what_was_decided(tmp_path):
    summary = _summary(tmp_path)
    box = summary["types"]["box"]
    text = version_description("box", box, "demo", "entgan", 8, ["edge-1", "edge-4"], "run-7")
    for fact in ("**box**", "`edge-1`, `edge-4`", "the champion v1", "40.00 → **3.25**", "promoted to `champion`",
                 "FID 3.25 < 5.00", "run-7", "80 training images", "20 held-out"):
        assert fact in text, fact
    text = model_description("table", "demo", ["edge-1"], "1", {**summary["types"]["table"], "version": "3"})
    assert "Version 1 is `champion`" in text and "version 3 kept out" in text
    assert "no version is deployed" in model_description("box", "demo", ["edge-1"], None, {**box, "version": "1"}).lower()
    note = run_note(summary, "entgan", 8)
    assert "| box | 40.00 | 3.25 | v2 | v2 | promoted" in note and "| table |" in note
    metrics = deploy_metrics(summary)
    assert metrics["box.promoted"] == 1.0 and metrics["table.promoted"] == 0.0 and metrics["table.version"] == 3.0


def test_figures_are_pngs(tmp_path):
    curves = fid_curves_figure(HISTORY, ["box", "table"], tmp_path / "curves.png")
    real = {"box": torch.rand(16, 3, 8, 8) * 2 - 1}
    generated = {"box": torch.rand(16, 3, 8, 8) * 2 - 1, "table": torch.rand(16, 3, 8, 8) * 2 - 1}
    samples = samples_figure(real, generated, tmp_path / "samples.png")
    for path in (curves, samples):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
    with Image.open(samples) as one, Image.open(samples_figure(real, {"box": generated["box"]}, tmp_path / "1.png")) as two:
        assert one.height > two.height  # a row per type


@pytest.fixture
def library(tmp_path):
    return TaskLibrary(f"sqlite:///{tmp_path / 'mlflow.db'}", "t", (tmp_path / "artifacts").as_uri())


def test_metric_history_is_per_step_and_trained_history_skips_runs_that_waited(library):
    trained = library.start_run("kfp-1", {}, {"entgan.kfp_run_id": "1"})
    for step, value in ((2, 3.0), (0, 9.0), (1, 5.0)):
        library.log_metrics(trained, {"box.fid": value, "box.edge_d_loss": value / 10}, step=step)
    library.log_metrics(trained, {"box.precision": 0.5})
    assert library.metric_history(trained, ("fid",)) == {"box.fid": [(0, 9.0), (1, 5.0), (2, 3.0)]}
    assert set(library.metric_history(trained)) == {"box.fid", "box.edge_d_loss", "box.precision"}
    waited = library.start_run("kfp-2", {}, {"entgan.kfp_run_id": "2"})  # newer, trained nothing
    assert waited != trained
    assert library.trained_history(("fid",)) == {"box.fid": [(0, 9.0), (1, 5.0), (2, 3.0)]}


def test_round_generators_round_trip_as_a_verified_bundle(library):
    run_id = library.start_run("kfp-1", {}, {"entgan.kfp_run_id": "1"})
    tensors = {"box/G/0.weight": torch.arange(6.0).reshape(2, 3)}
    library.log_bundle(run_id, tensors, BundleHeader(kind="round-generators", round=3), "rounds/round-003.safetensors")
    bundle = library.run_bundle(run_id, "rounds/round-003.safetensors")
    assert bundle.header.round == 3 and torch.equal(bundle.tensors["box/G/0.weight"], tensors["box/G/0.weight"])
    with pytest.raises(LookupError):
        library.run_bundle(run_id, "rounds/round-004.safetensors")
