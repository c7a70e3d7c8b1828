import itertools
import random

import pytest
import torch
from pydantic import ValidationError

from entgan.evaluation.metrics import gate_decision
from entgan.evaluation.precision_recall_cas import (
    cas_counts,
    cas_from_counts,
    knn_radii,
    precision_recall,
    train_cas_classifier,
)
from entgan.gan.models import Generator
from entgan.job.spec import DeploySpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# ---------------------------------------------------------------- precision and recall


def _cloud(n: int, centre: float, dim: int = 4, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g) + centre


def test_hand_checked_example_on_a_line():
    # Prepare: k=1 radii are 1 for every real point, 0.5 for fakes 0.5 and 1.0, 2 for 10 and 12
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    fake = torch.tensor([[0.5], [1.0], [10.0], [12.0]])

    # Execute
    precision, recall = precision_recall(real, fake, k=1)

    # Assert: fakes 0.5 and 1.0 are inside the real manifold; reals 0 (at the border, 0.5 from
    # fake 0.5) and 1 (on fake 1.0) are inside the fake manifold, 2 and 3 are not
    assert knn_radii(fake, 1).tolist() == [0.5, 0.5, 2.0, 2.0]
    assert (precision, recall) == (0.5, 0.5)


def test_same_distribution_scores_high_on_both():
    real, fake = _cloud(400, 0.0, seed=1), _cloud(400, 0.0, seed=2)

    precision, recall = precision_recall(real, fake)

    assert precision > 0.8 and recall > 0.8


def test_disjoint_clusters_score_zero_on_both():
    real, fake = _cloud(200, 0.0, seed=1), _cloud(200, 50.0, seed=2)

    precision, recall = precision_recall(real, fake)

    assert (precision, recall) == (0.0, 0.0)


def test_a_generator_covering_one_of_two_modes_is_precise_but_recalls_half():
    # Prepare: real data has two equal modes; the fakes sit in only one of them
    real = torch.cat([_cloud(300, -20.0, seed=1), _cloud(300, 20.0, seed=2)])
    fake = _cloud(300, -20.0, seed=3)

    # Execute
    precision, recall = precision_recall(real, fake)

    # Assert
    assert precision > 0.8
    assert 0.4 < recall <= 0.5


def test_chunked_distances_match_one_block():
    real, fake = _cloud(70, 0.0, seed=1), _cloud(50, 0.5, seed=2)

    assert torch.equal(knn_radii(real, 3, chunk_rows=16), knn_radii(real, 3, chunk_rows=1000))
    assert precision_recall(real, fake) == precision_recall(real.float(), fake.float())


@pytest.mark.parametrize(
    ("real", "fake", "k", "message"),
    [
        (torch.zeros(10), torch.zeros(10, 2), 3, "real_features must be 2-D"),
        (torch.zeros(10, 2), torch.zeros(10, 2, 1), 3, "fake_features must be 2-D"),
        (torch.zeros(10, 2), torch.zeros(10, 3), 3, "dimension 2 but fake_features 3"),
        (torch.zeros(3, 2), torch.zeros(10, 2), 3, "real_features has 3 rows but k=3 needs at least 4"),
        (torch.zeros(10, 2), torch.zeros(2, 2), 3, "fake_features has 2 rows"),
        (torch.zeros(10, 2), torch.zeros(10, 2), 0, "k must be at least 1"),
        (torch.full((10, 2), float("nan")), torch.zeros(10, 2), 3, "NaN or infinite"),
    ],
)
def test_precision_recall_rejects_unusable_inputs(real, fake, k, message):
    with pytest.raises(ValueError, match=message):
        precision_recall(real, fake, k=k)


# ---------------------------------------------------------------- classification accuracy score

SIZE = 8


class ConstantColour(Generator):
    """A stand-in generator whose every image is one colour, plus a little noise."""

    def __init__(self, colour: tuple[float, float, float]) -> None:
        super().__init__(latent_dim=4, width=4, image_size=SIZE)
        self.colour = torch.tensor(colour).view(1, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        noise = 0.05 * z[:, :3, None, None]
        return (self.colour + noise).expand(-1, -1, SIZE, SIZE).clamp(-1, 1)


def _real(colour: tuple[float, float, float], n: int) -> torch.Tensor:
    return torch.tensor(colour).view(1, 3, 1, 1).expand(n, 3, SIZE, SIZE).clone()


RED, BLUE = (0.9, -0.9, -0.9), (-0.9, -0.9, 0.9)


@pytest.fixture(scope="module")
def cas_classifier():
    generators = {"box": ConstantColour(RED), "pillar": ConstantColour(BLUE)}
    return train_cas_classifier(
        generators, ["box", "pillar"], image_size=SIZE, steps=20, batch_size=8, feature_dim=8
    )


def test_classifier_trained_on_generated_colours_recognises_real_ones(cas_classifier):
    # Execute: the edges count on real images of each type (label = index in types)
    box = cas_counts(cas_classifier, _real(RED, 5), label=0)
    pillar = cas_counts(cas_classifier, _real(BLUE, 7), label=1)
    swapped = cas_counts(cas_classifier, _real(RED, 5), label=1)

    # Assert
    assert box == (5, 5) and pillar == (7, 7)
    assert swapped == (0, 5)
    assert cas_from_counts([box, pillar, swapped]) == pytest.approx(12 / 17)


def test_cas_training_is_seeded_and_leaves_generators_alone():
    generators = {"box": ConstantColour(RED), "pillar": ConstantColour(BLUE)}
    before = {t: {k: v.clone() for k, v in g.state_dict().items()} for t, g in generators.items()}

    a = train_cas_classifier(generators, ["box", "pillar"], image_size=SIZE, steps=2, batch_size=4, feature_dim=8)
    b = train_cas_classifier(generators, ["box", "pillar"], image_size=SIZE, steps=2, batch_size=4, feature_dim=8)

    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    for t, g in generators.items():
        assert all(torch.equal(v, before[t][k]) for k, v in g.state_dict().items())
        assert g.training  # Generator.sample restores the mode it found


def test_cas_classifier_refuses_missing_or_mis_sized_generators():
    generators = {"box": ConstantColour(RED)}

    with pytest.raises(ValueError, match=r"no generator for type\(s\) \['pillar'\]"):
        train_cas_classifier(generators, ["box", "pillar"], image_size=SIZE, steps=1, batch_size=2)
    with pytest.raises(ValueError, match="expected \\(3, 16, 16\\)"):
        train_cas_classifier(generators, ["box"], image_size=16, steps=1, batch_size=2)


def test_cas_counts_refuses_a_label_the_classifier_lacks(cas_classifier):
    with pytest.raises(ValueError, match="label 2 is outside the classifier's 2 classes"):
        cas_counts(cas_classifier, _real(RED, 2), label=2)


def test_cas_from_counts_merges_edges_and_rejects_nonsense():
    assert cas_from_counts([(3, 4), (0, 0), (1, 4)]) == 0.5
    with pytest.raises(ValueError, match="no held-out images"):
        cas_from_counts([(0, 0)])
    with pytest.raises(ValueError, match="invalid counts"):
        cas_from_counts([(5, 4)])


# ---------------------------------------------------------------- the deploy gate

GOOD = {"fid": 3.21, "precision": 0.7, "recall": 0.6, "cas": 0.9}
CHAMPION = {"fid": 4.02, "precision": 0.7, "recall": 0.5, "cas": 0.85}


def _fid_cas(**rules) -> DeploySpec:
    """The default FID and CAS rules alone (C2ST, KID and the absolute floors off: these
    candidates carry FID, precision, recall and CAS only; tests/evaluation/test_gate_floors.py gates on the others)."""
    return DeploySpec(**{"c2st_must_not_rise": False, "kid_must_not_rise": False, "max_kid_random": None,
                         "min_cas_ratio": None, **rules})


def test_default_rules_promote_a_better_candidate_and_say_why():
    promote, reasons = gate_decision(GOOD, CHAMPION, _fid_cas())

    assert promote
    assert reasons == [
        "FID 3.21 beats the champion's 4.02",
        "CAS 0.90 holds against the champion's 0.85 (tolerance 0.00)",
    ]


def test_first_version_passes_the_comparing_rules():
    promote, reasons = gate_decision(GOOD, None, _fid_cas())

    assert promote
    assert "no champion" in reasons[0] and "no champion" in reasons[1]


@pytest.mark.parametrize(
    ("rules", "candidate", "passes", "reason"),
    [
        (_fid_cas(cas_must_not_drop=False), {"fid": 4.5}, False, "FID 4.50 does not beat the champion's 4.02"),
        (_fid_cas(cas_must_not_drop=False), {"fid": 4.02}, False, "does not beat"),
        (_fid_cas(fid_must_not_rise=False, cas_must_not_drop=False, max_fid=5.0), {"fid": 4.5}, True,
         "FID 4.50 is within the ceiling 5.00"),
        (_fid_cas(fid_must_not_rise=False, cas_must_not_drop=False, max_fid=4.0), {"fid": 4.5}, False,
         "FID 4.50 is above the ceiling 4.00"),
        (_fid_cas(cas_must_not_drop=False, min_recall=0.2), {"fid": 1.0, "recall": 0.12}, False,
         "recall 0.12 is below the floor 0.20"),
        (_fid_cas(cas_must_not_drop=False, min_recall=0.2), {"fid": 1.0, "recall": 0.2}, True,
         "recall 0.20 meets the floor 0.20"),
        (_fid_cas(cas_must_not_drop=False, min_precision=0.5), {"fid": 1.0, "precision": 0.4}, False,
         "precision 0.40 is below the floor 0.50"),
        (_fid_cas(cas_must_not_drop=False, min_precision=0.5), {"fid": 1.0, "precision": 0.6}, True,
         "precision 0.60 meets the floor 0.50"),
        (_fid_cas(), {"fid": 1.0, "cas": 0.80}, False,
         "CAS 0.80 drops below the champion's 0.85 minus the tolerance 0.00"),
        (_fid_cas(cas_tolerance=0.05), {"fid": 1.0, "cas": 0.80}, True, "CAS 0.80 holds against the champion's 0.85"),
        (_fid_cas(min_cas_ratio=0.3), {"fid": 1.0, "cas": 0.9, "evaluator_accuracy": 0.95}, True,
         "CAS 0.90 meets the floor 0.3 x 0.95 (the real-data classifier's accuracy)"),
        (_fid_cas(cas_must_not_drop=False, min_cas_ratio=0.3), {"fid": 1.0, "cas": 0.2, "evaluator_accuracy": 0.9},
         False, "CAS 0.20 is below the floor 0.3 x 0.90"),
        (_fid_cas(), {"fid": 4.019, "cas": 0.9}, True, "FID 4.019 beats the champion's 4.020"),
    ],
)
def test_each_rule_passes_and_fails(rules, candidate, passes, reason):
    promote, reasons = gate_decision(candidate, CHAMPION, rules)

    assert promote is passes
    assert any(reason in r for r in reasons), reasons


def test_one_failing_rule_blocks_promotion_and_every_rule_reports():
    rules = _fid_cas(max_fid=10.0, min_precision=0.5, min_recall=0.7)

    promote, reasons = gate_decision(GOOD, CHAMPION, rules)

    assert not promote
    assert len(reasons) == 5
    assert "recall 0.60 is below the floor 0.70" in reasons


def test_nan_metrics_never_pass():
    nan = float("nan")
    assert not gate_decision({"fid": nan, "cas": 0.9}, CHAMPION, _fid_cas())[0]
    assert not gate_decision({"fid": nan, "cas": 0.9}, None, _fid_cas())[0]
    assert not gate_decision({"fid": 1.0, "cas": nan}, CHAMPION, _fid_cas())[0]
    assert not gate_decision({"fid": 1.0, "recall": nan}, None, _fid_cas(cas_must_not_drop=False, min_recall=0.1))[0]


def test_a_metric_an_active_rule_needs_must_be_there():
    with pytest.raises(ValueError, match="no 'recall'.*turn its rule off"):
        gate_decision({"fid": 1.0, "cas": 0.9}, CHAMPION, _fid_cas(min_recall=0.1))
    with pytest.raises(ValueError, match="candidate's metrics have no 'fid'"):
        gate_decision({"cas": 0.9}, None, _fid_cas())


def test_rules_validate_like_the_job_file():
    with pytest.raises(ValidationError):
        DeploySpec(min_recall=1.5)
    with pytest.raises(ValidationError):
        DeploySpec.model_validate({"max_fdi": 3.0})  # a misspelt rule is an error, not ignored
    assert all(f.description for f in DeploySpec.model_fields.values())


def _sweep(count: int):
    """Random candidate/champion/rule combinations where the candidate's FID is not better."""
    rng = random.Random(7)
    for _ in range(count):
        champion = {"fid": rng.uniform(0.1, 50), "precision": rng.random(), "recall": rng.random(), "cas": rng.random()}
        candidate = {
            "fid": champion["fid"] + rng.choice([0.0, 1e-9, rng.uniform(0, 50)]),
            "precision": rng.random(),
            "recall": rng.random(),
            "cas": rng.choice([1.0, rng.random()]),
        }
        flags = itertools.product([None, 0.0], [None, 0.0], [True, False])
        for max_fid_off, floor, cas_rule in flags:
            rules = _fid_cas(
                max_fid=None if max_fid_off is None else 1000.0,
                min_precision=floor,
                min_recall=floor,
                cas_must_not_drop=cas_rule,
                cas_tolerance=rng.choice([0.0, 1.0]),
            )
            yield candidate, champion, rules


def test_a_candidate_worse_on_fid_is_never_promoted():
    for candidate, champion, rules in _sweep(60):
        promote, reasons = gate_decision(candidate, champion, rules)
        assert not promote, (candidate, champion, rules, reasons)


def test_augment_flips_and_shifts_but_keeps_content():
    from entgan.evaluation.precision_recall_cas import augment

    torch.manual_seed(0)
    flat = torch.full((6, 3, 16, 16), 0.25)
    assert torch.equal(augment(flat, torch.Generator().manual_seed(1)), flat)  # edges replicated, nothing invented
    images = torch.rand(64, 3, 16, 16) * 2 - 1
    out = augment(images, torch.Generator().manual_seed(1))
    assert out.shape == images.shape
    assert not torch.equal(out, images)
    # every output is its input, maybe mirrored, moved by at most 1 pixel (16 // 10): the centre survives
    for x, y in zip(images, out):
        centres = [x[:, 4:12, 4:12], x.flip(2)[:, 4:12, 4:12]]
        assert any(torch.equal(y[:, 4 + dy : 12 + dy, 4 + dx : 12 + dx], c)
                   for c in centres for dy in (-1, 0, 1) for dx in (-1, 0, 1))
