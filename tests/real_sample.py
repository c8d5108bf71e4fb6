"""Where the real NYU frame lives, for the tests and benchmarks that use it.

The frame (``rgb.png``, ``depth.npy``, ``fastdepth_pred.npy``: one NYU Depth v2 frame with FastDepth's prediction,
from the FastDepth repository under its own licence) is never part of this repository: its folder is named by the
environment variable ``DEPTH_DISTILL_REAL_SAMPLE`` (``.ci/run`` sets it when the folder exists beside the checkout),
and what needs it is skipped without it.
"""

from __future__ import annotations

import os
from pathlib import Path

#: The environment variable naming the real frame's folder.
REAL_SAMPLE_ENV = "DEPTH_DISTILL_REAL_SAMPLE"
#: Files the folder must hold.
REAL_SAMPLE_FILES = ("rgb.png", "depth.npy", "fastdepth_pred.npy")


def real_sample_folder() -> tuple[Path | None, str]:
    """(the folder, "") when ``DEPTH_DISTILL_REAL_SAMPLE`` names a folder with the frame's files, else (None, why
    not), the reason a test skips with or a benchmark prints."""
    named = os.environ.get(REAL_SAMPLE_ENV, "")
    if not named:
        return None, f"the real NYU frame is not available: {REAL_SAMPLE_ENV} is not set"
    folder = Path(named)
    missing = [name for name in REAL_SAMPLE_FILES if not (folder / name).is_file()]
    if missing:
        return None, f"the real NYU frame is not available: {REAL_SAMPLE_ENV}={named} lacks {', '.join(missing)}"
    return folder, ""
