"""NYU files in the official layouts (v7.3 HDF5 transposed + v5 splits), their checks, and the other depth sources."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

from shards.tools.nyu import (
    NyuFormatError,
    NyuSplit,
    load_nyu,
    read_nyu_splits,
)
from shards.tools.rgbd import DepthFolder, HfDepthDataset
from shards.tools.testing import write_nyu_labeled, write_nyu_splits

FRAMES = 5
TRAIN_1BASED = [1, 3]
TEST_1BASED = [2, 4, 5]


def _frames(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct frames: images with a per-frame pattern, depths 0.5-9 m, raw depths with holes."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(FRAMES, 480, 640, 3), dtype=np.uint8)
    rows = np.linspace(0.5, 9.0, 480, dtype=np.float32)[:, None]
    depths = np.stack([np.broadcast_to(rows * (0.9 + 0.02 * i), (480, 640)) for i in range(FRAMES)]).copy()
    depths[:, :, :320] *= 0.8  # left and right halves differ, so a transposed read cannot pass
    raw = depths * (rng.random(depths.shape) > 0.1)
    return images, depths.astype(np.float32), raw.astype(np.float32)


@pytest.fixture(scope="module")
def nyu_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, tuple[np.ndarray, ...]]:
    folder = tmp_path_factory.mktemp("nyu")
    arrays = _frames()
    labeled = write_nyu_labeled(folder / "nyu_depth_v2_labeled.mat", *arrays)
    splits = write_nyu_splits(folder / "splits.mat", TRAIN_1BASED, TEST_1BASED)
    return labeled, splits, arrays


def test_written_files_have_the_official_layouts(nyu_files) -> None:
    labeled, splits, _ = nyu_files
    with h5py.File(labeled, "r") as file:  # v7.3: HDF5, transposed as MATLAB stores it
        assert file["images"].shape == (FRAMES, 3, 640, 480)
        assert file["depths"].shape == file["rawDepths"].shape == (FRAMES, 640, 480)
    assert labeled.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    with pytest.raises(NotImplementedError):  # scipy recognises the v7.3 header and refuses, as with the real file
        scipy.io.loadmat(str(labeled))
    variables = scipy.io.loadmat(str(splits))  # v5: scipy reads it, h5py cannot
    assert variables["testNdxs"].shape == (3, 1) and variables["trainNdxs"].ravel().tolist() == TRAIN_1BASED
    with pytest.raises(OSError):
        h5py.File(splits, "r")


@pytest.mark.parametrize(("split", "positions"), [("test", [1, 3, 4]), ("train", [0, 2]), ("all", [0, 1, 2, 3, 4])])
@pytest.mark.parametrize("depth", ["raw", "inpainted"])
def test_load_nyu_round_trips_each_split_and_depth(nyu_files, split: str, positions: list[int], depth: str) -> None:
    labeled, splits, (images, depths, raw) = nyu_files
    frames = load_nyu(labeled, splits, split=split, depth=depth)
    assert frames.indices.tolist() == positions  # 1-based MATLAB numbers -> 0-based frame ids
    assert frames.images.shape == (len(positions), 480, 640, 3) and frames.images.dtype == np.uint8
    assert frames.depths.dtype == np.float32
    np.testing.assert_array_equal(frames.images, images[positions])
    np.testing.assert_array_equal(frames.depths, (raw if depth == "raw" else depths)[positions])
    assert frames.describe()["depth_variable"] == {"raw": "rawDepths", "inpainted": "depths"}[depth]


def test_raw_holes_stay_zero_and_limit_reads_a_prefix(nyu_files) -> None:
    labeled, splits, (_, _, raw) = nyu_files
    frames = load_nyu(labeled, splits, split="test", depth="raw", limit=2)
    assert len(frames) == 2
    assert ((frames.depths == 0) == (raw[[1, 3]] == 0)).all()


def test_split_reader_is_lazy_and_indexable(nyu_files) -> None:
    labeled, splits, (images, _, _) = nyu_files
    with NyuSplit(labeled, splits) as split:
        assert len(split) == 3
        frame = split[2]
        assert frame.index == 4 and frame.name == "nyu_0004"
        np.testing.assert_array_equal(frame.image, images[4])


def _write_h5(path: Path, **arrays: np.ndarray) -> Path:
    with h5py.File(path, "w") as file:
        for name, values in arrays.items():
            file.create_dataset(name, data=values)
    return path


def test_non_transposed_images_are_refused(tmp_path: Path, nyu_files) -> None:
    _, splits, (images, depths, raw) = nyu_files
    path = _write_h5(tmp_path / "natural.mat", images=images, depths=depths.transpose(0, 2, 1), rawDepths=raw)
    with pytest.raises(NyuFormatError, match="non-transposed N x H x W x 3"):
        load_nyu(path, splits)


def test_non_transposed_depths_are_refused(tmp_path: Path, nyu_files) -> None:
    _, splits, (images, depths, raw) = nyu_files
    path = _write_h5(tmp_path / "natural.mat", images=images.transpose(0, 3, 2, 1), depths=depths, rawDepths=raw)
    with pytest.raises(NyuFormatError, match="non-transposed N x H x W"):
        load_nyu(path, splits, depth="inpainted")


def test_millimetres_are_refused(tmp_path: Path, nyu_files) -> None:
    _, splits, (images, depths, raw) = nyu_files
    path = write_nyu_labeled(tmp_path / "mm.mat", images, depths * 1000, raw * 1000)
    with pytest.raises(NyuFormatError, match="looks like millimetres"):
        load_nyu(path, splits)


def test_missing_variable_is_named(tmp_path: Path, nyu_files) -> None:
    _, splits, (images, depths, _) = nyu_files
    path = _write_h5(tmp_path / "noraw.mat", images=images.transpose(0, 3, 2, 1), depths=depths.transpose(0, 2, 1))
    with pytest.raises(NyuFormatError, match="no variable 'rawDepths'"):
        load_nyu(path, splits, depth="raw")
    assert len(load_nyu(path, splits, depth="inpainted")) == 3


def test_a_v5_labeled_file_is_refused_with_the_reason(tmp_path: Path, nyu_files) -> None:
    _, splits, _ = nyu_files
    path = tmp_path / "v5.mat"
    scipy.io.savemat(str(path), {"images": np.zeros((2, 2))})
    with pytest.raises(NyuFormatError, match="not an HDF5 \\(MATLAB v7.3\\)"):
        load_nyu(path, splits)


@pytest.mark.parametrize(
    ("train", "test", "message"),
    [([1, 3], [2, 9], "refers to frame 9"), ([1, 2], [2, 4], "share frames"), ([0, 1], [2], "1-based")],
)
def test_bad_splits_are_refused(tmp_path: Path, train: list[int], test: list[int], message: str) -> None:
    path = write_nyu_splits(tmp_path / "splits.mat", train, test)
    with pytest.raises(NyuFormatError, match=message):
        read_nyu_splits(path, frame_count=FRAMES)


def test_split_needs_a_splits_file(nyu_files) -> None:
    labeled, _, _ = nyu_files
    with pytest.raises(ValueError, match="splits.mat"):
        load_nyu(labeled, None, split="test")


# ------------------------------------------------------------------------------------------ other sources


def test_depth_folder_reads_scaled_16_bit_depth(tmp_path: Path) -> None:
    from shards.tools.scenes import render_scene, write_scene_folder

    write_scene_folder(tmp_path, count=2, seed=5, width=64, height=48, depth_scale=1000.0, holes=True)
    folder = DepthFolder(tmp_path, depth_scale=1000.0)
    assert len(folder) == 2
    frame = folder[1]
    scene = render_scene(6, width=64, height=48, holes=True)  # write_scene_folder numbers scenes from its seed
    assert frame.image.shape == (48, 64, 3) and frame.depth.dtype == np.float32
    np.testing.assert_allclose(frame.depth[scene.valid], scene.depth[scene.valid], atol=0.5e-3 + 1e-6)
    assert (frame.depth[~scene.valid] == 0).all()


def test_depth_folder_with_the_wrong_scale_is_refused(tmp_path: Path) -> None:
    from shards.tools.scenes import write_scene_folder

    write_scene_folder(tmp_path, count=1, seed=0, width=64, height=48, depth_scale=1000.0)
    with pytest.raises(NyuFormatError, match="millimetres"):
        DepthFolder(tmp_path, depth_scale=1.0)[0]


def test_depth_folder_names_an_unmatched_stem(tmp_path: Path) -> None:
    from shards.tools.scenes import write_scene_folder

    write_scene_folder(tmp_path, count=2, seed=0, width=64, height=48)
    next((tmp_path / "depth").iterdir()).unlink()
    with pytest.raises(NyuFormatError, match="no rgb/depth pair"):
        DepthFolder(tmp_path)


@pytest.fixture(scope="module")
def hf_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local ``datasets`` copy of a test split with only in-painted depth, as some hub copies are."""
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)) for _ in range(3)]
    depth_maps = [rng.uniform(0.5, 8.0, (24, 32)).astype(np.float32) for _ in range(3)]
    features = datasets.Features({"image": datasets.Image(), "depth_map": datasets.Array2D((24, 32), "float32")})
    dataset = datasets.Dataset.from_dict({"image": images, "depth_map": depth_maps}, features=features)
    path = tmp_path_factory.mktemp("hf") / "nyu_test"
    datasets.DatasetDict({"test": dataset}).save_to_disk(str(path))
    return path


def test_hf_copy_without_raw_depth_stops_the_default(hf_copy: Path) -> None:
    with pytest.raises(NyuFormatError, match="choose the in-painted depth explicitly"):
        HfDepthDataset(str(hf_copy), split="test", depth="raw")


def test_hf_copy_reads_inpainted_depth_when_asked(hf_copy: Path) -> None:
    source = HfDepthDataset(str(hf_copy), split="test", depth="inpainted", limit=2)
    assert len(source) == 2
    frame = source[1]
    assert frame.image.shape == (24, 32, 3) and frame.image.dtype == np.uint8
    assert frame.depth.shape == (24, 32) and 0.5 <= frame.depth.min() and frame.depth.max() <= 8.0
    assert source.describe()["depth_source"] == "inpainted"
