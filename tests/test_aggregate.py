import pytest
import torch

from entgan.aggregate import AggregationError, fedavg, proximal_term


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
