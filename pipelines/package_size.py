"""Will a compiled pipeline fit the KFP backend? Checked at compile and before upload.

The limit that binds is Argo's `MAX_WORKFLOW_SIZE` (1 MiB for the Workflow's spec plus its
compressed node status), modelled in `pipelines.workflow_size`. It is not one command-line
argument any more: KFP >= 2.16 hands a driver its component as `--component @file`
(backend/src/v2/cmd/driver/main.go, kubeflow/pipelines#12737) and Argo >= 3.7.10 / 4.0.1 moves
argument lists over 128 KiB to a ConfigMap (workflow/controller/workflowpod.go).
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.workflow_size import BUDGET, HEADROOM, MAX_WORKFLOW_SIZE, WorkflowSize, workflow_size


class PipelineTooLarge(ValueError):
    """A compiled pipeline the KFP backend could not run; the message names the part and the fix."""


def _job(pipeline: dict) -> dict:
    default = pipeline.get("root", {}).get("inputDefinitions", {}).get("parameters", {}).get("job_json", {})
    try:
        return json.loads(default.get("defaultValue") or "{}")
    except ValueError:
        return {}


def _read(package: Path) -> tuple[dict, dict | None]:
    import yaml

    docs = list(yaml.safe_load_all(package.read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else None)


def _edges(pipeline: dict) -> int:
    return max(1, len(_job(pipeline).get("edges", [])))


def package_workflow_size(package: Path, edges: int | None = None) -> WorkflowSize:
    """The modelled Workflow size of `package`, run on `edges` edges (default: the job's own)."""
    pipeline, platform = _read(package)
    return workflow_size(pipeline, platform, edges or _edges(pipeline))


def check_package_size(package: Path, budget: int = BUDGET, most_rounds: int | None = None) -> dict:
    """The package's modelled Argo Workflow size; PipelineTooLarge if it does not fit `budget`.
    `most_rounds`, when the caller knows it, goes into the message."""
    pipeline, platform = _read(package)
    size = workflow_size(pipeline, platform, _edges(pipeline))
    rounds = _job(pipeline).get("train", {}).get("rounds", "?")
    sizes = {"spec_bytes": size.spec_bytes, "status_bytes": size.status_bytes, "workflow_bytes": size.total,
             "nodes": size.nodes, "edges": size.edges, "rounds": rounds, "budget": budget}
    if not size.fits(budget):
        most = f"at most {most_rounds} rounds fit {size.edges} edges; " if most_rounds is not None else ""
        raise PipelineTooLarge(
            f"{package}: the Argo Workflow of this run would be about {size.total / 1024:.0f} KiB "
            f"({size.spec_bytes / 1024:.0f} KiB of spec and {size.status_bytes / 1024:.0f} KiB of compressed status "
            f"for {size.nodes} nodes: {rounds} rounds x {size.edges} edges), over the {budget / 1024:.0f} KiB kept "
            f"under Argo's MAX_WORKFLOW_SIZE ({MAX_WORKFLOW_SIZE // 1024} KiB, {HEADROOM:.0%} headroom); Argo would "
            f"stop the run part-way ('workflow is longer than maximum allowed size'). {most}lower train.rounds or "
            "split the edges into several jobs (docs/kubeflow-backend-notes.md, section 8)"
        )
    return sizes
