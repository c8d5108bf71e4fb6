"""Damaged training data: worker counts reach the training process, are logged per interval, and stop a run past
``data.max_damaged_fraction`` with the shards and the verify command named."""

from __future__ import annotations

import itertools
import tarfile

import pytest
import torch

from distill.training.config import DataConfig
from distill.training.data import DamagedDataError, build_train_loader, log_data_integrity, postfix
from shards.format import RELATIVE_INVERSE_DEPTH
from tests.distill.conftest import write_scene_shards


class OneProcess:
    """What ``log_data_integrity`` uses of an Accelerator, for one process."""

    device = torch.device("cpu")

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        assert reduction == "sum"
        return tensor


@pytest.fixture
def damaged_set(tmp_path):
    """Two shards of 4; in the second, one JPEG has a flipped byte (it still decodes) and the tar is cut after its
    second sample: per full read of that shard, 1 skipped and 2 lost."""
    folder = tmp_path / "train"
    write_scene_shards(folder, RELATIVE_INVERSE_DEPTH, shards=2, per_shard=4)
    path = folder / "train-000-000001.tar"
    with tarfile.open(path) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith(".jpg")]
        cut = [m for m in tar.getmembers() if m.name.endswith(".depth16.dzst")][2].offset
    data = bytearray(path.read_bytes())
    data[members[0].offset_data + members[0].size // 2] ^= 0x08
    path.write_bytes(bytes(data[:cut]))
    return folder, path


@pytest.mark.parametrize("workers", [0, 2])
def test_worker_counts_reach_the_training_process(damaged_set, workers):
    folder, path = damaged_set
    config = DataConfig(train=str(folder), size=[64, 64], batch_size=2, num_workers=workers, shuffle_buffer=4,
                        max_damaged_fraction=1.0)  # a third of this set is damaged: count, do not stop
    loader = build_train_loader(config, 0, 0, 12)
    batches = list(itertools.islice(loader, 12))
    assert all("reads" not in batch for batch in batches)
    keys = {key for batch in batches for key in batch["key"]}
    assert "scenes/train_000004" not in keys  # the damaged sample is never trained on
    scalars = log_data_integrity(OneProcess(), loader.reads, config)
    assert scalars["data/skipped"] == scalars["data/skipped_checksum"] >= 1
    assert scalars["data/lost"] == scalars["data/lost_tar_ended"]  # cut at a header: the tar just ends
    assert scalars["data/lost"] in (2 * scalars["data/skipped"], 2 * scalars["data/skipped"] - 2)  # 1 and 2 a read
    assert postfix(scalars) == {"skipped": int(scalars["data/skipped"]), "lost": int(scalars["data/lost"])}
    again = log_data_integrity(OneProcess(), loader.reads, config)  # the next interval starts from zero
    assert again["data/skipped"] == 0 and again["data/damaged_fraction"] == scalars["data/damaged_fraction"]
    next_epoch = build_train_loader(config, 0, 1, 12, loader.reads)  # one tally spans the run's data epochs
    assert next_epoch.reads is loader.reads


def test_a_run_past_the_limit_stops_naming_the_shards_and_the_verify_command(damaged_set):
    folder, path = damaged_set
    config = DataConfig(train=str(folder), size=[64, 64], batch_size=2, num_workers=0, shuffle_buffer=4,
                        max_damaged_fraction=0.0)
    with pytest.raises(RuntimeError, match="damaged or lost"):  # the reader itself stops past the share
        list(itertools.islice(build_train_loader(config, 0, 0, 50), 50))
    config = DataConfig(train=str(folder), size=[64, 64], batch_size=2, num_workers=0, shuffle_buffer=4)
    config.max_damaged_fraction = 1.0
    loader = build_train_loader(config, 0, 0, 6)
    list(itertools.islice(loader, 6))
    config.max_damaged_fraction = 0.0  # the run's share, judged at the log interval
    with pytest.raises(DamagedDataError) as error:
        log_data_integrity(OneProcess(), loader.reads, config)
    assert str(path) in str(error.value) and f"python -m shards verify {folder}" in str(error.value)


def test_the_limit_is_a_share():
    with pytest.raises(ValueError, match="max_damaged_fraction"):
        DataConfig(max_damaged_fraction=1.5)
