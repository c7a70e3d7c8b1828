"""A metric is defined in one place (`entgan.evaluation.metrics.METRICS`): adding one there reaches the
evaluation report, the gate, the registry tags and descriptions, the KFP metrics and every
rendering of the per-type summary."""

from dataclasses import fields

from entgan.cli.verbs import format_summary
from entgan.evaluation import metrics
from entgan.job.spec import DeploySpec, parse_job
from entgan.library.report import deploy_metrics, run_note, run_report_html, version_description
from entgan.library.status import format_status
from entgan.steps.deploy import gate
from entgan.steps.evaluate import _scores


class _AtLeastHalf:
    """A gate rule of the dummy metric: no DeploySpec field, the value must be at least 0.5."""

    def fields(self):
        return ()

    def check(self, m, candidate, champion, rules):
        value = candidate[m.name]
        return value >= 0.5, f"{m.label} {value:.3f} {'reaches' if value >= 0.5 else 'misses'} one half"


def _dummy_score(scoring, data_type, which):
    return {"candidate": 0.625, "baseline": 0.125}[which]


DUMMY = metrics.Metric("dummy", "DUMMY", higher_is_better=True, score=_dummy_score, rules=(_AtLeastHalf(),),
                       digits=3)


def _report():
    return {"fid": 3.25, "baseline_fid": 40.0, "precision": 0.5, "recall": 0.25, "cas": 0.75,
            "baseline_precision": 0.5, "baseline_recall": 0.25, "baseline_cas": 0.5,
            "c2st": 0.9, "c2st_low": 0.85, "c2st_high": 0.94, "baseline_c2st": 0.95, "baseline_c2st_low": 0.9,
            "baseline_c2st_high": 0.97, **_kid("kid_random"), **_kid("kid_domain"), **_kid("baseline_kid_random"),
            "evaluator_accuracy": 0.9, "train_images": 80.0, "holdout_images": 20.0}


def _kid(key):
    return {key: 0.5, f"{key}_se": 0.2, f"{key}_floor": 0.01, f"{key}_floor_std": 0.3}


def _summary(info):
    return {"job": "demo", "kfp_run_id": "run-7", "mlflow_run_id": "abc",
            "types": {"box": {**info, "version": "2", "champion": "2", "promoted": True, "reason": "ok",
                              "parent_version": "1", "parent_task": "", "grid": "box.png"}}}


def test_a_metric_added_in_one_place_reaches_the_report_the_gate_the_tags_and_every_rendering(monkeypatch):
    # Prepare: the dummy metric added to the one list
    defined = list(metrics.METRICS)
    monkeypatch.setattr(metrics, "METRICS", [DUMMY])  # (the real ones need a trained run to score)
    # Execute: the evaluation step scores it for the trained and the starting generators
    scored = _scores(None, "box")
    assert scored == {"dummy": 0.625, "baseline_dummy": 0.125}
    monkeypatch.setattr(metrics, "METRICS", [*defined, DUMMY])
    report = {**_report(), **scored}
    job = parse_job({"name": "demo", "edges": [{"name": "edge-1", "data": "/tmp/nowhere"}]})
    # Assert: the gate applies its rule, with and without a champion
    promote, reason = gate(job, report, has_champion=False)
    assert promote and "DUMMY 0.625 reaches one half" in reason
    promote, reason = gate(job, {**report, "dummy": 0.25}, has_champion=True)
    assert not promote and "DUMMY 0.250 misses one half" in reason
    # Assert: registry tags, descriptions and KFP metrics
    assert metrics.version_tags(report)["entgan.dummy"] == "0.6250"
    info = {**report, "promoted": True, "reason": reason, "parent_version": "1", "parent_task": ""}
    assert "DUMMY 0.625" in version_description("box", info, "demo", "entgan", 8, ["edge-1"], "run-7")
    summary = _summary(report)
    assert deploy_metrics(summary)["box.dummy"] == 0.625
    # Assert: every rendering of the per-type summary shows it
    table = format_summary(summary)
    assert "DUMMY" in table.splitlines()[0] and "0.625" in table.splitlines()[1]
    page = run_report_html(summary, {})
    assert "<th>DUMMY</th>" in page and "<td>0.625</td>" in page
    note = run_note(summary, "entgan", 8)
    assert "| DUMMY |" in note and "| 0.625 |" in note
    status = {"job": "demo", "runs": [], "types": {"box": {
        "champion": "2", "latest": "2", "metrics": metrics.from_tags(metrics.version_tags(report)),
        "train_images": "80", "holdout_images": "20", "edges": "edge-1", "parent_task": None, "gate": "ok"}}}
    shown = format_status(status)
    assert "DUMMY" in shown and "0.625" in shown


def test_every_deploy_rule_is_read_by_a_metric_and_every_rule_names_a_deploy_setting():
    # A metric's rule reads its settings from the job's `deploy:` section (DeploySpec): a rule
    # naming a missing setting, or a setting no rule reads, is a metric added in only one place.
    read = [f for m in metrics.METRICS for rule in m.rules for f in rule.fields()]
    assert sorted(read) == sorted(DeploySpec.model_fields)
    assert len(read) == len(set(read))
    assert metrics.names() == ["fid", "c2st", "kid_random", "kid_domain", "precision", "recall", "cas"]
    assert all(f.name for f in fields(metrics.Metric))


def test_a_lower_is_better_metric_may_trail_the_champion_by_its_standard_error_and_has_a_floor(monkeypatch):
    # The shape of a KID-like metric: must not rise above the champion's beyond z standard
    # errors (`kid_se` in the scores), and an absolute ceiling that first versions meet too.
    kid = metrics.Metric("kid", "KID", higher_is_better=False, score=_dummy_score, rules=(
        metrics.HoldsAgainstChampion("kid_must_not_rise", tolerance="kid_tolerance", stderr_multiple="kid_z"),
        metrics.Ceiling("max_kid")))
    monkeypatch.setattr(metrics, "METRICS", [kid])
    kid = metrics.Metric(kid.name, kid.label, False, score=lambda s, t, which: (0.03, 0.005), rules=kid.rules)
    monkeypatch.setattr(metrics, "METRICS", [kid])
    assert _scores(None, "box") == {"kid": 0.03, "kid_se": 0.005, "baseline_kid": 0.03, "baseline_kid_se": 0.005}
    rules = type("Rules", (), {"kid_must_not_rise": True, "kid_tolerance": 0.0, "kid_z": 2.0, "max_kid": 0.05})()
    promote, reasons = metrics.gate_decision({"kid": 0.030, "kid_se": 0.005}, {"kid": 0.025}, rules)
    assert promote and reasons[0].startswith("KID 0.030 holds against the champion's 0.025"), reasons
    promote, reasons = metrics.gate_decision({"kid": 0.040, "kid_se": 0.005}, {"kid": 0.025}, rules)
    assert not promote and reasons[0].startswith("KID 0.04 rises above the champion's")
    assert reasons[0].endswith("plus the tolerance 0.00 + 2 x SE 0.005"), reasons
    promote, reasons = metrics.gate_decision({"kid": 0.060}, None, rules)  # a first version
    assert not promote and reasons == ["KID 0.06: no champion to compare with", "KID 0.06 is above the ceiling 0.05"]
