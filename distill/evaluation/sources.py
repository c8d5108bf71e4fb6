"""The frame sources ``evaluate`` reads, chosen by the form of ``--data`` and the protocol: NYU's ``.mat``, a DIODE
tree, a ``.txt`` pair list, an ``rgb/`` + ``depth/`` folder, or a ``datasets`` copy."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.evaluation.protocols import Protocol
from shards.argv import looks_like_path
from shards.depth_sources import DepthFolder, HfDepthDataset, PairList
from shards.diode import DIODE_SCENES, DiodeSplit, is_diode_tree
from shards.errors import UserError, one_line
from shards.nyu import NyuFormatError, NyuSplit

if TYPE_CHECKING:
    from distill.evaluation.configs import DataOptions

log = logging.getLogger(__name__)

#: Files that mark a folder written by ``datasets``' ``save_to_disk``, or data files ``load_dataset`` reads.
_DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
_DATASET_FILES = ("*.parquet", "*.arrow", "*.jsonl", "*.csv")
_FORMS = (
    "nyu_depth_v2_labeled.mat (with --splits), a DIODE root, a .txt pair list, an rgb/ + depth/ folder, or a saved "
    "datasets folder or hub id"
)


def open_data(args: DataOptions, protocol: Protocol) -> Any:
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
    _check_dataset_name(data)
    try:
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
    except (ConnectionError, FileNotFoundError) as error:  # datasets' answers for a name it cannot find or reach
        raise UserError(
            f"--data {data} is not a local path, and the datasets hub has no copy here ({one_line(error)}): save the "
            f"data set to a folder on a machine with internet (datasets.load_dataset(...).save_to_disk(DIR)) and "
            f"give --data DIR, or check the name; evaluate reads {_FORMS}"
        ) from error


def _check_dataset_name(data: str) -> None:
    """Refuse, before ``datasets`` tries the hub, a ``--data`` that can only be a mistyped path or a folder that holds
    no data set."""
    path = Path(data).expanduser()
    if path.is_dir():
        if any((path / marker).exists() for marker in _DATASET_MARKERS):
            return
        if any(next(path.rglob(pattern), None) is not None for pattern in _DATASET_FILES):
            return
        raise UserError(f"--data {data} is a folder of none of the forms evaluate reads: {_FORMS}")
    if path.exists():
        raise UserError(f"--data {data} is a file of none of the forms evaluate reads: {_FORMS}")
    if looks_like_path(data):
        raise UserError(f"--data {data}: no such file or folder (it reads {_FORMS})")
