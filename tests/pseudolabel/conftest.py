"""Shared fixtures: tiny teachers saved like downloaded ones, generated scenes, and a salted folder of odd files.

``HF_HUB_OFFLINE=1`` is set before anything imports huggingface_hub, so a missing model fails at once instead of
retrying the hub.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import io  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def hub_offline(monkeypatch):
    """Offline even if another test module imported huggingface_hub before this conftest set the variable."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="session")
def tiny_teachers(tmp_path_factory) -> dict[str, Path]:
    """Folders of tiny random teachers (dpt, dpt_hybrid, depth_anything), built once per session."""
    from pseudolabel.tiny_teacher import ARCHITECTURES, save_tiny_teacher

    root = tmp_path_factory.mktemp("teachers")
    return {architecture: save_tiny_teacher(root / architecture, architecture) for architecture in ARCHITECTURES}


@pytest.fixture(scope="session")
def scene_folder(tmp_path_factory) -> Path:
    """24 generated scenes at 160x120 (``rgb/scene_NNNNNN.png``); the pipeline upscales them to its crop."""
    from shards.tools.scenes import write_scene_folder

    root = tmp_path_factory.mktemp("scenes")
    write_scene_folder(root, 24, seed=0, width=160, height=120)
    return root / "rgb"


def encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def gradient_rgb(width: int = 160, height: int = 120, seed: int = 0) -> np.ndarray:
    """A smooth colour image with some noise: varied enough that every teacher's map varies."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 64], axis=-1)
    image = image + rng.normal(0, 12, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def exif_rotated_jpeg(width: int = 160, height: int = 120) -> bytes:
    """A JPEG stored as width x height with EXIF orientation 6 (display rotated 90 degrees clockwise)."""
    image = Image.fromarray(gradient_rgb(width, height, seed=5))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=92, exif=exif.tobytes())


#: name -> (file name, expected reject reason or None when it must be labeled)
SALTED = {
    "good": ("good.jpg", None),
    "truncated_jpeg": ("truncated.jpg", "truncated"),
    "text_named_jpg": ("notes.jpg", "not_an_image"),
    "zero_bytes": ("empty.jpg", "empty_file"),
    "one_pixel": ("tiny.png", "too_small"),
    "cmyk_jpeg": ("cmyk.jpg", None),
    "grey16_png": ("grey16.png", None),
    "exif_rotated": ("rotated.jpg", None),
    "palette_png": ("palette.png", None),
    "rgba_png": ("rgba.png", None),
    "duplicate_key": ("good.png", "duplicate_key"),  # good.jpg sorts first and holds the key "good"
}


def salted_bytes() -> dict[str, bytes]:
    rgb = Image.fromarray(gradient_rgb())
    whole_jpeg = encode(rgb, "JPEG", quality=90)
    grey16 = (np.linspace(0, 65535, 160 * 120).reshape(120, 160)).astype(np.uint16)
    rgba = np.dstack([gradient_rgb(seed=3), np.tile(np.linspace(0, 255, 160), (120, 1)).astype(np.uint8)])
    return {
        "good": whole_jpeg,
        "truncated_jpeg": whole_jpeg[: len(whole_jpeg) // 2],
        "text_named_jpg": b"these are notes, not an image\n" * 10,
        "zero_bytes": b"",
        "one_pixel": encode(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
        "cmyk_jpeg": encode(rgb.convert("CMYK"), "JPEG", quality=90),
        "grey16_png": encode(Image.fromarray(grey16), "PNG"),
        "exif_rotated": exif_rotated_jpeg(),
        "palette_png": encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64), "PNG"),
        "rgba_png": encode(Image.fromarray(rgba, mode="RGBA"), "PNG"),
        "duplicate_key": encode(rgb, "PNG"),
    }


@pytest.fixture
def salted_folder(tmp_path) -> Path:
    """A folder of good, convertible and broken files (see ``SALTED``)."""
    folder = tmp_path / "salted"
    folder.mkdir()
    for name, data in salted_bytes().items():
        (folder / SALTED[name][0]).write_bytes(data)
    return folder
