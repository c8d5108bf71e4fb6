"""``python -m shards show``: a readable PNG grid, one row per sample (image | colour-mapped label | colour bar)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shards.format import decode_jpeg
from shards.tools.commands import main
from shards.tools.pictures import HOLE_COLOUR
from tests.shards.conftest import locate, scene_members


def _small_image(key: str, seed: int, size: tuple[int, int]) -> np.ndarray:
    """The sample's stored image, scaled as the grid scales it."""
    first = decode_jpeg(scene_members(key, seed)["jpg"])
    return np.asarray(Image.fromarray(first).resize(size, Image.BILINEAR))


def test_show_writes_a_grid_with_a_row_per_sample(shard_set, tmp_path, capsys):
    paths = shard_set((3, 3))
    out = tmp_path / "pics" / "grid.png"
    assert main(["show", str(paths[0].parent), "--count", "4", "--out", str(out), "--cell_height", "48"]) == 0
    assert str(out) in capsys.readouterr().out
    with Image.open(out) as picture:
        picture.load()
        grid = np.asarray(picture.convert("RGB"))
    # The 128x96 samples are drawn 64x48, one row each, 48 px + a 4 px gap apart, in shard order.
    top, left, difference = locate(grid, _small_image("s0/000", 0, (64, 48)))
    assert difference < 3 and top > 0 and left > 0  # a title above, the row label on the left
    for row, (key, seed) in enumerate([("s0/001", 1), ("s0/002", 2), ("s1/000", 100)], start=1):
        assert locate(grid, _small_image(key, seed, (64, 48)))[:2] == (top + row * 52, left)
    assert grid.shape[0] < top + 5 * 52  # four rows, not five
    # The label cell, right of the image after the gap, is colour-mapped (not grey) with grey holes.
    label = grid[top : top + 48, left + 68 : left + 68 + 64]
    assert (label.std(axis=2) > 20).mean() > 0.5
    assert (label == HOLE_COLOUR).all(axis=2).any()
    # Its colour bar follows it: a column of many distinct colours right of the label cell.
    bar_zone = grid[top + 4 : top + 44, left + 68 + 64 : left + 68 + 64 + 30]
    assert max(len(np.unique(bar_zone[:, x], axis=0)) for x in range(bar_zone.shape[1])) > 20


def test_show_with_fewer_samples_than_asked(shard_set, tmp_path):
    paths = shard_set((2,))
    out = tmp_path / "grid.png"
    assert main(["show", str(paths[0]), "--count", "16", "--out", str(out), "--cell_height", "32"]) == 0
    with Image.open(out) as picture:
        grid = np.asarray(picture.convert("RGB"))
    top, left, difference = locate(grid, _small_image("s0/000", 0, (43, 32)))
    assert difference < 3
    assert locate(grid, _small_image("s0/001", 1, (43, 32)))[:2] == (top + 36, left)
    assert grid.shape[0] < top + 2 * 36 + 32  # no room for a third row


def test_show_refuses_an_out_without_a_picture_extension_before_reading(shard_set, tmp_path, monkeypatch, capsys):
    """``--out grid``: one line naming the fix, before any shard is read (a missing shard set is not reached)."""
    monkeypatch.chdir(tmp_path)
    paths = shard_set((2,))
    said = {"grid": "has no picture extension", "grid.pdf": "ends in .pdf, not a picture extension"}
    for out in said:
        for spec in (str(paths[0]), "no_such_shards"):
            assert main(["show", spec, "--out", out]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert err == [f"python -m shards show: error: --out {out} {said[out]}: use .png or .jpg"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["shards"]  # no grid, no config beside it
    assert main(["show", str(paths[0]), "--out", "grid.jpg", "--cell_height", "32"]) == 0
    with Image.open(tmp_path / "grid.jpg") as picture:
        assert picture.format == "JPEG" and picture.height > 2 * 32


def test_show_draws_a_column_per_teacher(tmp_path):
    """Two teachers: the image, then each teacher's label colour-mapped on its own range, side by side, and the
    teachers' names as the column titles."""
    from shards import samples
    from shards.tools.pictures import _fit, label_titles, sample_row
    from tests.shards.conftest import two_label_members, write_shard

    write_shard(tmp_path / "two", 0, [two_label_members(f"t/{i}", i)[0] for i in range(2)])
    read = list(samples(tmp_path / "two"))
    assert label_titles(read) == ["image", "midas", "depth_anything"]
    out = tmp_path / "grid.png"
    assert main(["show", str(tmp_path / "two"), "--out", str(out), "--cell_height", "48"]) == 0
    with Image.open(out) as picture:
        grid = np.asarray(picture.convert("RGB"))
    for sample in read:
        image, first, second = (_fit(panel, 48) for panel in sample_row(sample))
        top, left, difference = locate(grid, image)
        assert difference < 3
        first_at, second_at = locate(grid, first), locate(grid, second)
        assert first_at[2] < 3 and second_at[2] < 3 and first_at[0] == second_at[0] == top
        assert left < first_at[1] < second_at[1]  # image, then the first teacher, then the second
        assert not np.array_equal(first, second)  # two maps, each on its own range (holes only in the first)


def test_show_names_each_labels_unit_and_each_row_by_its_name(shard_set, tmp_path):
    """Issue 29: a teacher's relative map is labelled in the teacher's units (no number in the label), sensor depth
    in metres; rows are labelled by the sample's name, not a cut-off path."""
    from shards import samples
    from shards.tools.pictures import frame_label, picture_key, sample_row
    from tests.shards.conftest import two_label_members, write_shard

    write_shard(tmp_path / "two", 0, [two_label_members("deep/folder/of/frames/t0", 0)[0]])
    teachers = [sample_row(sample) for sample in samples(tmp_path / "two")]
    units = "relative inverse depth (teacher units)"
    assert picture_key(teachers)["colour_bars"] == [units, units]
    metric = [sample_row(sample) for sample in samples(shard_set((1,))[0])]
    assert picture_key(metric) == {"colour_bars": ["depth (m)"], "legend": ["no value (hole or invalid pixel)"]}
    assert frame_label("deep/folder/of/frames/t0") == "t0"
