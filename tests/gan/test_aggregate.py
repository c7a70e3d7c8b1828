import pytest
import torch

from entgan.gan.aggregate import AggregationError, fedavg, proximal_term


def test_fedavg_is_sample_weighted():
    # Prepare
    a = {"w": torch.tensor([0.0, 0.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([4.0, 8.0]), "n": torch.tensor(5)}
    # Execute
    out = fedavg([(a, 1), (b, 3)])
    # Assert
    assert torch.allclose(out["w"], torch.tensor([3.0, 6.0]))
    assert out["w"].dtype == torch.float32
    assert out["n"].item() == 5  # integer counters keep the maximum


def test_fedavg_single_update_is_identity():
    state = {"w": torch.randn(3, 3)}
    assert torch.allclose(fedavg([(state, 7)])["w"], state["w"])


@pytest.mark.parametrize(
    "updates, message",
    [
        ([], "no updates arrived"),
        ([({"w": torch.zeros(2)}, 1), ({"v": torch.zeros(2)}, 1)], "different parameters"),
        ([({"w": torch.zeros(2)}, 1), ({"w": torch.zeros(3)}, 1)], "w is (3,)"),
        ([({"w": torch.zeros(2)}, 1), ({"w": torch.zeros(2, dtype=torch.float64)}, 1)], "torch.float64"),
        ([({"w": torch.zeros(2)}, 0)], "must be > 0"),
    ],
)
def test_fedavg_fails_loudly(updates, message):
    with pytest.raises(AggregationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        fedavg(updates)


def test_proximal_term_is_half_squared_distance():
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    anchor = {"weight": torch.tensor([[0.0, 0.0]])}
    assert proximal_term(model, anchor).item() == pytest.approx(2.5)


# ---------------------------------------------------------------- robust aggregation

from entgan.gan.aggregate import aggregate, check_update, clip_updates, median, trimmed_mean  # noqa: E402


def _updates(*values):
    return [({"w": torch.tensor([float(v), -float(v)]), "n": torch.tensor(1)}, 1) for v in values]


def test_median_and_trimmed_mean_ignore_one_outlier_out_of_four():
    # Prepare: three honest updates and one scaled far away
    results = _updates(1, 2, 3, 1000)
    # Execute / Assert: the middle two values (2, 3) decide; FedAvg is dragged away
    assert torch.allclose(median(results)["w"], torch.tensor([2.5, -2.5]))
    assert torch.allclose(trimmed_mean(results, 0.25)["w"], torch.tensor([2.5, -2.5]))
    assert fedavg(results)["w"][0] > 200
    assert median(_updates(1, 2, 9))["w"][0] == 2  # odd count: the middle value


def test_clipping_bounds_each_update_to_the_median_norm():
    # Prepare: updates around a zero reference with norms 1, 2 and 100 (times sqrt 2)
    reference = {"w": torch.zeros(2), "n": torch.tensor(0)}
    clipped, norms = clip_updates(_updates(1, 2, 100), reference, "median")
    # Assert: the large update is scaled down to the median norm, the others keep theirs
    assert [round(n / 2**0.5, 3) for n in norms] == [1.0, 2.0, 100.0]
    assert torch.allclose(clipped[2][0]["w"], torch.tensor([2.0, -2.0]))
    assert torch.allclose(clipped[0][0]["w"], torch.tensor([1.0, -1.0]))
    fixed, _ = clip_updates(_updates(3), reference, 1.0)
    assert torch.allclose(fixed[0][0]["w"].norm(), torch.tensor(1.0))


def test_robust_aggregation_drops_non_finite_updates_and_fedavg_does_not():
    reference = {"w": torch.zeros(2), "n": torch.tensor(0)}
    poisoned = _updates(1, 2, 3) + [({"w": torch.tensor([float("nan"), 1.0]), "n": torch.tensor(1)}, 1)]
    assert torch.isfinite(aggregate(poisoned, reference, method="median", clip_norm="median")["w"]).all()
    assert torch.isnan(aggregate(poisoned, reference, method="fedavg")["w"]).any()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: aggregate(_updates(1), {"w": torch.zeros(2)}, method="krum"), "unknown aggregation 'krum'"),
        (lambda: trimmed_mean(_updates(1, 2), 0.5), "trim_fraction is 0.5"),
        (lambda: clip_updates([], {"w": torch.zeros(2)}, 1.0), "no updates arrived"),
        (lambda: clip_updates(_updates(1), {"w": torch.zeros(3), "n": torch.tensor(0)}, 1.0), "w is (2,)"),
    ],
)
def test_robust_aggregation_fails_loudly(call, message):
    with pytest.raises(AggregationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_check_update_names_what_does_not_fit_the_global_state():
    reference = {"box/G": {"w": torch.zeros(2)}}
    assert check_update({"box/G": {"w": torch.ones(2)}}, reference) is None
    assert check_update({"box/D": {"w": torch.ones(2)}}, reference) == "unknown network 'box/D'"
    assert "missing ['w']" in check_update({"box/G": {"v": torch.ones(2)}}, reference)
    assert "box/G/w is (3,)" in check_update({"box/G": {"w": torch.ones(3)}}, reference)
    assert "NaN or infinite" in check_update({"box/G": {"w": torch.tensor([1.0, float("inf")])}}, reference)


# ---------------------------------------------------------------- streaming FedAvg

from entgan.gan.aggregate import FedAvgSum  # noqa: E402


def _fedavg_float64(results):
    """FedAvg as it was computed before streaming: every update at once, float64 accumulators."""
    total = sum(n for _, n in results)
    out = {}
    for key, ref in results[0][0].items():
        if ref.is_floating_point():
            acc = torch.zeros_like(ref, dtype=torch.float64)
            for state, n in results:
                acc += state[key].to(torch.float64) * (n / total)
            out[key] = acc.to(ref.dtype)
        else:
            out[key] = torch.stack([state[key] for state, _ in results]).amax(dim=0)
    return out


def test_streaming_fedavg_equals_the_float64_average():
    # Prepare: four edge-like updates of a real network with unequal sample counts
    torch.set_num_threads(1)
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8)).state_dict()
    results = []
    for i, n in enumerate([194, 127, 201, 3]):
        state = {k: (v + torch.randn_like(v) * (i + 1) if v.is_floating_point() else v + i) for k, v in base.items()}
        results.append((state, n))
    # Execute
    streamed = fedavg(results)
    folded = FedAvgSum()
    for state, n in results:
        folded.add(state, n)
    # Assert: equal to the float64 average within float32 rounding, in float32, counters at their max
    expected = _fedavg_float64(results)
    for key, want in expected.items():
        assert streamed[key].dtype == want.dtype
        if want.is_floating_point():
            torch.testing.assert_close(streamed[key], want, rtol=1e-5, atol=1e-6)
            assert torch.equal(folded.result()[key], streamed[key])
        else:
            assert torch.equal(streamed[key], want)
    assert streamed["1.num_batches_tracked"].item() == base["1.num_batches_tracked"].item() + 3


def test_streaming_fedavg_keeps_no_reference_to_the_updates():
    # The cloud drops each update after folding it in: the running mean must not alias it.
    a, b = {"w": torch.tensor([1.0, 2.0])}, {"w": torch.tensor([3.0, 6.0])}
    folded = FedAvgSum()
    folded.add(a, 1)
    a["w"].fill_(100.0)
    folded.add(b, 1)
    b["w"].fill_(100.0)
    assert torch.equal(folded.result()["w"], torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize(
    "second, message",
    [({"v": torch.zeros(2)}, "different parameters"), ({"w": torch.zeros(3)}, "w is (3,)"),
     ({"w": torch.zeros(2, dtype=torch.float64)}, "torch.float64")],
)
def test_streaming_fedavg_fails_loudly(second, message):
    folded = FedAvgSum()
    folded.add({"w": torch.zeros(2)}, 1)
    with pytest.raises(AggregationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        folded.add(second, 1)
    with pytest.raises(AggregationError, match="must be > 0"):
        folded.add({"w": torch.zeros(2)}, 0)
    with pytest.raises(AggregationError, match="no updates arrived"):
        FedAvgSum().result()
