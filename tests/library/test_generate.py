from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from entgan.gan.bundle import Bundle, BundleHeader, pack, save_bundle
from entgan.gan.models import Discriminator, Generator
from entgan.gan.sampling import generator_from_bundle
from entgan.job.spec import TrainSpec
from entgan.library.generate import NoChampionError, generate_from_library, generate_images
from entgan.library.registry import TaskLibrary

TRAIN = TrainSpec(image_size=16, width=8, latent_dim=8)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _generator(train: TrainSpec = TRAIN, seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(train.latent_dim, train.width, train.image_size)


def _pixels(paths: list[Path]) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in paths]


# ---------------------------------------------------------------- one generator


def test_images_are_written_in_image_folder_layout(tmp_path):
    # Execute: 7 images in batches of 3, numbered from 5
    paths = generate_images(_generator(), 7, tmp_path, "box", seed=1, batch_size=3, start_index=5)

    # Assert
    assert [p.name for p in paths] == [f"box-{i:06d}.png" for i in range(5, 12)]
    assert sorted((tmp_path / "box").iterdir()) == paths
    for path in paths:
        with Image.open(path) as img:
            assert (img.format, img.mode, img.size) == ("PNG", "RGB", (16, 16))


def test_images_match_the_generator_in_eval_mode(tmp_path):
    # Prepare
    generator = _generator().train()

    # Execute
    paths = generate_images(generator, 4, tmp_path, "box", seed=3)

    # Assert: the files hold the generator's own eval-mode samples, and its mode is kept
    expected = generator.sample(4, generator=torch.Generator().manual_seed(3))
    written = torch.from_numpy(np.stack(_pixels(paths))).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.allclose(written, expected, atol=1 / 127.5 + 1e-6)
    assert generator.training


def test_the_same_seed_gives_the_same_images(tmp_path):
    generator = _generator()

    first = _pixels(generate_images(generator, 5, tmp_path / "a", "box", seed=7, batch_size=2))
    again = _pixels(generate_images(generator, 5, tmp_path / "b", "box", seed=7, batch_size=2))
    other = _pixels(generate_images(generator, 5, tmp_path / "c", "box", seed=8, batch_size=2))

    assert all(np.array_equal(x, y) for x, y in zip(first, again))
    assert not any(np.array_equal(x, y) for x, y in zip(first, other))


def test_zero_images_and_bad_arguments(tmp_path):
    assert generate_images(_generator(), 0, tmp_path, "box") == []
    with pytest.raises(ValueError, match="cannot be a folder name"):
        generate_images(_generator(), 1, tmp_path, "../box")
    with pytest.raises(ValueError, match="batch_size >= 1"):
        generate_images(_generator(), 1, tmp_path, "box", batch_size=0)


# ---------------------------------------------------------------- rebuilding from a bundle


def test_a_bundle_without_train_spec_falls_back_to_the_callers():
    # Prepare: a bundle written before headers carried the train spec
    original = _generator(seed=5)
    bundle = Bundle(BundleHeader(kind="model"), pack({"box/G": original.state_dict()}))

    # Execute
    rebuilt = generator_from_bundle(bundle, "box", TRAIN)

    # Assert
    assert not rebuilt.training
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in rebuilt.state_dict().items())


def test_a_bundle_of_another_type_or_shape_is_refused():
    bundle = Bundle(BundleHeader(kind="model"), pack({"box/G": _generator().state_dict()}))

    with pytest.raises(ValueError, match="no 'robot/G' weights"):
        generator_from_bundle(bundle, "robot", TRAIN)
    with pytest.raises(ValueError, match="do not fit the generator"):
        generator_from_bundle(bundle, "box", TrainSpec(image_size=16, width=16, latent_dim=8))


# ---------------------------------------------------------------- from the task library


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[str, str]:
    """One embedded MLflow store (SQLite + file artifacts) for the whole module."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def _library(store, job: str) -> TaskLibrary:
    tracking_uri, artifact_root = store
    return TaskLibrary(tracking_uri, job, artifact_root)


def _deploy(library: TaskLibrary, data_type: str, generator: Generator, train: TrainSpec, folder: Path,
            *, promote: bool = True) -> str:
    """Register a version the way steps.step_deploy does; returns its version number."""
    folder.mkdir(parents=True)
    discriminator = Discriminator(train.width, train.image_size)
    groups = {f"{data_type}/G": generator.state_dict(), f"{data_type}/D": discriminator.state_dict()}
    header = BundleHeader(kind="model", extra={"data_type": data_type, "train": train.model_dump()})
    save_bundle(folder / "model.safetensors", pack(groups), header)
    run_id = library.start_run(f"test-{folder.name}", {}, {})
    library.log_files(run_id, folder, f"tasks/{data_type}")
    version = library.register(data_type, run_id, f"tasks/{data_type}", {})
    if promote:
        library.set_champion(data_type, version.version)
    return version.version


def test_a_newly_promoted_champion_is_used_by_the_next_call(store, tmp_path):
    # Prepare
    library = _library(store, "swap")
    first, second = _generator(seed=1), _generator(seed=2)
    _deploy(library, "box", first, TRAIN, tmp_path / "v1")

    # Execute: generate, promote a second version, generate again with the same library object
    before = generate_from_library(library, TRAIN, ["box"], 3, tmp_path / "out1", seed=0)
    _deploy(library, "box", second, TRAIN, tmp_path / "v2")
    after = generate_from_library(library, TRAIN, ["box"], 3, tmp_path / "out2", seed=0)

    # Assert: each call used the champion of its moment
    direct = {
        "first": _pixels(generate_images(first, 3, tmp_path / "d1", "box", seed=0)),
        "second": _pixels(generate_images(second, 3, tmp_path / "d2", "box", seed=0)),
    }
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(before["box"]), direct["first"]))
    assert all(np.array_equal(x, y) for x, y in zip(_pixels(after["box"]), direct["second"]))
    assert not any(np.array_equal(x, y) for x, y in zip(direct["first"], direct["second"]))


def test_the_generator_is_rebuilt_from_the_registered_train_spec(store, tmp_path):
    # Prepare: the champion was trained at 8 px; the caller's spec says 16 px
    library = _library(store, "shape")
    small = TrainSpec(image_size=8, width=4, latent_dim=4)
    _deploy(library, "table", _generator(small), small, tmp_path / "v1")

    # Execute
    paths = generate_from_library(library, TRAIN, ["table"], 2, tmp_path / "out")["table"]

    # Assert
    assert [Image.open(p).size for p in paths] == [(8, 8), (8, 8)]


def test_all_types_means_every_type_with_a_champion(store, tmp_path):
    # Prepare: box and robot are deployed; table only has a rejected version; an evaluator exists
    library = _library(store, "all")
    _deploy(library, "box", _generator(seed=1), TRAIN, tmp_path / "box")
    _deploy(library, "robot", _generator(seed=2), TRAIN, tmp_path / "robot")
    _deploy(library, "table", _generator(seed=3), TRAIN, tmp_path / "table", promote=False)
    _deploy(library, "evaluator", _generator(seed=4), TRAIN, tmp_path / "evaluator")

    # Execute
    out = generate_from_library(library, TRAIN, None, 2, tmp_path / "out")

    # Assert
    assert sorted(out) == ["box", "robot"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["box", "robot"]
    assert all(len(paths) == 2 for paths in out.values())


def test_a_type_without_champion_is_named_and_nothing_is_written(store, tmp_path):
    # Prepare
    library = _library(store, "missing")
    _deploy(library, "box", _generator(), TRAIN, tmp_path / "box")

    # Execute / Assert
    expected = "type 'pillar' has no champion in entgan-missing-pillar yet; run the job first"
    with pytest.raises(NoChampionError, match=expected):
        generate_from_library(library, TRAIN, ["box", "pillar"], 2, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(LookupError, match="job 'empty' has no champion of any type"):
        generate_from_library(_library(store, "empty"), TRAIN, None, 2, tmp_path / "out")


def test_an_empty_type_list_means_every_type_and_no_empty_dataset_is_recorded(store, tmp_path):
    """`entgan generate` without --type passes []: every type with a champion (issue 26: it wrote
    nothing, exited 0 and recorded a synthetic dataset of zero images)."""
    from entgan.library.lineage import experiment_name, record_synthetic_dataset

    # Prepare
    library = _library(store, "emptylist")
    _deploy(library, "box", _generator(seed=1), TRAIN, tmp_path / "box")
    _deploy(library, "robot", _generator(seed=2), TRAIN, tmp_path / "robot")

    # Execute
    out = generate_from_library(library, TRAIN, [], 2, tmp_path / "out", seed=1)

    # Assert: every champion drew; a dataset of no image is refused, not recorded
    assert {t: len(p) for t, p in out.items()} == {"box": 2, "robot": 2}
    experiment = library.client.get_experiment_by_name(experiment_name("emptylist"))
    before = library.client.search_runs([experiment.experiment_id])
    with pytest.raises(ValueError, match="no image is not recorded"):
        record_synthetic_dataset(library, {}, {"box": []}, 1, (tmp_path / "none").as_uri())
    assert len(library.client.search_runs([experiment.experiment_id])) == len(before) == 1


def test_a_type_kept_out_by_the_gate_says_so_with_the_gates_reasons(store, tmp_path):
    # Prepare: box v1 registered, rejected by the gate (the deploy stage's tags), never promoted
    library = _library(store, "gated")
    version = _deploy(library, "box", _generator(), TRAIN, tmp_path / "box", promote=False)
    library.tag_version("box", version, {"entgan.gate": "rejected", "entgan.gate_reason": "KID 0.30 is above 0.05"})

    # Execute / Assert
    expected = (r"type 'box' has no champion: the job ran and entgan-gated-box v1 was registered but kept out by "
                r"the deploy gate \(KID 0.30 is above 0.05\); train longer")
    with pytest.raises(NoChampionError, match=expected):
        generate_from_library(library, TRAIN, ["box"], 2, tmp_path / "out")
    with pytest.raises(NoChampionError, match="no champion of any type yet: type 'box' has no champion: the job ran"):
        generate_from_library(library, TRAIN, None, 2, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_png_bytes_round_trip_exactly_through_pil():
    from io import BytesIO

    from entgan.gan.sampling import png_bytes

    tile = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)  # odd sizes, all values
    with Image.open(BytesIO(png_bytes(tile))) as img:
        assert (img.format, img.mode, img.size) == ("PNG", "RGB", (7, 5))
        assert np.array_equal(np.asarray(img), tile)


@pytest.mark.parametrize("size", [32, 64])
def test_pngs_are_stored_when_they_fit_one_block_and_compressed_when_not(size):
    """32x32 tiles fit one 4 KiB file-system block uncompressed (compressing them saves no disk
    space, only CPU); 64x64 ones do not and are deflated. Both read back exactly."""
    from io import BytesIO

    from entgan.gan.sampling import BLOCK_BYTES, png_bytes

    tile = np.zeros((size, size, 3), dtype=np.uint8)  # flat halves and a few coloured pixels: compressible
    tile[size // 2 :] = (200, 120, 40)
    tile[::7, ::5] = (9, 250, 77)
    data = png_bytes(tile)
    raw = size * (size * 3 + 1)
    if size == 32:
        assert raw < len(data) <= BLOCK_BYTES  # stored: a little over the raw bytes, one block
    else:
        assert len(data) < raw / 2  # deflated
    with Image.open(BytesIO(data)) as img:
        assert np.array_equal(np.asarray(img), tile)
