"""What ``compare`` reads from its command line: ``[NAME=]MODEL`` and ``[NAME=]PATH[:PRESET]`` specs, their display
names, and each data set opened exactly as ``python -m distill.evaluate`` opens it."""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distill.deploy.benchmark import unique_names
from distill.evaluation.configs import CompareConfig, EvaluateConfig
from distill.evaluation.evaluate import open_checked, resolve_protocol
from distill.evaluation.models import CONSTANT_MODEL
from distill.evaluation.protocols import EIGEN_CROP, EIGEN_FRAME, Protocol, crop_box, crop_mask, get_protocol
from shards.depth_sources import DepthFolder
from shards.errors import UserError

log = logging.getLogger(__name__)

#: A display name in ``NAME=...``: no path separator, so ``runs/lr=0.1/student`` stays a path.
_NAME = re.compile(r"^([\w.+-]+)=(.+)$")
_PRESET = re.compile(r"^[\w+-]+$")

@dataclass(frozen=True)
class DataSpec:
    """One ``--data``: a display name, the path given to :func:`distill.evaluation.sources.open_data`, a preset."""

    name: str | None
    path: str
    preset: str | None = None


def _split_name(text: str) -> tuple[str | None, str]:
    match = _NAME.match(text)
    if match is None or Path(text).exists():
        return None, text
    return match.group(1), match.group(2)


def parse_data_spec(text: str) -> DataSpec:
    """``[NAME=]PATH[:PRESET]``: the preset is the text after the last ':' when PATH as a whole does not exist and
    that text is a bare word (so ``https://...`` and existing paths stay whole); an unknown preset is an error."""
    name, rest = _split_name(text)
    preset = None
    if not Path(rest).exists() and ":" in rest:
        head, _, tail = rest.rpartition(":")
        if head and _PRESET.match(tail):
            rest, preset = head, tail
    if preset is not None:
        try:
            get_protocol(preset)  # the presets of distill.evaluation.protocols, whatever they are by now
        except ValueError as error:
            raise UserError(f"--data {text}: {error}") from error
    return DataSpec(name, rest, preset)


def parse_model_spec(text: str) -> tuple[str | None, str]:
    """``[NAME=]MODEL`` -> (name or None, model)."""
    if text == CONSTANT_MODEL:
        return None, text
    return _split_name(text)


def display_names(given: Sequence[str | None], models_or_paths: Sequence[str]) -> list[str]:
    """The given names, else short ones: the file or folder name (a hub id or ``constant`` as it is); where two
    unnamed ones share it (every training run writes ``OUTPUT_DIR/student``), the parent folder's name goes in front
    (``run_a/student``); any name still taken gets ``_2``, ``_3`` ..."""
    paths = [Path(item).resolve() if Path(item).exists() else None for item in models_or_paths]
    short = [path.name if path is not None else item for path, item in zip(paths, models_or_paths)]
    unnamed = [name for name, label in zip(short, given) if label is None]
    names = []
    for label, name, path in zip(given, short, paths):
        if label is None and path is not None and unnamed.count(name) > 1 and path.parent.name:
            name = f"{path.parent.name}/{name}"
        names.append(label or name)
    return unique_names(names)


def folder_name(name: str) -> str:
    """A display name as one safe folder name (reports/<model>/<data>/)."""
    cleaned = re.sub(r"[^\w.+-]", "_", name)
    return cleaned if cleaned.strip(".") else cleaned.replace(".", "_")



@dataclass
class Dataset:
    """One opened ``--data``: the evaluate config that scores it (protocol overrides included), the frame source and
    its protocol for relative models (``distill.evaluation.evaluate.resolve_protocol`` decides per model kind)."""

    name: str
    spec: DataSpec
    config: EvaluateConfig
    source: Any
    protocol: Protocol
    note: str
    count: int = 0
    description: dict[str, Any] = field(default_factory=dict)

    def protocol_for(self, model_kind: str) -> tuple[Protocol, str]:
        return resolve_protocol(self.config, model_kind)

    def evaluate_keys(self) -> dict[str, Any]:
        """The keys that ``python -m distill.evaluate`` needs, beside --model and --out, to score this data alone."""
        defaults = EvaluateConfig(model=CONSTANT_MODEL, data=self.config.data, out=".")
        return {"data": self.config.data} | {
            item.name: getattr(self.config, item.name)
            for item in dataclasses.fields(EvaluateConfig)
            if item.name not in ("model", "out", "data")
            and getattr(self.config, item.name) != getattr(defaults, item.name)
        }

    def close(self) -> None:
        if hasattr(self.source, "close"):
            self.source.close()


def open_dataset(spec: DataSpec, name: str, options: CompareConfig) -> Dataset:
    """Open one data source exactly as ``python -m distill.evaluate`` would with the same keys; a folder whose
    frames do not fit the Eigen crop (generated scenes) gets no crop unless a preset was named."""
    config = EvaluateConfig(
        model=CONSTANT_MODEL,
        out=options.out,
        data=spec.path,
        protocol=spec.preset,
        splits=options.splits,
        split=options.split,
        limit=options.limit,
        depth_scale=options.depth_scale,
        batch_size=options.batch_size,
        device=options.device,
    )
    protocol, note = resolve_protocol(config, "relative_inverse_depth")
    source = open_checked(config, protocol, check_crop=False)
    frame_shape = tuple(source[0].depth.shape)
    if spec.preset is None and isinstance(source, DepthFolder) and protocol.crop == EIGEN_CROP:
        if frame_shape != EIGEN_FRAME:
            config = dataclasses.replace(config, crop="none")
            protocol, _ = resolve_protocol(config, "relative_inverse_depth")
            note = (
                f"folder of {frame_shape[1]}x{frame_shape[0]} frames: the Eigen crop (640x480 frames) does not "
                "apply, so no crop"
            )
            log.info("%s: %s", name, note)
    try:
        crop_mask(*frame_shape, crop_box(protocol, *frame_shape))
    except ValueError as error:
        if hasattr(source, "close"):
            source.close()
        raise UserError(f"--data {spec.path}: {error}; or name a preset that fits: NAME=PATH:PRESET") from error
    return Dataset(name, spec, config, source, protocol, note, len(source), source.describe())
