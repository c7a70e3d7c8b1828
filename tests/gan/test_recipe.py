"""The data-efficient recipe: DiffAugment, hinge loss, spectral normalisation, R1, the per-step
EMA of G, the device and precision options, and how each meets federated averaging."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from entgan.gan import strategies
from entgan.gan.aggregate import check_update, fedavg
from entgan.gan.augment import color, cutout, diff_augment, parse_policy, translation
from entgan.gan.bundle import pack, unpack
from entgan.gan.models import Discriminator, Generator
from entgan.gan.train import Recipe, d_loss_of, g_loss_of, r1_penalty, train_generator, train_local
from entgan.job.spec import EvalSpec, JobError, TrainSpec, parse_job
from tests.conftest import tiny_job_dict

POLICY = ("color", "translation", "cutout")
TINY = dict(rounds=1, local_steps=3, cloud_steps=2, batch_size=4, image_size=16, width=4, latent_dim=8, ema_decay=None)


def _images(n=8, size=16, seed=0):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# --- DiffAugment -------------------------------------------------------------------------------


def test_augment_is_seeded_differentiable_and_keeps_shape():
    x = _images().requires_grad_(True)
    a = diff_augment(x, POLICY, torch.Generator().manual_seed(3))
    b = diff_augment(x, POLICY, torch.Generator().manual_seed(3))
    c = diff_augment(x, POLICY, torch.Generator().manual_seed(4))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    a.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(diff_augment(x, (), torch.Generator()), x)


def test_translation_moves_content_and_pads_with_zeros():
    x = torch.zeros(64, 3, 16, 16)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    moved = translation(x, torch.Generator().manual_seed(0))
    assert torch.all(moved.sum(dim=(1, 2, 3)) == 3)  # the pixel is still there (shift <= 2 px)
    positions = {tuple(torch.nonzero(m[0])[0].tolist()) for m in moved}
    assert len(positions) > 1 and all(abs(r - 8) <= 2 and abs(c - 8) <= 2 for r, c in positions)
    ones = translation(torch.ones(64, 3, 16, 16), torch.Generator().manual_seed(0))
    assert ones.min() == 0  # some images shifted: their border is zero


def test_cutout_zeroes_a_square_of_half_the_side_at_most():
    out = cutout(torch.ones(16, 3, 16, 16), torch.Generator().manual_seed(0))
    zeros = (out[:, 0] == 0).sum(dim=(1, 2))
    assert torch.all(zeros > 0) and torch.all(zeros <= 9 * 9)
    assert torch.equal(out[:, 0], out[:, 2])  # every channel is cut the same way


def test_color_keeps_values_near_range_and_changes_images():
    x = _images()
    y = color(x, torch.Generator().manual_seed(0))
    assert not torch.equal(x, y) and y.abs().max() < 6


def test_unknown_augmentation_is_rejected_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown augmentation"):
        parse_policy("color,flip")
    data = tiny_job_dict(tmp_path, ["edge-1"])
    data["train"]["augment"] = "colour"
    with pytest.raises(JobError, match=r"train.augment: unknown augmentation \['colour'\].*color, translation, cutout"):
        parse_job(data)
    assert TrainSpec(augment=" color , cutout ").augment == "color,cutout"


@pytest.mark.parametrize("field,value,message", [
    ("ema_decay", 1.0, "ema_decay is 1.0; use a number between 0 and 1"),
    ("loss", "wasserstein", "train.loss"),
    ("r1_gamma", -1, "train.r1_gamma"),
    ("amp", "fp8", "train.amp"),
    ("device", "tpu", "train.device"),
])
def test_recipe_fields_reject_bad_values(tmp_path, field, value, message):
    data = tiny_job_dict(tmp_path, ["edge-1"])
    data["train"][field] = value
    with pytest.raises(JobError, match=message):
        parse_job(data)


# --- losses and penalties ----------------------------------------------------------------------


def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert d_loss_of("hinge", real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert g_loss_of("hinge", fake).item() == pytest.approx(1.0)
    assert d_loss_of("bce", real, fake).item() > 0


def test_r1_penalty_of_a_linear_critic_is_half_its_squared_weight_norm():
    critic = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 1))
    weight = critic[1].weight
    assert r1_penalty(critic, _images(5, 4)).item() == pytest.approx(0.5 * weight.pow(2).sum().item(), rel=1e-5)


# --- spectral normalisation meets FedAvg and safetensors ---------------------------------------


def test_spectral_norm_discriminators_average_key_matched_and_serialise(tmp_path):
    images = _images()
    states = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        d = Discriminator(width=4, image_size=16, spectral_norm=True)
        result = train_local(Generator(8, 4, 16), d, images, steps=2, batch_size=4, lr=1e-3, seed=seed,
                             recipe=Recipe(loss="hinge"))
        states.append((result.discriminator, 4 + seed))
    keys = states[0][0].keys()
    assert any(k.endswith("parametrizations.weight.original") for k in keys)
    assert any(k.endswith("._u") for k in keys) and any(k.endswith("._v") for k in keys)
    averaged = fedavg(states)
    assert check_update({"t/D": averaged}, {"t/D": states[0][0]}) is None
    save_file(pack({"t/D": averaged}), tmp_path / "d.safetensors")
    loaded = unpack(load_file(tmp_path / "d.safetensors"))["t/D"]
    d = Discriminator(width=4, image_size=16, spectral_norm=True)
    d.load_state_dict(loaded)  # strict: every key matched
    assert d(images).shape == (8,)


# --- EMA ---------------------------------------------------------------------------------------


def test_ema_after_one_step_is_the_decayed_mix_of_start_and_new_weights():
    torch.manual_seed(0)
    g, d = Generator(8, 4, 16), Discriminator(4, 16)
    start = {k: v.clone() for k, v in g.state_dict().items()}
    result = train_local(g, d, _images(), steps=1, batch_size=4, lr=1e-2, seed=0, recipe=Recipe(ema_decay=0.75))
    key = "main.0.weight"
    expected = 0.75 * start[key] + 0.25 * result.generator[key]
    assert torch.allclose(result.generator_ema[key], expected, atol=1e-6)
    assert not torch.allclose(result.generator_ema[key], result.generator[key])


def test_ema_observes_training_without_changing_it():
    data = {"box": _images(12)}
    plain = TrainSpec(**TINY)
    with_ema = TrainSpec(**{**TINY, "ema_decay": 0.9})
    ev = EvalSpec(feature_steps=1, feature_dim=8)
    a = strategies.edge_round("e", strategies.initial_state(["box"], plain, ev), data, ["box"], plain, ev, round_=1)
    b = strategies.edge_round("e", strategies.initial_state(["box"], with_ema, ev), data, ["box"], with_ema, ev, round_=1)
    for group in ("box/G", "box/D"):
        assert all(torch.equal(a.groups[group][k], b.groups[group][k]) for k in a.groups[group])
    assert "box/G_ema" in b.groups and "box/G_ema" not in a.groups


def test_a_federated_round_with_every_option_keeps_and_deploys_the_ema():
    train = TrainSpec(**{**TINY, "ema_decay": 0.9}, augment="color,translation,cutout", spectral_norm=True,
                      loss="hinge", r1_gamma=0.1)
    ev = EvalSpec(feature_steps=1, feature_dim=8)
    state = strategies.initial_state(["box"], train, ev)
    assert torch.equal(state["box/G_ema"]["main.0.weight"], state["box/G"]["main.0.weight"])
    updates = [strategies.edge_round(e, state, {"box": _images(8, seed=i)}, ["box"], train, ev, round_=2)
               for i, e in enumerate(("e1", "e2"))]
    for update in updates:
        assert check_update(update.groups, state) is None
    new_state, metrics = strategies.cloud_round(state, updates, train, round_=2)
    ema = new_state["box/G_ema"]
    assert not torch.equal(ema["main.0.weight"], new_state["box/G"]["main.0.weight"])
    assert strategies.deploy_groups(new_state, "box")["box/G"] is ema
    deployed = strategies.load_generator(new_state, "box", train)
    assert torch.equal(deployed.state_dict()["main.0.weight"], ema["main.0.weight"])
    assert "box.cloud_g_loss" in metrics


def test_cloud_steps_continue_the_averaged_ema():
    torch.manual_seed(0)
    g, d = Generator(8, 4, 16), Discriminator(4, 16)
    start = {k: v + 1.0 if v.is_floating_point() else v for k, v in g.state_dict().items()}
    new_g, _, ema = train_generator(g, d, steps=1, batch_size=4, lr=1e-2, seed=0,
                                    recipe=Recipe(ema_decay=0.5), ema_start=start)
    key = "main.0.weight"
    assert torch.allclose(ema[key], 0.5 * start[key] + 0.5 * new_g[key], atol=1e-6)


# --- device and precision ----------------------------------------------------------------------


def test_auto_device_is_the_cpu_without_a_gpu_and_cuda_without_one_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert strategies.training_device(TrainSpec()) == "cpu"
    assert "cpu" in strategies.describe_device(TrainSpec(amp="bf16"))
    with pytest.raises(RuntimeError, match="train.device is 'cuda' but this process sees no GPU"):
        strategies.training_device(TrainSpec(device="cuda"))
    assert strategies.training_device(TrainSpec(device="cuda"), strict=False) == "cpu"  # the cloud's G steps


def test_half_precision_tensors_travel_as_float32():
    flat = pack({"t/G": {"w": torch.ones(2, dtype=torch.bfloat16), "n": torch.tensor(3)},
                 "stats": {"s": torch.ones(2, dtype=torch.float64)}})
    assert flat["t/G/w"].dtype == torch.float32 and flat["t/G/n"].dtype == torch.int64
    assert flat["stats/s"].dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("amp", ["off", "bf16", "fp16"])
def test_training_on_cuda_returns_float32_cpu_weights(amp):
    g, d = Generator(8, 4, 16), Discriminator(4, 16)
    result = train_local(g, d, _images(), steps=2, batch_size=4, lr=1e-3, seed=0,
                         recipe=Recipe(augment=POLICY, device="cuda", amp=amp, ema_decay=0.9))
    for state in (result.generator, result.discriminator, result.generator_ema):
        for tensor in state.values():
            assert tensor.device.type == "cpu"
            assert tensor.dtype in (torch.float32, torch.int64)


def test_a_pipeline_run_with_ema_registers_the_ema_generator(demo_edges, tmp_path, capsys):
    from entgan.gan.bundle import load_bundle
    from entgan.job.spec import parse_job
    from entgan.steps.common import load_state
    from tests.steps_driver import drive

    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2"])
    data["state_dir"] = str(tmp_path / "state")
    data["train"].update(rounds=1, ema_decay=0.9)
    out = drive(parse_job(data), tmp_path / "work")
    assert out.error is None, out.error
    state = load_state(str(tmp_path / "work" / "state-1"))
    t = next(iter(out.summary["types"]))
    registered = load_bundle(tmp_path / "work" / "samples" / t / "model.safetensors").groups()
    key = "main.0.weight"
    assert not torch.equal(state[f"{t}/G_ema"][key], state[f"{t}/G"][key])
    assert torch.equal(registered[f"{t}/G"][key], state[f"{t}/G_ema"][key])
    assert "training on cpu (CPU, float32)" in capsys.readouterr().out


def test_warm_start_rule_picks_a_close_parent_and_scratch_for_a_far_one():
    from entgan.evaluation.features import FeatureStats
    from entgan.steps.plan import WARM_START_MAX_RELATIVE, warm_start_parent

    def stats(center):  # a tight cloud of 2-d features around `center`
        x = torch.tensor(center, dtype=torch.float64) + 0.01 * torch.randn(50, 2, dtype=torch.float64)
        return FeatureStats(x.sum(0), x.T @ x, 50)

    torch.manual_seed(0)
    known = {"a": stats([0.0, 0.0]), "b": stats([10.0, 0.0]), "c": stats([0.0, 10.0])}
    parent, _, relative, warm = warm_start_parent(stats([0.5, 0.0]), known)
    assert (parent, warm) == ("a", True) and relative < WARM_START_MAX_RELATIVE
    parent, _, relative, warm = warm_start_parent(stats([5.0, 5.0]), known)
    assert not warm and relative > WARM_START_MAX_RELATIVE
    assert warm_start_parent(stats([0.1, 0.0]), {"a": known["a"]})[2:] == (None, False)  # no scale: scratch


def test_the_library_default_deploys_the_ema_generator():
    """Issue 16: what wins in the ablation is the library's default too (docs/training-recipe.md)."""
    train = TrainSpec(rounds=1, local_steps=2, batch_size=4, image_size=16, width=4, latent_dim=8)
    assert train.ema_decay == 0.99
    state = strategies.initial_state(["box"], train, EvalSpec(feature_steps=1, feature_dim=8))
    assert "box/G_ema" in state
    assert strategies.deploy_groups(state, "box")["box/G"] is state["box/G_ema"]


def test_a_run_from_a_champion_scores_that_champion_as_its_before(demo_edges, tmp_path):
    """With the EMA on, the G that stands for a type is `<type>/G_ema`: a run that starts from the
    champion must start its EMA there too, or the gate compares with an untrained G (seen in
    `make lifelong`: the champion read FID 10 and C2ST 1.00 on its second run)."""
    from entgan.gan.bundle import load_bundle
    from entgan.steps.common import load_state
    from tests.steps_driver import drive

    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2"])
    data["state_dir"] = str(tmp_path / "state")
    data["train"].update(rounds=1, ema_decay=0.9)
    job = parse_job(data)
    first = drive(job, tmp_path / "work-1", kfp_run_id="run-1")
    assert first.error is None, first.error
    second = drive(job, tmp_path / "work-2", kfp_run_id="run-2")
    assert second.error is None, second.error
    t = next(iter(first.summary["types"]))
    champion = load_bundle(tmp_path / "work-1" / "samples" / t / "model.safetensors").groups()[f"{t}/G"]
    start = load_state(str(tmp_path / "work-2" / "state-0"))
    for key in (f"{t}/G", f"{t}/G_ema"):
        assert all(torch.equal(start[key][k], champion[k]) for k in champion), key
