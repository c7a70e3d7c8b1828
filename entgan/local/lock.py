"""One `entgan run` at a time on a state_dir: a lock file that says who holds it.

Two runs of one job on one state_dir would set up one MLflow store twice, register versions
side by side and read each other's results. `state_dir_lock` creates `<state_dir>/entgan-run.lock`
exclusively (O_EXCL) with the holder's pid, host and start time, and removes it when the run
ends. A lock whose process is gone (same host, no such pid: killed with -9, a crashed machine)
is stale and taken over; a live one is refused with who holds it and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path

from entgan.job.lifecycle import driver_gone
from entgan.job.user_input import CliError

LOCK_FILE = "entgan-run.lock"


class StateDirBusy(CliError):
    """Another `entgan run` holds the state_dir; the message names it and the fix."""


def _holder(path: Path) -> dict | None:
    """The lock's content, or None if it is gone or unreadable (half written: treated as stale)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}


def _stale(holder: dict) -> bool:
    """The holder is gone: on this host its pid no longer exists (or the file says nothing)."""
    if not holder.get("pid") or not holder.get("host"):
        return True
    return driver_gone(f"{holder['host']}:{holder['pid']}")


def _busy_message(state_dir: Path, path: Path, holder: dict) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(holder.get("started", 0)))
    here = holder.get("host") == socket.gethostname()
    fix = (f"wait for it to finish or stop it (kill {holder['pid']})" if here else
           f"wait for it to finish, or delete {path} if that run is gone")
    return (f"state_dir {state_dir} is in use by another entgan run (pid {holder['pid']} on {holder['host']}, "
            f"job {holder.get('job', '?')!r}, since {since}); {fix}, or give this job its own state_dir")


def acquire(state_dir: Path, job: str) -> Path:
    """Take the state_dir's lock for this process; StateDirBusy if a live run holds it."""
    path = Path(state_dir) / LOCK_FILE
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "job": job})
    for _ in range(5):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:  # released meanwhile: try again
                continue
            if not _stale(holder):
                raise StateDirBusy(_busy_message(Path(state_dir), path, holder)) from None
            # Stale: move it aside under a name of our own (only one taker wins the rename), then retry.
            aside = path.with_name(f"{LOCK_FILE}.stale-{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, aside)
                aside.unlink()
            continue
        with os.fdopen(fd, "w") as out:
            out.write(mine)
        return path
    raise StateDirBusy(f"state_dir {state_dir}: could not take {path} (other runs keep starting); try again")


def release(path: Path) -> None:
    """Remove the lock if it is still this process's."""
    holder = _holder(path)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def state_dir_lock(state_dir: Path, job: str):
    """While inside, this process holds the state_dir (see module docstring)."""
    path = acquire(state_dir, job)
    try:
        yield path
    finally:
        release(path)
