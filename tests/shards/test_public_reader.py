"""The public reader (``from shards import samples``) and the standalone label decoder of docs/shards.md: every codec
with two labels, every location form, damaged shards counted exactly, and the documented decoder equal to ours."""

from __future__ import annotations

import ast
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from shards import samples
from shards.format import LABEL_CODECS, RELATIVE_INVERSE_DEPTH, SampleMeta, decode_depth16, decode_labels, label_member
from tests.shards.conftest import scene_members, two_label_members, write_shard

DOCS = Path(__file__).resolve().parents[2] / "docs" / "shards.md"


def documented_decoder() -> tuple[str, dict]:
    """The python block of docs/shards.md that defines ``decode_depth16``, and what executing it defines."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    (source,) = [block for block in blocks if "def decode_depth16" in block]
    namespace: dict = {}
    exec(compile(source, str(DOCS), "exec"), namespace)  # noqa: S102 - the documentation's own code, tested
    return source, namespace


@pytest.mark.parametrize("codec", sorted(LABEL_CODECS))
def test_every_teachers_label_by_name_on_every_codec(tmp_path, codec):
    made = [two_label_members(f"k/{i}", i, codec) for i in range(3)]
    write_shard(tmp_path, 0, [members for members, _, _ in made])
    reader = samples(tmp_path)
    read = list(reader)
    assert [s.key for s in read] == ["k/0", "k/1", "k/2"]
    for s, (_, maps, masks) in zip(read, made):
        assert list(s.labels) == ["midas", "depth_anything"] and list(s.masks) == list(s.labels)
        assert s.kinds == {"midas": RELATIVE_INVERSE_DEPTH, "depth_anything": RELATIVE_INVERSE_DEPTH}
        assert s.image.dtype == np.uint8 and s.image.shape == (96, 128, 3)
        assert s.label.dtype == np.float32 and s.valid.dtype == bool and s.kind == RELATIVE_INVERSE_DEPTH
        assert s.labels["midas"] is s.label and s.masks["midas"] is s.valid
        for (name, values), truth, valid in zip(s.labels.items(), maps, masks):
            np.testing.assert_array_equal(s.masks[name], valid)
            span = float(truth[valid].max() - truth[valid].min())
            assert np.abs(values - truth)[valid].max() <= span / 65535
        assert s.meta["labels"][1]["member"] == label_member(codec, 1) and s.meta["teacher"] == "midas"
    assert (reader.counts.read, reader.counts.delivered, reader.counts.count) == (3, 3, 0)


def test_every_location_form(tmp_path):
    paths = [write_shard(tmp_path, i, [scene_members(f"s{i}/0", i)]) for i in range(3)]
    everything = ["s0/0", "s1/0", "s2/0"]
    assert [s.key for s in samples(str(tmp_path))] == everything  # folder
    assert [s.key for s in samples(f"{tmp_path}/test-000-00000[02].tar")] == ["s0/0", "s2/0"]  # glob
    assert [s.key for s in samples(f"{tmp_path}/test-000-{{000001..000002}}.tar")] == ["s1/0", "s2/0"]  # brace
    assert [s.key for s in samples([paths[2], paths[0]])] == ["s2/0", "s0/0"]  # a list, in its order
    assert [s.key for s in samples(f"pipe:cat {paths[1]}")] == ["s1/0"]  # a url (no stats beside it)
    ground_truth = next(iter(samples(paths[0])))
    assert list(ground_truth.labels) == ["ground_truth"] and ground_truth.meta["format_version"] == 3
    with pytest.raises(FileNotFoundError, match="nowhere"):
        samples(tmp_path / "nowhere")


def _flip_member(path: Path, name: str) -> None:
    with tarfile.open(path) as tar:
        info = tar.getmember(name)
    data = bytearray(path.read_bytes())
    data[info.offset_data + info.size // 2] ^= 0x20
    path.write_bytes(bytes(data))


def test_damaged_shards_are_skipped_and_counted_exactly(tmp_path):
    folder = tmp_path / "set"
    undecodable = two_label_members("a/2", 2)[0]
    undecodable["depth16_1.dzst"] = b"not a label"  # sealed as written: its checksums match, it does not decode
    first = write_shard(folder, 0, [two_label_members(f"a/{i}", i)[0] if i != 2 else undecodable for i in range(4)])
    _flip_member(first, "a/1.depth16_1.dzst")  # the second teacher's label damaged: a checksum skip
    second = write_shard(folder, 1, [two_label_members(f"b/{i}", 10 + i)[0] for i in range(5)])
    with tarfile.open(second) as tar:
        header = tar.getmember("b/2.depth16.dzst").offset
    data = bytearray(second.read_bytes())
    data[header : header + 512] = bytes(512)  # a zeroed header reads as the end: b/2, b/3, b/4 never arrive
    second.write_bytes(bytes(data))
    third = write_shard(folder, 2, [two_label_members(f"c/{i}", 20 + i)[0] for i in range(3)])
    with tarfile.open(third) as tar:
        cut = tar.getmember("c/1.jpg").offset_data + 100
    third.write_bytes(third.read_bytes()[:cut])  # c/1 arrives without its jpg and json, c/2 is lost to the error

    reader = samples(folder)
    keys = [s.key for s in reader]
    assert keys == ["a/0", "a/3", "b/0", "b/1", "c/0"]
    counts = reader.counts
    assert (counts.read, counts.delivered, counts.skipped, counts.lost) == (8, 5, 3, 4)
    assert counts.skipped_by_reason == {"checksum": 2, "decode": 1}
    assert counts.lost_by_reason == {"tar_ended": 3, "tar_error": 1}
    assert counts.shards == {str(first): 2, str(second): 3, str(third): 2}
    assert str(counts) == ("read 8, delivered 5, skipped 3 (checksum 2, decode 1), lost 4 (tar_ended 3, tar_error 1)")
    assert [s.key for s in reader] == keys and reader.counts.count == 7  # a second pass counts afresh


def test_the_documented_decoder_needs_no_project_import_and_equals_ours(tmp_path):
    source, documented = documented_decoder()
    imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(source))
                if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
    assert imported <= {"io", "json", "struct", "numpy", "zstandard", "PIL"}, imported
    for codec in sorted(LABEL_CODECS):
        members, _, _ = two_label_members("k", 5, codec)
        meta = SampleMeta.from_json(members["json"])
        for label, ours in zip(meta.labels, decode_labels(members)):
            values, valid = documented["decode_depth16"](members[label.member], label.member, label.label_range)
            assert values.dtype == np.float32 and valid.dtype == bool
            np.testing.assert_array_equal(values, ours.depth)  # bit for bit
            np.testing.assert_array_equal(valid, ours.valid)
            same = decode_depth16(members[label.member], label.member, label.label_range)
            np.testing.assert_array_equal(same[0], ours.depth)


def test_the_documented_map_reads_a_plain_webdataset_pipeline(tmp_path):
    _, documented = documented_decoder()
    two = write_shard(tmp_path, 0, [two_label_members(f"k/{i}", i, "depth16.png")[0] for i in range(2)])
    old = write_shard(tmp_path, 1, [scene_members("old/0", 7)])
    from tests.shards.conftest import downgrade_shard

    downgrade_shard(old)  # format version 1: no labels list in the json
    ours = {s.key: s for s in samples(tmp_path, checksums=False)}
    dataset = wds.WebDataset([str(two), str(old)], shardshuffle=False)  # as docs/shards.md writes it
    plain = list(dataset.decode("rgb8", only=["jpg"]).map(documented["read_labels"]))
    assert [sample["__key__"] for sample in plain] == ["k/0", "k/1", "old/0"]
    for sample in plain:
        mine = ours[sample["__key__"]]
        np.testing.assert_array_equal(sample["jpg"], mine.image)  # "rgb8": uint8 RGB, as ours
        assert [(kind, teacher) for _, _, kind, teacher in sample["labels"].values()] == [
            (mine.kinds[name], None if name == "ground_truth" else name) for name in mine.labels]
        for (values, valid, _, _), name in zip(sample["labels"].values(), mine.labels):
            np.testing.assert_array_equal(values, mine.labels[name])
            np.testing.assert_array_equal(valid, mine.masks[name])
