"""The on-disk index: the sorted list, seeded sample, duplicate flags and hash of the in-memory list it replaced."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from pseudolabel import plan as plan_module
from pseudolabel.config import SourceConfig
from pseudolabel.plan import InputIndex, list_hash
from pseudolabel.sources import open_source
from shards.format import check_key, key_from_relative_path


def in_memory_listing(folder: Path, count: int, seed: int) -> list[tuple[str, str, bool]]:
    """What the listing did before the index (every input in a list, sorted, sampled, flagged): the reference."""
    items = []
    for root, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in files:
            relative = Path(os.path.relpath(os.path.join(root, name), folder)).as_posix()
            items.append((check_key(key_from_relative_path(relative)), relative))
    items.sort()
    if 0 < count < len(items):
        items = [items[position] for position in sorted(random.Random(seed).sample(range(len(items)), count))]
    flagged, seen = [], set()
    for key, origin in items:
        flagged.append((key, origin, key in seen))
        seen.add(key)
    return flagged


@pytest.fixture
def places_like(tmp_path) -> Path:
    """237 files in nested folders, unsorted creation order, with same-key pairs (x.jpg beside x.png)."""
    root = tmp_path / "places"
    rng = random.Random(5)
    for number in rng.sample(range(1000), 220):
        folder = root / f"{'abc'[number % 3]}" / f"class{number % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{number:08d}.jpg").write_bytes(b"x")
        if number % 13 == 0:
            (folder / f"{number:08d}.png").write_bytes(b"x")
    return root


@pytest.mark.parametrize(("count", "seed"), [(0, 0), (50, 0), (50, 7), (200, 3), (999, 0)])
def test_index_picks_the_same_inputs_as_the_in_memory_list(places_like, tmp_path, monkeypatch, count, seed):
    monkeypatch.setattr(plan_module, "RUN_RECORDS", 16)  # 15 runs ...
    monkeypatch.setattr(plan_module, "MERGE_FAN_IN", 4)  # ... merged in two rounds
    expected = in_memory_listing(places_like, count, seed)
    listing = open_source(SourceConfig(path=str(places_like), sample_count=count, sample_seed=seed),
                          tmp_path / "out" / "index.jsonl")
    items = listing.items()
    assert [(item.key, item.origin, item.duplicate) for item in items] == expected
    assert listing.description["listed"] == len(in_memory_listing(places_like, 0, 0))
    assert listing.description["inputs"] == len(expected)
    assert listing.description["list_hash"] == list_hash(items)
    assert any(duplicate for _, _, duplicate in expected) or count == 50  # the flags are exercised
    assert not list((tmp_path / "out").glob(".*runs"))  # the sort's scratch is gone


def test_index_reads_any_range_by_offset(tmp_path):
    records = [[f"k{number:03d}", f"o\u2028{number}\n", number] for number in range(40)]  # separators are data
    stats = plan_module.write_index(reversed(records), tmp_path / "index.jsonl", count=0, seed=0)
    index = InputIndex(tmp_path / "index.jsonl")
    assert len(index) == stats.inputs == stats.listed == 40
    assert [item.locator for item in index.read(7, 12)] == [7, 8, 9, 10, 11]
    assert index.read(39, 39) == [] and index[0].origin == "o\u20280\n"
    with pytest.raises(IndexError):
        index.read(30, 41)
