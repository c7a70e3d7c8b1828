"""Every quality metric, defined once: how the edge computes its part, how the cloud scores
it, its gate rules, its display name and format. The gate (`gate_decision`), the registry
tags and descriptions, the KFP Metrics, the HTML report, the MLflow run note, `entgan run`'s
table and `entgan status` all read `METRICS`; the per-type summary is rendered from
`summary_rows`.

Adding a metric: write how it is computed (`entgan.scoring`: a cloud `score(scoring, type,
set)` and, if the edge must look at real images, an `edge_part(edge, type, images)`), add a
`Metric` to `METRICS`, and add the fields its rules read to `DeploySpec` (entgan/config.py).
The report then holds `<name>` (candidate), `baseline_<name>` (the starting generators) and,
with `own_champion`, `champion_<name>`; the gate compares with `champion_<name>` if present,
else `baseline_<name>`. A `score` may return (value, standard error): the report then holds
`<name>_se` too, which `HoldsAgainstChampion(stderr_multiple=...)` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from entgan import scoring
from entgan.config import DeploySpec

# ---------------------------------------------------------------- gate rules


def _pair(a: float, b: float) -> tuple[str, str]:
    """Two values printed with just enough decimals (2 to 6) to tell unequal ones apart."""
    for digits in range(2, 7):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right:
            return left, right
    return f"{a:.2f}", f"{b:.2f}"


def _metric(metrics: dict[str, float], name: str, whose: str) -> float:
    if name not in metrics:
        raise ValueError(
            f"gate_decision: the {whose}'s metrics have no {name!r} (they have {sorted(metrics)}); "
            f"compute it in the eval step or turn its rule off"
        )
    return float(metrics[name])


Check = tuple[bool, str]  # passed, and one sentence saying why


@dataclass(frozen=True)
class BeatsChampion:
    """With a champion, the candidate must be strictly better; a first version passes (not NaN).
    `switch`: the DeploySpec bool that turns the rule on."""

    switch: str

    def fields(self) -> tuple[str, ...]:
        return (self.switch,)

    def check(self, m: Metric, candidate: dict, champion: dict | None, rules: DeploySpec) -> Check | None:
        if not getattr(rules, self.switch):
            return None
        value = _metric(candidate, m.name, "candidate")
        if champion is None:
            return not math.isnan(value), f"{m.label} {value:.2f}: first version, no champion to beat"
        theirs_value = _metric(champion, m.name, "champion")
        ours, theirs = _pair(value, theirs_value)
        better = value > theirs_value if m.higher_is_better else value < theirs_value
        return better, f"{m.label} {ours} {'beats' if better else 'does not beat'} the champion's {theirs}"


@dataclass(frozen=True)
class Limit:
    """An absolute bound read from the DeploySpec field `limit` (None: off), which first versions
    must meet too: a ceiling (`at_most`) or a floor. Written as `Ceiling(...)` or `Floor(...)`."""

    limit: str
    at_most: bool

    def fields(self) -> tuple[str, ...]:
        return (self.limit,)

    def check(self, m: Metric, candidate: dict, champion: dict | None, rules: DeploySpec) -> Check | None:
        limit = getattr(rules, self.limit)
        if limit is None:
            return None
        value = _metric(candidate, m.name, "candidate")
        ours, theirs = _pair(value, limit)
        if self.at_most:
            if value <= limit:
                return True, f"{m.label} {ours} is within the ceiling {theirs}"
            return False, f"{m.label} {ours} is above the ceiling {theirs}"
        if value >= limit:
            return True, f"{m.label} {ours} meets the floor {theirs}"
        return False, f"{m.label} {ours} is below the floor {theirs}"


def Ceiling(limit: str) -> Limit:  # noqa: N802 - reads as a rule, like the classes
    """The candidate's value must be at or below the DeploySpec field `limit`."""
    return Limit(limit, at_most=True)


def Floor(limit: str) -> Limit:  # noqa: N802
    """The candidate's value must be at least the DeploySpec field `limit`."""
    return Limit(limit, at_most=False)


@dataclass(frozen=True)
class HoldsAgainstChampion:
    """With a champion, the candidate may be worse by at most `tolerance` (a DeploySpec field)
    plus, when `stderr_multiple` names a DeploySpec field z and the candidate's scores hold
    `<name>_se`, z standard errors. Without a champion (or its value) it passes (not NaN)."""

    switch: str
    tolerance: str | None = None
    stderr_multiple: str | None = None

    def fields(self) -> tuple[str, ...]:
        return tuple(f for f in (self.switch, self.tolerance, self.stderr_multiple) if f)

    def check(self, m: Metric, candidate: dict, champion: dict | None, rules: DeploySpec) -> Check | None:
        if not getattr(rules, self.switch):
            return None
        value = _metric(candidate, m.name, "candidate")
        if champion is None or m.name not in champion:
            why = "no champion" if champion is None else f"the champion has no {m.label}"
            return not math.isnan(value), f"{m.label} {value:.2f}: {why} to compare with"
        tolerance = getattr(rules, self.tolerance) if self.tolerance else 0.0
        slack, said = tolerance, f"tolerance {tolerance:.2f}"
        se = candidate.get(f"{m.name}_se")
        if self.stderr_multiple and se is not None:
            z = getattr(rules, self.stderr_multiple)
            slack, said = tolerance + z * float(se), f"tolerance {tolerance:.2f} + {z:g} x SE {float(se):.2g}"
        theirs_value = float(champion[m.name])
        ours, theirs = _pair(value, theirs_value)
        if m.higher_is_better:
            if value >= theirs_value - slack:
                return True, f"{m.label} {ours} holds against the champion's {theirs} ({said})"
            return False, f"{m.label} {ours} drops below the champion's {theirs} minus the {said}"
        if value <= theirs_value + slack:
            return True, f"{m.label} {ours} holds against the champion's {theirs} ({said})"
        return False, f"{m.label} {ours} rises above the champion's {theirs} plus the {said}"


# ---------------------------------------------------------------- the metrics


@dataclass(frozen=True)
class Metric:
    """One quality metric of a generator.

    score: in the cloud, `score(scoring, type, set)` -> value (`entgan.scoring.Scoring`).
    edge_part: at the edge, `edge_part(edge, type, real_images)` -> a JSON-able part per type,
      sent in the edge's statistics bundle (header extra `<name>`) and read by `score` from
      `scoring.parts[<name>][type]`, one per edge. None: the metric needs only the shared
      feature statistics and vectors.
    prepare: in the cloud before the edges evaluate, `prepare(job, plan, sets, log)` -> tensor
      groups for the eval kit (e.g. CAS classifiers).
    rules: gate rules over the candidate's (and champion's) value, in order.
    before: the tables show the starting generators' value too ("FID before", "FID after").
    own_champion: the metric scores the "champion" set as `champion_<name>` for the gate.
    """

    name: str
    label: str
    higher_is_better: bool
    score: Callable
    rules: tuple = ()
    before: bool = False
    edge_part: Callable | None = None
    prepare: Callable | None = None
    own_champion: bool = False
    digits: int = 2

    def show(self, value) -> str:
        return "-" if value is None else f"{float(value):.{self.digits}f}"


METRICS: list[Metric] = [
    Metric("fid", "FID", higher_is_better=False, score=scoring.fid, before=True,
           rules=(BeatsChampion("fid_must_not_rise"), Ceiling("max_fid"))),
    Metric("precision", "precision", higher_is_better=True, score=scoring.precision, rules=(Floor("min_precision"),)),
    Metric("recall", "recall", higher_is_better=True, score=scoring.recall, rules=(Floor("min_recall"),)),
    Metric("cas", "CAS", higher_is_better=True, score=scoring.cas, edge_part=scoring.cas_part,
           prepare=scoring.cas_classifiers, own_champion=True,
           rules=(HoldsAgainstChampion("cas_must_not_drop", tolerance="cas_tolerance"),)),
]


def names() -> list[str]:
    return [m.name for m in METRICS]


def gate_decision(candidate: dict[str, float], champion: dict[str, float] | None,
                  rules: DeploySpec) -> tuple[bool, list[str]]:
    """Promote the candidate only if every active rule passes; one sentence per rule says why.

    `candidate` must hold every metric an active rule reads; `champion` is None when the type
    has no champion yet (rules that compare with it then pass). NaN never passes."""
    checks = [c for m in METRICS for rule in m.rules if (c := rule.check(m, candidate, champion, rules))]
    if not checks:
        return True, ["every deploy rule is off: promoted without checks"]
    return all(passed for passed, _ in checks), [reason for _, reason in checks]


def gate_inputs(scores: dict[str, float], has_champion: bool) -> tuple[dict, dict | None]:
    """The candidate's and the champion's values from a type's evaluation report: the champion
    was scored in this run on the same statistics (`champion_<m>`, else `baseline_<m>`)."""
    candidate = {k: v for m in METRICS for k in (m.name, f"{m.name}_se") if (v := scores.get(k)) is not None}
    if not has_champion:
        return candidate, None
    champion = {}
    for m in METRICS:
        value = scores.get(f"champion_{m.name}", scores.get(f"baseline_{m.name}"))
        if value is not None:
            champion[m.name] = value
    return candidate, champion


# ---------------------------------------------------------------- what people see


def version_tags(scores: dict[str, float]) -> dict[str, str]:
    """Registry tags of a version: `entgan.<m>` (and `entgan.baseline_<m>` for before/after metrics)."""
    tags = {f"entgan.{m.name}": f"{scores[m.name]:.4f}" for m in METRICS if m.name in scores}
    tags.update({f"entgan.baseline_{m.name}": f"{scores[f'baseline_{m.name}']:.4f}"
                 for m in METRICS if m.before and f"baseline_{m.name}" in scores})
    return tags


def describe(scores: dict[str, float], before_arrow: str = "→", bold: bool = True) -> str:
    """'FID 40.00 → **3.25**, precision 0.50, recall 0.25, CAS 0.75'."""
    parts = []
    for m in METRICS:
        after = m.show(scores.get(m.name))
        if m.before:
            after = f"**{after}**" if bold else after
            parts.append(f"{m.label} {m.show(scores.get(f'baseline_{m.name}'))} {before_arrow} {after}")
        else:
            parts.append(f"{m.label} {after}")
    return ", ".join(parts)


def from_tags(tags: dict[str, str]) -> dict[str, str]:
    """A version's metric values from its registry tags (`version_tags`), by metric name."""
    return {m.name: tags[f"entgan.{m.name}"] for m in METRICS if f"entgan.{m.name}" in tags}


def kfp_metrics(data_type: str, scores: dict) -> dict[str, float]:
    """`<type>.<m>` for the KFP run page."""
    return {f"{data_type}.{m.name}": float(scores[m.name]) for m in METRICS if m.name in scores}


def metric_columns(before: bool = True, select=lambda m: True) -> list[str]:
    """Column heads: '<label> before' and '<label> after' for before/after metrics, else '<label>'."""
    cols = []
    for m in filter(select, METRICS):
        cols += [f"{m.label} before", f"{m.label} after"] if m.before and before else [m.label]
    return cols


def metric_cells(values: dict, before: bool = True, select=lambda m: True) -> list[str]:
    """The cells under `metric_columns` for one type's values (`-` where a value is missing)."""
    cells = []
    for m in filter(select, METRICS):
        if m.before and before:
            cells.append(m.show(values.get(f"baseline_{m.name}")))
        cells.append(m.show(values.get(m.name)))
    return cells


@dataclass(frozen=True)
class SummaryRow:
    """One type's line of a run's summary, as text cells, plus the gate's verdict."""

    data_type: str
    started_from: str
    metrics: list[str]  # in the order of metric_columns()
    values: dict  # the type's summary entry (for renderings that order the metrics their own way)
    version: str
    champion: str
    promoted: bool
    reason: str


def summary_columns() -> list[str]:
    return ["type", "started from", *metric_columns(), "version", "champion", "gate"]


def summary_rows(summary: dict) -> list[SummaryRow]:
    """The per-type summary every rendering shows (CLI table, HTML report, run note)."""
    rows = []
    for t, info in sorted(summary.get("types", {}).items()):
        parent = info.get("parent_version")
        started = (f"champion v{parent}" if parent else
                   f"warm: {info['parent_task']}" if info.get("parent_task") else "untrained")
        rows.append(SummaryRow(t, started, metric_cells(info), info, f"v{info.get('version')}",
                               f"v{info['champion']}" if info.get("champion") else "-",
                               bool(info.get("promoted")), info.get("reason", "")))
    return rows
