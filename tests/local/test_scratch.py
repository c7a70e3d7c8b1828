"""A run's temporary files live in a folder of its own, removed at the end; folders left by a
killed run are removed by the next one (issue 26, item 8). A whole run leaving the temp folder
empty is checked by tests/local/test_interrupted.py (Ctrl-C) and tests/cli/test_documented_commands.py.

Real parts: the file system, real process ids (a finished child's for a run killed with -9).
"""

import os
import subprocess
import sys
import tempfile

from entgan.local.scratch import remove_stale, run_scratch


def test_folders_of_runs_whose_process_is_gone_are_removed_and_no_others(tmp_path):
    # Prepare: a killed run's scratch and fork-server folders, a live run's, and someone else's
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(gone.stdout)
    for name in (f"entgan-run-{dead}-abc", f"entgan-forkserver-{dead}-def", f"entgan-run-{os.getpid()}-ghi",
                 "entgan-forkserver-nopid", "tmpxyz"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file").write_text("x")

    # Execute
    removed = remove_stale(tmp_path)

    # Assert
    assert sorted(p.name for p in removed) == [f"entgan-forkserver-{dead}-def", f"entgan-run-{dead}-abc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entgan-forkserver-nopid", f"entgan-run-{os.getpid()}-ghi",
                                                          "tmpxyz"]


def test_temporary_files_of_a_run_go_to_its_folder_which_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)

    with run_scratch() as folder:
        inside = tempfile.mkdtemp()
        child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                               capture_output=True, text=True)

    assert folder.parent == tmp_path and folder.name.startswith(f"entgan-run-{os.getpid()}-")
    assert os.path.dirname(inside) == str(folder) and child.stdout.strip() == str(folder)
    assert list(tmp_path.iterdir()) == []
    assert os.environ["TMPDIR"] == str(tmp_path) and tempfile.tempdir is None
