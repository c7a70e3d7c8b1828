"""What people see of a run: the Kubeflow run page's HTML report, the MLflow registry's
descriptions, and the README's figures (real vs generated samples, FID per round).

Pure rendering over plain data (the deploy summary, a metric history `{key: [(step, value)]}`,
image tensors); `write_figures` is the one function that reads the task library and the local
edge folders.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import torch

from entgan.evaluation.metrics import describe, kfp_metrics, metric_cells, metric_columns, summary_columns, summary_rows

History = dict[str, list[tuple[int, float]]]  # metric key -> [(step, value)], steps ascending

# Per-round metrics the report and the curves read (logged on the job's MLflow run with step=round).
ROUND_METRICS = ("fid", "edge_d_loss", "edge_g_loss", "cloud_g_loss")


def by_round(history: History, data_type: str, metric: str) -> dict[int, float]:
    """One type's per-round values of a metric, e.g. `by_round(h, "box", "fid")` -> {0: 42.4, 1: 9.1}."""
    return dict(history.get(f"{data_type}.{metric}", []))


# ---------------------------------------------------------------- the Kubeflow run page


def _png_base64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _num(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def round_rows(history: History, types: list[str]) -> list[list[str]]:
    """The round-by-round table: a row per round, per type 'FID' and 'D / G loss' (edge means)."""
    rounds = sorted({s for t in types for m in ROUND_METRICS for s in by_round(history, t, m)})
    rows = []
    for r in rounds:
        row = [str(r)]
        for t in types:
            fid, d, g = (by_round(history, t, m).get(r) for m in ("fid", "edge_d_loss", "edge_g_loss"))
            row += [_num(fid), "-" if d is None else f"{d:.2f} / {g:.2f}"]
        rows.append(row)
    return rows


_STYLE = """
body{font-family:system-ui,sans-serif;margin:16px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}
.ok{color:#0a7a28}.no{color:#b00020}
figure{display:inline-block;margin:0 16px 16px 0}figcaption{font-weight:600}
img{image-rendering:pixelated}
"""


def run_report_html(summary: dict, history: History) -> str:
    """A self-contained HTML page (sample grids inline as base64 PNG) for the KFP run page."""
    types = sorted(summary.get("types", {}))
    esc = html.escape
    out = [f"<html><head><meta charset='utf-8'><style>{_STYLE}</style></head><body>",
           f"<h2>EntGAN job {esc(summary.get('job', ''))}</h2>"]
    if not types:
        out.append("<p>Nothing was trained in this run.</p></body></html>")
        return "".join(out)
    out.append("<h3>Result per type</h3><table><tr>" + "".join(
        f"<th class='l'>{h}</th>" if h in ("type", "started from", "gate") else f"<th>{h}</th>"
        for h in summary_columns()) + "</tr>")
    for row in summary_rows(summary):
        verdict = "<span class='ok'>promoted</span>" if row.promoted else "<span class='no'>kept out</span>"
        out.append(
            f"<tr><td class='l'>{esc(row.data_type)}</td><td class='l'>{esc(row.started_from)}</td>"
            + "".join(f"<td>{c}</td>" for c in row.metrics)
            + f"<td>{esc(row.version)}</td><td>{row.champion}</td>"
            f"<td class='l'>{verdict}: {esc(row.reason)}</td></tr>"
        )
    out.append("</table>")
    rows = round_rows(history, types)
    if rows:
        out.append("<h3>Round by round</h3><p>FID of the global generator after each round "
                   "(round 0: where it started), scored on the edges' held-out images; "
                   "D / G loss: the edges' mean at the end of the round.</p><table><tr><th>round</th>")
        out.append("".join(f"<th>{esc(t)} FID</th><th>{esc(t)} D / G</th>" for t in types) + "</tr>")
        out += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
        out.append("</table>")
    out.append("<h3>Samples from the trained generators</h3>")
    for t in types:
        grid = summary["types"][t].get("grid")
        if grid and Path(grid).exists():
            out.append(f"<figure><figcaption>{esc(t)}</figcaption>"
                       f"<img alt='{esc(t)} samples' src='data:image/png;base64,{_png_base64(grid)}'></figure>")
    out.append("</body></html>")
    return "".join(out)


# ---------------------------------------------------------------- the MLflow registry pages


def version_description(data_type: str, info: dict, job: str, strategy: str, rounds: int, edges: list[str],
                        kfp_run_id: str) -> str:
    """Markdown for a registered model version: what it is, where it was trained, the gate."""
    verdict = "promoted to `champion`" if info["promoted"] else "kept out (the champion stays)"
    start = (f"the champion v{info['parent_version']}" if info.get("parent_version") else
             f"warm start from {info['parent_task']}" if info.get("parent_task") else "scratch")
    return (
        f"Generator of **{data_type}** images (job `{job}`), trained from {start} by `{strategy}` for "
        f"{rounds} rounds on edges {', '.join(f'`{e}`' for e in edges)} "
        f"({int(info['train_images'])} training images).\n\n"
        f"{describe(info)} (on {int(info['holdout_images'])} held-out images at the edges).\n\n"
        f"**Gate: {verdict}** — {info['reason']}.\n\nKFP run `{kfp_run_id}`; sample grid: "
        f"`samples.png` beside the weights." + (f" It draws {info['png']} PNGs." if info.get("png") else "")
    )


def model_description(data_type: str, job: str, edges: list[str], champion: str | None, latest: dict) -> str:
    """Markdown for a registered model: the type, its edges, the champion and the last gate."""
    now = f"version {champion} is `champion` (deployed)" if champion else "no version is deployed yet"
    return (
        f"EntGAN generator for the data type **{data_type}** of job `{job}`: the robots' camera images of "
        f"this obstacle type, held by edges {', '.join(f'`{e}`' for e in edges)}. Raw images stay at the "
        f"edges; each version is a federated round set.\n\n{now.capitalize()}. Last run: version "
        f"{latest['version']} {'promoted' if latest['promoted'] else 'kept out'} — {latest['reason']}."
    )


# ---------------------------------------------------------------- figures (README, `entgan figures`)


def _tiles(images: torch.Tensor, columns: int):
    from entgan.evaluation.features import image_grid

    return image_grid(images[: 2 * columns], columns=columns, scale=1)


def samples_figure(real: dict[str, torch.Tensor], generated: dict[str, torch.Tensor], path: str | Path,
                   columns: int = 8) -> Path:
    """One row per type: real held-out images beside images from the type's champion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted(generated)
    fig, axes = plt.subplots(len(types), 2, figsize=(7, 1.9 * len(types) + 0.4), squeeze=False)
    for row, t in enumerate(types):
        for col, (label, images) in enumerate((("real (held out)", real.get(t)), ("generated (champion)", generated[t]))):
            ax = axes[row][col]
            ax.set_xticks([]), ax.set_yticks([])
            if images is not None and len(images):
                ax.imshow(_tiles(images, columns), interpolation="nearest")
            if row == 0:
                ax.set_title(label, fontsize=10)
            if col == 0:
                ax.set_ylabel(t, fontsize=11)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as PNG (folders made as needed) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fid_curves_figure(history: History, types: list[str], path: str | Path) -> Path:
    """FID of each type's global generator per round (round 0: where training started)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 3.6))
    values = []
    for t in sorted(types):
        curve = sorted(by_round(history, t, "fid").items())
        if curve:
            ax.plot([r for r, _ in curve], [v for _, v in curve], marker="o", label=t)
            values += [v for _, v in curve]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_yscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.set_ylabel("domain-feature FID (lower is better)")
    ax.set_title("FID per round, per type")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def write_figures(job, out_dir: str | Path, per_type: int = 16) -> dict[str, Path]:
    """`entgan figures`: the samples figure (real vs generated, per type, from the champions) and
    the FID curves of the job's newest run that trained. Real images are read from the edges'
    data folders, so run it where those are reachable (the local demo, or with S3 credentials)."""
    from entgan.job.data import list_images, load_edge
    from entgan.library.generate import champion_generator, types_with_champion
    from entgan.library.registry import library_for

    library = library_for(job)
    types = types_with_champion(library)
    if not types:
        raise LookupError(f"job {job.name!r} has no champion in {job.tracking_uri}; run the job first (entgan run)")
    generated = {}
    for t in types:
        generator, _ = champion_generator(library, t, job.train)
        generated[t] = generator.sample(per_type, generator=torch.Generator().manual_seed(0)).detach()
    real: dict[str, torch.Tensor] = {}
    channels = next(iter(generated.values())).shape[1]  # the champions' image channels (one per job)
    for edge in job.edges:
        held = [t for t in types if t in list_images(edge.data)]
        for t, images in load_edge(edge.data, held, job.eval.holdout_fraction, job.train.image_size,
                                   holdout=True, channels=channels).items():
            real[t] = torch.cat([real[t], images]) if t in real else images
    out_dir = Path(out_dir)
    written = {"samples": samples_figure(real, generated, out_dir / "samples.png")}
    history = library.trained_history(ROUND_METRICS)
    if any(len(points) > 1 for key, points in history.items() if key.endswith(".fid")):  # runs before per-round FID have one point
        written["fid_curves"] = fid_curves_figure(history, types, out_dir / "fid-curves.png")
    return written


def run_note(summary: dict, strategy: str, rounds: int) -> str:
    """Markdown for the job's MLflow run page: what was trained and what the gate decided (the
    before/after metrics first, the others after the gate)."""
    def lead(m):  # the before/after metrics come first
        return m.before

    def rest(m):
        return not m.before

    head = ["type", *metric_columns(select=lead), "version", "champion", "gate", *metric_columns(select=rest)]
    lines = [f"EntGAN job `{summary['job']}`, KFP run `{summary['kfp_run_id']}`: {rounds} rounds of `{strategy}`.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary_rows(summary):
        gate = f"{'promoted' if row.promoted else 'kept out'}: {row.reason}"
        cells = [row.data_type, *metric_cells(row.values, select=lead), row.version, row.champion, gate,
                 *metric_cells(row.values, select=rest)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Curves: the `<type>.fid` metrics (one step per round). Sample grids: artifacts `tasks/<type>/`."]
    return "\n".join(lines)


def deploy_metrics(summary: dict) -> dict[str, float]:
    """The deploy task's scalar metrics for the KFP run page, per type."""
    out = {}
    for t, i in summary.get("types", {}).items():
        out.update(kfp_metrics(t, i))
        out[f"{t}.version"] = float(i["version"])
        out[f"{t}.promoted"] = 1.0 if i["promoted"] else 0.0
    return out


def write_run_report(summary: dict, library, path: str | Path) -> Path:
    """The HTML report of a run (results, round-by-round table, sample grids) at `path`."""
    history = library.metric_history(summary["mlflow_run_id"], ROUND_METRICS)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_report_html(summary, history), encoding="utf-8")
    return path
