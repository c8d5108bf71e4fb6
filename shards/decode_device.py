"""Where a stage decodes its images: one setting, one name in both stages (``runtime.decode_device`` of
``pseudolabel``, ``data.decode_device`` of ``distill``), kept apart from :mod:`shards.tensor_images` so that the
configs read it without importing torch.

``auto`` = on the model's device when that is a GPU, else in the DataLoader workers; ``cpu`` = in the workers, as
before the device path; ``model`` = on the model's device whatever it is (on a CPU: the tests of the device path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

if TYPE_CHECKING:
    import torch

DecodeDevice = Literal["auto", "cpu", "model"]
DECODE_DEVICES = get_args(DecodeDevice)


def decodes_on_model(setting: str, device: torch.device) -> bool:
    """Whether a stage whose model runs on ``device`` decodes there under ``setting`` (a :data:`DecodeDevice`)."""
    if setting not in DECODE_DEVICES:
        raise ValueError(f"decode_device is {setting!r}; expected one of {list(DECODE_DEVICES)}")
    return setting == "model" or (setting == "auto" and device.type == "cuda")
