"""A run's temporary files in one folder of its own, removed when the run ends.

kfp.local writes every task's code to a `mktemp -d` folder it never removes, tasks and MLflow
write temporary files of their own, and the task fork server keeps its socket in a folder of its
own (`entgan.local.forkserver`, in the system temp folder: a socket's path must be short).
`entgan run` points TMPDIR (and Python's `tempfile`) at
`<system temp>/entgan-run-<pid>-XXXX` while it runs and removes that folder afterwards, Ctrl-C
and errors included. A folder left by a run that was killed (kill -9: nothing of it could clean
up) is removed by the next run on the machine, once its pid is gone.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from entgan.job.lifecycle import driver_gone

PREFIX = "entgan-run-"
# Folders of a run's process, named `<prefix><pid>-XXXX`: its scratch folder, its task fork server's.
_OWNED = re.compile(r"entgan-(?:run|forkserver)-(\d+)-")


def remove_stale(system_temp: Path) -> list[Path]:
    """Remove the folders of runs whose process is gone (killed with -9); returns them."""
    removed = []
    for folder in sorted(system_temp.glob("entgan-*-*")):
        owner = _OWNED.match(folder.name)
        if owner and folder.is_dir() and folder.stat().st_uid == os.getuid() and \
                driver_gone(f"{socket.gethostname()}:{owner.group(1)}"):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


@contextlib.contextmanager
def run_scratch():
    """While inside, temporary files of this process and the tasks it starts go to a folder of
    this run's, removed at the end (see module docstring). Yields the folder."""
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    system_temp = Path(tempfile.gettempdir())
    remove_stale(system_temp)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=system_temp))
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    try:
        yield folder
    finally:
        if before[0] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = before[0]
        tempfile.tempdir = before[1]
        shutil.rmtree(folder, ignore_errors=True)
