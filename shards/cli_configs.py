"""The configs of ``python -m shards verify|repair|show|import-rgbd|scenes`` (read by
:func:`shards.config.parse_config`), with the old spellings each still accepts for one release."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shards.argv import Spelling
from shards.codec import DEFAULT_LABEL_CODEC, LabelCodecName
from shards.depth_sources import DepthScaleName


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
    """Draw a grid of the first samples: one row per sample (its key on the left), the image beside its label
    colour-mapped."""

    shards: list[str]
    """folders, brace patterns, globs, comma lists or urls of shards; bare words on the command line"""
    out: str
    """the picture to write (.png; its config <out>.config.yaml beside it)"""
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


#: Old spellings, kept for one release.
SPELLINGS = {
    "verify": Spelling(positional="shards"),
    "repair": Spelling(positional="shards"),
    "show": Spelling(renames={"--n": "--count"}, positional="shards"),
    "import-rgbd": Spelling(
        renames={
            "--nyu-mat": "--data",
            "--nyu-splits": "--splits",
            "--nyu-split": "--split",
            "--diode-split": "--split",
            "--nyu-depth": "--depth_source",
            "--crop": "--crop_position",
        }
    ),
    "scenes": Spelling(renames={"--n": "--count", "--seed": "--start"}, size_pair=(640, 480)),
}
