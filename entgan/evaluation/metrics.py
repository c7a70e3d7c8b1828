"""Every quality metric, defined once: how the edge computes its part, how the cloud scores
it, its gate rules, its display name and format. The gate (`gate_decision`), the registry
tags and descriptions, the KFP Metrics, the HTML report, the MLflow run note, `entgan run`'s
table and `entgan status` all read `METRICS`; the per-type summary is rendered from
`summary_rows`.

Adding a metric: write how it is computed (`entgan.evaluation.scoring`: a cloud `score(scoring, type,
set)` and, if the edge must look at real images, an `edge_part(edge, type, images)`), add a
`Metric` to `METRICS`, and add the fields its rules read to `DeploySpec` (entgan/job/spec.py).
The report then holds `<name>` (candidate), `baseline_<name>` (the starting generators) and,
with `own_champion`, `champion_<name>`; the gate compares with `champion_<name>` if present,
else `baseline_<name>`. A `score` may return (value, standard error): the report then holds
`<name>_se` too, which `HoldsAgainstChampion(stderr_multiple=...)` uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from entgan.evaluation import scoring
from entgan.job.spec import DeploySpec

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
    must meet too: a ceiling (`at_most`) or a floor. Written as `Ceiling(...)`, `Floor(...)` or
    `RelativeFloor(...)` (the bound is `limit` times the report's `reference` value, e.g. the
    real-data classifier's accuracy, described by `said`)."""

    limit: str
    at_most: bool
    reference: str | None = None
    said: str = ""

    def fields(self) -> tuple[str, ...]:
        return (self.limit,)

    def check(self, m: Metric, candidate: dict, champion: dict | None, rules: DeploySpec) -> Check | None:
        limit = getattr(rules, self.limit)
        if limit is None:
            return None
        value = _metric(candidate, m.name, "candidate")
        if self.reference is not None:
            reference = _metric(candidate, self.reference, "candidate")
            floor = f"the floor {limit:g} x {reference:.2f} ({self.said})"
            if value >= limit * reference:
                return True, f"{m.label} {value:.2f} meets {floor}"
            return False, f"{m.label} {value:.2f} is below {floor}"
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
        return self.compare(m, value, candidate, champion, rules)

    def compare(self, m: Metric, value: float, candidate: dict, champion: dict, rules: DeploySpec) -> Check:
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


@dataclass(frozen=True)
class WithinChampionInterval(HoldsAgainstChampion):
    """With a champion, the candidate may not be worse than the champion beyond the champion's
    95 % interval (its `<name>_low` / `<name>_high`). Without a champion it passes (not NaN)."""

    def compare(self, m: Metric, value: float, candidate: dict, champion: dict, rules: DeploySpec) -> Check:
        theirs = m.cell(champion)
        if m.higher_is_better:
            bound = float(champion.get(f"{m.name}_low", champion[m.name]))
            if value >= bound:
                return True, f"{m.label} {value:.2f} is within or above the champion's {theirs}"
            return False, f"{m.label} {value:.2f} drops below the champion's {theirs}"
        bound = float(champion.get(f"{m.name}_high", champion[m.name]))
        if value <= bound:
            return True, f"{m.label} {value:.2f} is within or below the champion's {theirs}"
        return False, f"{m.label} {value:.2f} rises above the champion's {theirs}"


def RelativeFloor(limit: str, reference: str, said: str) -> Limit:  # noqa: N802
    """The candidate's value must be at least the DeploySpec field `limit` times the report's
    `reference` value (`said` names it in the reason); first versions too."""
    return Limit(limit, at_most=False, reference=reference, said=said)


# ---------------------------------------------------------------- the metrics


@dataclass(frozen=True)
class Metric:
    """One quality metric of a generator.

    score: in the cloud, `score(scoring, type, set)` -> value (`entgan.evaluation.scoring.Scoring`).
    edge_part: at the edge, `edge_part(edge, type, real_images)` -> a JSON-able part per type,
      sent in the edge's statistics bundle (header extra `<name>`) and read by `score` from
      `scoring.parts[<name>][type]`, one per edge. None: the metric needs only the shared
      feature statistics and vectors.
    prepare: in the cloud before the edges evaluate, `prepare(job, plan, sets, log)` -> tensor
      groups for the eval kit (e.g. CAS classifiers).
    rules: gate rules over the candidate's (and champion's) value, in order.
    before: the tables show the starting generators' value too ("FID before", "FID after").
    own_champion: the metric scores the "champion" set as `champion_<name>` for the gate.
    extras: suffixes of further report keys (`<name>_low`, ...) a dict-valued score fills; they
      travel with the value to the gate, the tags and the KFP metrics.
    render: how a cell shows the value with its extras (`with_interval`, `with_floor`).
    table: shown in `entgan run`'s table and `entgan status` (all metrics are in tags and reports).
    head: the column head, if not the label.
    optional: may be unmeasurable (too few held-out images); its rules then pass, saying so.
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
    extras: tuple[str, ...] = ()
    render: Callable | None = None
    table: bool = True
    head: str | None = None
    optional: bool = False

    def show(self, value) -> str:
        return "-" if value is None else f"{float(value):.{self.digits}f}"

    def keys(self, prefix: str = "") -> list[str]:
        """The report keys of this metric: `<prefix><name>`, its `_se` and its extras."""
        return [f"{prefix}{self.name}{suffix}" for suffix in ("", "_se", *self.extras)]

    def cell(self, values: dict, prefix: str = "") -> str:
        """The metric as people read it, e.g. '0.93 [0.86, 0.96]' or '0.24 (floor 0.01±0.30)': `<prefix><name>`
    rendered with its extras when it has them all."""
        value = values.get(f"{prefix}{self.name}")
        if value is None or self.render is None:
            return self.show(value)
        extras = {s: values.get(f"{prefix}{self.name}{s}") for s in self.extras}
        if any(v is None for v in extras.values()):
            return self.show(value)
        return self.render(float(value), *(float(v) for v in extras.values()))


def with_interval(value: float, low: float, high: float) -> str:
    return f"{value:.2f} [{low:.2f}, {high:.2f}]"


def with_floor(value: float, floor: float, floor_std: float) -> str:
    return f"{value:.2f} (floor {floor:.2f}±{floor_std:.2f})"


KID_EXTRAS = ("_floor", "_floor_std")


METRICS: list[Metric] = [
    Metric("fid", "FID", higher_is_better=False, score=scoring.fid, before=True,
           rules=(BeatsChampion("fid_must_not_rise"), Ceiling("max_fid"))),
    Metric("c2st", "C2ST", head="C2ST [95%]", higher_is_better=False, score=scoring.c2st, edge_part=scoring.c2st_part,
           prepare=scoring.c2st_generators, extras=("_low", "_high"), render=with_interval, optional=True,
           rules=(WithinChampionInterval("c2st_must_not_rise"), Ceiling("max_c2st"))),
    Metric("kid_random", "KID random", higher_is_better=False, score=scoring.kid_random,
           edge_part=scoring.kid_random_part, extras=KID_EXTRAS, render=with_floor, optional=True,
           rules=(HoldsAgainstChampion("kid_must_not_rise", stderr_multiple="kid_stderr_multiple"),
                  Ceiling("max_kid_random"))),
    Metric("kid_domain", "KID domain", higher_is_better=False, score=scoring.kid_domain,
           extras=KID_EXTRAS, render=with_floor, table=False, optional=True),
    Metric("precision", "precision", higher_is_better=True, score=scoring.precision, rules=(Floor("min_precision"),),
           table=False),
    Metric("recall", "recall", higher_is_better=True, score=scoring.recall, rules=(Floor("min_recall"),), table=False),
    Metric("cas", "CAS", higher_is_better=True, score=scoring.cas, edge_part=scoring.cas_part,
           prepare=scoring.cas_classifiers, own_champion=True,
           rules=(HoldsAgainstChampion("cas_must_not_drop", tolerance="cas_tolerance"),
                  RelativeFloor("min_cas_ratio", "evaluator_accuracy", "the real-data classifier's accuracy"))),
]


def names() -> list[str]:
    return [m.name for m in METRICS]


def gate_decision(candidate: dict[str, float], champion: dict[str, float] | None,
                  rules: DeploySpec) -> tuple[bool, list[str]]:
    """Promote the candidate only if every active rule passes; one sentence per rule says why.

    `candidate` must hold every metric an active rule reads; `champion` is None when the type
    has no champion yet (rules that compare with it then pass). NaN never passes."""
    checks = []
    for m in METRICS:
        if m.optional and m.name not in candidate:
            if any(rule.check(m, {m.name: 0.0}, None, rules) for rule in m.rules):  # some rule is on
                checks.append((True, f"{m.label} not measured (too few held-out images at the edges)"))
            continue
        checks += [c for rule in m.rules if (c := rule.check(m, candidate, champion, rules))]
    if not checks:
        return True, ["every deploy rule is off: promoted without checks"]
    return all(passed for passed, _ in checks), [reason for _, reason in checks]


def gate_inputs(scores: dict[str, float], has_champion: bool) -> tuple[dict, dict | None]:
    """The candidate's and the champion's values from a type's evaluation report: the champion
    was scored in this run on the same statistics (`champion_<m>`, else `baseline_<m>`)."""
    candidate = {k: v for k, v in scores.items() if not k.startswith(("baseline_", "champion_")) and v is not None}
    if not has_champion:
        return candidate, None
    champion = {}
    for m in METRICS:
        prefix = "champion_" if f"champion_{m.name}" in scores else "baseline_"
        champion.update({key[len(prefix):]: v for key in m.keys(prefix) if (v := scores.get(key)) is not None})
    return candidate, champion


# ---------------------------------------------------------------- what people see


def version_tags(scores: dict[str, float]) -> dict[str, str]:
    """Registry tags of a version: `entgan.<m>` (and `entgan.baseline_<m>` for before/after metrics)."""
    tags = {f"entgan.{k}": f"{scores[k]:.4f}" for m in METRICS for k in m.keys() if scores.get(k) is not None}
    tags.update({f"entgan.baseline_{m.name}": f"{scores[f'baseline_{m.name}']:.4f}"
                 for m in METRICS if m.before and f"baseline_{m.name}" in scores})
    return tags


def describe(scores: dict[str, float], before_arrow: str = "→", bold: bool = True) -> str:
    """'FID 40.00 → **3.25**, precision 0.50, recall 0.25, CAS 0.75'."""
    parts = []
    for m in METRICS:
        after = m.cell(scores)
        if m.before:
            after = f"**{after}**" if bold else after
            parts.append(f"{m.label} {m.cell(scores, 'baseline_')} {before_arrow} {after}")
        else:
            parts.append(f"{m.label} {after}")
    return ", ".join(parts)


def from_tags(tags: dict[str, str]) -> dict[str, str]:
    """A version's metric values from its registry tags (`version_tags`), by metric name."""
    return {k: tags[f"entgan.{k}"] for m in METRICS for k in m.keys() if f"entgan.{k}" in tags}


def kfp_metrics(data_type: str, scores: dict) -> dict[str, float]:
    """`<type>.<m>` for the KFP run page."""
    return {f"{data_type}.{k}": float(scores[k]) for m in METRICS for k in m.keys() if scores.get(k) is not None}


def metric_columns(before: bool = True, select=lambda m: True) -> list[str]:
    """Column heads: '<label> before' and '<label> after' for before/after metrics, else '<label>'."""
    cols = []
    for m in filter(select, METRICS):
        head = m.head or m.label
        cols += [f"{head} before", f"{head} after"] if m.before and before else [head]
    return cols


def metric_cells(values: dict, before: bool = True, select=lambda m: True) -> list[str]:
    """The cells under `metric_columns` for one type's values (`-` where a value is missing)."""
    cells = []
    for m in filter(select, METRICS):
        if m.before and before:
            cells.append(m.cell(values, "baseline_"))
        cells.append(m.cell(values))
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


def summary_columns(select=lambda m: True) -> list[str]:
    return ["type", "started from", *metric_columns(select=select), "version", "champion", "gate"]


def in_table(m: Metric) -> bool:
    """The metrics `entgan run`'s table and `entgan status` show (the others: tags, reports)."""
    return m.table


def summary_rows(summary: dict, select=lambda m: True) -> list[SummaryRow]:
    """The per-type summary every rendering shows (CLI table, HTML report, run note)."""
    rows = []
    for t, info in sorted(summary.get("types", {}).items()):
        parent = info.get("parent_version")
        started = (f"champion v{parent}" if parent else
                   f"warm: {info['parent_task']}" if info.get("parent_task") else "untrained")
        rows.append(SummaryRow(t, started, metric_cells(info, select=select), info, f"v{info.get('version')}",
                               f"v{info['champion']}" if info.get("champion") else "-",
                               bool(info.get("promoted")), info.get("reason", "")))
    return rows
