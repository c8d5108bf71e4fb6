"""Fixtures every test folder shares."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.real_sample import real_sample_folder


@pytest.fixture(scope="session")
def real_sample() -> Path:
    """The real NYU frame's folder (``DEPTH_DISTILL_REAL_SAMPLE``); the test is skipped, with the reason, without it."""
    folder, why = real_sample_folder()
    if folder is None:
        pytest.skip(why)
    return folder
