"""Evaluation on 1-channel images: C2ST's classifier, KID's random features, the CAS classifier
and the sample grid take the images' channel count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from entgan.evaluation.features import image_grid
from entgan.evaluation.precision_recall_cas import cas_counts, train_cas_classifier
from entgan.evaluation.two_sample import RandomFeatures, c2st_edge_part, feature_spaces, kid_edge_part
from entgan.gan.models import FeatureNet, Generator

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _grey(n: int, seed: int, size: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_c2st_runs_on_1_channel_images_and_tells_a_shifted_set_apart():
    real, fakes = _grey(24, 0), _grey(48, 1) * 0.2 + 0.6  # fakes: bright and flat
    counts = c2st_edge_part(real[:8], fakes, seed=0, steps=30, train_images=real[8:])
    assert counts.total == 16 and counts.correct >= 12
    with pytest.raises(ValueError, match="C = 1 or 3"):
        c2st_edge_part(torch.zeros(8, 2, 16, 16), torch.zeros(8, 2, 16, 16))


def test_kid_random_features_take_the_channel_count():
    grey = RandomFeatures(0, channels=1)
    assert grey(_grey(4, 0)).shape == (4, grey.num_features) == (4, RandomFeatures(0).num_features)
    assert torch.equal(grey(_grey(4, 0)), RandomFeatures(0, channels=1)(_grey(4, 0)))  # seeded: same everywhere
    parts = kid_edge_part(_grey(4, 2), feature_spaces(FeatureNet(2, 8, 16, channels=1), channels=1))
    assert set(parts) == {"random", "domain"} and parts["domain"].shape == (4, 8)


def test_cas_classifier_trains_on_1_channel_generators_and_checks_their_shape():
    generators = {t: Generator(8, 4, 16, channels=1) for t in ("box", "pillar")}
    classifier = train_cas_classifier(generators, ["box", "pillar"], image_size=16, steps=2, batch_size=4,
                                      feature_dim=8, channels=1)
    assert classifier.image_channels == 1
    assert cas_counts(classifier, _grey(5, 3), 0)[1] == 5
    with pytest.raises(ValueError, match=r"expected \(3, 16, 16\)"):
        train_cas_classifier(generators, ["box", "pillar"], image_size=16, steps=1, batch_size=2)


def test_a_grey_sample_grid_is_grey():
    picture = image_grid(_grey(8, 4), columns=4, scale=1)
    pixels = np.asarray(picture)
    assert picture.mode == "RGB"
    assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()
