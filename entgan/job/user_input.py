"""What a user named that cannot be used: an error shown as one line, and the check of a path
the user gives for output (a file or a folder). Below every layer that raises them."""

from __future__ import annotations

import os
from pathlib import Path


class CliError(RuntimeError):
    """An error shown to the user as one line, without a traceback."""


def check_output_path(value: str | Path, flag: str, is_folder: bool, holds: str = "") -> None:
    """CliError unless `value` can be written as a file (or folder): naming the part in the way."""
    path = Path(value).expanduser()
    if is_folder and path.is_file():
        raise CliError(f"{flag} {value} is an existing file; give a folder{holds}")
    if not is_folder and path.is_dir():
        raise CliError(f"{flag} {value} is a folder; give a file name, e.g. {path / 'job.pipeline.yaml'}")
    parent = path if is_folder else path.parent
    for above in [parent, *parent.parents]:
        if above.exists():
            if not above.is_dir():
                raise CliError(f"{flag} {value}: {above} is a file, not a folder; choose a path under a folder")
            if not os.access(above, os.W_OK | os.X_OK):
                raise CliError(f"{flag} {value}: the folder {above} is not writable; choose a path you can write")
            return


def check_outside_edges(value: str | Path, flag: str, edges: list[tuple[str, str]]) -> None:
    """CliError if the output folder `value` is an edge's data folder or lies inside one (synthetic
    images there would be read as real ones by the next run). `edges`: (name, data) pairs."""
    out = Path(value).expanduser().resolve()
    for name, data in edges:
        if "://" in data:
            continue
        root = Path(data).expanduser().resolve()
        if out == root or root in out.parents:
            raise CliError(f"{flag} {value} is inside the data folder {root} of edge {name!r}; the next run would "
                           "train on the synthetic images as real ones: write them to a folder outside every "
                           "edge's data")
