"""Evaluation protocols as data: which ground truth, which pixels, which resize, which alignment, which cap.

A :class:`Protocol` is a frozen record written in full into every report, so a figure always says how it was
made. Presets (``PRESETS``):

- ``reference`` (default): the reference recipe. Raw sensor depth (``rawDepths``, holes invalid); pixels with
  0 < d < 10 m inside the Eigen crop ``[45:471, 41:601]`` (rows, columns of 480x640, end-exclusive); input resized
  bicubically to the model's size, prediction resized bicubically back to 640x480 (not clamped); per image,
  least-squares scale and shift of the predicted inverse depth onto the ground truth's inverse depth over the valid
  pixels, the scale held at >= 0 (``distill.align.solve_nonnegative_scale_shift``: a frame whose best scale is
  negative, depth read as inverse depth, scores as the best constant; training validation keeps the free fit); the
  aligned inverse depth clamped to >= 1/10 (a 10 m cap) and inverted; metrics per image at full resolution.
- ``common``: in-painted depth (``depths``), 1e-3 < d < 10 m, Eigen crop; alignment as ``reference``.
- ``midas``: as ``common`` without the crop (MiDaS / PyDNet).
- ``median``: as ``common``, but the prediction turned into depth and scaled by median(gt) / median(pred);
  predicted depth clamped into [1e-3, 10] m (the monodepth convention).
- ``metric``: as ``common`` without alignment (metric models); predicted depth clamped into [1e-3, 10] m.
- ``diode_indoor``, ``diode_outdoor``, ``diode``: DIODE's validation split (its indoor scans, outdoor scans, or
  both), the depth with its mask; 1e-3 < d <= 10 m indoors, <= 80 m outdoors and for both together (the ZoeDepth
  convention); no crop; prediction resized back to the frame (768x1024); alignment as ``reference``; predicted depth
  capped at the range's maximum.
- ``kitti_eigen``: KITTI's Eigen test split from a pair list (annotated depth, 16-bit PNG / 256, 0 = invalid);
  1e-3 < d < 80 m inside the Garg crop (rows 0.40810811 H .. 0.99189189 H, columns 0.03594771 W .. 0.96405229 W,
  truncated to int, of each frame's own size); alignment as ``reference``; predicted depth capped at 80 m.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from distill.align import capped_depth, fit_median_scale, solve_nonnegative_scale_shift
from shards.format import LABEL_KINDS, METRIC_DEPTH, as_inverse_depth, inverse_depth
from shards.tools.rgbd import DEPTH_SCALES, DIODE_SCENES

#: The Eigen crop of a 480x640 NYU frame as (top, bottom, left, right), end-exclusive: ``depth[45:471, 41:601]``;
#: every evaluation crop (``Protocol.crop``, :func:`eval_crop`) keeps this order, the one ``--crop`` takes.
EIGEN_CROP = (45, 471, 41, 601)
EIGEN_FRAME = (480, 640)  # (height, width) the Eigen crop is defined on
#: The Garg crop of KITTI as fractions (top, bottom, left, right) of each frame's height and width; the box is
#: ``int(fraction * size)``, end-exclusive, as in the reference code (``np.array([...]).astype(np.int32)``).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
#: Depth ranges of the DIODE and KITTI presets (metres): the ZoeDepth convention.
DIODE_INDOOR_MAX_DEPTH = 10.0
OUTDOOR_MAX_DEPTH = 80.0

DEPTH_SOURCES = ("raw", "inpainted")
ALIGNMENTS = ("lsq_inverse", "median_depth", "none")
RESIZE_MODES = ("bicubic", "bilinear")

#: A relative inverse depth below this counts as this when inverted to depth (a floor against division by zero,
#: far below any scale a model predicts at). Metres become inverse depth by ``shards.format.inverse_depth``.
_RELATIVE_INVERSE_FLOOR = 1e-8


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol. Depths in metres; ``crop`` is (top, bottom, left, right) in pixels, end-exclusive;
    ``crop_fraction`` the same as fractions of each frame's height and width (frames of any size, e.g. KITTI's)."""

    name: str = "reference"
    depth_source: str = "raw"  # "raw": rawDepths, holes invalid; "inpainted": depths (NYU only)
    scenes: tuple[str, ...] | None = None  # DIODE scene types read ("indoors", "outdoor"); None: not a DIODE preset
    depth_scale: float | None = None  # integer ground truth's units per metre (KITTI 256); None: the source's own
    depth_min: float = 0.0  # valid ground truth: depth_min < d (or <= with min_inclusive)
    depth_max: float = 10.0  # ... and d < depth_max (or <= with max_inclusive)
    min_inclusive: bool = False
    max_inclusive: bool = False
    crop: tuple[int, int, int, int] | None = EIGEN_CROP  # None: every pixel of the frame (or crop_fraction's)
    crop_fraction: tuple[float, float, float, float] | None = None  # (top, bottom, left, right) of each frame's size
    input_resize: str = "bicubic"  # frame -> model input size
    output_resize: str = "bicubic"  # prediction -> the ground truth's size (each frame's own)
    alignment: str = "lsq_inverse"  # "lsq_inverse" | "median_depth" | "none"
    depth_cap: float = 10.0  # predicted inverse depth clamped to >= 1 / depth_cap, i.e. predicted depth <= cap
    min_prediction: float | None = None  # predicted depth clamped to >= this (None: no lower clamp)

    def __post_init__(self) -> None:
        if self.depth_source not in DEPTH_SOURCES:
            raise ValueError(f"depth_source must be one of {DEPTH_SOURCES}, got {self.depth_source!r}")
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {self.alignment!r}")
        for field_name in ("input_resize", "output_resize"):
            if getattr(self, field_name) not in RESIZE_MODES:
                raise ValueError(f"{field_name} must be one of {RESIZE_MODES}, got {getattr(self, field_name)!r}")
        if not 0 <= self.depth_min < self.depth_max:
            raise ValueError(f"depth range needs 0 <= depth_min < depth_max, got {self.depth_min}, {self.depth_max}")
        if self.depth_cap <= 0:
            raise ValueError(f"depth_cap must be positive metres, got {self.depth_cap}")
        if self.min_prediction is not None and not 0 < self.min_prediction < self.depth_cap:
            raise ValueError(f"min_prediction must lie in (0, depth_cap), got {self.min_prediction}")
        if self.crop is not None:
            top, bottom, left, right = self.crop
            if not (0 <= top < bottom and 0 <= left < right):
                raise ValueError(f"crop (top, bottom, left, right) must be a non-empty box, got {self.crop}")
        self._check_data_fields()

    def _check_data_fields(self) -> None:
        if self.crop_fraction is not None:
            top, bottom, left, right = self.crop_fraction
            if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
                raise ValueError(f"crop_fraction (top, bottom, left, right) must be in [0, 1]: {self.crop_fraction}")
            if self.crop is not None:
                raise ValueError(
                    f"give either crop (pixels, {self.crop}) or crop_fraction ({self.crop_fraction}), not both: "
                    "--crop none or --crop_fraction none"
                )
        if self.scenes is not None and (not self.scenes or not set(self.scenes) <= set(DIODE_SCENES)):
            raise ValueError(f"scenes must be DIODE scene types {DIODE_SCENES}, got {self.scenes}")
        if self.depth_scale is not None and not self.depth_scale > 0:
            raise ValueError(f"depth_scale must be positive units per metre, got {self.depth_scale}")

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        for name in ("crop", "crop_fraction", "scenes"):
            record[name] = None if record[name] is None else list(record[name])
        return record


PRESETS: dict[str, Protocol] = {
    "reference": Protocol(),
    "common": Protocol(name="common", depth_source="inpainted", depth_min=1e-3),
    "midas": Protocol(name="midas", depth_source="inpainted", depth_min=1e-3, crop=None),
    "median": Protocol(
        name="median", depth_source="inpainted", depth_min=1e-3, alignment="median_depth", min_prediction=1e-3
    ),
    "metric": Protocol(name="metric", depth_source="inpainted", depth_min=1e-3, alignment="none", min_prediction=1e-3),
    "diode_indoor": Protocol(
        name="diode_indoor", scenes=("indoors",), depth_min=1e-3, depth_max=DIODE_INDOOR_MAX_DEPTH, max_inclusive=True,
        crop=None, depth_cap=DIODE_INDOOR_MAX_DEPTH,
    ),
    "diode_outdoor": Protocol(
        name="diode_outdoor", scenes=("outdoor",), depth_min=1e-3, depth_max=OUTDOOR_MAX_DEPTH, max_inclusive=True,
        crop=None, depth_cap=OUTDOOR_MAX_DEPTH,
    ),
    "diode": Protocol(  # both scene types under the outdoor range: one range for the whole split
        name="diode", scenes=DIODE_SCENES, depth_min=1e-3, depth_max=OUTDOOR_MAX_DEPTH, max_inclusive=True,
        crop=None, depth_cap=OUTDOOR_MAX_DEPTH,
    ),
    "kitti_eigen": Protocol(
        name="kitti_eigen", depth_scale=DEPTH_SCALES["kitti"], depth_min=1e-3, depth_max=OUTDOOR_MAX_DEPTH,
        crop=None, crop_fraction=GARG_CROP, depth_cap=OUTDOOR_MAX_DEPTH,
    ),
}


def get_protocol(name: str = "reference", **overrides: object) -> Protocol:
    """A preset by name with some fields replaced; a changed preset keeps its name with a ``+custom`` mark."""
    if name not in PRESETS:
        raise ValueError(f"unknown protocol {name!r}; presets: {sorted(PRESETS)}")
    preset = PRESETS[name]
    changed = {key: value for key, value in overrides.items() if getattr(preset, key) != value}
    if not changed:
        return preset
    return dataclasses.replace(preset, name=f"{name}+custom", **changed)


def crop_mask(height: int, width: int, crop: tuple[int, int, int, int] | None, device=None) -> torch.Tensor:
    """bool (height, width): True inside ``crop`` (everywhere when it is None), an evaluation crop as
    :func:`eval_crop` gives it: (top, bottom, left, right), end-exclusive."""
    mask = torch.zeros((height, width), dtype=torch.bool, device=device)
    if crop is None:
        mask[:] = True
        return mask
    top, bottom, left, right = crop
    if tuple(crop) == EIGEN_CROP and (height, width) != EIGEN_FRAME:
        raise ValueError(
            f"the Eigen crop is defined on 480x640 NYU frames, these are {height}x{width}: use --crop none "
            "or give a crop box for this size (--crop top,bottom,left,right), or the dataset's preset (DIODE: "
            "--protocol diode_indoor, diode_outdoor or diode; KITTI: --protocol kitti_eigen)"
        )
    if bottom > height or right > width:
        raise ValueError(f"crop {crop} (top, bottom, left, right) does not fit a {height}x{width} frame")
    mask[top:bottom, left:right] = True
    return mask


def eval_crop(protocol: Protocol, height: int, width: int) -> tuple[int, int, int, int] | None:
    """The pixels the protocol scores on a height x width frame, or None for all of them: ``crop`` as given, or
    ``crop_fraction`` times this frame's size, truncated to int (the KITTI reference code).

    Convention: (top, bottom, left, right) pixels, end-exclusive, i.e. ``depth[top:bottom, left:right]``, the order
    of the Eigen crop and of the public ``--crop`` key and the report's ``crop`` field; not the project's
    (left, top, right, bottom) box of ``crop_box`` in a sample's metadata."""
    if protocol.crop_fraction is None:
        return protocol.crop
    top, bottom, left, right = protocol.crop_fraction
    return int(top * height), int(bottom * height), int(left * width), int(right * width)


def valid_mask(protocol: Protocol, depth: torch.Tensor) -> torch.Tensor:
    """Ground-truth depth (B, H, W) metres -> bool (B, H, W): finite, inside the depth range and the crop."""
    above = depth >= protocol.depth_min if protocol.min_inclusive else depth > protocol.depth_min
    below = depth <= protocol.depth_max if protocol.max_inclusive else depth < protocol.depth_max
    height, width = depth.shape[-2:]
    inside = crop_mask(height, width, eval_crop(protocol, height, width), device=depth.device)
    return torch.isfinite(depth) & above & below & (depth > 0) & inside


def resize_images(images: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """float (B, C, h, w) -> (B, C, height, width); antialiased when shrinking (as PIL's bicubic resize)."""
    if images.shape[-2:] == (height, width):
        return images
    shrinking = height < images.shape[-2] or width < images.shape[-1]
    return F.interpolate(images, size=(height, width), mode=mode, align_corners=False, antialias=shrinking)


def _to_depth(prediction: torch.Tensor, kind: str) -> torch.Tensor:
    """A prediction as depth for the depth-space alignments: metres, non-negative by definition (a resize's overshoot
    below 0 is clamped, nothing else); a relative inverse depth inverted (its scale is unknown, so only a floor far
    below any real value, against division by zero)."""
    if kind == METRIC_DEPTH:
        return prediction.clamp(min=0.0)
    return 1.0 / prediction.clamp(min=_RELATIVE_INVERSE_FLOOR)


def predicted_depth(
    protocol: Protocol, prediction: torch.Tensor, kind: str, target: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply the protocol's alignment and caps to a batch of predictions at ground-truth size.

    ``prediction`` (B, H, W): relative inverse depth, or metres when ``kind == "metric_depth"``, as resized and
    never clamped before: relative inverse depth has a free offset, so negative values are signal and enter the
    fit as they are; only metric depth, non-negative by definition, is clamped at 0 (its inverse floored). ``target``
    (B, H, W) metres; ``valid`` from :func:`valid_mask`. Returns predicted depth in metres (B, H, W, float64,
    positive wherever the metrics look), the per-image scale and shift (B,) that were applied (1 and 0 when none;
    for ``median_depth`` the scale multiplies depth; ``lsq_inverse`` holds the scale at >= 0), and (B,) bool: the
    frames whose free fit had a negative scale and were scored as the best constant instead (``lsq_inverse`` only).
    """
    if kind not in LABEL_KINDS:
        raise ValueError(f"prediction kind must be one of {LABEL_KINDS}, got {kind!r}")
    prediction = prediction.double()
    target = target.double()
    batch = prediction.shape[0]
    scale = torch.ones(batch, dtype=torch.float64, device=prediction.device)
    shift = torch.zeros_like(scale)
    negative = torch.zeros(batch, dtype=torch.bool, device=prediction.device)
    if protocol.alignment == "lsq_inverse":
        target_inverse = inverse_depth(target, valid)
        inverse = as_inverse_depth(prediction, kind)
        scale, shift, negative = solve_nonnegative_scale_shift(inverse, target_inverse, valid)
        depth = capped_depth(inverse, scale, shift, protocol.depth_cap)
    elif protocol.alignment == "median_depth":
        depth = _to_depth(prediction, kind)
        scale = fit_median_scale(depth, target, valid)
        depth = (depth * scale.view(-1, 1, 1)).clamp(max=protocol.depth_cap)
    else:
        depth = _to_depth(prediction, kind).clamp(max=protocol.depth_cap)
    if protocol.min_prediction is not None:
        depth = depth.clamp(min=protocol.min_prediction)
    return depth, scale, shift, negative
