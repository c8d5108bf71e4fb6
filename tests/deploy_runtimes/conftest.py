"""Fixtures of the phone-runtime tests: a briefly trained student and held-out generated scenes.

These tests write files, so they need the export extras (``pip install -e '.[export-litert,executorch,coreml]'``;
``make test-runtimes``); each toolchain that is missing skips its tests with the package's name as the reason.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from distill.deploy import export  # noqa: E402
from shards.format import RELATIVE_INVERSE_DEPTH  # noqa: E402
from shards.tools.scenes import write_scene_folder  # noqa: E402
from tests.distill.conftest import train_tiny_student, write_scene_shards  # noqa: E402

#: The export size of the tests: small, 3:2, multiples of 32 (the student trains at 96x64).
SIZE = (96, 64)
def missing_toolchain(format: str) -> str | None:
    """Why ``format`` (fp32 and int8) cannot be tested here, or None."""
    missing = export.missing_toolchain(format, int8=True)
    if not missing:
        return None
    return f"{', '.join(missing)} not installed (pip install 'depth-distill[{export.TOOLCHAINS[format][2]}]')"


def needs(format: str):
    reason = missing_toolchain(format)
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def student(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny student trained for 30 steps on generated-scene shards (not an untrained one: its output has
    structure, so parity and int8 errors mean something)."""
    root = tmp_path_factory.mktemp("runtime_student")
    write_scene_shards(root / "shards", RELATIVE_INVERSE_DEPTH, shards=2, per_shard=8, size=(128, 96))
    return train_tiny_student(root / "run", root / "shards", steps=30)


@pytest.fixture(scope="session")
def held_out_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 generated scenes never seen in training, as an rgb/ + depth/ folder (what ``evaluate --data`` reads)."""
    folder = tmp_path_factory.mktemp("held_out")
    write_scene_folder(folder, count=8, seed=5000, width=128, height=96)
    return folder
