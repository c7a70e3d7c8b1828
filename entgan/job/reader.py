"""Checks of a job file that do not need its schema: the file itself and single values.

`entgan.job.spec` holds the schema (`JobSpec` and its parts) and reads job files with these: a
YAML loader that refuses a key written twice, pydantic's errors rewritten to name the field and
the fix, credentials refused in URIs (they come only from the environment), and local folders
checked for the mistakes that are already visible (a file, a symlink loop, `~`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import yaml
from pydantic import ValidationError


class JobError(ValueError):
    """A job file that cannot be used; the message names the field and the fix."""


# Query parameters that carry a secret (`?token=...`, `&X-Amz-Signature=...`), by name.
_SECRET_QUERY = re.compile(r"(token|secret|password|passwd|pwd|key|signature|credential|auth)", re.IGNORECASE)
_CREDENTIAL_FIX = ("set it in the environment instead (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD or "
                   "MLFLOW_TRACKING_TOKEN, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)")


def no_credentials(uri: str, what: str) -> str:
    """Credentials come only from the environment: anything in a URI would be compiled into the
    pipeline YAML and stored in MLflow for anyone to read. Refused: any user part (`user:pass@`,
    `token@`, `:pass@`) and query parameters named like a secret (`?token=`)."""
    if "://" not in uri:
        return uri
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        shape = "a user name and password" if ":" in parts.netloc.rsplit("@", 1)[0] else "a user name or token"
        raise ValueError(f"{what} holds {shape} before '@'; remove it and {_CREDENTIAL_FIX}")
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_QUERY.search(name):
            raise ValueError(f"{what} holds a secret in its query ('{name}='); remove it and {_CREDENTIAL_FIX}")
    return uri


def expand_path(value: str) -> str:
    """A local path with `~` expanded (a folder literally named '~' is a trap); URIs unchanged."""
    return value if "://" in value else os.path.expanduser(value)


def check_local_folder(value: str, what: str) -> str:
    """A local folder that is already known to be wrong: an existing file, or a symlink loop."""
    if "://" in value:
        return value
    path = Path(value)
    try:
        path.resolve(strict=False)
    except (RuntimeError, OSError):  # Python 3.11 raises RuntimeError("Symlink loop ...")
        raise ValueError(f"{what} {value} is a symlink that points to itself (a loop); "
                         "point it at the image folder") from None
    if path.is_file():
        raise ValueError(f"{what} {value} is a file, not a folder; give the folder that holds <type>/*.png")
    return value


_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")


def check_tracking_uri(uri: str) -> str:
    """A tracking URI MLflow can use, with its scheme (`http://host:5000`, `sqlite:///path.db`)."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in _SCHEMES:
        raise ValueError(f"mlflow_tracking_uri {uri!r} has no known scheme; write e.g. http://mlflow:5000 or "
                         "sqlite:///path/mlflow.db (or leave it out for a store in state_dir)")
    return no_credentials(uri, "mlflow_tracking_uri")

def check_kept_apart(edges: list[tuple[str, str]], state_dir: str) -> None:
    """ValueError when two edges would read the same images (the same folder, or the same type
    folder through a symlink) or when state_dir lies in an edge's data folder (its samples/ and
    figures/ would be read as data types). `edges`: (name, data) pairs."""
    seen: dict[str, str] = {}
    for name, data in edges:
        where = same_place(data)
        if where in seen:
            raise ValueError(f"edges {seen[where]!r} and {name!r} read the same folder {where}; their images "
                             "would be counted twice: give each edge its own data folder")
        seen[where] = name
    local = [(name, Path(data)) for name, data in edges if "://" not in data]
    state = Path(same_place(state_dir))
    for name, data in local:
        root = data.resolve()
        if state == root or root in state.parents:
            raise ValueError(f"state_dir {state} is inside the data folder {root} of edge {name!r}; its samples/ "
                             "and figures/ would be read as data types: set state_dir to a folder outside every "
                             "edge's data")
    types: dict[Path, tuple[str, Path]] = {}
    for name, data in local:
        try:
            folders = [p for p in data.iterdir() if not p.name.startswith(".") and p.is_dir()]
        except OSError:  # not there (yet) or not readable: inspection says so
            continue
        for folder in sorted(folders):
            real = folder.resolve()
            other = types.setdefault(real, (name, folder))
            if other[0] != name:
                raise ValueError(f"edges {other[0]!r} and {name!r} read the same type folder {real} ({other[1]} and "
                                 f"{folder}, a symlink); its images would be counted twice: give each edge its own "
                                 "images, not a link to another edge's")


def same_place(data: str) -> str:
    """Where an edge's data really is: a local folder resolved (relative paths from the working
    directory, symlinks followed), a URI with its trailing '/' removed."""
    if "://" in data:
        return data.rstrip("/")
    return str(Path(data).resolve())

# The fix for pydantic's own messages ("Input should be greater than 0") that do not say it.
_FIXES = {
    **dict.fromkeys(("greater_than", "greater_than_equal", "less_than", "less_than_equal"), "change the value"),
    **dict.fromkeys(("int_parsing", "int_type", "int_from_float"), "write a whole number"),
    **dict.fromkeys(("float_parsing", "float_type"), "write a number"),
    "finite_number": "write a number, not .nan or .inf",
    **dict.fromkeys(("string_type", "bool_type", "bool_parsing", "dict_type", "list_type", "model_type",
                     "tuple_type"), "write a value of that type"),
    "too_short": "add entries",
    "too_long": "remove entries",
}


def describe_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid job file"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif e["type"] == "missing":
            msg = "required field is missing; add it"
        elif e["type"] in _FIXES:
            msg = f"{msg}; {_FIXES[e['type']]}"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)

class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key written twice in one mapping (YAML would let the second
    silently replace the first)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise JobError(f"{self.name}: key {key!r} appears twice in one mapping (lines {seen[key]} and "
                               f"{line}); the second would silently replace the first: keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)
