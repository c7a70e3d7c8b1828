"""The light few-shot architecture (`train.architecture: light`, entgan.gan.fastgan) and the lean
D (`train.d_width`): shapes, what the self-supervised D adds to D's step, how FedAvg treats the new
state, and that a bundle's saved train spec rebuilds the right G."""

from __future__ import annotations

import pytest
import torch

from entgan.gan import strategies
from entgan.gan.aggregate import fedavg
from entgan.gan.bundle import Bundle, BundleHeader, pack
from entgan.gan.fastgan import LightDiscriminator, LightGenerator
from entgan.gan.models import Discriminator, Generator
from entgan.gan.sampling import generator_from_bundle
from entgan.gan.train import train_local
from entgan.job.spec import EvalSpec, TrainSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
TINY = {"latent_dim": 8, "width": 4, "image_size": 16, "batch_size": 4, "local_steps": 2, "ema_decay": None}


@pytest.mark.parametrize("image_size", [16, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_light_g_and_d_take_and_make_images_of_their_size(image_size, channels):
    g, d = LightGenerator(8, 4, image_size, channels=channels), LightDiscriminator(4, image_size, channels=channels)
    images = g(torch.randn(2, 8))
    assert images.shape == (2, channels, image_size, image_size) and images.abs().max() <= 1
    logits, reconstruction = d.logits_and_reconstruction(images)
    assert d(images).shape == logits.shape == (2,) and reconstruction.ndim == 0 and reconstruction >= 0
    assert torch.equal(d(images), logits)  # one pass through D gives the logit D's plain call gives
    assert len(g.excite) == len([r for r in (4, 8, 16, 32) if 4 * r <= image_size // 2])  # SLE r -> 4r


def test_light_d_needs_a_map_to_decode():
    with pytest.raises(ValueError, match="image_size >= 16"):
        LightDiscriminator(4, 8)


def test_the_job_s_architecture_and_d_width_build_the_networks():
    light = TrainSpec(**TINY, architecture="light", d_width=8)
    assert isinstance(strategies.new_generator(light), LightGenerator)
    d = strategies.new_discriminator(light)
    assert isinstance(d, LightDiscriminator) and d.to_8[0].out_channels == 8  # D's width, not G's
    plain = TrainSpec(**TINY)
    assert isinstance(strategies.new_generator(plain), Generator)
    assert isinstance(strategies.new_discriminator(plain), Discriminator)
    assert strategies.new_discriminator(TrainSpec(**TINY, d_width=8)).main[0].out_channels == 8


def test_the_self_supervised_d_learns_to_reconstruct_real_images():
    """D's step adds the reconstruction loss on real images: after training, the decoder
    reconstructs them better than at the start, and a plain DCGAN D has no such term."""
    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32) * 2 - 1  # 32 px: G has an SLE gate (4 -> 16)
    g, d = LightGenerator(8, 4, 32), LightDiscriminator(4, 32)
    before = d.logits_and_reconstruction(images)[1].item()
    result = train_local(g, d, images, steps=40, batch_size=8, lr=2e-3)
    d.load_state_dict(result.discriminator)
    assert d.logits_and_reconstruction(images)[1].item() < before
    assert any(k.startswith("decoder.") for k in result.discriminator)  # the decoder travels inside <type>/D
    assert any(k.startswith("excite.") for k in result.generator)  # and the SLE gates inside <type>/G


def test_fedavg_averages_the_new_state_by_key():
    a, b = LightDiscriminator(4, 16).state_dict(), LightDiscriminator(4, 16).state_dict()
    avg = fedavg([(a, 1), (b, 3)])
    key = "decoder.3.weight"
    assert torch.allclose(avg[key], 0.25 * a[key] + 0.75 * b[key])


def test_an_edge_round_and_the_cloud_train_the_light_architecture():
    train = TrainSpec(**TINY, architecture="light", d_width=8, rounds=1)
    evaluation = EvalSpec(feature_steps=1, feature_dim=8)
    state = strategies.initial_state(["box"], train, evaluation)
    data = {"box": torch.rand(8, 3, 16, 16) * 2 - 1}
    update = strategies.edge_round("edge-1", state, data, ["box"], train, evaluation, round_=1)
    assert update.losses["box"]["steps"] == train.local_steps and update.losses["box"]["train_cpu_s"] >= 0
    new_state, _ = strategies.cloud_round(state, [update], train, round_=1)
    assert isinstance(strategies.load_generator(new_state, "box", train), LightGenerator)


def test_the_bundle_s_saved_architecture_rebuilds_the_right_g():
    light = TrainSpec(**TINY, architecture="light")
    g = strategies.new_generator(light)
    bundle = Bundle(BundleHeader(kind="model", extra={"train": light.model_dump()}), pack({"box/G": g.state_dict()}))
    rebuilt = generator_from_bundle(bundle, "box", TrainSpec(**TINY))  # the job now says dcgan: the bundle wins
    assert isinstance(rebuilt, LightGenerator)
    old = Bundle(BundleHeader(kind="model", extra={"train": {"width": 4, "latent_dim": 8, "image_size": 16}}),
                 pack({"box/G": Generator(8, 4, 16).state_dict()}))
    assert isinstance(generator_from_bundle(old, "box", light), Generator)  # saved before: a DCGAN
