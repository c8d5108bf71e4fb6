"""``python -m shards verify|repair|show|import-rgbd|scenes``: the shard tools; ``main(argv)`` reads argv.

Each subcommand is a dataclass config (below) read by the parser every command of the project
uses (:mod:`shards.cli.config`); ``python -m shards COMMAND --help`` lists its keys.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shards.cli.config import Command, parse_size, save_config_beside, save_resolved_config
from shards.cli.errors import USER_ERROR_STATUS, UserError, run_command
from shards.format import DEFAULT_LABEL_CODEC, LabelCodecName
from shards.tools.rgbd import DepthScaleName


@dataclass(kw_only=True)
class VerifyConfig:
    """Decode every sample of a shard set and check it against the format: members, sizes, finite values, keys
    unique across shards, counts and checksums against the stats files. One line per problem and a summary; exit 1
    on any problem."""

    shards: list[str]
    """folders, brace patterns, globs, comma lists or urls of shards; bare words on the command line"""
    workers: int = 1
    """shards checked in parallel (processes)"""
    quiet: bool = False
    """print only problems and the summary"""


@dataclass(kw_only=True)
class RepairConfig:
    """Rewrite a shard set without its damaged samples: every intact sample, with checksums, goes to a shard of the
    same name in --out; damaged, lost and repeated samples are printed and listed in OUT/repair.json."""

    shards: list[str]
    """folders, brace patterns, globs or comma lists of local shards; bare words on the command line"""
    out: str
    """the output folder (empty or new; repair.json and repair.config.yaml written there)"""


@dataclass(kw_only=True)
class ShowConfig:
    """Draw a grid of the first samples: one row per sample (its key on the left), the image beside each teacher's
    label colour-mapped (a column per teacher)."""

    shards: list[str]
    """folders, brace patterns, globs, comma lists or urls of shards; bare words on the command line"""
    out: str
    """the picture to write (.png or .jpg; its config <out>.config.yaml beside it)"""
    count: int = 16
    """samples drawn"""
    cell_height: int = 192
    """height of each picture in the grid (pixels)"""


@dataclass(kw_only=True)
class ImportRgbdConfig:
    """Write metric ground truth as metric_depth shards at 512x384, from one source: an RGB-D folder pair (--images,
    --depths, --depth_scale), a pair list (--pairs, --depth_scale), DIODE as released (--diode) or NYU Depth v2
    (--data nyu_depth_v2_labeled.mat --splits splits.mat). Depth scales (integer units per metre): KITTI 256, TUM
    5000, ARKitScenes and millimetres 1000; float .npy depth is metres."""

    out: str
    """the output folder for the shards (and <prefix>.summary.json, <prefix>.config.yaml)"""
    images: str | None = None
    """folder mode: a folder of RGB images (jpg/png), searched recursively"""
    depths: str | None = None
    """folder mode: a folder of depth maps (16-bit png or .npy), paired by relative path without extension"""
    pairs: str | None = None
    """a text file of 'image_path depth_path' lines (relative to its folder or absolute; # comments)"""
    depth_scale: float | DepthScaleName | None = None
    """units per metre of integer depth: a number, or kitti (256), tum (5000), arkitscenes / mm (1000)"""
    diode: str | None = None
    """a DIODE root as released: <root>/{train,val}/{indoors,outdoor}/scene_*/scan_*"""
    diode_scene: Literal["indoors", "outdoor", "all"] = "all"
    """DIODE scene types"""
    data: str | None = None
    """NYU mode: nyu_depth_v2_labeled.mat"""
    splits: str | None = None
    """NYU mode: the official splits.mat"""
    split: Literal["train", "val", "test"] = "train"
    """NYU: train or test; DIODE: train or val"""
    depth_source: Literal["raw", "inpainted"] = "raw"
    """NYU depths: raw (rawDepths, holes invalid) or inpainted (depths)"""
    prefix: str | None = None
    """shard name prefix (default: rgbd, diode<split>[<scene>] or nyu<split>)"""
    samples_per_shard: int = 1000
    """samples per shard"""
    crop_position: Literal["center", "random"] = "center"
    """where the 512x384 crop sits after the resize"""
    seed: int = 0
    """seed of the random crop"""
    codec: LabelCodecName = DEFAULT_LABEL_CODEC
    """label codec"""
    eval_split: str | None = None
    """mark every sample as part of this evaluation split (e.g. kitti_eigen_test): training and validation refuse it;
    NYU test and DIODE val are marked nyu_test / diode_val without it"""


@dataclass(kw_only=True)
class ScenesConfig:
    """Write generated RGB-D scenes as an image/depth folder: OUT/rgb/scene_NNNNNN.png (8-bit RGB) and
    OUT/depth/scene_NNNNNN.png (16-bit, value / depth_scale = metres, 0 = invalid). Scene i is drawn from seed
    start + i, so folders are reproducible."""

    count: int
    """scenes to make"""
    out: str
    """the output folder (rgb/, depth/, config.yaml)"""
    start: int = 0
    """number of the first scene (its seed)"""
    size: str = "640x480"
    """image WxH (NYU's by default)"""
    depth_scale: float = 1000.0
    """depth PNG units per metre"""
    holes: bool = False
    """add sensor-like holes (invalid pixels, stored as 0)"""


#: What ``show --out`` may end in: the picture formats its grid is written as.
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: The commands whose bare words are shard folders (``python -m shards verify DIR``).
POSITIONAL = {"verify": "shards", "repair": "shards", "show": "shards"}


PROG = "python -m shards"
#: The subcommands, in the order ``--help`` lists them.
COMMANDS = {
    name: Command(f"{PROG} {name}", schema, POSITIONAL.get(name))
    for name, schema in (
        ("verify", VerifyConfig),
        ("repair", RepairConfig),
        ("show", ShowConfig),
        ("import-rgbd", ImportRgbdConfig),
        ("scenes", ScenesConfig),
    )
}


def usage() -> str:
    lines = [f"usage: {PROG} [-v] COMMAND [--key value ...]   ({PROG} COMMAND --help for its keys)", "", "commands:"]
    lines += [f"  {name:<12} {command.description.split('. ')[0].split(': ')[0]}" for name, command in COMMANDS.items()]
    return "\n".join(lines)


def _scenes(config: ScenesConfig, resolved_yaml: str) -> int:
    from shards.tools.scenes import write_scene_folder

    width, height = parse_size(config.size)
    paths = write_scene_folder(
        config.out, config.count, seed=config.start, width=width, height=height,
        depth_scale=config.depth_scale, holes=config.holes,
    )
    save_resolved_config(resolved_yaml, config.out)
    print(f"wrote {len(paths)} scenes ({width}x{height}) to {config.out}/rgb and {config.out}/depth")
    return 0


def _verify(config: VerifyConfig, resolved_yaml: str) -> int:
    from shards.tools.verify import verify_shards

    report = verify_shards(config.shards, workers=config.workers, progress=not config.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def _repair(config: RepairConfig, resolved_yaml: str) -> int:
    from shards.tools.verify import repair_shards

    try:
        report = repair_shards(config.shards, config.out)
    except ValueError as error:
        raise UserError(str(error)) from error
    save_resolved_config(resolved_yaml, config.out, "repair.config.yaml")
    print("\n".join(report.lines()))
    return 0


def _show(config: ShowConfig, resolved_yaml: str) -> int:
    from shards.tools.pictures import show_samples

    suffix = Path(config.out).suffix.lower()
    if suffix not in PICTURE_SUFFIXES:  # checked before any shard is read
        said = f"ends in {suffix}, not a picture extension" if suffix else "has no picture extension"
        raise UserError(f"--out {config.out} {said}: use .png or .jpg")
    path = show_samples(config.shards, count=config.count, out=config.out, cell_height=config.cell_height)
    save_config_beside(resolved_yaml, path)
    print(f"wrote {path}")
    return 0


_IMPORT_MODES = (
    "--images, --depths and --depth_scale (folders), --pairs and --depth_scale (a pair list), --diode (a DIODE "
    "tree), or --data nyu_depth_v2_labeled.mat and --splits splits.mat (NYU)"
)


def import_usage_error(config: ImportRgbdConfig, depth_scale: float | None) -> str | None:
    """Why the import-rgbd keys cannot run, or None."""
    modes = {
        "folders": config.images is not None or config.depths is not None,
        "pairs": config.pairs is not None,
        "diode": config.diode is not None,
        "nyu": config.data is not None or config.splits is not None,
    }
    if sum(modes.values()) != 1:
        return f"give either {_IMPORT_MODES}"
    if modes["nyu"] and (config.data is None or config.splits is None):
        return "NYU mode needs both --data (nyu_depth_v2_labeled.mat) and --splits (splits.mat)"
    if modes["nyu"] and config.split not in ("train", "test"):
        return f"NYU's splits are train and test, not --split {config.split}"
    if modes["diode"] and config.split not in ("train", "val"):
        return f"DIODE's splits are train and val, not --split {config.split}"
    if modes["folders"] and (config.images is None or config.depths is None or depth_scale is None):
        return "folder mode needs --images, --depths and --depth_scale (depth units per metre)"
    if (modes["diode"] or modes["nyu"]) and depth_scale is not None:
        return "--depth_scale does not apply to DIODE or NYU: their depth is stored in float metres"
    if modes["pairs"] and depth_scale is None:
        return "--pairs needs --depth_scale (depth units per metre: kitti 256, tum 5000, mm 1000; 1 for float .npy)"
    if depth_scale is not None and not (math.isfinite(depth_scale) and depth_scale > 0):
        return f"--depth_scale must be a positive number of units per metre, not {depth_scale}"
    return None


def _import_rgbd(config: ImportRgbdConfig, resolved_yaml: str) -> int:
    """Prints the summary and the rejects; a user error for bad keys, a taken output or input that is wrong as a
    whole (the message names the file and the problem)."""
    from shards.tools import rgbd
    from shards.tools.rgbd import ImportOptions, parse_depth_scale

    try:
        depth_scale = None if config.depth_scale is None else parse_depth_scale(str(config.depth_scale))
    except ValueError as error:
        raise UserError(f"--depth_scale: {error}") from error
    problem = import_usage_error(config, depth_scale)
    if problem:
        raise UserError(problem)
    options = ImportOptions(
        samples_per_shard=config.samples_per_shard, crop=config.crop_position, seed=config.seed, codec=config.codec,
        eval_split=config.eval_split,
    )
    if config.data is not None:
        summary = rgbd.import_nyu(
            config.data, config.splits, config.out, split=config.split, depth=config.depth_source,
            prefix=config.prefix, options=options,
        )
    elif config.diode is not None:
        summary = rgbd.import_diode(
            config.diode, config.out, split=config.split, scene=config.diode_scene, prefix=config.prefix,
            options=options,
        )
    elif config.pairs is not None:
        summary = rgbd.import_pair_list(
            config.pairs, depth_scale, config.out, prefix=config.prefix or "rgbd", options=options
        )
    else:
        summary = rgbd.import_rgbd_folder(
            config.images, config.depths, depth_scale, config.out, prefix=config.prefix or "rgbd", options=options
        )
    print("\n".join(summary.lines()))
    if summary.shards:
        summary_path = write_import_summary(config.out, summary)
        config_name = Path(summary_path).name.replace(".summary.json", ".config.yaml")
        save_resolved_config(resolved_yaml, config.out, config_name)
        print(f"summary with the sha256 of each stats json: {summary_path}")
    return 0


def write_import_summary(out: str, summary) -> str:
    """``OUT/<prefix>.summary.json``: samples written, rejects, and the sha256 of each shard's stats json (what
    ``verify`` checks the stats against)."""
    from shards.writer import STATS_SHA256_FIELD, file_sha256, stats_path, write_json_atomic

    names = [stats["shard"] for stats in summary.shards]
    path = Path(out) / f"{names[0].split('-', 1)[0]}.summary.json"
    record = {
        "written": summary.written, "shards": len(names), "rejects": summary.rejects,
        STATS_SHA256_FIELD: {name: file_sha256(stats_path(Path(out) / name)) for name in names},
    }
    write_json_atomic(path, record)
    return str(path)


_RUNNERS = {"verify": _verify, "repair": _repair, "show": _show, "import-rgbd": _import_rgbd, "scenes": _scenes}


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = bool(argv) and argv[0] in ("-v", "--verbose")
    argv = argv[1:] if verbose else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else USER_ERROR_STATUS
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        raise UserError(f"unknown command {name!r}: one of {', '.join(COMMANDS)} ({PROG} --help)")
    config, resolved_yaml = COMMANDS[name].parse(rest)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(message)s")
    return _RUNNERS[name](config, resolved_yaml)


def main(argv: Sequence[str] | None = None) -> int:
    words = [word for word in (sys.argv[1:] if argv is None else argv) if word in COMMANDS]
    return run_command(_main, argv, COMMANDS[words[0]].prog if words else PROG)
