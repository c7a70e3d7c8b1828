"""Will a compiled pipeline fit the KFP backend? Checked at compile and before upload."""

from __future__ import annotations

import json
from pathlib import Path


class PipelineTooLarge(ValueError):
    """A compiled pipeline the KFP backend could not run; the message names the part and the fix."""


# What a compiled package must fit on the backend (measurements: docs/kubeflow-backend-notes.md).
# The Argo compiler stores each component spec as JSON in a workflow argument and hands it to
# that component's driver as ONE command-line argument; Linux caps one argument (and the
# ARGO_TEMPLATE env var that repeats it) at 128 KiB (MAX_ARG_STRLEN). The whole Workflow object
# lives in etcd (1.5 MiB per object by default) together with its growing node status.
ARG_LIMIT = 96 * 1024
WORKFLOW_LIMIT = 1024 * 1024
KIB_PER_ROUND = 1.5  # how much one round adds to the largest component (the trigger-met branch)


def _json_size(value) -> int:
    return len(json.dumps(value, separators=(",", ":"), sort_keys=True))


def check_package_size(package: Path, arg_limit: int = ARG_LIMIT, workflow_limit: int = WORKFLOW_LIMIT) -> dict:
    """The package's largest component and total JSON size; PipelineTooLarge if either is too big."""
    import yaml

    docs = list(yaml.safe_load_all(package.read_text()))
    components = {name: _json_size(c) for name, c in (docs[0].get("components") or {}).items()}
    components["root"] = _json_size(docs[0].get("root", {}))
    largest = max(components, key=components.get)
    sizes = {"largest": largest, "largest_bytes": components[largest], "total_bytes": _json_size(docs)}
    fix = f"lower train.rounds (each round adds about {KIB_PER_ROUND} KiB) or split the job"
    if sizes["largest_bytes"] > arg_limit:
        raise PipelineTooLarge(
            f"{package}: component {largest!r} is {sizes['largest_bytes'] / 1024:.1f} KiB as JSON, over the "
            f"{arg_limit // 1024} KiB that fit in one argument of its KFP driver pod (Linux caps one at 128 KiB); {fix}"
        )
    if sizes["total_bytes"] > workflow_limit:
        raise PipelineTooLarge(
            f"{package}: the pipeline is {sizes['total_bytes'] / 1024:.1f} KiB as JSON, over the {workflow_limit // 1024} "
            f"KiB that leave room in etcd's 1.5 MiB for the Argo workflow's status; {fix}"
        )
    return sizes
