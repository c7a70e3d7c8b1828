"""Unit tests of entgan.evaluation.two_sample: interval math, the C2ST parts and merge, KID and its floor."""

import pytest
import torch

from entgan.evaluation.two_sample import (
    KID,
    C2STCounts,
    RandomFeatures,
    average_states,
    c2st_classifier,
    c2st_edge_part,
    c2st_fedavg,
    feature_spaces,
    kid_edge_part,
    kid_scores,
    kid_with_floor,
    merge_c2st,
    merge_kid_parts,
    wilson_interval,
)
from entgan.gan.models import FeatureNet


def _smooth(n: int, seed: int) -> torch.Tensor:
    """Smooth random images (N, 3, 16, 16) in [-1, 1]: upsampled coarse noise."""
    coarse = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return torch.nn.functional.interpolate(coarse, size=16, mode="bilinear", align_corners=False)


def _speckled(n: int, seed: int) -> torch.Tensor:
    noise = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(seed + 100))
    return (_smooth(n, seed) + 0.3 * noise).clamp(-1, 1)


@pytest.mark.parametrize("correct,total", [(0, 10), (3, 10), (40, 80), (79, 80), (80, 80)])
def test_wilson_interval_matches_scipy(correct, total):
    from scipy.stats import binomtest

    ci = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(correct, total) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_merge_c2st_pools_the_edges_counts():
    acc, low, high = merge_c2st([C2STCounts(30, 40), C2STCounts(50, 60)])
    assert acc == pytest.approx(0.8) and (low, high) == pytest.approx(wilson_interval(80, 100))
    assert low < acc < high
    with pytest.raises(ValueError, match="at least one edge"):
        merge_c2st([])
    with pytest.raises(ValueError, match="invalid counts"):
        merge_c2st([C2STCounts(5, 3)])


def test_c2st_reads_chance_on_one_distribution_and_near_one_on_two():
    real = _smooth(40, 0)
    same = c2st_edge_part(real, _smooth(40, 1), seed=0, steps=40, batch_size=16)
    apart = c2st_edge_part(real, _speckled(40, 1), seed=0, steps=40, batch_size=16)
    assert same.total == apart.total == 80  # every real image tested once, against as many fakes
    _, low, high = merge_c2st([same])
    assert low <= 0.5 <= high
    assert merge_c2st([apart])[1] > 0.75


def test_c2st_on_training_images_tests_every_held_out_image():
    counts = c2st_edge_part(_smooth(12, 0), _speckled(60, 1), seed=0, steps=20, batch_size=16,
                            train_images=_smooth(30, 2))
    assert counts.total == 24 and 0 <= counts.correct <= 24
    with pytest.raises(ValueError, match="sample at least 42"):
        c2st_edge_part(_smooth(12, 0), _speckled(20, 1), train_images=_smooth(30, 2))


def test_c2st_names_bad_input():
    with pytest.raises(ValueError, match="fake_images must be"):
        c2st_edge_part(_smooth(8, 0), torch.zeros(8, 16, 16))
    with pytest.raises(ValueError, match="too few"):
        c2st_edge_part(_smooth(3, 0), _smooth(8, 1))
    with pytest.raises(ValueError, match="sample at least as many fakes"):
        c2st_edge_part(_smooth(10, 0), _smooth(5, 1))
    with pytest.raises(ValueError, match="image size"):
        c2st_edge_part(_smooth(8, 0), torch.zeros(8, 3, 8, 8))


def test_c2st_fedavg_returns_counts_per_edge():
    edges = [(_smooth(10, 0), _speckled(10, 1)), (_smooth(14, 2), _speckled(14, 3))]
    parts = c2st_fedavg(edges, rounds=2, local_steps=10, batch_size=16)
    assert [p.total for p in parts] == [20, 28]
    assert merge_c2st(parts)[0] > 0.6


def test_average_states_weights_by_count():
    a, b = c2st_classifier(0).state_dict(), c2st_classifier(1).state_dict()
    mean = average_states([a, b], [1, 3])
    key = next(iter(a))
    assert torch.allclose(mean[key], 0.25 * a[key] + 0.75 * b[key])


def test_random_features_are_fixed_by_the_seed():
    images = _smooth(4, 0)
    a, b, c = RandomFeatures(0)(images), RandomFeatures(0)(images), RandomFeatures(1)(images)
    assert a.shape == (4, RandomFeatures(0).num_features)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert not any(p.requires_grad for p in RandomFeatures(0).parameters())


def test_kid_kernel_is_torchmetrics_kid_with_the_random_features():
    # RandomFeatures works as torchmetrics' custom KID feature; with one subset of every row its
    # reading is the same unbiased estimate kid_with_floor averages over half-size subsets
    from torchmetrics.image.kid import KernelInceptionDistance, poly_mmd

    real, fake = _smooth(20, 0), _speckled(20, 1)
    space = RandomFeatures(0)
    metric = KernelInceptionDistance(feature=space, subset_size=20, subsets=1)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    expected, _ = metric.compute()
    assert float(poly_mmd(space(real).double(), space(fake).double())) == pytest.approx(float(expected), rel=1e-4)


def test_kid_reads_the_floor_for_one_distribution_and_more_for_two():
    space = RandomFeatures(0)
    real = space(_smooth(60, 0))
    same = kid_with_floor(real, space(_smooth(60, 1)))
    apart = kid_with_floor(real, space(_speckled(60, 1)))
    assert isinstance(same, KID) and same.subset_size == 30
    assert abs(same.kid - same.floor) <= same.floor_std
    assert apart.kid - apart.floor > 10 * apart.floor_std


def test_kid_edge_parts_merge_like_one_edge():
    net = FeatureNet(2, 8, 16)
    spaces = feature_spaces(net)
    a, b = _smooth(10, 0), _smooth(14, 1)
    merged = merge_kid_parts([kid_edge_part(a, spaces), kid_edge_part(b, spaces)])
    whole = kid_edge_part(torch.cat([a, b]), spaces)
    assert set(merged) == {"random", "domain"}
    for name in merged:
        assert merged[name].dtype == torch.float32 and torch.allclose(merged[name], whole[name], atol=1e-5)
    scores = kid_scores(merged, _speckled(30, 2), spaces, subsets=10)
    assert scores["random"].kid > scores["random"].floor


def test_kid_names_bad_input():
    with pytest.raises(ValueError, match="same feature space"):
        kid_with_floor(torch.zeros(10, 4), torch.zeros(10, 5))
    with pytest.raises(ValueError, match="at least 4 real"):
        kid_with_floor(torch.zeros(3, 4), torch.zeros(10, 4))
    with pytest.raises(ValueError, match="different feature spaces"):
        merge_kid_parts([{"random": torch.zeros(2, 3)}, {"domain": torch.zeros(2, 3)}])
    with pytest.raises(ValueError, match="no real features"):
        kid_scores({"random": torch.zeros(8, 96)}, _smooth(8, 0), feature_spaces(FeatureNet(2, 8, 16)))
