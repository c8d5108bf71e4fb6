"""The reader: shard locations, exact epochs split over nodes x workers, resampled training, skip-and-count."""

from __future__ import annotations

import itertools
import pickle
import tarfile
from collections import Counter

import pytest
import torch

from shards.format import DEFAULT_LABEL_CODEC, DepthSample
from shards.reader import SkipCounter, build_pipeline, expand_shard_urls
from tests.shards.conftest import scene_members, write_shard


def sample_key(sample: DepthSample) -> str:
    """Module-level transform (DataLoader workers pickle the pipeline; no lambdas)."""
    return sample.key


def _epoch_keys(folder, rank: int, world_size: int, num_workers: int) -> list[str]:
    pipeline = build_pipeline(str(folder), training=False, transform=sample_key, rank=rank, world_size=world_size)
    return list(torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=num_workers))


def test_three_shards_two_nodes_two_workers_read_every_sample_once_per_epoch(shard_set):
    paths = shard_set((3, 4, 2))
    all_keys = {f"s{shard}/{i:03d}" for shard, count in enumerate((3, 4, 2)) for i in range(count)}
    for _epoch in range(2):
        per_node = [_epoch_keys(paths[0].parent, rank, 2, num_workers=2) for rank in range(2)]
        seen = Counter(itertools.chain(*per_node))
        assert set(seen) == all_keys and set(seen.values()) == {1}
        # Node 0 (readers 0 and 1) gets shards 0 and 1, node 1 (readers 2 and 3) shard 2; reader 3 gets none.
        assert {key.split("/")[0] for key in per_node[0]} == {"s0", "s1"}
        assert {key.split("/")[0] for key in per_node[1]} == {"s2"}


def test_pipeline_survives_pickling(shard_set):
    """Under forkserver or spawn (Python 3.14's default on Linux is forkserver) DataLoader workers receive the
    pipeline pickled: it must hold no lambda or closure."""
    paths = shard_set((1, 1))
    pipeline = build_pipeline(str(paths[0].parent), training=False, transform=sample_key, rank=0, world_size=1)
    assert sorted(pickle.loads(pickle.dumps(pipeline))) == ["s0/000", "s1/000"]
    training = build_pipeline(str(paths[0].parent), training=True, transform=sample_key).with_epoch(3)
    assert len(list(pickle.loads(pickle.dumps(training)))) == 3


def test_without_split_one_process_reads_everything_in_shard_order(shard_set):
    paths = shard_set((2, 2))
    keys = [s.key for s in build_pipeline([str(p) for p in paths], training=False, split=False)]
    assert keys == ["s0/000", "s0/001", "s1/000", "s1/001"]


def test_resampled_training_is_endless_and_with_epoch_bounds_it(shard_set):
    paths = shard_set((2, 2))
    pipeline = build_pipeline(str(paths[0].parent), training=True, transform=sample_key, seed=1, shuffle_buffer=4)
    drawn = list(itertools.islice(iter(pipeline), 20))  # 5x the data: it keeps going
    assert len(drawn) == 20 and set(drawn) <= {"s0/000", "s0/001", "s1/000", "s1/001"}
    bounded = build_pipeline(str(paths[0].parent), training=True, transform=sample_key, seed=1).with_epoch(7)
    assert len(list(bounded)) == 7 and len(list(bounded)) == 7


def test_corrupt_member_is_skipped_and_counted(tmp_path):
    broken = scene_members("k/broken", 1)
    broken[DEFAULT_LABEL_CODEC] = b"\x00" * 40
    write_shard(tmp_path, 0, [scene_members("k/a", 0), broken, scene_members("k/b", 2)])
    counter = SkipCounter()
    keys = [s.key for s in build_pipeline(str(tmp_path), training=False, skip_counter=counter)]
    assert keys == ["k/a", "k/b"] and counter.count == 1


def test_truncated_shard_is_skipped_and_counted(tmp_path):
    good = write_shard(tmp_path, 0, [scene_members("k/a", 0)])
    cut = write_shard(tmp_path, 1, [scene_members("k/b", 1), scene_members("k/c", 2)])
    with tarfile.open(cut) as tar:
        offset = tar.getmembers()[4].offset_data + 100  # inside the second sample's label
    cut.write_bytes(cut.read_bytes()[:offset])
    counter = SkipCounter()
    keys = [s.key for s in build_pipeline([str(good), str(cut)], training=False, skip_counter=counter)]
    assert keys[:2] == ["k/a", "k/b"] and "k/c" not in keys and counter.count >= 1


def test_skip_counter_limit_stops_a_run_that_is_mostly_broken():
    counter = SkipCounter(limit=1)
    assert counter(ValueError("one")) is True
    with pytest.raises(RuntimeError, match="more than 1 corrupt"):
        counter(ValueError("two"))


def test_expand_shard_urls_forms(shard_set, tmp_path):
    paths = shard_set((1, 1, 1))
    folder = paths[0].parent
    (folder / "junk.tar.tmp").write_bytes(b"")  # an unfinished shard's temporary is not a shard
    names = [str(p) for p in paths]
    assert expand_shard_urls(folder) == names  # folder -> sorted *.tar
    assert expand_shard_urls(f"{folder}/test-000-{{000000..000002}}.tar") == names
    assert expand_shard_urls(f"{folder}/test-*-00000[02].tar") == [names[0], names[2]]
    assert expand_shard_urls(f"{names[2]},{names[0]}") == [names[2], names[0]]  # comma list keeps the order
    assert expand_shard_urls([names[1], names[1], str(folder)]) == [names[1], names[0], names[2]]  # de-duplicated
    assert expand_shard_urls("pipe:cat a.tar") == ["pipe:cat a.tar"]  # remote forms pass through
    with pytest.raises(FileNotFoundError, match="nowhere"):
        expand_shard_urls(str(tmp_path / "nowhere"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no \\*.tar shards"):
        expand_shard_urls(empty)
    with pytest.raises(FileNotFoundError, match="no shards match"):
        expand_shard_urls(f"{folder}/none-*.tar")
