import pytest

from entgan.cli.verbs import main
from tests.conftest import write_job


def test_bad_job_file_is_one_clear_line(tmp_path, capsys):
    path = write_job(tmp_path / "bad.yaml", {"name": "demo", "edges": [{"name": "Edge 1", "data": "x"}], "trian": {}})
    assert main(["compile", str(path)]) == 2
    err = capsys.readouterr().err
    assert "edges.0.name: edge name 'Edge 1' is not a safe name" in err
    assert "trian: unknown field" in err
    assert "Traceback" not in err


def test_compile_writes_yaml(tmp_path, capsys):
    from pathlib import Path

    out = tmp_path / "demo.yaml"
    assert main(["compile", str(Path(__file__).parents[2] / "jobs" / "demo.yaml"), "-o", str(out)]) == 0
    assert out.read_text().startswith("# PIPELINE DEFINITION")


def test_run_with_corrupt_image_fails_naming_the_file(demo_edges, tmp_path, capsys):
    import shutil

    from tests.conftest import tiny_job_dict

    edges = tmp_path / "edges"
    shutil.copytree(demo_edges / "edges" / "edge-1", edges / "edge-1")
    (edges / "edge-1" / "box" / "broken.png").write_bytes(b"not a png")
    data = tiny_job_dict(tmp_path, ["edge-1"])
    path = write_job(tmp_path / "job.yaml", data)
    assert main(["run", str(path)]) != 0
    out = capsys.readouterr()
    assert "broken.png: cannot read image" in out.out + out.err
    # One line naming the failed task and its own error; the traceback only with --debug.
    assert out.err.startswith("error: task '") and " failed: " in out.err and out.err.count("\n") == 1
    assert "Traceback" not in out.out + out.err
    # Nothing was registered: the run stopped at inspection, before training.
    assert not (tmp_path / "state" / "mlartifacts").exists()


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("data", "compile", "run"):
        assert verb in out
