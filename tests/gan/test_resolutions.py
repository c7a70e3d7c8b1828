"""Robot-camera resolutions: G, D and the evaluation networks at every power of two from 16 to
256, one training step at 128 px, and a 128-px job that compiles and trains one round."""

import json

import pytest
import torch
import yaml

from entgan.gan.models import WIDTH_CAP, Discriminator, FeatureNet, Generator, channels_at
from entgan.gan.train import Recipe, train_local
from entgan.job.spec import JobError, parse_job
from pipelines.entgan_pipeline import compile_job
from tests.conftest import tiny_job_dict
from tests.steps_driver import drive

SIZES = (16, 32, 64, 128, 256)


@pytest.mark.parametrize("size", SIZES)
def test_generator_discriminator_and_feature_net_shapes(size):
    g, d = Generator(latent_dim=8, width=4, image_size=size), Discriminator(width=4, image_size=size)
    images = g(torch.randn(2, 8))
    assert images.shape == (2, 3, size, size)
    assert d(images).shape == (2,)
    assert Discriminator(width=4, image_size=size, spectral_norm=True)(images).shape == (2,)
    net = FeatureNet(num_classes=3, feature_dim=8, image_size=size)
    assert net.embed(images).shape == (2, 8) and net(images).shape == (2, 3)


@pytest.mark.parametrize("size", SIZES)
def test_depth_grows_one_block_per_doubling_and_width_is_capped(size):
    width = 4
    g, d = Generator(8, width, size), Discriminator(width, size)
    g_convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    d_convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    blocks = size.bit_length() - 3  # log2(size) - 2
    assert len(g_convs) == len(d_convs) == blocks + 1
    widest = max(m.out_channels for m in g_convs)
    assert widest == width * min(WIDTH_CAP, size // 8)
    assert g_convs[-2].out_channels == width  # the last hidden layer has `width` channels
    assert channels_at(size // 2, size, width) == width


def test_one_training_step_at_128_px_on_cpu():
    g, d = Generator(8, 4, 128), Discriminator(4, 128, spectral_norm=True)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    images = torch.rand(4, 3, 128, 128) * 2 - 1
    recipe = Recipe(augment=("color", "translation", "cutout"), loss="hinge", ema_decay=0.9)
    result = train_local(g, d, images, steps=1, batch_size=4, lr=1e-3, seed=0, recipe=recipe)
    assert result.generator["main.0.weight"].shape == before["main.0.weight"].shape
    assert not torch.equal(result.generator["main.0.weight"], before["main.0.weight"])
    assert result.generator_ema is not None and torch.isfinite(torch.tensor(result.g_loss))


@pytest.mark.parametrize("size", [0, 12, 48, 1024])
def test_image_size_must_be_a_power_of_two(size, tmp_path):
    data = tiny_job_dict(tmp_path, ["edge-1"])
    data["train"]["image_size"] = size
    with pytest.raises(JobError, match=r"train.image_size: image_size is .*power of two"):
        parse_job(data)


def test_a_128_px_job_compiles_and_trains_one_round_on_cpu(demo_edges, tmp_path):
    data = tiny_job_dict(demo_edges, ["edge-1", "edge-2"])
    data["state_dir"] = str(tmp_path / "state")
    data["train"].update(image_size=128, width=4, rounds=1, local_steps=1, cloud_steps=1, batch_size=4,
                         augment="translation,cutout", spectral_norm=True, loss="hinge", ema_decay=0.9)
    data["eval"].update(num_generated=16, cas_steps=2, cas_seeds=1, feature_steps=1)
    job = parse_job(data)
    pipeline_doc = next(yaml.safe_load_all(compile_job(job, tmp_path / "p.yaml").read_text()))
    default = pipeline_doc["root"]["inputDefinitions"]["parameters"]["job_json"]["defaultValue"]
    assert parse_job(json.loads(default)).train == job.train  # image_size 128 and the recipe travel
    out = drive(job, tmp_path / "work")
    assert out.error is None, out.error
    assert out.summary is not None
