"""Checksums in the format: what the writer records, what verify and the reader make of damage, strict records,
old shards (format 1) read and verified as "no checksums", repair."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
import zstandard

from shards.format import DEFAULT_LABEL_CODEC, FORMAT_VERSION, LEGACY_FORMAT_VERSION, SampleMeta, digest, label_codec
from shards.reader import SkipCounter, build_pipeline
from shards.tools.commands import main
from shards.writer import read_stats, stats_path
from tests.shards.conftest import scene_members, write_legacy_shard, write_shard


def _members(path):
    with tarfile.open(path) as tar:
        return [(info, tar.extractfile(info).read()) for info in tar.getmembers()]


def test_writer_records_the_sha256_of_every_member(tmp_path):
    path = write_shard(tmp_path, 0, [scene_members("k/a", 0), scene_members("k/b", 1)])
    members = _members(path)
    stats = read_stats(path)
    assert stats["format_version"] == FORMAT_VERSION
    assert stats["members"] == [[info.name, len(data), digest(data)] for info, data in members]
    by_name = {info.name: data for info, data in members}
    meta = SampleMeta.from_json(by_name["k/a.json"])
    assert meta.format_version == FORMAT_VERSION
    label = by_name[f"k/a.{DEFAULT_LABEL_CODEC}"]
    assert meta.sha256 == {"jpg": digest(by_name["k/a.jpg"]), DEFAULT_LABEL_CODEC: digest(label)}


@pytest.mark.parametrize("codec", ["depth16.dzst", "depth16.zst"])
def test_zstd_labels_carry_a_content_checksum(codec):
    encoded = label_codec(codec).encode(np.arange(96 * 128, dtype=np.uint16).reshape(96, 128))
    assert zstandard.get_frame_parameters(encoded[8:]).has_checksum
    damaged = bytearray(encoded)
    damaged[-10] ^= 0x01
    with pytest.raises(zstandard.ZstdError):
        label_codec(codec).decode(bytes(damaged))


def test_a_damaged_field_name_is_an_error_not_extra():
    record = json.loads(scene_members("k/a", 0)["json"])
    record["depth]codec"] = record.pop("depth_codec")
    with pytest.raises(ValueError, match=r"'depth\]codec' \(did you mean 'depth_codec'\?\)"):
        SampleMeta.from_json(json.dumps(record))
    record = json.loads(scene_members("k/a", 0)["json"])
    del record["source_size"]
    with pytest.raises(ValueError, match="lacks field"):
        SampleMeta.from_json(json.dumps(record))
    record = json.loads(scene_members("k/a", 0)["json"])
    record["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(ValueError, match="upgrade"):
        SampleMeta.from_json(json.dumps(record))


def test_a_record_written_before_format_2_reads():
    record = json.loads(scene_members("k/a", 0)["json"])
    del record["format_version"], record["sha256"], record["labels"]
    meta = SampleMeta.from_json(json.dumps(record))
    assert meta.format_version == LEGACY_FORMAT_VERSION and meta.sha256 == {}
    assert meta.labels == [meta.first_label()] and meta.labels[0].member == DEFAULT_LABEL_CODEC


def test_a_record_written_before_eval_split_reads_unmarked():
    record = json.loads(scene_members("k/a", 0)["json"])
    assert "eval_split" in record  # written by every writer now
    del record["eval_split"]
    assert SampleMeta.from_json(json.dumps(record)).eval_split is None


def test_a_flipped_jpeg_byte_that_still_decodes_is_caught_and_skipped(tmp_path, capsys):
    path = write_shard(tmp_path, 0, [scene_members("k/a", 0), scene_members("k/b", 1), scene_members("k/c", 2)])
    with tarfile.open(path) as tar:
        jpg = tar.getmember("k/b.jpg")
    data = bytearray(path.read_bytes())
    data[jpg.offset_data + jpg.size // 2] ^= 0x04  # the JPEG still decodes, to other pixels
    path.write_bytes(bytes(data))
    counter = SkipCounter()
    keys = [sample.key for sample in build_pipeline(str(path), training=False, split=False, skip_counter=counter)]
    assert keys == ["k/a", "k/c"] and counter.skipped_by_reason == {"checksum": 1} and counter.lost == 0
    assert main(["verify", str(tmp_path), "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    assert "k/b: member 'k/b.jpg': sha256 differs" in out
    assert "expected 3, intact 2, damaged 1, missing 0" in out


def test_a_damaged_header_loses_the_rest_and_both_count_it(tmp_path, capsys):
    """tarfile's stream mode reads a damaged header as the end of the archive: nothing raises, samples vanish."""
    samples = [scene_members(f"k/{i}", i) for i in range(5)]
    path = write_shard(tmp_path, 0, samples)
    with tarfile.open(path) as tar:
        header = tar.getmember("k/2.depth16.dzst").offset
    data = bytearray(path.read_bytes())
    data[header : header + 512] = bytes(512)
    path.write_bytes(bytes(data))
    counter = SkipCounter()
    keys = [sample.key for sample in build_pipeline(str(path), training=False, split=False, skip_counter=counter)]
    assert keys == ["k/0", "k/1"] and counter.lost == 3 and counter.count == 3
    assert main(["verify", str(path), "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    for key in ("k/2", "k/3", "k/4"):
        assert f"{key}: missing" in out
    assert "expected 5, intact 2, damaged 0, missing 3" in out


def test_a_truncated_tar_names_where_it_breaks(tmp_path, capsys):
    path = write_shard(tmp_path, 0, [scene_members(f"k/{i}", i) for i in range(3)])
    with tarfile.open(path) as tar:
        cut = tar.getmember("k/2.jpg").offset_data + 10
    path.write_bytes(path.read_bytes()[:cut])
    assert main(["verify", str(path), "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    assert "it breaks after 3 sample(s) read; the last, k/2, may be incomplete" in out
    assert "k/2: member 'k/2.jpg' is missing" in out and "intact 2, damaged 1, missing 0" in out


def test_old_shards_read_and_verify_as_no_checksums_and_repair_adds_them(tmp_path, capsys):
    old = tmp_path / "old"
    write_legacy_shard(old, 0, [scene_members("k/a", 0), scene_members("k/b", 1)], teacher="tiny")
    assert [s.key for s in build_pipeline(str(old), training=False, split=False)] == ["k/a", "k/b"]
    assert main(["verify", str(old), "--quiet", "true"]) == 0
    out = capsys.readouterr().out
    assert "no checksums: 1 of 1 shard(s)" in out and "OK: 0 problem(s)" in out
    assert main(["repair", str(old), "--out", str(tmp_path / "new")]) == 0
    capsys.readouterr()
    assert main(["verify", str(tmp_path / "new"), "--quiet", "true"]) == 0
    assert "no checksums" not in capsys.readouterr().out
    stats = read_stats(tmp_path / "new" / "test-000-000000.tar")
    assert stats["format_version"] == FORMAT_VERSION and stats["teacher"] == "tiny" and stats["count"] == 2


def test_repair_drops_and_lists_damaged_samples(tmp_path, capsys):
    source = tmp_path / "source"
    path = write_shard(source, 3, [scene_members(f"k/{i}", i) for i in range(4)], rejects=[("x", "constant_label")])
    with tarfile.open(path) as tar:
        label = tar.getmember(f"k/1.{DEFAULT_LABEL_CODEC}")
        cut = tar.getmember(f"k/3.{DEFAULT_LABEL_CODEC}").offset
    data = bytearray(path.read_bytes())
    data[label.offset_data + 20] ^= 0x01
    path.write_bytes(bytes(data[:cut]))  # and cut before k/3: it is lost
    assert main(["repair", str(source), "--out", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr().out
    assert f"DROPPED {path}: k/1: member 'k/1.{DEFAULT_LABEL_CODEC}': sha256 differs" in out
    assert "kept 2 samples" in out and f"LOST {path}: k/3" in out
    fixed = tmp_path / "fixed" / path.name
    assert [s.key for s in build_pipeline(str(fixed), training=False, split=False)] == ["k/0", "k/2"]
    assert read_stats(fixed)["rejects"] == {"constant_label": ["x"]}
    assert json.loads((tmp_path / "fixed" / "repair.json").read_text())["dropped"][str(path)] == {
        "k/1": f"member 'k/1.{DEFAULT_LABEL_CODEC}': sha256 differs from the stats json's, the bytes are damaged"
    }
    assert main(["verify", str(tmp_path / "fixed"), "--quiet", "true"]) == 0


def test_a_stats_json_changed_after_the_run_is_caught(tmp_path, capsys):
    path = write_shard(tmp_path, 0, [scene_members("k/a", 0)])
    recorded = {path.name: digest(stats_path(path).read_bytes())}
    (tmp_path / "summary.json").write_text(json.dumps({"stats_sha256": recorded}))
    assert main(["verify", str(tmp_path), "--quiet", "true"]) == 0
    capsys.readouterr()
    stats = read_stats(path)
    stats["seconds"] = 99.0
    stats_path(path).write_text(json.dumps(stats))
    assert main(["verify", str(tmp_path), "--quiet", "true"]) == 1
    assert "stats json's sha256 differs from the one its run's summary recorded" in capsys.readouterr().out


def test_an_import_records_the_sha256_of_each_stats_json(tmp_path, capsys):
    from tests.shards.conftest import write_kitti_pairs

    pairs, _ = write_kitti_pairs(tmp_path / "kitti")
    out = tmp_path / "out"
    assert main(["import-rgbd", "--pairs", str(pairs), "--depth_scale", "kitti", "--out", str(out),
                 "--samples_per_shard", "2"]) == 0
    summary = json.loads((out / "rgbd.summary.json").read_text())
    shards = sorted(out.glob("*.tar"))
    assert summary["stats_sha256"] == {path.name: digest(stats_path(path).read_bytes()) for path in shards}
    assert main(["verify", str(out), "--quiet", "true"]) == 0
