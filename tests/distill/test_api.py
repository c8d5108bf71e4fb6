"""The Python API: ``from distill import DepthModel``; from_pretrained, predict on every input form at the input's
size, save_pretrained with its model card, push_to_hub against a hub mocked at the HTTP layer."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from distill import DepthModel, DepthPrediction
from distill.deploy.runtime import images_to_batch, resize_prediction
from shards.format import RELATIVE_INVERSE_DEPTH
from shards.tools.scenes import render_scene

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def saved(trained_student: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The briefly trained student, saved through the API (a hub-ready folder with its card)."""
    model = DepthModel.from_pretrained(trained_student, input_size=(96, 64))
    return model.save_pretrained(tmp_path_factory.mktemp("saved") / "tiny-student")


def _picture(width: int, height: int, seed: int = 3) -> np.ndarray:
    return render_scene(seed, width=width, height=height).image  # uint8 (H, W, 3)


def test_saved_folder_holds_the_trained_weights_and_a_card(trained_student: Path, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    original = DepthModel.from_pretrained(trained_student, input_size=(96, 64))
    reloaded = DepthModel.from_pretrained(saved, input_size=(96, 64))
    batch = torch.from_numpy(images_to_batch([_picture(96, 64)], 96, 64))
    torch.testing.assert_close(reloaded.infer(batch), original.infer(batch), rtol=0, atol=0)


def test_predict_takes_every_input_form_at_its_own_size(saved: Path, tmp_path: Path) -> None:
    model = DepthModel.from_pretrained(saved, input_size=(96, 64))
    picture = _picture(120, 90)
    path = tmp_path / "room.png"
    Image.fromarray(picture).save(path)
    forms = {
        "path": (str(path), (90, 120)),
        "pathlib": (path, (90, 120)),
        "pil": (Image.fromarray(_picture(77, 55)), (55, 77)),
        "uint8": (_picture(70, 50), (50, 70)),
        "greyscale": (_picture(33, 41)[..., 0], (41, 33)),
        "tensor": (torch.rand(3, 40, 30), (40, 30)),
    }
    for name, (image, (height, width)) in forms.items():
        prediction = model.predict(image)
        assert isinstance(prediction, DepthPrediction), name
        assert prediction.values.shape == (height, width) and prediction.values.dtype == np.float32, name
        assert prediction.kind == RELATIVE_INVERSE_DEPTH and np.isfinite(prediction.values).all(), name
        assert prediction.image().size == (width, height) and prediction.image().mode == "RGB", name
    batch = model.predict(torch.rand(3, 3, 64, 96))
    assert [p.values.shape for p in batch] == [(64, 96)] * 3
    mixed = model.predict([str(path), _picture(70, 50), torch.rand(3, 40, 30)], batch_size=2)
    assert [p.values.shape for p in mixed] == [(90, 120), (50, 70), (40, 30)]


def test_every_form_of_one_picture_gives_one_map_the_model_computes(saved: Path, tmp_path: Path) -> None:
    """A path, a PIL image and an array of the same picture go through the same resize and the same model call."""
    model = DepthModel.from_pretrained(saved, input_size=(96, 64))
    picture = _picture(120, 90)
    Image.fromarray(picture).save(tmp_path / "room.png")
    expected = resize_prediction(model.infer(torch.from_numpy(images_to_batch([picture], 96, 64)))[0].numpy(), 120, 90)
    for image in (tmp_path / "room.png", Image.fromarray(picture), picture):
        np.testing.assert_array_equal(model.predict(image).values, expected)
    as_tensor = model.predict(torch.from_numpy(picture).permute(2, 0, 1).float() / 255.0).values
    assert np.abs(as_tensor - expected).max() < 0.05 * (expected.max() - expected.min())  # torch vs PIL resize


@pytest.mark.parametrize(
    ("image", "error", "words"),
    [
        (np.zeros((8, 8, 3), np.float32), TypeError, "uint8"),
        (np.zeros((8, 8, 4), np.uint8), ValueError, "(H, W, 3)"),
        (torch.zeros(4, 8, 8), ValueError, "(3, H, W)"),
        (torch.zeros(3, 8, 8, dtype=torch.uint8), TypeError, "float"),
        (42, TypeError, "picture file path"),
        ([], ValueError, "empty"),
    ],
)
def test_bad_inputs_say_what_is_accepted(saved: Path, image, error, words: str) -> None:
    model = DepthModel.from_pretrained(saved, input_size=(96, 64))
    with pytest.raises(error, match=words.replace("(", r"\(").replace(")", r"\)")):
        model.predict(image)


def test_paths_predict_cannot_read_say_what_it_takes(saved: Path, tmp_path: Path) -> None:
    """A missing path, a URL, a folder or a file that is no picture: one clear error naming the input and what
    ``predict`` takes, not the file system's or PIL's own."""
    from distill.deploy.model import NotAPictureError, PictureNotFoundError

    model = DepthModel.from_pretrained(saved, input_size=(96, 64))
    (tmp_path / "notes.jpg").write_text("not a picture")
    cases = [
        (tmp_path / "missing.jpg", PictureNotFoundError, "no such picture file"),
        ("https://example.com/room.jpg", NotAPictureError, "not URLs (https://example.com/room.jpg)"),
        ("http://example.com/room.jpg", NotAPictureError, "download the picture first"),
        (tmp_path, NotAPictureError, "is a folder"),
        (tmp_path / "notes.jpg", NotAPictureError, "is not a picture this can read"),
    ]
    for image, error, words in cases:
        with pytest.raises(error) as raised:
            model.predict(image)
        message = str(raised.value)
        assert words in message and str(image) in message and "a picture file path, a PIL image" in message
        assert "\n" not in message
    assert issubclass(PictureNotFoundError, FileNotFoundError) and issubclass(NotAPictureError, ValueError)


def test_an_older_student_folder_still_loads(trained_student: Path, tmp_path: Path) -> None:
    """Version 1 folders, before the card and the informative keys: only the config fields and the weights."""
    old = tmp_path / "old"
    shutil.copytree(trained_student, old)
    record = json.loads((old / "config.json").read_text())
    for key in ("format_version", "output", "input"):
        record.pop(key, None)
    (old / "config.json").write_text(json.dumps(record))
    assert DepthModel.from_pretrained(old).predict(_picture(70, 50)).values.shape == (50, 70)


def test_the_card_reads_teacher_and_data_from_the_run(trained_student: Path, tmp_path: Path) -> None:
    shards = tmp_path / "labels"
    shards.mkdir()
    manifest = {"teacher": {"teacher": "depth-anything/Depth-Anything-V2-Large-hf"}}
    (shards / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "run"
    shutil.copytree(trained_student, run / "student")
    (run / "config.yaml").write_text(yaml.safe_dump({"data": {"train": [str(shards)]}}))
    folder = DepthModel.from_pretrained(run / "student").save_pretrained(tmp_path / "out")
    metadata = _card_metadata((folder / "README.md").read_text())
    assert metadata["teacher"] == {"model": "depth-anything/Depth-Anything-V2-Large-hf", "license": "cc-by-nc-4.0"}
    assert metadata["training_data"] == [str(shards)] and metadata["base_model"].endswith("Large-hf")


def test_only_students_are_saved(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="save_pretrained writes students"):
        DepthModel.from_pretrained("constant").save_pretrained(tmp_path / "x")


def _card_metadata(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_push_to_hub_uploads_the_folder_and_its_card(saved: Path, tmp_path: Path, monkeypatch) -> None:
    """The hub client runs for real down to its HTTP client, whose transport answers like the hub."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.utils import _http

    requests: list[tuple[str, str]] = []
    committed: dict[str, bytes] = {}

    def hub(request: httpx2.Request) -> httpx2.Response:
        path = request.url.path
        requests.append((request.method, path))
        if path == "/api/repos/create":
            assert json.loads(request.content)["name"] == "tiny-student"
            return httpx2.Response(200, json={"url": "https://huggingface.co/someone/tiny-student"})
        if path == "/api/validate-yaml":
            return httpx2.Response(200, json={"errors": [], "warnings": []})
        if path.startswith("/api/models/someone/tiny-student/preupload/"):
            files = json.loads(request.content)["files"]
            modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
            return httpx2.Response(200, json={"files": modes})
        if path.startswith("/api/models/someone/tiny-student/commit/"):
            for line in request.content.decode().splitlines():
                entry = json.loads(line)
                if entry["key"] == "file":
                    committed[entry["value"]["path"]] = base64.b64decode(entry["value"]["content"])
            return httpx2.Response(
                200, json={"commitUrl": "https://huggingface.co/someone/tiny-student/commit/1", "commitOid": "1" * 40}
            )
        return httpx2.Response(404, json={"error": f"not mocked: {path}"})

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _http.set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(hub)))
    try:
        evaluation = {
            "protocol": {"name": "reference", "alignment": "scale_shift_inverse"},
            "data": {"name": "nyu_depth_v2 test"},
            "count": 654,
            "metrics": {"abs_rel": 0.1234, "delta1": 0.8771, "rmse": 0.5},
        }
        export = {"format": "tflite", "file": "/x/student.tflite", "precision": "fp32",
                  "parity": {"tolerance": 1e-3, "runtime": "litert", "cases": [{"relative_difference": 2e-6}]}}
        url = DepthModel.from_pretrained(saved, input_size=(96, 64)).push_to_hub(
            "someone/tiny-student", token="hf_test", teacher="Intel/dpt-hybrid-midas", evaluations=[evaluation],
            exports=[export], training_data=["places365 (450k, seeded)"],
        )
    finally:
        _http.set_client_factory(_http.default_client_factory)
    assert url == "https://huggingface.co/someone/tiny-student/commit/1"
    assert ("POST", "/api/repos/create") in requests
    assert set(committed) == {"README.md", "config.json", "model.safetensors"}
    assert committed["model.safetensors"] == (saved / "model.safetensors").read_bytes()
    card = committed["README.md"].decode()
    metadata = _card_metadata(card)
    assert metadata["library_name"] == "depth-distill" and metadata["pipeline_tag"] == "depth-estimation"
    assert metadata["architecture"] == "fastdepth" and metadata["input_size"] == {"width": 96, "height": 64}
    assert metadata["output"] == RELATIVE_INVERSE_DEPTH
    assert metadata["teacher"] == {"model": "Intel/dpt-hybrid-midas", "license": "apache-2.0"}
    assert metadata["training_data"] == ["places365 (450k, seeded)"]
    assert metadata["evaluation"] == [{
        "data": "nyu_depth_v2 test", "protocol": "reference", "alignment": "scale_shift_inverse", "count": 654,
        "metrics": {"abs_rel": 0.1234, "rmse": 0.5, "delta1": 0.8771},
    }]
    assert metadata["exports"][0]["format"] == "tflite" and metadata["exports"][0]["parity_max_diff_over_range"] == 2e-6
    assert "| nyu_depth_v2 test | reference | scale_shift_inverse | 654 | 0.123 | 0.500 | 0.877 |" in card
    assert "from distill import DepthModel" in card
