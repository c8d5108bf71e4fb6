"""The frame sources ``evaluate`` reads, chosen by the form of ``--data`` and the protocol: NYU's ``.mat``, a DIODE
tree, a ``.txt`` pair list, an ``rgb/`` + ``depth/`` folder, or a ``datasets`` copy."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from distill.evaluation.protocols import Protocol
from shards.depth_sources import DepthFolder, HfDepthDataset, PairList
from shards.diode import DIODE_SCENES, DiodeSplit, is_diode_tree
from shards.nyu import NyuFormatError, NyuSplit

log = logging.getLogger(__name__)



def open_data(args: argparse.Namespace, protocol: Protocol) -> Any:
    """A lazy frame source for ``--data``: ``len()``, ``source[i] -> DepthFrame``, ``describe()``.

    A DIODE preset (``protocol.scenes``) reads a DIODE tree, its scene types only; otherwise the source is
    recognised by form: a ``.mat`` file (NYU), a ``.txt`` pair list, a DIODE tree, an ``rgb/`` + ``depth/`` folder,
    else a ``datasets`` copy."""
    data = args.data
    path = Path(data)
    diode = is_diode_tree(path)
    if protocol.scenes is not None and not diode:
        raise NyuFormatError(
            f"protocol {protocol.name} reads DIODE ({', '.join(protocol.scenes)}): {data} is not a DIODE root "
            "(<root>/val/indoors|outdoor/scene_XXXXX/scan_XXXXX/...)"
        )
    if diode:
        scenes = protocol.scenes or DIODE_SCENES
        return DiodeSplit(data, split=args.split or "val", scenes=scenes, limit=args.limit)
    if path.suffix.lower() == ".mat":
        return NyuSplit(data, args.splits, split=args.split or "test", depth=protocol.depth_source, limit=args.limit)
    if path.suffix.lower() == ".txt":
        return PairList(data, depth_scale=protocol.depth_scale, limit=args.limit)
    if path.is_dir() and (path / "rgb").is_dir() and (path / "depth").is_dir():
        log.info("%s is a folder source: its depth is used as given (protocol depth_source does not apply)", data)
        return DepthFolder(data, depth_scale=protocol.depth_scale or 1000.0, limit=args.limit)
    return HfDepthDataset(
        data,
        split=args.split or "test",
        depth=protocol.depth_source,
        image_column=args.image_column,
        depth_column=args.depth_column,
        raw_depth_column=args.raw_depth_column,
        depth_scale=protocol.depth_scale,
        limit=args.limit,
    )
