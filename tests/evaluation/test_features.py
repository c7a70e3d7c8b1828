import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from entgan.evaluation.features import feature_stats, fid_from_stats, image_grid, merge_stats
from entgan.gan.models import FeatureExtractor, FeatureNet


@pytest.fixture
def net():
    torch.manual_seed(0)
    return FeatureNet(num_classes=3, feature_dim=6, image_size=8).eval()


def _images(n, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 3, 8, 8, generator=g) * 2 - 1 + shift).clamp(-1, 1)


def test_merged_edge_stats_equal_stats_of_the_union(net):
    a, b = _images(20, seed=1), _images(30, seed=2)
    merged = merge_stats([feature_stats(net, a), feature_stats(net, b)])
    whole = feature_stats(net, torch.cat([a, b]))
    assert merged.count == 50
    assert torch.allclose(merged.total, whole.total) and torch.allclose(merged.outer, whole.outer)


def test_fid_from_edge_stats_matches_torchmetrics_on_raw_images(net):
    real, fake = _images(40, seed=3), _images(40, shift=0.5, seed=4)
    reference = FrechetInceptionDistance(feature=FeatureExtractor(net), input_img_size=(3, 8, 8))
    reference.update(real, real=True)
    reference.update(fake, real=False)
    ours = fid_from_stats(net, merge_stats([feature_stats(net, real[:15]), feature_stats(net, real[15:])]), fake)
    assert ours == pytest.approx(float(reference.compute()), rel=1e-4)


def test_fid_ranks_closer_distributions_lower(net):
    real = feature_stats(net, _images(200, seed=5))
    same = fid_from_stats(net, real, _images(200, seed=6))
    shifted = fid_from_stats(net, real, _images(200, shift=0.8, seed=7))
    assert same < shifted


def test_fid_needs_real_images(net):
    with pytest.raises(ValueError, match="at least 2 real held-out images"):
        fid_from_stats(net, feature_stats(net, _images(1)), _images(4))


def test_image_grid_layout():
    grid = image_grid(torch.zeros(10, 3, 8, 8), columns=4, scale=2, pad=1)
    assert grid.size == ((4 * 9 + 1) * 2, (3 * 9 + 1) * 2)


def test_image_grid_places_tiles_on_white_and_keeps_short_rows_full_width():
    import numpy as np

    black, grey = torch.full((1, 3, 4, 4), -1.0), torch.zeros(1, 3, 4, 4)
    grid = np.asarray(image_grid(torch.cat([black, grey]), columns=3, scale=1, pad=1))
    assert grid.shape == (1 * 5 + 1, 3 * 5 + 1, 3)  # 3 columns although only 2 images
    assert (grid[1:5, 1:5] == 0).all() and (grid[1:5, 6:10] == 128).all()  # tiles in order, row-major
    assert (grid[0] == 255).all() and (grid[:, 5] == 255).all()  # padding is white
    assert (grid[1:5, 11:15] == 255).all()  # the missing third tile is blank (white)
