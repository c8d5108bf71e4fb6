"""The writer: names, atomic shards (tmp -> rename, stats json last), nothing left behind by a failure."""

from __future__ import annotations

import json

import pytest

from shards.writer import ShardSetWriter, ShardWriter, read_stats, shard_name, stats_path
from tests.shards.conftest import scene_members


def test_shard_name_and_stats_path():
    assert shard_name("train", 3, 17) == "train-003-000017.tar"
    assert stats_path("/x/train-003-000017.tar").name == "train-003-000017.stats.json"
    for bad in ("", "a-b", "a/b"):
        with pytest.raises(ValueError, match="prefix"):
            shard_name(bad, 0, 0)


def test_shard_appears_only_when_finished(tmp_path):
    members = scene_members("k/0", 0)
    writer = ShardWriter(tmp_path, "p", 1, 2)
    writer.write(members)
    assert [p.name for p in tmp_path.iterdir()] == ["p-001-000002.tar.tmp"]  # nothing that looks whole yet
    assert read_stats(writer.path) is None
    writer.reject("k/1", "constant_label")
    stats = writer.close(teacher="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p-001-000002.stats.json", "p-001-000002.tar"]
    assert stats == read_stats(writer.path)
    assert stats["count"] == 1 and stats["rejects"] == {"constant_label": ["k/1"]} and stats["teacher"] == "tiny"
    assert stats["bytes"] == writer.path.stat().st_size and stats["shard"] == "p-001-000002.tar"


def test_exception_inside_the_writer_leaves_no_tar_no_stats_no_tmp(tmp_path):
    with pytest.raises(RuntimeError, match="teacher crashed"):
        with ShardWriter(tmp_path, "p", 0, 0) as writer:
            writer.write(scene_members("k/0", 0))
            raise RuntimeError("teacher crashed")
    assert list(tmp_path.iterdir()) == []


def test_same_key_twice_in_a_shard_is_refused(tmp_path):
    with pytest.raises(ValueError, match="written twice"):
        with ShardWriter(tmp_path, "p", 0, 0) as writer:
            writer.write(scene_members("k/0", 0))
            writer.write(scene_members("k/0", 1))
    assert list(tmp_path.iterdir()) == []


def test_shard_set_writer_rolls_and_an_exception_keeps_only_finished_shards(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with ShardSetWriter(tmp_path, "gt", samples_per_shard=2, source="scenes") as writer:
            writer.reject("early", "unreadable")
            for i in range(5):
                writer.write(scene_members(f"k/{i}", i))
            raise KeyboardInterrupt
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["gt-000-000000.stats.json", "gt-000-000000.tar", "gt-000-000001.stats.json", "gt-000-000001.tar"]
    first = json.loads((tmp_path / "gt-000-000000.stats.json").read_text())
    assert first["count"] == 2 and first["rejects"] == {"unreadable": ["early"]} and first["source"] == "scenes"


def test_shard_set_writer_puts_late_rejects_in_an_empty_shard(tmp_path):
    with ShardSetWriter(tmp_path, "gt", samples_per_shard=1) as writer:
        writer.write(scene_members("k/0", 0))
        writer.reject("late", "no_valid_pixels")
    stats = [read_stats(tmp_path / f"gt-000-00000{i}.tar") for i in range(2)]
    assert [s["count"] for s in stats] == [1, 0] and stats[1]["rejects"] == {"no_valid_pixels": ["late"]}
