import pytest
import torch

from entgan.evaluation.features import FeatureStats
from entgan.evaluation.scoring import champion_set as _champion_set
from entgan.gan import strategies
from entgan.job.data import DataError, EdgeReport, TypeCounts
from entgan.job.spec import EvalSpec, TrainSpec, parse_job
from entgan.steps.deploy import gate
from entgan.steps.plan import _require_training_edges, apply_trigger, make_plan, nearest_task
from entgan.steps.records import EdgeQuorum


def _job(**kw):
    return parse_job({"name": "j", "edges": [{"name": "e1", "data": "a"}, {"name": "e2", "data": "b"}], **kw})


def _reports():
    return [
        EdgeReport("e1", {"box": TypeCounts(40, 10), "table": TypeCounts(30, 5)}, uncertain={"table": 4}),
        EdgeReport("e2", {"box": TypeCounts(20, 5), "tiny": TypeCounts(3, 1)}),
    ]


def test_plan_assigns_only_held_types_and_skips_thin_ones():
    plan = make_plan(_job(), _reports())
    assert plan.types == ["box", "table"]
    assert plan.assignments == {"e1": ["box", "table"], "e2": ["box"]}
    assert plan.train_examples == {"box": 60, "table": 30}
    assert "fewer than train.min_images_per_type" in plan.skipped["tiny"]
    assert plan.uncertain == {"table": 4}


def test_plan_with_nothing_trainable_fails_clearly():
    with pytest.raises(DataError, match="no data type can be trained"):
        make_plan(_job(), [EdgeReport("e1", {"box": TypeCounts(2, 1)})])


def test_plan_with_nothing_trainable_names_each_edge_and_its_counts():
    reports = [EdgeReport("e1", {"box": TypeCounts(2, 1)}), EdgeReport("e2", {"box": TypeCounts(3, 0),
                                                                          "table": TypeCounts(1, 1)})]
    with pytest.raises(DataError) as err:
        make_plan(_job(), reports)
    message = str(err.value)
    assert "training images per edge: e1 box=2; e2 box=3, table=1" in message
    assert "train.min_images_per_type=8" in message


def test_plan_refuses_too_few_edges_with_a_type_to_train_naming_each_idle_edge():
    job = _job(train={"min_edges": 2})
    reports = [EdgeReport("e1", {"box": TypeCounts(0, 3), "tiny": TypeCounts(3, 1)}),
               EdgeReport("e2", {"box": TypeCounts(20, 5)})]
    plan = make_plan(job, reports)
    with pytest.raises(DataError) as err:
        _require_training_edges(EdgeQuorum.of(job), plan, reports)
    message = str(err.value)
    assert "only 1 of 2 edges hold a type that trains, fewer than train.min_edges=2" in message
    assert "e1: holds box=0, tiny=3 training images" in message
    assert "box: all held out here" in message and "tiny: 3 training images, fewer than" in message


def test_trigger_counts_new_samples_since_the_last_trained_version():
    job = _job(trigger={"operator": "ge", "threshold": 25})
    plan = apply_trigger(job, make_plan(job, _reports()), trained_before={"box": 50, "table": 0})
    assert plan.new_samples == {"box": 10, "table": 30}
    assert plan.decision == "train" and plan.types == ["table"]
    assert plan.assignments == {"e1": ["table"], "e2": []}
    assert "trigger not met" in plan.skipped["box"]


def test_trigger_not_met_means_wait():
    job = _job(trigger={"operator": "gt", "threshold": 1000})
    plan = apply_trigger(job, make_plan(job, _reports()), trained_before={})
    assert plan.decision == "wait" and plan.types == []


def _stats(mean: float, n: int = 50, d: int = 4, seed: int = 0) -> FeatureStats:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) + mean).double()
    return FeatureStats(x.sum(0), x.T @ x, n)


def test_nearest_task_is_the_closest_in_feature_space():
    known = {"box": _stats(0.0, seed=1), "table": _stats(3.0, seed=2), "robot": _stats(-4.0, seed=3)}
    parent, distance = nearest_task(_stats(2.6, seed=4), known)
    assert parent == "table" and distance >= 0
    assert nearest_task(_stats(0.0), {}) is None


def test_feature_net_is_extended_for_a_new_type():
    train, ev = TrainSpec(image_size=8), EvalSpec(feature_dim=4)
    old = strategies.new_feature_net(2, train, ev).state_dict()
    new = strategies.extend_feature_net(old, ["box", "table"], ["box", "table", "pillar"], train, ev)
    assert new["head.weight"].shape[0] == 3
    assert torch.equal(new["head.weight"][:2], old["head.weight"])
    assert torch.equal(new["body.0.weight"], old["body.0.weight"])
    reordered = strategies.extend_feature_net(old, ["box", "table"], ["table", "box"], train, ev)
    assert torch.equal(reordered["head.weight"][0], old["head.weight"][1])


def test_the_gate_compares_cas_with_the_champion_set_only_when_known_and_new_types_train_together():
    plan = make_plan(_job(), _reports())  # box and table
    plan.start = {"box": None, "table": None}  # first run: no champions
    assert not _champion_set(plan)
    plan.start = {"box": "3", "table": "1"}  # every type has a champion: the starting set is the champions
    assert not _champion_set(plan)
    plan.start = {"box": "3", "table": None}  # table is new: its starting G is a copy of its parent's
    assert _champion_set(plan)
    scores = {"fid": 1.0, "precision": 0.9, "recall": 0.8, "cas": 0.7,
              "baseline_fid": 2.0, "baseline_precision": 0.9, "baseline_recall": 0.8, "baseline_cas": 0.35,
              "champion_cas": 0.9}
    # the FID and CAS rules alone (the C2ST/KID rules and floors have their own tests)
    job = _job(deploy={"cas_tolerance": 0.02, "c2st_must_not_rise": False, "kid_must_not_rise": False,
                       "max_kid_random": None, "min_cas_ratio": None})
    promote, reason = gate(job, scores, has_champion=True)
    assert not promote and "CAS 0.70 drops below the champion's 0.90" in reason
    promote, reason = gate(job, {**scores, "champion_cas": 0.71}, has_champion=True)
    assert promote and "CAS 0.70 holds against the champion's 0.71" in reason
