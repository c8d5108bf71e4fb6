"""Several teachers in one run (``--teacher.model '[A, B]'``): every teacher labels every image, the first one's
label where one teacher's always was, the others' as ``depth16_<i>`` members, the json's ``labels`` list and the
manifest naming each teacher; a resume with another list is refused; a map one teacher cannot store rejects the
sample, naming the teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pseudolabel.config import PreprocessConfig, TeacherConfig, check_teachers
from pseudolabel.preprocess import preprocess_image
from pseudolabel.teachers import BUILTIN_TEACHERS, Teacher, load_teacher
from shards.format import RELATIVE_INVERSE_DEPTH, label_member
from shards.reader import build_pipeline
from tests.pseudolabel.conftest import REPO_ROOT, gradient_rgb

SMOKE = str(REPO_ROOT / "configs" / "pseudolabel" / "smoke.yaml")


def label(source, teachers: list, out, *extra: str) -> int:
    from pseudolabel.cli import main

    model = teachers[0] if len(teachers) == 1 else "[" + ", ".join(str(t) for t in teachers) + "]"
    return main(["--config", SMOKE, "--source.path", str(source), "--teacher.model", str(model),
                 "--output.dir", str(out), "--runtime.num_workers", "0", "--runtime.progress", "false",
                 "--preprocess.width", "128", "--preprocess.height", "96", "--teacher.short_side", "96", *extra])


def write_images(folder, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(gradient_rgb(64, 48, seed=index)).save(folder / f"{index:03d}.png")


def read_samples(out) -> dict:
    return {sample.key: sample for sample in build_pipeline(str(out), training=False, split=False)}


def test_two_teachers_label_every_image_into_one_sample(tiny_teachers, scene_folder, tmp_path) -> None:
    out = tmp_path / "out"
    folders = [tiny_teachers["dpt"], tiny_teachers["depth_anything"]]
    assert label(scene_folder, folders, out, "--source.sample_count", "3") == 0
    teachers = [load_teacher(str(folder), short_side=96) for folder in folders]
    from shards.tools.commands import main as shards_main

    assert shards_main(["verify", str(out), "--quiet", "true"]) == 0
    samples = read_samples(out)
    assert len(samples) == 3
    for key, sample in samples.items():
        meta = sample.meta
        assert [(record.member, record.teacher, record.kind) for record in meta.labels] == [
            (label_member("depth16.dzst", index), teacher.model_id, RELATIVE_INVERSE_DEPTH)
            for index, teacher in enumerate(teachers)
        ]
        assert meta.teacher == teachers[0].model_id and meta.label_range == meta.labels[0].label_range
        crop = preprocess_image((scene_folder / meta.source).read_bytes(), key, PreprocessConfig(width=128, height=96))
        for teacher, decoded, record in zip(teachers, sample.labels, meta.labels):
            direct = teacher(torch.from_numpy(crop.image[None].copy()))[0].numpy()
            step = (record.label_range[1] - record.label_range[0]) / 65534  # one 16-bit code
            assert np.abs(decoded.depth - direct).max() < 2 * step + 1e-5, (key, decoded.member)
        assert np.array_equal(sample.depth, sample.labels[0].depth)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["teacher"]["teacher"] == teachers[0].model_id
    assert [entry["teacher"] for entry in manifest["teachers"]] == [teacher.model_id for teacher in teachers]
    assert [entry["family"] for entry in manifest["teachers"]] == ["dpt", "depth_anything"]
    summary = json.loads((out / "summary.json").read_text())
    assert [entry["teacher"] for entry in summary["teachers"]] == [teacher.model_id for teacher in teachers]
    stats = json.loads(next(out.glob("*.stats.json")).read_text())
    assert {"depth16_1.dzst"} <= {member[0].split(".", 1)[1] for member in stats["members"]}


def test_one_teacher_writes_what_it_always_wrote(tmp_path) -> None:
    """No ``teachers`` list in the manifest, the stats or the summary: a one-teacher folder resumes as before."""
    write_images(tmp_path / "images", 2)
    assert label(tmp_path / "images", ["identity"], tmp_path / "out") == 0
    for name in ("manifest.json", "summary.json"):
        assert "teachers" not in json.loads((tmp_path / "out" / name).read_text())
    (sample,) = list(read_samples(tmp_path / "out").values())[:1]
    assert [record.member for record in sample.meta.labels] == ["depth16.dzst"]


@pytest.mark.parametrize(
    "rerun", [["identity"], ["TINY", "identity"], ["identity", "TINY", "identity"]], ids=["fewer", "order", "more"]
)
def test_a_resume_with_another_teacher_list_is_refused(tiny_teachers, tmp_path, capsys, rerun) -> None:
    images, out = tmp_path / "images", tmp_path / "out"
    write_images(images, 2)
    tiny = tiny_teachers["dpt"]
    assert label(images, ["identity", tiny], out) == 0
    before = sorted(path.name for path in out.iterdir())
    assert label(images, [tiny if name == "TINY" else name for name in rerun], out) == 2
    message = capsys.readouterr().err
    assert "teachers" in message and "other settings" in message
    assert sorted(path.name for path in out.iterdir()) == before
    assert label(images, ["identity", tiny], out) == 0  # the same list resumes


def _constant_for_flat(pixels: torch.Tensor) -> torch.Tensor:
    """The red channel, made constant for an image without red: a second teacher that fails there."""
    depth = pixels[:, 0].clone()
    depth[pixels[:, 0].mean(dim=(1, 2)) < 0.05] = 0.5
    return depth


def _second(**options) -> Teacher:
    return Teacher(_constant_for_flat, kind=RELATIVE_INVERSE_DEPTH, model_id="second", revision="1",
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def test_a_map_the_second_teacher_cannot_store_rejects_the_sample(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(BUILTIN_TEACHERS, "second", _second)
    images, out = tmp_path / "images", tmp_path / "out"
    write_images(images, 2)
    dark = gradient_rgb(64, 48, seed=9)
    dark[:, :, 0] = 0  # the first teacher (green channel) still varies; the second's map is constant
    Image.fromarray(dark).save(images / "dark.png")
    assert label(images, ["identity", "second"], out) == 0
    (reject,) = [json.loads(line) for line in open(out / "rejects.jsonl")]
    assert (reject["key"], reject["reason"]) == ("dark", "constant_label")
    assert reject["message"].startswith("teacher 1 (second): ")
    assert set(read_samples(out)) == {"000", "001"}


@pytest.mark.parametrize(
    ("settings", "named"),
    [({"model": [], "kind": None}, "teacher.model"),
     ({"model": ["a", "b"], "kind": ["metric_depth"]}, "teacher.kind lists 1 values for 2 teachers"),
     ({"model": ["a", "b"], "revision": ["main", None, None]}, "teacher.revision lists 3 values")],
)
def test_teacher_lists_are_checked(settings: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        check_teachers(TeacherConfig(**settings))


def test_a_kind_applies_per_teacher(tmp_path, monkeypatch) -> None:
    assert TeacherConfig(model=["a", "b"], kind="metric_depth").each("kind") == ["metric_depth"] * 2
    assert TeacherConfig(model="a").each("revision") == [None]
    write_images(tmp_path / "images", 1)
    assert label(tmp_path / "images", ["identity", "identity"], tmp_path / "out", "--teacher.kind",
                 "[null, metric_depth]") == 2  # identity says relative: a contradicting kind is refused
