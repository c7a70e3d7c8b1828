import pytest
import torch

from entgan.gan import strategies
from entgan.gan.aggregate import AggregationError, fedavg
from entgan.gan.models import Discriminator, Generator
from entgan.gan.train import train_local
from entgan.job.spec import EvalSpec, TrainSpec

TYPES = ["box", "table"]


def _train(**kw) -> TrainSpec:
    return TrainSpec(**{"local_steps": 2, "batch_size": 4, "image_size": 8, "width": 4, "latent_dim": 4,
                        "ema_decay": None, **kw})  # the plain path; gan/test_recipe.py covers the EMA


def _eval() -> EvalSpec:
    return EvalSpec(feature_steps=2, feature_dim=4, num_generated=16)


def _data(seed: int, types=TYPES) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t: torch.rand(10, 3, 8, 8, generator=g) * 2 - 1 for t in types}


def _differs(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("strategy", ["entgan", "fedgan"])
def test_edge_sends_its_types_and_the_evaluator(strategy):
    train = _train(strategy=strategy)
    state = strategies.initial_state(TYPES, train, _eval())
    update = strategies.edge_round("e1", state, _data(0, ["box"]), TYPES, train, _eval(), round_=1)
    assert set(update.groups) == {"box/G", "box/D", strategies.FEATURES}  # nothing of `table`
    assert update.num_examples == {"box": 10, strategies.FEATURES: 10}
    assert _differs(update.groups["box/D"], state["box/D"])
    assert _differs(update.groups["box/G"], state["box/G"])


def test_the_evaluator_trains_with_its_own_batch_not_the_gans():
    # The domain feature network defines FID's features: a change to the GAN's batch must not change
    # the metric (it did while the feature network trained with train.batch_size), eval.batch_size must.
    def features(train_batch: int, eval_batch: int) -> dict:
        train, ev = _train(batch_size=train_batch), EvalSpec(feature_steps=2, feature_dim=4, batch_size=eval_batch)
        state = strategies.initial_state(TYPES, train, ev)
        return strategies.edge_round("e1", state, _data(0), TYPES, train, ev, round_=1).groups[strategies.FEATURES]

    same = features(4, 4)
    assert not _differs(features(8, 4), same)
    assert _differs(features(4, 8), same)


def test_fedgan_cloud_averages_g_and_d():
    train = _train(strategy="fedgan")
    state = strategies.initial_state(TYPES, train, _eval())
    u1 = strategies.edge_round("e1", state, _data(1), TYPES, train, _eval(), round_=1)
    u2 = strategies.edge_round("e2", state, _data(2, ["box"]), TYPES, train, _eval(), round_=1)
    new, metrics = strategies.cloud_round(state, [u1, u2], train, round_=1)
    expected_g = fedavg([(u1.groups["box/G"], 10), (u2.groups["box/G"], 10)])
    assert all(torch.allclose(new["box/G"][k].float(), expected_g[k].float()) for k in expected_g)
    assert torch.allclose(new["table/G"]["main.0.weight"], u1.groups["table/G"]["main.0.weight"])
    assert metrics["box.edges"] == 2 and metrics["table.edges"] == 1


def test_entgan_cloud_trains_g_against_averaged_d():
    train = _train(strategy="entgan", cloud_steps=3)
    state = strategies.initial_state(TYPES, train, _eval())
    u1 = strategies.edge_round("e1", state, _data(1, ["box"]), TYPES, train, _eval(), round_=1)
    u2 = strategies.edge_round("e2", state, _data(2, ["box"]), TYPES, train, _eval(), round_=1)
    new, metrics = strategies.cloud_round(state, [u1, u2], train, round_=1)
    expected_d = fedavg([(u1.groups["box/D"], 10), (u2.groups["box/D"], 10)])
    assert all(torch.allclose(new["box/D"][k].float(), expected_d[k].float()) for k in expected_d)
    averaged_g = fedavg([(u1.groups["box/G"], 10), (u2.groups["box/G"], 10)])
    assert _differs(new["box/G"], averaged_g)  # the cloud's global G update moved it further
    assert new["table/G"] is state["table/G"]  # nobody trained table: unchanged
    assert "box.cloud_g_loss" in metrics


def test_round_below_min_edges_fails_cleanly():
    train = _train(min_edges=2)
    state = strategies.initial_state(TYPES, train, _eval())
    u1 = strategies.edge_round("e1", state, _data(1), TYPES, train, _eval(), round_=1)
    empty = strategies.EdgeUpdate(edge="e2", groups={}, num_examples={})
    with pytest.raises(AggregationError, match="fewer than train.min_edges=2"):
        strategies.cloud_round(state, [u1, empty], train, round_=1)


def test_proximal_term_keeps_local_d_near_the_library():
    images = torch.rand(16, 3, 8, 8) * 2 - 1

    def drift(mu: float) -> float:
        torch.manual_seed(0)
        g, d = Generator(4, 4, 8), Discriminator(4, 8)
        anchor = {k: v.clone() for k, v in d.state_dict().items()}
        result = train_local(g, d, images, steps=20, batch_size=8, lr=1e-2, mu=mu, anchor=anchor, seed=0)
        return sum((result.discriminator[k] - anchor[k]).pow(2).sum().item() for k, _ in d.named_parameters())

    assert drift(mu=10.0) < 0.5 * drift(mu=0.0)


def test_centralized_baseline_trains_every_type():
    train = _train(rounds=1)
    state = strategies.train_centralized(_data(3), train)
    assert set(state) == {"box/G", "box/D", "table/G", "table/D"}
    g = strategies.load_generator(state, "box", train)
    assert g.sample(5).shape == (5, 3, 8, 8)


@pytest.mark.parametrize("clip_norm", [None, 0.5])
def test_streaming_cloud_round_equals_aggregating_all_updates_at_once(clip_norm):
    # FedAvg folds the updates in one at a time; the result must be that of the list-based aggregate.
    from entgan.gan.aggregate import aggregate

    torch.set_num_threads(1)
    train = _train(strategy="fedgan", clip_norm=clip_norm)
    state = strategies.initial_state(TYPES, train, _eval())
    updates = [strategies.edge_round(f"e{i}", state, _data(i), TYPES, train, _eval(), round_=1) for i in range(3)]
    cloud = strategies.CloudRound(state, train, round_=1)
    assert cloud.streaming
    for u in updates:
        cloud.add(u)
    new, _ = cloud.finish()
    for group in ("box/G", "table/D", strategies.FEATURES):
        count_key = strategies.FEATURES if group == strategies.FEATURES else group.split("/")[0]
        results = [(u.groups[group], u.num_examples[count_key]) for u in updates]
        expected = aggregate(results, state[group], method="fedavg", clip_norm=clip_norm)
        for k, want in expected.items():
            torch.testing.assert_close(new[group][k], want, rtol=1e-5, atol=1e-6)
