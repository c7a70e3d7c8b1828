"""`entgan status`: what the task library says about a job — its stages, last runs, champions."""

from __future__ import annotations

import datetime as dt

from entgan.evaluation.metrics import from_tags, in_table, metric_cells, metric_columns
from entgan.job.lifecycle import Stage, current_states
from entgan.library.registry import TaskLibrary


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")


def job_status(library: TaskLibrary, runs: int = 5) -> dict:
    """Stages of the newest runs (with every recorded change) and, per type, its champion."""
    out: dict = {"job": library.job, "runs": [], "types": {}}
    for run in library.recent_runs(runs):
        history = library.states(run.info.run_id)
        current = current_states(history)
        out["runs"].append(
            {
                "mlflow_run_id": run.info.run_id,
                "kfp_run_id": run.data.tags.get("entgan.kfp_run_id", ""),
                "started": run.info.start_time / 1000,
                "status": run.info.status,
                "stages": {s.value: (current[s].value if current[s] else "-") for s in Stage},
                "history": [
                    {"at": c.at, "stage": c.stage.value, "state": c.state.value, "detail": c.detail,
                     "edge": c.edge, "error": c.error}
                    for c in history
                ],
            }
        )
    for data_type in library.known_types():
        champion = library.champion(data_type)
        latest = library.latest_version(data_type)
        tags = champion.tags if champion else {}
        out["types"][data_type] = {
            "champion": champion.version if champion else None,
            "latest": latest.version if latest else None,
            "metrics": from_tags(tags),
            "train_images": tags.get("entgan.train_images"),
            "holdout_images": tags.get("entgan.holdout_images"),
            "edges": tags.get("entgan.edges"),
            "parent_task": tags.get("entgan.parent_task") or None,
            "gate": latest.tags.get("entgan.gate_reason") if latest else None,
        }
    return out


def format_status(status: dict, history: bool = True) -> str:
    lines = [f"job {status['job']}"]
    if not status["runs"]:
        lines.append("  no runs yet")
    for i, run in enumerate(status["runs"]):
        stages = "  ".join(f"{s}={v}" for s, v in run["stages"].items())
        lines.append(f"  run {_when(run['started'])}  {run['status']:<9} {stages}  (kfp {run['kfp_run_id']})")
        if history and i == 0:
            for c in run["history"]:
                where = f" at {c['edge']}" if c["edge"] else ""
                error = f" error: {c['error']}" if c["error"] else ""
                detail = f" - {c['detail']}" if c["detail"] else ""
                lines.append(f"      {_when(c['at'])}  {c['stage']:<6} {c['state']}{where}{detail}{error}")
    lines.append("")
    columns = metric_columns(before=False, select=in_table)
    cells = {t: metric_cells(info["metrics"], before=False, select=in_table) for t, info in status["types"].items()}
    widths = [max([len(c), 9] + [len(row[i]) for row in cells.values()]) for i, c in enumerate(columns)]
    heads = "".join(f"{c:<{w}} " for c, w in zip(columns, widths))
    lines.append(f"  {'type':<10} {'champion':<9} {'latest':<7} {heads}{'images':<12} {'from':<12} last gate")
    for t, info in sorted(status["types"].items()):
        images = f"{info['train_images'] or '-'}+{info['holdout_images'] or '-'}"
        champion = f"v{info['champion']}" if info["champion"] else "-"
        latest = f"v{info['latest']}" if info["latest"] else "-"
        row = "".join(f"{c:<{w}} " for c, w in zip(cells[t], widths))
        lines.append(
            f"  {t:<10} {champion:<9} {latest:<7} {row}{images:<12} "
            f"{info['parent_task'] or '-':<12} {info['gate'] or '-'}"
        )
    return "\n".join(lines)
