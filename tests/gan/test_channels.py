"""1-channel models: G, D and the feature network sized by `channels` (3 stays the default, so
bundles saved before load as they are), the bundle's saved TrainSpec deciding the architecture,
grayscale PNGs (8- and 16-bit) from the sampling path, DiffAugment's colour op on grey images."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from entgan.gan import strategies
from entgan.gan.augment import color, diff_augment
from entgan.gan.bundle import Bundle, BundleHeader, pack
from entgan.gan.models import Discriminator, FeatureNet, Generator, feature_net_channels
from entgan.gan.sampling import bundle_bits, generator_from_bundle, png_bytes, pngs, sample_batches
from entgan.gan.train import Recipe, train_local
from entgan.job.spec import EvalSpec, TrainSpec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.mark.parametrize("channels", [1, 3])
def test_models_take_and_make_images_of_their_channel_count(channels):
    g, d = Generator(8, 4, 16, channels=channels), Discriminator(4, 16, channels=channels)
    images = g(torch.randn(2, 8))
    assert images.shape == (2, channels, 16, 16)
    assert d(images).shape == (2,)
    sn = Discriminator(4, 16, spectral_norm=True, channels=channels)
    assert sn(images).shape == (2,)
    net = FeatureNet(3, 8, 16, channels=channels)
    assert net(images).shape == (2, 3) and feature_net_channels(net.state_dict()) == channels


def test_three_channels_stay_the_default_and_other_counts_are_refused():
    assert Generator(8, 4, 16)(torch.randn(1, 8)).shape[1] == 3
    assert Generator(8, 4, 16).state_dict().keys() == Generator(8, 4, 16, channels=1).state_dict().keys()
    with pytest.raises(ValueError, match="channels must be 1"):
        Generator(8, 4, 16, channels=2)


def test_the_job_s_resolved_channels_build_every_network():
    train = TrainSpec(latent_dim=8, width=4, image_size=16, channels=1)
    state = strategies.initial_state(["box"], train, EvalSpec(feature_dim=8))
    assert strategies.load_generator(state, "box", train).sample(2).shape == (2, 1, 16, 16)
    assert feature_net_channels(state[strategies.FEATURES]) == 1
    assert state["box/D"]["main.0.weight"].shape[1] == 1


def test_a_1_channel_pair_trains(tmp_path):
    g, d = Generator(8, 4, 16, channels=1), Discriminator(4, 16, channels=1)
    real = torch.rand(16, 1, 16, 16) * 2 - 1
    result = train_local(g, d, real, steps=2, batch_size=4, lr=1e-3, seed=0,
                         recipe=Recipe(augment=("color", "translation", "cutout"), ema_decay=0.9))
    Generator(8, 4, 16, channels=1).load_state_dict(result.generator)
    Discriminator(4, 16, channels=1).load_state_dict(result.discriminator)
    assert np.isfinite(result.d_loss) and np.isfinite(result.g_loss)


def _bundle(train: dict | None, channels: int, bits: int | None = None) -> Bundle:
    torch.manual_seed(0)
    g = Generator(8, 4, 16, channels=channels)
    extra = {"data_type": "box", **({"train": train} if train is not None else {}),
             **({"bits": bits} if bits else {})}
    return Bundle(BundleHeader(kind="model", extra=extra), pack({"box/G": g.state_dict()}))


def test_the_bundle_s_saved_train_spec_decides_the_channels():
    fallback = TrainSpec(latent_dim=8, width=4, image_size=16)
    gray = generator_from_bundle(_bundle({"latent_dim": 8, "width": 4, "image_size": 16, "channels": 1}, 1),
                                 "box", fallback)
    assert gray.sample(1).shape == (1, 1, 16, 16)
    # Saved before channels existed: RGB, whatever the job says now.
    old = generator_from_bundle(_bundle({"latent_dim": 8, "width": 4, "image_size": 16}, 3), "box",
                                fallback.model_copy(update={"channels": 1}))
    assert old.sample(1).shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="do not fit"):  # a 1-channel G under a header that says 3
        generator_from_bundle(_bundle({"latent_dim": 8, "width": 4, "image_size": 16, "channels": 3}, 1), "box",
                              fallback)
    assert bundle_bits(_bundle(None, 1, bits=16)) == 16 and bundle_bits(_bundle(None, 1)) == 8


def test_grayscale_pngs_read_back_as_L_and_I16_with_their_values():
    g = Generator(8, 4, 16, channels=1)
    eight = next(sample_batches(g, 3, seed=1))
    sixteen = next(sample_batches(g, 3, seed=1, bits=16))
    assert eight.shape == (3, 16, 16, 1) and eight.dtype == np.uint8 and sixteen.dtype == np.uint16
    for pixels, mode in ((eight, "L"), (sixteen, "I;16")):
        for data, expected in zip(pngs(pixels), pixels):
            with Image.open(BytesIO(data)) as img:
                assert img.mode == mode and img.size == (16, 16)
                assert np.array_equal(np.asarray(img), expected[..., 0])
    # the 16-bit file keeps what 8 bits round away: same images, 257x finer steps
    assert np.abs(sixteen.astype(np.int64) - eight.astype(np.int64) * 257).max() <= 128
    rgb = next(sample_batches(Generator(8, 4, 16), 1, seed=1))
    with Image.open(BytesIO(png_bytes(rgb[0]))) as img:
        assert img.mode == "RGB"  # colour is unchanged
    with pytest.raises(ValueError, match="pngs"):
        next(pngs(np.zeros((1, 4, 4, 3), np.uint16)))


def test_colour_augmentation_keeps_grey_images_grey_and_skips_saturation():
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    rng, reference = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = color(x, rng)
    assert out.shape == x.shape
    brightness, contrast = torch.rand(4, 1, 1, 1, generator=reference), torch.rand(4, 1, 1, 1, generator=reference)
    shifted = x + (brightness - 0.5)
    mean = shifted.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out, (shifted - mean) * (contrast + 0.5) + mean)  # two draws: no saturation draw
    assert diff_augment(x, ("color", "translation", "cutout"), rng).shape == x.shape


def test_one_channel_saves_the_first_and_last_layers_compute():
    """FLOPs of one D+G step's forward and backward at the demo settings (width 32, batch 16, 32 px)."""
    def step_flops(channels: int) -> int:
        g, d = Generator(64, 32, 32, channels=channels), Discriminator(32, 32, channels=channels)
        with FlopCounterMode(display=False) as counter:
            fake = g(torch.randn(16, 64))
            (d(torch.rand(16, channels, 32, 32)).mean() + d(fake.detach()).mean()).backward()
            d(fake).mean().backward()
        return counter.get_total_flops()

    rgb, gray = step_flops(3), step_flops(1)
    # Only G's last and D's first layer see the image channels; the rest of the step is the same.
    g_last = 2 * 16 * 32 * 32 * 32 * 4 * 4 // 4  # per image channel: 32 maps -> 1 map at 32 px (stride 2)
    assert 0.5 < gray / rgb < 1
    assert (rgb - gray) % 2 == 0 and rgb - gray > 2 * g_last
