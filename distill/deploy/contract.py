"""What every exported file and runner agrees on: input sides that are multiples of the encoder's stride, and what
the output holds (relative inverse depth or metres), as the file states it or the caller says."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shards.format import INPUT_MULTIPLE, METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, check_input_size

__all__ = ["INPUT_MULTIPLE", "check_input_size", "output_kind", "stated_kind"]


def output_kind(path: str | os.PathLike, stated: str | None, given: str | None) -> str:
    """What an exported file outputs: what the file states (our exports do), else what the caller says (``kind``),
    else relative inverse depth (published depth models mostly are). A file and a caller that disagree: an error."""
    kinds = (RELATIVE_INVERSE_DEPTH, METRIC_DEPTH)
    for value in (stated, given):
        if value is not None and value not in kinds:
            raise ValueError(f"{path}: output kind must be one of {kinds}, got {value!r}")
    if stated and given and stated != given:
        raise ValueError(f"{path} states that it outputs {stated}, but {given} was given; drop the kind option")
    return stated or given or RELATIVE_INVERSE_DEPTH


def stated_kind(path: Path) -> str | None:
    """The output kind our export recorded beside the file (``<file>.json``), if any."""
    record_path = path.with_name(path.name + ".json")
    if record_path.is_file():
        return json.loads(record_path.read_text()).get("prediction")
    return None
