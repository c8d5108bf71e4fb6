"""``python -m shards verify|repair|show|import-rgbd|scenes``: the shard tools; ``main(argv)`` reads argv."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Sequence

from shards.codec import DEFAULT_LABEL_CODEC, LABEL_CODECS
from shards.format import SAMPLE_SIZE


def _add_scenes(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "scenes",
        help="write generated RGB-D scenes as an image/depth folder",
        description="Write N generated scenes: OUT/rgb/scene_NNNNNN.png (8-bit RGB) and OUT/depth/scene_NNNNNN.png "
        "(16-bit, value / depth-scale = metres, 0 = invalid). Scene i uses seed S + i, so folders are reproducible.",
    )
    parser.add_argument("--n", type=int, required=True, help="number of scenes")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first scene (default 0)")
    parser.add_argument("--width", type=int, default=640, help="image width (default 640, NYU's)")
    parser.add_argument("--height", type=int, default=480, help="image height (default 480, NYU's)")
    parser.add_argument("--depth-scale", type=float, default=1000.0, help="depth PNG units per metre (default 1000)")
    parser.add_argument("--holes", action="store_true", help="add sensor-like holes (invalid pixels, stored as 0)")


def _add_verify(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "verify",
        help="decode every sample of a shard set and check it against the format",
        description="Read every shard, decode every label, check members, sizes, finite values, keys unique across "
        "shards and counts against the stats files. Prints one line per problem and a summary; exit 1 on any problem.",
    )
    parser.add_argument("shards", nargs="+", help="folder(s), brace pattern, glob, comma list or urls of shards")
    parser.add_argument("--workers", type=int, default=1, help="shards checked in parallel (processes, default 1)")
    parser.add_argument("--quiet", action="store_true", help="print only problems and the summary")


def _add_repair(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "repair",
        help="rewrite a shard set without its damaged samples, listing them",
        description="Read every shard as verify does and write every intact sample, with checksums, to a shard of "
        "the same name in OUT; damaged, lost and repeated samples are printed and listed in OUT/repair.json.",
    )
    parser.add_argument("shards", nargs="+", help="folder(s), brace pattern, glob or comma list of local shards")
    parser.add_argument("--out", required=True, help="output folder (empty or new)")


def _add_show(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "show",
        help="draw a grid of samples: image beside its colour-mapped depth",
        description="A picture of the first N samples: one row per sample (its key on the left), the image and its "
        "label colour-mapped (near = warm; invalid pixels black).",
    )
    parser.add_argument("shards", nargs="+", help="folder(s), brace pattern, glob, comma list or urls of shards")
    parser.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    parser.add_argument("--out", default="grid.png", help="output picture (default grid.png)")
    parser.add_argument("--cell-height", type=int, default=192, help="height of each picture in the grid (px)")


def _depth_scale(text: str) -> float:
    from shards.depth_sources import parse_depth_scale

    try:
        return parse_depth_scale(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _add_import_rgbd(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "import-rgbd",
        help="write metric ground truth (image/depth folders, pair lists, DIODE, NYU Depth v2) as shards",
        description=f"Write metric_depth shards at {SAMPLE_SIZE[0]}x{SAMPLE_SIZE[1]} from one source: an RGB-D "
        "folder pair (--images, --depths, --depth-scale), a pair list (--pairs, --depth-scale), DIODE as released "
        "(--diode) or NYU Depth v2 (--nyu-mat, --nyu-splits). Depth scales (integer units per metre): KITTI 256, "
        "TUM 5000, ARKitScenes and NYU-style millimetres 1000; float .npy depth is metres.",
    )
    parser.add_argument("--images", help="folder of RGB images (jpg/png), searched recursively")
    parser.add_argument(
        "--depths", help="folder of depth maps (16-bit png or .npy), paired by relative path without extension"
    )
    parser.add_argument(
        "--pairs", help="text file of 'image_path depth_path' lines (relative to its folder or absolute; # comments)"
    )
    parser.add_argument(
        "--depth-scale", type=_depth_scale,
        help="units per metre of integer depth: a number, or kitti (256), tum (5000), arkitscenes / mm (1000); "
        "float .npy depth is metres",
    )
    parser.add_argument("--diode", help="DIODE root as released: <root>/{train,val}/{indoors,outdoor}/scene_*/scan_*")
    parser.add_argument("--diode-split", default="train", choices=("train", "val"), help="DIODE split (default train)")
    parser.add_argument(
        "--diode-scene", default="all", choices=("indoors", "outdoor", "all"), help="DIODE scene types (default all)"
    )
    parser.add_argument("--nyu-mat", help="nyu_depth_v2_labeled.mat (NYU mode)")
    parser.add_argument("--nyu-splits", help="splits.mat (NYU mode)")
    parser.add_argument("--nyu-split", default="train", choices=("train", "test"), help="NYU split (default train)")
    parser.add_argument(
        "--nyu-depth", default="raw", choices=("raw", "inpainted"),
        help="NYU depths: raw (rawDepths, holes invalid; default) or inpainted (depths)",
    )
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument(
        "--prefix", default=None, help="shard name prefix (default: rgbd, diode<split>[<scene>] or nyu<split>)"
    )
    parser.add_argument("--samples-per-shard", type=int, default=1000, help="samples per shard (default 1000)")
    parser.add_argument("--crop", default="center", choices=("center", "random"), help="crop position")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random crop")
    parser.add_argument(
        "--codec", default=DEFAULT_LABEL_CODEC, choices=sorted(LABEL_CODECS), help="label codec (default %(default)s)"
    )
    parser.add_argument(
        "--eval-split", default=None,
        help="mark every sample as part of this evaluation split (e.g. kitti_eigen_test): training and validation "
        "refuse it; NYU test and DIODE val are marked nyu_test / diode_val without it",
    )


_IMPORT_MODES = (
    "--images, --depths and --depth-scale (folders), --pairs and --depth-scale (a pair list), --diode (a DIODE tree),"
    " or --nyu-mat and --nyu-splits"
)


def _import_usage_error(args: argparse.Namespace) -> str | None:
    """Why the import-rgbd arguments cannot run, or None."""
    modes = {
        "folders": args.images is not None or args.depths is not None,
        "pairs": args.pairs is not None,
        "diode": args.diode is not None,
        "nyu": args.nyu_mat is not None or args.nyu_splits is not None,
    }
    if sum(modes.values()) != 1:
        return f"give either {_IMPORT_MODES}"
    if modes["nyu"] and (args.nyu_mat is None or args.nyu_splits is None):
        return "NYU mode needs both --nyu-mat (nyu_depth_v2_labeled.mat) and --nyu-splits (splits.mat)"
    if modes["folders"] and (args.images is None or args.depths is None or args.depth_scale is None):
        return "folder mode needs --images, --depths and --depth-scale (depth units per metre)"
    if (modes["diode"] or modes["nyu"]) and args.depth_scale is not None:
        return "--depth-scale does not apply to DIODE or NYU: their depth is stored in float metres"
    if modes["pairs"] and args.depth_scale is None:
        return "--pairs needs --depth-scale (depth units per metre: kitti 256, tum 5000, mm 1000; 1 for float .npy)"
    if args.depth_scale is not None and not (math.isfinite(args.depth_scale) and args.depth_scale > 0):
        return f"--depth-scale must be a positive number of units per metre, not {args.depth_scale}"
    return None


def _run_import(args: argparse.Namespace) -> int:
    """The ``import-rgbd`` command: prints the summary and the rejects; exit 2 on bad usage, a taken output or input
    that is wrong as a whole (the message names the file and the problem)."""
    from shards import rgbd_sources
    from shards.nyu import NyuFormatError
    from shards.rgbd import ImportOptions

    problem = _import_usage_error(args)
    if problem:
        print(f"import-rgbd: {problem}")
        return 2
    options = ImportOptions(
        samples_per_shard=args.samples_per_shard, crop=args.crop, seed=args.seed, codec=args.codec,
        eval_split=args.eval_split,
    )
    try:
        if args.nyu_mat is not None:
            summary = rgbd_sources.import_nyu(
                args.nyu_mat, args.nyu_splits, args.out, split=args.nyu_split, depth=args.nyu_depth,
                prefix=args.prefix, options=options,
            )
        elif args.diode is not None:
            summary = rgbd_sources.import_diode(
                args.diode, args.out, split=args.diode_split, scene=args.diode_scene, prefix=args.prefix,
                options=options,
            )
        elif args.pairs is not None:
            summary = rgbd_sources.import_pair_list(
                args.pairs, args.depth_scale, args.out, prefix=args.prefix or "rgbd", options=options
            )
        else:
            summary = rgbd_sources.import_rgbd_folder(
                args.images, args.depths, args.depth_scale, args.out, prefix=args.prefix or "rgbd", options=options
            )
    except (FileExistsError, FileNotFoundError, NyuFormatError) as error:
        print(f"import-rgbd: {error}")
        return 2
    print("\n".join(summary.lines()))
    if summary.shards:
        print(f"summary with the sha256 of each stats json: {write_import_summary(args.out, summary)}")
    return 0


def write_import_summary(out: str, summary) -> str:
    """``OUT/<prefix>.summary.json``: samples written, rejects, and the sha256 of each shard's stats json (what
    ``verify`` checks the stats against)."""
    from pathlib import Path

    from shards.writer import STATS_SHA256_FIELD, file_sha256, stats_path, write_json_atomic

    names = [stats["shard"] for stats in summary.shards]
    path = Path(out) / f"{names[0].split('-', 1)[0]}.summary.json"
    record = {
        "written": summary.written, "shards": len(names), "rejects": summary.rejects,
        STATS_SHA256_FIELD: {name: file_sha256(stats_path(Path(out) / name)) for name in names},
    }
    write_json_atomic(path, record)
    return str(path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m shards", description="Depth shard tools: check, draw, import ground truth, generate scenes."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_verify(commands)
    _add_repair(commands)
    _add_show(commands)
    _add_import_rgbd(commands)
    _add_scenes(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if args.command == "scenes":
        from shards.scenes import write_scene_folder

        paths = write_scene_folder(
            args.out, args.n, seed=args.seed, width=args.width, height=args.height,
            depth_scale=args.depth_scale, holes=args.holes,
        )
        print(f"wrote {len(paths)} scenes ({args.width}x{args.height}) to {args.out}/rgb and {args.out}/depth")
        return 0
    if args.command == "verify":
        from shards.verify import verify_shards

        report = verify_shards(args.shards, workers=args.workers, progress=not args.quiet)
        print(report.summary())
        return 0 if report.ok else 1
    if args.command == "repair":
        from shards.repair import repair_shards

        try:
            report = repair_shards(args.shards, args.out)
        except (FileExistsError, FileNotFoundError, ValueError) as error:
            print(f"repair: {error}")
            return 2
        print("\n".join(report.lines()))
        return 0
    if args.command == "show":
        from shards.show import show_samples

        path = show_samples(args.shards, count=args.n, out=args.out, cell_height=args.cell_height)
        print(f"wrote {path}")
        return 0
    if args.command == "import-rgbd":
        return _run_import(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
