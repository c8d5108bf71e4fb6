"""``python -m shards verify``: a clean set passes; each kind of damage is caught with a clear message, exit 1."""

from __future__ import annotations

import io
import json
import math
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shards.format import DEFAULT_LABEL_CODEC
from shards.tools.commands import main
from shards.tools.verify import verify_shards
from shards.writer import stats_path
from tests.shards.conftest import legacy_json, scene_members, write_shard


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _raw_tar(path: Path, samples: list[dict], count: int | None = None) -> None:
    """A shard of format 1 (no checksums) written member by member, bypassing the writer, with a stats json that
    states ``count``: what a careless writer makes, checked by the format's rules alone."""
    with tarfile.open(path, "w") as tar:
        for sample in samples:
            for extension, data in sample.items():
                if extension == "__key__":
                    continue
                if extension == "json":
                    data = legacy_json(data)
                info = tarfile.TarInfo(f"{sample['__key__']}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    stats_path(path).write_text(json.dumps({"count": len(samples) if count is None else count, "rejects": {}}))


def _verify_cli(capsys, target: Path) -> tuple[int, str]:
    code = main(["verify", str(target), "--quiet", "true"])
    return code, capsys.readouterr().out


def test_clean_set_passes_with_summary(shard_set, capsys, tmp_path):
    paths = shard_set((3, 2))
    write_shard(tmp_path / "shards", 2, [scene_members("s2/000", 7)], rejects=[("bad1", "constant_label"),
                                                                             ("bad2", "constant_label")])
    code, out = _verify_cli(capsys, paths[0].parent)
    assert code == 0, out
    assert "shards 3, samples 6" in out
    assert "rejects (from stats): constant_label 2" in out
    assert "OK: 0 problem(s)" in out
    assert "PROBLEM" not in out


def test_truncated_tar_is_caught(shard_set, capsys):
    paths = shard_set((3,))
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[: len(data) // 2])
    code, out = _verify_cli(capsys, paths[0].parent)
    assert code == 1
    assert "truncated" in out and paths[0].name in out


def test_tar_cut_at_a_member_boundary_is_caught(shard_set, capsys):
    """A cut exactly between members reads without a tar error; the missing end marker and the count catch it."""
    paths = shard_set((3,))
    with tarfile.open(paths[0]) as tar:
        members = tar.getmembers()
    cut = members[3].offset  # after the first sample's 3 members
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:cut])
    code, out = _verify_cli(capsys, paths[0].parent)
    assert code == 1
    assert "no end-of-archive marker" in out
    assert "stats json says 3 samples, the tar holds 1" in out


def test_label_stored_as_8_bit_png_is_caught(tmp_path, capsys):
    good = scene_members("a/good", 1, codec="depth16.png")
    eight_bit = scene_members("a/eight", 2, codec="depth16.png")
    with Image.open(io.BytesIO(eight_bit["depth16.png"])) as picture:
        eight_bit["depth16.png"] = _png((np.asarray(picture) >> 8).astype(np.uint8))  # mode L under a 16-bit name
    _raw_tar(tmp_path / "x-000-000000.tar", [good, eight_bit])
    code, out = _verify_cli(capsys, tmp_path)
    assert code == 1
    assert "a/eight: label .depth16.png does not decode" in out and "not 16-bit" in out
    assert "a/good" not in out


def test_8_bit_values_in_a_16_bit_container_are_caught(tmp_path, capsys):
    """A label cut to 8 bits and written back as 16-bit (a PIL ``convert('L')`` round trip) decodes as uint16,
    but its codes cannot span 1..65535."""
    sample = scene_members("a/cut", 3, codec="depth16.png")
    with Image.open(io.BytesIO(sample["depth16.png"])) as picture:
        cut = np.asarray(picture.convert("L")).astype(np.uint16)
    sample["depth16.png"] = _png(cut)
    _raw_tar(tmp_path / "x-000-000000.tar", [sample])
    code, out = _verify_cli(capsys, tmp_path)
    assert code == 1
    assert "a/cut" in out and "8-bit label" in out


def test_nan_label_is_caught(tmp_path, capsys):
    sample = scene_members("a/nan", 4)
    meta = json.loads(sample["json"])
    meta["label_range"] = [math.nan, meta["label_range"][1]]
    sample["json"] = json.dumps(meta).encode()  # json.dumps writes NaN, as a careless writer would
    _raw_tar(tmp_path / "x-000-000000.tar", [sample])
    code, out = _verify_cli(capsys, tmp_path)
    assert code == 1
    assert "a/nan: label .depth16.dzst: label_range" in out and "not finite" in out


def test_key_duplicated_across_two_shards_is_caught(tmp_path, capsys):
    write_shard(tmp_path, 0, [scene_members("k/one", 1), scene_members("k/two", 2)])
    second = write_shard(tmp_path, 1, [scene_members("k/two", 3)])
    code, out = _verify_cli(capsys, tmp_path)
    assert code == 1
    assert f"{second}: k/two: duplicate key, also in" in out and "test-000-000000.tar" in out


def test_stats_count_that_disagrees_is_caught(shard_set, capsys):
    paths = shard_set((2,))
    stats = json.loads(stats_path(paths[0]).read_text())
    stats["count"] = 5
    stats_path(paths[0]).write_text(json.dumps(stats))
    code, out = _verify_cli(capsys, paths[0])
    assert code == 1
    assert "stats json says 5 samples, the tar holds 2" in out


def test_shard_without_stats_is_unfinished(shard_set, capsys):
    paths = shard_set((2,))
    stats_path(paths[0]).unlink()
    code, out = _verify_cli(capsys, paths[0])
    assert code == 1
    assert "unfinished" in out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda s: s.pop("jpg"), "missing member(s) ['jpg']"),
        (lambda s: s.pop("json"), "missing member(s) ['json']"),
        (lambda s: s.update({"depth16.npy": s[DEFAULT_LABEL_CODEC]}), "holds 2 label members"),
        (lambda s: s.update({"txt": b"x"}), "unknown member(s) ['txt']"),
        (lambda s: s.update({DEFAULT_LABEL_CODEC: b"garbage"}), "does not decode"),
        (lambda s: s.update({"jpg": scene_members("o", 9, size=(64, 48))["jpg"]}), "sizes differ"),
    ],
    ids=["no-jpg", "no-json", "two-labels", "unknown-member", "corrupt-label", "size-mismatch"],
)
def test_malformed_samples_are_caught(tmp_path, damage, message):
    sample = scene_members("a/bad", 5)
    damage(sample)
    _raw_tar(tmp_path / "x-000-000000.tar", [sample, scene_members("a/ok", 6)])
    report = verify_shards(str(tmp_path))
    assert not report.ok
    assert [p.key for p in report.problems] == ["a/bad"]
    assert message in report.problems[0].message


def test_missing_location_is_a_problem_not_a_crash(tmp_path, capsys):
    code, out = _verify_cli(capsys, tmp_path / "nowhere")
    assert code == 1 and "nowhere" in out


def test_parallel_verify_matches_serial(shard_set):
    paths = shard_set((2, 2, 1))
    serial, parallel = verify_shards(str(paths[0].parent)), verify_shards(str(paths[0].parent), workers=2)
    assert (serial.shards, serial.samples, serial.ok) == (3, 5, True)
    assert (parallel.shards, parallel.samples, parallel.ok) == (3, 5, True)
