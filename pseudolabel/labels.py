"""Teacher maps -> 16-bit label codes, fast enough that the CPU keeps up with a GPU teacher.

``shards.format.encode_label_codes`` defines the code (0 invalid, 1..65535 over the sample's [min, max]) and has a
fast path for maps without holes (0.6-0.8 ms per 512x384 map). Here a teacher's batch is coded either at once in
torch where the map already is on a GPU (the same float64 arithmetic; only uint16 codes cross to the host), or per map
with ``encode_label_codes`` in the writer's threads. ``tests/pseudolabel/test_labels.py`` checks that the GPU path
gives exactly the codes and ranges of ``encode_label_codes``. Members are made by ``shards.codec.sample_members``.
"""

from __future__ import annotations

import numpy as np
import torch

from shards.format import (
    FIRST_VALID_CODE,
    REJECT_CONSTANT_LABEL,
    REJECT_NON_FINITE,
    VALID_CODE_STEPS,
    LabelError,
    encode_label_codes,
)

Coded = tuple[np.ndarray | None, tuple[float, float] | None, tuple[str, str] | None]  # codes, range, reject


def code_map(depth: np.ndarray) -> Coded:
    """One float map (H, W) -> uint16 codes and (min, max), or a reject ``(reason, message)``.

    A map with a non-finite value is rejected whole (``non_finite_label``): a teacher that produced NaN somewhere is
    not trusted elsewhere. A constant map is ``constant_label``.
    """
    values = np.asarray(depth)
    finite = np.isfinite(values)
    if not finite.all():
        return None, None, (REJECT_NON_FINITE, f"the teacher's map holds {int((~finite).sum())} non-finite values")
    try:
        codes, label_range = encode_label_codes(values)
    except LabelError as error:
        return None, None, (error.reason, str(error))
    return codes, label_range, None


@torch.inference_mode()
def code_batch_on_device(depth: torch.Tensor) -> list[Coded]:
    """float (B, H, W) on its device -> per map what :func:`code_map` gives, computed in one batched pass."""
    values = depth.detach().double()  # (B, H, W)
    finite = torch.isfinite(values).flatten(1).all(dim=1)
    safe = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low = safe.flatten(1).amin(dim=1)
    high = safe.flatten(1).amax(dim=1)
    storable = finite & (high > low)
    span = torch.where(storable, high - low, torch.ones_like(high))[:, None, None]
    scaled = (safe - low[:, None, None]) / span * VALID_CODE_STEPS
    codes = (torch.round(scaled) + FIRST_VALID_CODE).to(torch.int32).to(torch.uint16).cpu().numpy()
    coded: list[Coded] = []
    for index, (is_finite, is_storable, minimum, maximum) in enumerate(
        zip(finite.tolist(), storable.tolist(), low.tolist(), high.tolist())
    ):
        if not is_finite:
            bad = int((~torch.isfinite(values[index])).sum())
            coded.append((None, None, (REJECT_NON_FINITE, f"the teacher's map holds {bad} non-finite values")))
        elif not is_storable:
            coded.append((None, None, (REJECT_CONSTANT_LABEL, f"label is constant ({minimum})")))
        else:
            coded.append((codes[index], (float(minimum), float(maximum)), None))
    return coded


class LabelBatch:
    """A batch of teacher maps on its way to the writer: coded at once on a GPU, else coded per map on demand
    (:meth:`code` runs in the writer's threads, beside the next batch's inference)."""

    def __init__(self, depth: torch.Tensor) -> None:
        if depth.is_cuda:
            self.coded: list[Coded] | None = code_batch_on_device(depth)
            self.maps = None
        else:
            self.coded, self.maps = None, depth.numpy()  # (B, H, W) float32

    def code(self, index: int) -> Coded:
        return self.coded[index] if self.coded is not None else code_map(self.maps[index])
