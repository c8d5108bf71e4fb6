"""Image-shard sources at scale: jobs are input-shard slices, listing opens no tar, the seeded sample is by key hash,
keys repeated across shards become duplicate_key rejects after labelling, and resume redoes only what is missing."""

from __future__ import annotations

import hashlib
import json
import tarfile
from collections import Counter

import pytest
import webdataset as wds
from PIL import Image

from pseudolabel.config import SourceConfig
from pseudolabel.plan import SLICE_STRIDE
from pseudolabel.sources import open_source
from shards.tools.commands import main as shards_main
from shards.writer import read_stats
from tests.pseudolabel.conftest import encode, gradient_rgb
from tests.pseudolabel.test_run import input_keys_seen, label, read_samples, small


def png(seed: int) -> bytes:
    return encode(Image.fromarray(gradient_rgb(64, 48, seed=seed)), "PNG")


def write_shards(folder, shards: dict[str, list[str]]) -> None:
    """``{shard name: [sample keys]}``; a key ending in ``caption`` gets no image member."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, keys in shards.items():
        with wds.TarWriter(str(folder / name)) as sink:
            for number, key in enumerate(keys):
                member = {"txt": b"caption"} if key.endswith("caption") else {"png": png(number)}
                sink.write({"__key__": key, **member})


RUN = small("--output.samples_per_shard", "2", "--source.kind", "shards")


def test_jobs_are_slices_of_input_shards_and_each_input_lands_once(tmp_path):
    source, out = tmp_path / "web", tmp_path / "out"
    write_shards(source, {"a-000.tar": ["x/0", "x/1", "x/2", "x/3caption", "x/4"], "a-001.tar": ["y/0", "y/1"]})
    assert label(source, "identity", out, *RUN) == 0
    jobs = {int(path.name.split("-")[2][:-4]): read_stats(path) for path in out.glob("*.tar")}
    assert sorted(jobs) == [0, 1, 2, SLICE_STRIDE]
    assert [(jobs[job]["slice"], jobs[job]["slices"], jobs[job]["inputs"]) for job in sorted(jobs)] == [
        (0, 3, 2), (1, 3, 2), (2, 3, 1), (0, 1, 2)]
    assert jobs[SLICE_STRIDE]["input_shard"] == str(source / "a-001.tar")
    assert Counter(input_keys_seen(out)) == Counter(
        f"web/{key}" for key in ["x/0", "x/1", "x/2", "x/3caption", "x/4", "y/0", "y/1"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["inputs"] == 7 and summary["rejected_by_reason"] == {"no_image_member": 1}
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["source"]["shards"] == 2 and "shard_list_hash" in manifest["source"]


def test_listing_opens_no_tar_and_the_manifest_sees_a_changed_size(tmp_path, monkeypatch):
    source = tmp_path / "web"
    write_shards(source, {"a-000.tar": ["x/0"], "a-001.tar": ["y/0"]})
    before = open_source(SourceConfig(path=str(source), sample_count=0), tmp_path / "unused").description
    with open(source / "a-001.tar", "ab") as handle:
        handle.write(b"\0" * 10240)
    monkeypatch.setattr(tarfile, "open", lambda *args, **kwargs: pytest.fail("listing read a tar"))
    after = open_source(SourceConfig(path=str(source), sample_count=0), tmp_path / "unused").description
    assert before["shard_list_hash"] != after["shard_list_hash"] and after["shards"] == 2


def test_sample_count_keeps_keys_hashing_below_count_over_total(tmp_path):
    source, out = tmp_path / "web", tmp_path / "out"
    keys = [f"k/{number:03d}" for number in range(40)]
    write_shards(source, {f"a-{shard:03d}.tar": keys[shard * 10 : (shard + 1) * 10] for shard in range(4)})
    assert label(source, "identity", out, *RUN, "--source.sample_count", "12", "--source.sample_seed", "9") == 0
    threshold = 12 * 2**64 // 40
    expected = [f"web/{key}" for key in keys
                if int.from_bytes(hashlib.sha256(f"9\0web/{key}".encode()).digest()[:8], "big") < threshold]
    assert sorted(read_samples(out)) == expected and 0 < len(expected) < 40
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == len(expected) and summary["complete"]  # how many it kept
    assert json.loads((out / "manifest.json").read_text())["source"]["sample_total"] == 40


def test_keys_repeated_across_shards_become_duplicate_key_rejects(tmp_path):
    source, out = tmp_path / "web", tmp_path / "out"
    write_shards(source, {"a-000.tar": ["x/0", "x/1", "x/2"], "a-001.tar": ["x/1", "y/0", "x/2caption"],
                          "a-002.tar": ["x/0"]})
    assert label(source, "identity", out, *RUN) == 0
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {(record["key"], record["reason"], record["source"].split("#")[0].rsplit("/", 1)[1]) for record in rejects
            } == {("web/x/0", "duplicate_key", "a-002.tar"), ("web/x/1", "duplicate_key", "a-001.tar"),
                  ("web/x/2caption", "no_image_member", "a-001.tar")}
    samples = read_samples(out)
    assert sorted(samples) == ["web/x/0", "web/x/1", "web/x/2", "web/y/0"]
    assert samples["web/x/1"].meta.source.endswith("a-000.tar#x/1")  # the first copy stays
    assert Counter(input_keys_seen(out))["web/x/1"] == 2  # two inputs, one labelled, one rejected
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["labeled"] + summary["rejected"] == summary["inputs"] == 7
    assert shards_main(["verify", str(out), "--quiet", "true"]) == 0  # rewritten through the writer: checksums hold
    stamps = {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")}
    assert label(source, "identity", out, *RUN) == 0  # nothing left to do, nothing rewritten
    assert {path.name: path.stat().st_mtime_ns for path in out.glob("*.tar")} == stamps


def test_resume_redoes_only_the_missing_slice(tmp_path):
    source, out = tmp_path / "web", tmp_path / "out"
    write_shards(source, {"a-000.tar": ["x/0", "x/1", "x/2"], "a-001.tar": ["y/0"]})
    assert label(source, "identity", out, *RUN) == 0
    kept = out / "train-000-000000.tar"
    stamp = kept.stat().st_mtime_ns
    (out / "train-000-000001.stats.json").unlink()  # slice 1 of shard 0 killed before its stats
    assert label(source, "identity", out, *RUN) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["this_run"]["jobs"] == 1 and summary["this_run"]["inputs"] == 1
    assert kept.stat().st_mtime_ns == stamp
    assert sorted(input_keys_seen(out)) == ["web/x/0", "web/x/1", "web/x/2", "web/y/0"]


def test_a_shard_run_of_the_earlier_layout_stops_and_says_what_to_do(tmp_path, capsys):
    source, out = tmp_path / "web", tmp_path / "out"
    write_shards(source, {"a-000.tar": ["x/0"]})
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"format": 1, "source": {"kind": "shards", "list_hash": "ab"}}))
    assert label(source, "identity", out, *RUN) == 2
    message = capsys.readouterr().err
    assert "earlier version" in message and "new output.dir" in message
    assert sorted(path.name for path in out.iterdir()) == ["manifest.json"]
