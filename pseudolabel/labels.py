"""Teacher maps -> 16-bit label codes in one batched pass on the teacher's device, then -> shard members.

``shards.format.encode_label_codes`` defines the code (0 invalid, 1..65535 over the sample's [min, max]); it costs
7-14 ms per 512x384 map on one core here, which alone would need more CPU cores than a GPU machine has at the rate
the teacher labels. :func:`code_labels` computes the same codes with the same float64 arithmetic for the whole batch
where the map already is (the GPU in production), and only uint16 codes (half the bytes of float32) cross to the
CPU, where the writer compresses them with the label codec. ``tests/pseudolabel/test_labels.py`` checks that the codes
and ranges equal ``encode_label_codes`` exactly, and the members equal ``shards.codec.encode_sample`` byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from shards.codec import label_codec
from shards.format import (
    FIRST_VALID_CODE,
    REJECT_CONSTANT_LABEL,
    REJECT_NON_FINITE,
    VALID_CODE_STEPS,
    SampleMeta,
    check_key,
)


@dataclass
class CodedLabels:
    """A batch of coded maps: ``codes`` uint16 (B, H, W) (zeros where rejected), per map its ``label_range``
    (min, max) or None, and its reject ``(reason, message)`` or None."""

    codes: np.ndarray
    ranges: list[tuple[float, float] | None]
    rejects: list[tuple[str, str] | None]


@torch.inference_mode()
def code_labels(depth: torch.Tensor) -> CodedLabels:
    """float (B, H, W) on any device -> :class:`CodedLabels`; every pixel of a teacher's map is valid.

    A map with a non-finite value is rejected whole (``non_finite_label``): a teacher that produced NaN somewhere is
    not trusted elsewhere. A constant map is ``constant_label``.
    """
    values = depth.detach().double()  # (B, H, W), float64 as encode_label_codes computes
    finite = torch.isfinite(values).flatten(1).all(dim=1)
    safe = torch.where(torch.isfinite(values), values, torch.zeros((), dtype=values.dtype, device=values.device))
    low = safe.flatten(1).amin(dim=1)
    high = safe.flatten(1).amax(dim=1)
    storable = finite & (high > low)
    span = torch.where(storable, high - low, torch.ones_like(high))[:, None, None]
    scaled = (safe - low[:, None, None]) / span * VALID_CODE_STEPS
    codes = (torch.round(scaled) + FIRST_VALID_CODE).to(torch.int32)
    codes = torch.where(storable[:, None, None], codes, torch.zeros_like(codes)).to(torch.uint16)
    codes_host = codes.cpu().numpy()
    ranges: list[tuple[float, float] | None] = []
    rejects: list[tuple[str, str] | None] = []
    for index, (is_finite, is_storable, minimum, maximum) in enumerate(
        zip(finite.tolist(), storable.tolist(), low.tolist(), high.tolist())
    ):
        if not is_finite:
            bad = int((~torch.isfinite(values[index])).sum())
            rejects.append((REJECT_NON_FINITE, f"the teacher's map holds {bad} non-finite values"))
        elif not is_storable:
            rejects.append((REJECT_CONSTANT_LABEL, f"label is constant ({minimum})"))
        else:
            rejects.append(None)
        ranges.append((float(minimum), float(maximum)) if is_storable else None)
    return CodedLabels(codes=codes_host, ranges=ranges, rejects=rejects)


def sample_members(
    key: str, jpg: bytes, codes: np.ndarray, label_range: tuple[float, float], meta: SampleMeta, codec: str
) -> dict[str, bytes | str]:
    """The members :func:`shards.codec.encode_sample` writes, from a JPEG made in a worker and precomputed codes."""
    check_key(key)
    label = label_codec(codec)
    meta.label_range = label_range
    meta.depth_codec = label.extension
    meta.size = (int(codes.shape[1]), int(codes.shape[0]))
    return {"__key__": key, "jpg": jpg, label.extension: label.encode(codes), "json": meta.to_json()}
