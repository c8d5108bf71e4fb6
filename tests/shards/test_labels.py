"""Several labels per sample (format version 3): member names, the json's ``labels`` list, every codec through a shard
and the reader, strict records, and shards of format version 2 written as the old writer wrote them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds

from shards.format import (
    DEFAULT_LABEL_CODEC,
    FORMAT_VERSION,
    LABEL_CODECS,
    METRIC_DEPTH,
    RELATIVE_INVERSE_DEPTH,
    ExtraLabel,
    LabelRecord,
    SampleMeta,
    decode_label,
    decode_labels,
    decode_sample,
    digest,
    encode_label_codes,
    find_label_member,
    label_member,
    label_names,
    parse_label_member,
    sample_members,
)
from shards.reader import build_pipeline
from shards.tools.commands import main
from shards.writer import read_stats, shard_name, stats_path, write_json_atomic
from tests.shards.conftest import scene_members, two_label_members, write_shard


def test_label_member_names_and_their_inverse():
    assert label_member("depth16.dzst", 0) == "depth16.dzst"
    assert label_member("depth16.dzst", 1) == "depth16_1.dzst"
    assert label_member("depth16.png", 12) == "depth16_12.png"
    for codec in LABEL_CODECS:
        for index in (0, 1, 2, 10):
            assert parse_label_member(label_member(codec, index)) == (codec, index)
    for name in ("jpg", "json", "depth16_0.dzst", "depth16_01.dzst", "depth16.bmp", "depth16_1.bmp", "depth8.png"):
        assert parse_label_member(name) is None, name
    with pytest.raises(ValueError, match="unknown label codec"):
        label_member("depth16.bmp", 1)
    with pytest.raises(ValueError, match="index"):
        label_member("depth16.dzst", -1)


@pytest.mark.parametrize("codec", sorted(LABEL_CODECS))
def test_two_labels_through_a_shard_and_the_reader(tmp_path, codec):
    members, maps, masks = two_label_members("scenes/7", 7, codec)
    second = label_member(codec, 1)
    assert set(members) == {"__key__", "jpg", "json", codec, second}
    assert find_label_member(members) == codec  # the first label, the second present beside it
    path = write_shard(tmp_path, 0, [members])

    (sample,) = list(build_pipeline(str(tmp_path), training=False))
    assert sample.meta.format_version == FORMAT_VERSION == 3
    assert [(label.member, label.teacher, label.kind) for label in sample.labels] == [
        (codec, "midas", RELATIVE_INVERSE_DEPTH), (second, "depth_anything", RELATIVE_INVERSE_DEPTH)]
    assert sample.labels[0].depth is sample.depth and sample.labels[0].valid is sample.valid
    for label, values, valid in zip(sample.labels, maps, masks):
        low, high = float(values[valid].min()), float(values[valid].max())
        np.testing.assert_array_equal(label.valid, valid)
        assert np.abs(label.depth - values)[valid].max() <= (high - low) / 65535
        assert label.depth.dtype == np.float32 and np.all(label.depth[~valid] == 0)
    record = json.loads(members["json"])
    assert record["labels"][0] == {"member": codec, "teacher": "midas", "kind": RELATIVE_INVERSE_DEPTH,
                                   "label_range": record["label_range"]}
    assert record["labels"][1]["member"] == second and record["depth_codec"] == codec
    # The checksums cover both labels: in the sample's json and in the stats json's member list.
    sealed = SampleMeta.from_json(next(s for s in build_pipeline(str(path), training=False, decode=None))["json"])
    assert set(sealed.sha256) == {"jpg", codec, second}
    assert [entry[0] for entry in read_stats(path)["members"]] == [
        f"scenes/7.{codec}", f"scenes/7.{second}", "scenes/7.jpg", "scenes/7.json"]


def test_decoders_of_one_label_and_of_all_labels_agree():
    members, _, _ = two_label_members("k", 3)
    first, second = decode_labels(members)
    depth, valid, meta = decode_label(members)
    np.testing.assert_array_equal(depth, first.depth)
    np.testing.assert_array_equal(valid, first.valid)
    only_first = decode_sample(members, all_labels=False)
    assert [label.member for label in only_first.labels] == [DEFAULT_LABEL_CODEC]
    assert [label.member for label in decode_sample(members).labels] == [DEFAULT_LABEL_CODEC, "depth16_1.dzst"]
    assert len(meta.labels) == 2 and second.teacher == "depth_anything"


def test_label_members_must_be_those_the_json_lists():
    members, _, _ = two_label_members("k", 4)
    without = {name: value for name, value in members.items() if name != "depth16_1.dzst"}
    with pytest.raises(ValueError, match=r"holds label members \['depth16.dzst'\], its json lists"):
        decode_labels(without)
    stray = {**members, "depth16_2.dzst": members["depth16_1.dzst"]}
    with pytest.raises(ValueError, match="depth16_2.dzst"):
        decode_sample(stray)


def test_sample_members_from_codes_fills_every_label_record():
    codes, label_range = encode_label_codes(np.arange(12, dtype=np.float32).reshape(3, 4))
    extra = ExtraLabel(codes[::-1].copy(), (2.0, 5.0), METRIC_DEPTH, None)
    meta = SampleMeta("x", RELATIVE_INVERSE_DEPTH, teacher="a")
    members = sample_members("k", b"jpg", codes, label_range, meta, "depth16.npy", more_labels=[extra, extra])
    assert [label.member for label in meta.labels] == ["depth16.npy", "depth16_1.npy", "depth16_2.npy"]
    assert meta.labels[2] == LabelRecord("depth16_2.npy", None, METRIC_DEPTH, (2.0, 5.0))
    assert set(members) == {"__key__", "jpg", "json", "depth16.npy", "depth16_1.npy", "depth16_2.npy"}
    with pytest.raises(ValueError, match="all of one size"):
        sample_members("k", b"jpg", codes, label_range, meta, more_labels=[ExtraLabel(codes[:2], (0, 1), METRIC_DEPTH)])
    with pytest.raises(ValueError, match="unknown label kind"):
        ExtraLabel(codes, (0.0, 1.0), "disparity")


def test_label_names_are_teachers_made_unique():
    records = [LabelRecord("depth16.dzst", "tiny", METRIC_DEPTH, (0, 1)),
               LabelRecord("depth16_1.dzst", "tiny", METRIC_DEPTH, (0, 1)),
               LabelRecord("depth16_2.dzst", None, METRIC_DEPTH, (0, 1))]
    assert label_names(records) == ["tiny", "tiny#1", "ground_truth"]


def _record(**changes) -> str:
    record = json.loads(two_label_members("k", 5)[0]["json"])
    record.update(changes)
    return json.dumps(record)


def test_the_labels_list_is_parsed_strictly():
    record = json.loads(_record())
    first, second = record["labels"]
    cases = {
        "lacks field(s) ['labels']": {k: v for k, v in record.items() if k != "labels"},
        "non-empty list": {**record, "labels": []},
        "holds exactly": {**record, "labels": [first, {**second, "teachr": "x"}]},
        "not a label member": {**record, "labels": [first, {**second, "member": "jpg"}]},
        "puts label 1 at 'depth16_1.dzst'": {**record, "labels": [first, {**second, "member": "depth16_2.dzst"}]},
        "differs from the top-level fields": {**record, "labels": [{**first, "teacher": "other"}, second]},
        "unknown label kind": {**record, "labels": [first, {**second, "kind": "disparity"}]},
        "unknown field(s) 'labels'": {**record, "format_version": 2},  # a version 2 record holds no list
    }
    for message, damaged in cases.items():
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
            SampleMeta.from_json(json.dumps(damaged))


def write_v2_shard(directory: Path, index: int, samples: list[dict]) -> Path:
    """A shard as the writer of format version 2 made it: each json without ``labels``, ``format_version`` 2 and the
    sha256 of its other members; the stats json of version 2 listing every member in tar order."""
    path = directory / shard_name("old", 0, index)
    directory.mkdir(parents=True, exist_ok=True)
    listed = []
    with open(path, "wb") as handle, wds.TarWriter(handle) as tar:
        for sample in samples:
            record = json.loads(sample["json"])
            del record["labels"]
            others = {name: data for name, data in sample.items() if name not in ("__key__", "json")}
            record.update(format_version=2, sha256={name: digest(data) for name, data in sorted(others.items())})
            members = {**others, "json": json.dumps(record, sort_keys=True).encode()}
            tar.write({"__key__": sample["__key__"], **members})
            key = sample["__key__"]
            listed += [[f"{key}.{name}", len(data), digest(data)] for name, data in sorted(members.items())]
    write_json_atomic(stats_path(path), {"shard": path.name, "count": len(samples), "bytes": path.stat().st_size,
                                         "seconds": 0.0, "rejects": {}, "format_version": 2, "members": listed})
    return path


def test_shards_of_format_version_2_read_and_verify(tmp_path, capsys):
    path = write_v2_shard(tmp_path / "old", 0, [scene_members("k/a", 0), scene_members("k/b", 1, "depth16.png")])
    raws = list(build_pipeline(str(path), training=False, decode=None))
    assert [json.loads(raw["json"])["format_version"] for raw in raws] == [2, 2]
    assert all("labels" not in json.loads(raw["json"]) for raw in raws)
    samples = list(build_pipeline(str(path), training=False))
    assert [s.key for s in samples] == ["k/a", "k/b"]
    assert [s.meta.labels[0].member for s in samples] == [DEFAULT_LABEL_CODEC, "depth16.png"]
    assert all(len(s.labels) == 1 and s.labels[0].depth is s.depth for s in samples)
    assert main(["verify", str(path), "--quiet", "true"]) == 0
    out = capsys.readouterr().out
    assert "OK: 0 problem(s)" in out and "no checksums" not in out and "intact 2" in out
    # A damaged member of a version 2 shard is still seen through its checksums.
    data = bytearray(path.read_bytes())
    data[data.index(b"\xff\xd8\xff") + 700] ^= 0x10  # inside the first JPEG
    path.write_bytes(bytes(data))
    assert main(["verify", str(path), "--quiet", "true"]) == 1
    assert "k/a: member 'k/a.jpg': sha256 differs" in capsys.readouterr().out


def _remove_member(path: Path, name: str) -> None:
    """Rewrite a shard without one member (its stats json unchanged)."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(path) as source, tarfile.open(fileobj=buffer, mode="w") as target:
        for info in source.getmembers():
            if info.name != name:
                target.addfile(info, io.BytesIO(source.extractfile(info).read()))
    path.write_bytes(buffer.getvalue())


def test_verify_and_repair_name_a_missing_or_damaged_second_label(tmp_path, capsys):
    import tarfile

    source = tmp_path / "source"
    path = write_shard(source, 0, [two_label_members(f"k/{i}", i)[0] for i in range(4)])
    _remove_member(path, "k/1.depth16_1.dzst")
    with tarfile.open(path) as tar:
        damaged = tar.getmember("k/2.depth16_1.dzst")
    data = bytearray(path.read_bytes())
    data[damaged.offset_data + damaged.size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert main(["verify", str(source), "--quiet", "true"]) == 1
    out = capsys.readouterr().out
    assert "k/1: member 'k/1.depth16_1.dzst' is missing" in out
    assert "k/2: member 'k/2.depth16_1.dzst': sha256 differs from the stats json's" in out
    assert "expected 4, intact 2, damaged 2, missing 0" in out and "labels per sample: 2 2" in out
    assert main(["repair", str(source), "--out", str(tmp_path / "fixed")]) == 0
    out = capsys.readouterr().out
    assert "DROPPED" in out and "k/1: member 'k/1.depth16_1.dzst' is missing" in out and "kept 2 samples" in out
    assert main(["verify", str(tmp_path / "fixed"), "--quiet", "true"]) == 0
    fixed = list(build_pipeline(str(tmp_path / "fixed"), training=False))
    assert [(s.key, len(s.labels)) for s in fixed] == [("k/0", 2), ("k/3", 2)]


def test_verify_checks_every_label_against_the_format(tmp_path):
    """Samples sealed as written (their checksums match) whose labels break the format's rules."""
    from shards.format import label_codec
    from shards.tools.verify import verify_shards

    broken = {}
    for key, damage in {
        "b/missing": lambda s: s.pop("depth16_1.dzst"),
        "b/garbage": lambda s: s.update({"depth16_1.dzst": b"not a label"}),
        "b/unlisted": lambda s: s.update({"depth16_2.dzst": s["depth16_1.dzst"]}),
        "b/size": lambda s: s.update({"depth16_1.dzst": label_codec(DEFAULT_LABEL_CODEC).encode(
            encode_label_codes(np.arange(12.0).reshape(3, 4))[0])}),
        "b/eight": lambda s: s.update({"depth16_1.dzst": label_codec(DEFAULT_LABEL_CODEC).encode(
            (label_codec(DEFAULT_LABEL_CODEC).decode(s["depth16_1.dzst"]) >> 8).astype(np.uint16))}),
    }.items():
        sample = two_label_members(key, len(broken))[0]
        damage(sample)
        broken[key] = sample
    write_shard(tmp_path, 0, [*broken.values(), two_label_members("b/ok", 9)[0]])
    report = verify_shards(str(tmp_path))
    found = {problem.key: problem.message for problem in report.problems}
    assert sorted(found) == sorted(broken)
    assert found["b/missing"] == "label member .depth16_1.dzst is missing (its json lists it)"
    assert found["b/garbage"].startswith("label .depth16_1.dzst does not decode")
    assert found["b/unlisted"].startswith("label member .depth16_2.dzst is not listed in its json's labels")
    assert found["b/size"] == "labels differ in size (width x height): [(4, 3), (128, 96)]"
    assert found["b/eight"].startswith("label .depth16_1.dzst: codes span only")
    assert found["b/eight"].endswith("an 8-bit label stored in a 16-bit member")
