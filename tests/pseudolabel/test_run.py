"""The stage end to end, in-process: shards that verify, labels equal to the teacher's, rejects, resume, refusal."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from pseudolabel.cli import main
from pseudolabel.config import PreprocessConfig
from pseudolabel.preprocess import preprocess_image
from pseudolabel.teachers import BUILTIN_TEACHERS, Teacher, load_teacher
from shards.format import RELATIVE_INVERSE_DEPTH, decode_jpeg, encode_jpeg
from shards.reader import build_pipeline
from shards.writer import read_stats
from tests.pseudolabel.conftest import REPO_ROOT, SALTED, gradient_rgb

SMOKE = str(REPO_ROOT / "configs" / "pseudolabel" / "smoke.yaml")


def label(source, teacher, out, *extra: str) -> int:
    """One in-process run of ``pseudolabel.py`` on the smoke recipe with the given source, teacher and output."""
    return main(["--config", SMOKE, "--source.path", str(source), "--teacher.model", str(teacher),
                 "--output.dir", str(out), "--runtime.num_workers", "0", "--runtime.progress", "false", *extra])


def small(*extra: str) -> tuple[str, ...]:
    """128x96 crops seen by the teacher at 96x128: the same code at a sixteenth of the compute."""
    return ("--preprocess.width", "128", "--preprocess.height", "96", "--teacher.short_side", "96", *extra)


def read_samples(out) -> dict:
    return {sample.key: sample for sample in build_pipeline(str(out), training=False, split=False)}


def input_keys_seen(out) -> list[str]:
    """Every key in the folder's shards and rejects, with repeats: each input must appear exactly once."""
    keys = []
    for stats_file in sorted(out.glob("*.stats.json")):
        stats = json.loads(stats_file.read_text())
        keys += [key for rejected in stats["rejects"].values() for key in rejected]
    keys += list(read_samples(out)) if any(out.glob("*.tar")) else []
    return keys


def test_tiny_dpt_labels_generated_scenes_at_512x384(tiny_teachers, scene_folder, tmp_path):
    out = tmp_path / "out"
    teacher_folder = tiny_teachers["dpt"]
    code = label(scene_folder, teacher_folder, out, "--source.sample_count", "4", "--source.sample_seed", "3",
                 "--output.samples_per_shard", "3", "--runtime.num_workers", "1")
    assert code == 0
    from shards.tools.commands import main as shards_main

    assert shards_main(["verify", str(out), "--quiet", "true"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["inputs"], summary["labeled"], summary["rejected"], summary["shards"]) == (4, 4, 0, 2)
    assert summary["complete"] and summary["images_per_second"] > 0
    manifest = json.loads((out / "manifest.json").read_text())
    teacher = load_teacher(str(teacher_folder))
    assert manifest["teacher"]["teacher_revision"] == teacher.revision
    assert (out / "config.yaml").exists()
    samples = read_samples(out)
    assert len(samples) == 4
    for key, sample in samples.items():
        meta = sample.meta
        assert key == f"scene_{int(key.rsplit('_', 1)[1]):06d}" and meta.source == f"{key}.png"
        assert (meta.kind, meta.teacher, meta.teacher_revision) == (RELATIVE_INVERSE_DEPTH, teacher.model_id,
                                                                    teacher.revision)
        assert meta.source_size == (160, 120) and meta.scale == pytest.approx(3.2)
        assert meta.crop_box == (0, 0, 512, 384) and sample.depth.shape == (384, 512)
        crop = preprocess_image((scene_folder / meta.source).read_bytes(), key, PreprocessConfig())
        assert np.abs(sample.image.astype(int) - decode_jpeg(encode_jpeg(crop.image)).astype(int)).max() == 0
        direct = teacher(torch.from_numpy(crop.image[None].copy()))[0].numpy()
        low, high = meta.label_range
        assert high - low > 1e-3
        step = (high - low) / 65534  # one 16-bit code; float32 convolutions of a batch of 4 and of 1 differ ~1e-5
        error = np.abs(sample.depth - direct)
        assert error.max() <= step and np.median(error) <= step / 2


def test_salted_folder_completes_with_named_rejects(tiny_teachers, salted_folder, tmp_path):
    out = tmp_path / "out"
    assert label(salted_folder, tiny_teachers["dpt"], out, *small("--output.samples_per_shard", "4")) == 0
    expected_rejects = {file.split(".")[0]: reason for file, reason in SALTED.values() if reason}
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {record["key"]: record["reason"] for record in rejects} == expected_rejects
    assert next(r for r in rejects if r["reason"] == "duplicate_key")["source"] == "good.png"
    labeled = {file.split(".")[0] for file, reason in SALTED.values() if reason is None}
    samples = read_samples(out)
    assert set(samples) == labeled
    assert samples["rotated"].meta.source_size == (120, 160) and samples["grey16"].meta.extra["source_mode"] == "I;16"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rejected_by_reason"] == {reason: list(expected_rejects.values()).count(reason)
                                             for reason in set(expected_rejects.values())}
    assert summary["labeled"] + summary["rejected"] == summary["inputs"] == len(SALTED)


def _write_images(folder, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(gradient_rgb(64, 48, seed=index)).save(folder / f"{index:03d}.png")


def test_rerun_redoes_only_unfinished_jobs(tmp_path):
    images, out = tmp_path / "images", tmp_path / "out"
    _write_images(images, 10)
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 0
    shards = sorted(out.glob("*.tar"))
    assert len(shards) == 3
    finished_at = shards[0].stat().st_mtime_ns
    shards[1].with_name(shards[1].name.replace(".tar", ".stats.json")).unlink()  # killed before its stats
    shards[2].write_bytes(shards[2].read_bytes()[:2048])  # a stats json whose tar disagrees
    (out / "train-001-000002.tar.tmp").write_bytes(b"half")  # another process's unfinished write
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 0
    assert shards[0].stat().st_mtime_ns == finished_at
    assert not list(out.glob("*.tmp"))
    keys = input_keys_seen(out)
    assert sorted(keys) == [f"{index:03d}" for index in range(10)]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["this_run"]["jobs"] == 2 and summary["labeled"] == 10 and summary["complete"]


def test_a_folder_labelled_before_the_checksums_resumes_and_verifies(tmp_path, capsys):
    """Shards of format 1 (no checksums) stay as they are; the jobs redone get checksums; verify says which."""
    from shards.tools.commands import main as shards_main
    from tests.shards.conftest import downgrade_shard

    images, out = tmp_path / "images", tmp_path / "out"
    _write_images(images, 10)
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 0
    shards = sorted(out.glob("*.tar"))
    for path in shards:
        downgrade_shard(path)
    (out / "summary.json").write_text(json.dumps({k: v for k, v in json.loads((out / "summary.json").read_text())
                                                  .items() if k != "stats_sha256"}))
    shards[1].with_name(shards[1].name.replace(".tar", ".stats.json")).unlink()  # job 1 unfinished
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["this_run"]["jobs"] == 1
    assert sorted(summary["stats_sha256"]) == [path.name for path in shards]
    assert sorted(read_samples(out)) == [f"{index:03d}" for index in range(10)]
    capsys.readouterr()
    assert shards_main(["verify", str(out), "--quiet", "true"]) == 0
    assert "no checksums: 2 of 3 shard(s)" in capsys.readouterr().out
    assert "format_version" in read_stats(shards[1]) and "format_version" not in read_stats(shards[0])


@pytest.mark.parametrize(
    ("change", "named"),
    [(("--teacher.model", "TINY"), "teacher.teacher"), (("--preprocess.crop", "random"), "preprocess.crop"),
     (("--output.samples_per_shard", "3"), "jobs.samples_per_shard"), (("--teacher.flip_tta", "true"), "flip_tta")],
)
def test_a_changed_run_on_the_same_folder_is_refused(tiny_teachers, tmp_path, capsys, change, named):
    images, out = tmp_path / "images", tmp_path / "out"
    _write_images(images, 4)
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 0
    before = sorted(path.name for path in out.iterdir())
    change = tuple(str(tiny_teachers["dpt"]) if value == "TINY" else value for value in change)
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4"), *change) == 2
    message = capsys.readouterr().err
    assert named in message and "other settings" in message
    assert sorted(path.name for path in out.iterdir()) == before


def test_a_folder_labelled_with_the_old_precision_record_is_refused_with_what_to_do(tmp_path, capsys):
    """Before the float32 head, the manifest held one precision string; a resume must say what changed."""
    images, out = tmp_path / "images", tmp_path / "out"
    _write_images(images, 4)
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["precision"] == {"backbone": "float32", "head": "float32", "output": "float32"}
    manifest["teacher"]["precision"] = "float32"  # as written before the change
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert label(images, "identity", out, *small("--output.samples_per_shard", "4")) == 2
    message = capsys.readouterr().err
    assert "teacher.precision" in message and "new output.dir" in message


def _nan_or_luminance(pixels: torch.Tensor) -> torch.Tensor:
    """Luminance, but NaN for an image whose top-left pixel is pure red: a teacher gone wrong on one input."""
    depth = pixels.mean(dim=1)
    poisoned = (pixels[:, 0, 0, 0] > 0.99) & (pixels[:, 1, 0, 0] < 0.01)
    depth[poisoned] = float("nan")
    return depth


def _faulty_teacher(**options) -> Teacher:
    return Teacher(_nan_or_luminance, kind=RELATIVE_INVERSE_DEPTH, model_id="faulty", revision="1",
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))  # the input as given


def test_non_finite_and_constant_maps_are_rejected(tmp_path, monkeypatch):
    monkeypatch.setitem(BUILTIN_TEACHERS, "faulty", _faulty_teacher)
    images, out = tmp_path / "images", tmp_path / "out"
    _write_images(images, 2)
    Image.new("RGB", (64, 48), (90, 90, 90)).save(images / "flat.png")
    poisoned = gradient_rgb(64, 48)
    poisoned[:8, :8] = (255, 0, 0)
    Image.fromarray(poisoned).save(images / "poisoned.png")
    assert label(images, "faulty", out, *small()) == 0
    rejects = {json.loads(line)["key"]: json.loads(line)["reason"] for line in open(out / "rejects.jsonl")}
    assert rejects == {"flat": "constant_label", "poisoned": "non_finite_label"}
    assert set(read_samples(out)) == {"000", "001"}


@pytest.mark.parametrize("kind", ["datasets", "shards", "list"])
def test_every_source_kind_labels_end_to_end(kind, tmp_path):
    out = tmp_path / "out"
    images = tmp_path / "images"
    _write_images(images, 5)
    names = sorted(path.name for path in images.iterdir())
    if kind == "datasets":
        datasets = pytest.importorskip("datasets")
        rows = {"image": [{"bytes": (images / name).read_bytes(), "path": None} for name in names]}
        source = tmp_path / "rows"
        datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image()).save_to_disk(str(source))
        expected = [f"rows/train/{row:09d}" for row in range(5)]
    elif kind == "shards":
        import webdataset as wds

        source = tmp_path / "imageshards"
        source.mkdir()
        with wds.TarWriter(str(source / "part-000000.tar")) as sink:
            for name in names:
                sink.write({"__key__": f"cam/{name[:3]}", "png": (images / name).read_bytes()})
        expected = [f"imageshards/cam/{name[:3]}" for name in names]
    else:
        source = tmp_path / "subset.txt"
        source.write_text("\n".join(f"images/{name}" for name in names[1:]) + "\n")
        expected = [f"images/{name[:3]}" for name in names[1:]]
    assert label(source, "identity", out, *small("--source.kind", kind, "--output.samples_per_shard", "2")) == 0
    samples = read_samples(out)
    assert sorted(samples) == expected
    first = samples[expected[0]]
    expected_image = preprocess_image((images / names[-len(expected)]).read_bytes(), "k",
                                      PreprocessConfig(width=128, height=96)).image
    assert np.array_equal(first.image, decode_jpeg(encode_jpeg(expected_image)))  # the JPEG of the same crop
    assert all(read_stats(shard)["teacher"] == "identity" for shard in out.glob("*.tar"))
    assert os.path.exists(out / "summary.json")
