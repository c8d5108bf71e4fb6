"""The pseudo-labelling config: one dataclass per section, the reference recipe as defaults.

The reference recipe (MiDaS v3 training data): 450,000 random Places365 images, resized and centre-cropped to
512x384, labelled by DPT-Hybrid. Read with :func:`shards.cli.config.parse_config`: ``--config recipe.yaml`` plus dotted
overrides such as ``--source.path DIR``; an unknown key stops with its name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from shards.decode_device import DECODE_DEVICES, DecodeDevice
from shards.format import (
    DEFAULT_LABEL_CODEC,
    JPEG_QUALITY,
    LABEL_KINDS,
    SAMPLE_HEIGHT,
    SAMPLE_WIDTH,
    LabelCodecName,
)
from shards.writer import check_prefix

#: File-name extensions read as images by the folder and list sources (lower case, compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm")

SourceKind = Literal["auto", "folder", "list", "datasets", "shards"]
CropMode = Literal["center", "random"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
Kind = Literal["relative_inverse_depth", "metric_depth"]  # shards.format.LABEL_KINDS, as a config option's type
SOURCE_KINDS = get_args(SourceKind)
CROP_MODES = get_args(CropMode)
PRECISIONS = get_args(Precision)


@dataclass
class SourceConfig:
    """Where the images come from. ``kind: auto`` decides from ``path``: a saved ``datasets`` folder, a folder of
    images, a ``.txt`` list of paths, ``.tar`` shards (file, glob or brace pattern), else a hub dataset name."""

    kind: SourceKind = "auto"
    """what path is; auto decides from its form"""
    path: str = "data/places365/data_large"
    """a folder of images, a .txt list of paths, .tar shards, a saved datasets folder or a hub dataset name"""
    name: str | None = None
    """key prefix for datasets rows and image shards; default: derived from path"""
    split: str = "train"
    """datasets split"""
    image_column: str = "image"
    """datasets column holding the image"""
    id_column: str | None = None
    """datasets column used as key instead of the row index"""
    extensions: list[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    """file endings read as images by the folder and list sources"""
    sample_count: int = 450_000
    """seeded random subset of the sorted list; 0 = every input"""
    sample_seed: int = 0
    """seed of the random subset (sample_count)"""


@dataclass
class PreprocessConfig:
    """Resize by ``max(width / W, height / H)`` (bicubic, antialiased), then crop ``width`` x ``height``."""

    width: int = SAMPLE_WIDTH
    """width of the crop the teacher labels (pixels)"""
    height: int = SAMPLE_HEIGHT
    """height of the crop the teacher labels (pixels)"""
    crop: CropMode = "center"
    """center | random (the box is drawn per key from crop_seed, so reruns agree)"""
    crop_seed: int = 0
    """seed of the random crop boxes"""
    min_short_side: int = 32
    """pixels; far below 384 so a 1242x375 street frame is upscaled, not dropped"""
    max_pixels: int = 200_000_000
    """larger sources are rejected as too_large (decompression-bomb guard)"""
    jpeg_draft: bool = True
    """let libjpeg decode big JPEGs at 1/2, 1/4, 1/8 when the result stays >= the target"""


@dataclass
class TeacherConfig:
    """The teacher: a hub id or a local folder (config.json + weights), an exported depth file, or ``identity`` for
    pipeline timing; or a list of them (every teacher labels every image). The other keys apply to every teacher,
    ``kind`` and ``revision`` may also be given per teacher (:meth:`each`)."""

    model: str | list[str] = "Intel/dpt-hybrid-midas"
    """a hub id, a local folder (config.json + weights), an exported depth file (.onnx, .tflite, .pte), or identity
    (pipeline timing, no network); or a list of them, '[A, B]': every teacher labels every image (the first one's
    label stays the sample's label)"""
    kind: Kind | list[Kind | None] | None = None
    """what a teacher file outputs, relative_inverse_depth or metric_depth: required when the file does not say
    (our exports do); other teachers say it themselves. With several teachers: one for all, or a list, one per
    teacher (null where the teacher says)"""
    revision: str | list[str | None] | None = None
    """hub branch, tag or commit (with several teachers: one for all, or one per teacher); the resolved commit goes
    into the manifest"""
    flip_tta: bool = False
    """average the map and the un-flipped map of the flipped image"""
    short_side: int | None = None
    """overrides the family's network size (DPT's short side 384, Depth Anything's lower bound 518); null, the
    default: the family's own, as its authors run it (docs/pseudolabel.md)"""
    precision: Precision = "auto"
    """the backbone: auto = bf16 autocast on CUDA, fp32 on CPU; the head is always fp32"""

    def models(self) -> list[str]:
        """Every teacher, in order; the first one's label is each sample's label."""
        return [self.model] if isinstance(self.model, str) else list(self.model)

    def each(self, name: str) -> list:
        """``kind`` or ``revision`` per teacher: a single value (or null) for every teacher, or the list as given."""
        value = getattr(self, name)
        return list(value) if isinstance(value, list) else [value] * len(self.models())


@dataclass
class OutputConfig:
    """The shard set: ``{prefix}-{process:03d}-{job:06d}.tar`` + stats json per job, manifest and summary."""

    dir: str = "out/pseudolabel/places365_dpt_hybrid"
    """the output folder: shards, stats, manifest.json, summary.json, config.yaml"""
    prefix: str = "train"
    """shard name prefix (no '-' or '/')"""
    samples_per_shard: int = 1000
    """inputs per job; one job = one shard"""
    label_codec: LabelCodecName = DEFAULT_LABEL_CODEC
    """how labels are stored in the shards (docs/shards.md)"""
    jpeg_quality: int = JPEG_QUALITY
    """JPEG quality of the stored images"""


@dataclass
class RuntimeConfig:
    """How the work is run: none of these is in the manifest. ``decode_device`` moves a label only within the
    tolerances docs/pseudolabel.md ("Decode device") states; the others never change one."""

    batch_size: int = 16
    """images per teacher forward, per process"""
    num_workers: int = 8
    """DataLoader workers per process (decode, resize, crop, JPEG encode)"""
    prefetch_factor: int = 4
    """batches each worker keeps ready"""
    encode_threads: int = 4
    """label-encoding threads in the writer"""
    queue_batches: int = 8
    """labelled batches waiting for the writer before inference waits"""
    compile_teacher: bool = False
    """torch.compile the teacher: DPT-Hybrid alone 800 instead of 435 images/s on an H200, after a ~40 s compile"""
    decode_device: DecodeDevice = "auto"
    """where inputs are decoded, resized, cropped and re-encoded: auto = on the teacher's GPU when it runs on one (the
    JPEGs nvJPEG takes; the rest in the workers), cpu = in the DataLoader workers, model = on the teacher's device
    whatever it is (on a CPU: slower, for tests)"""
    progress: bool = True
    """tqdm bar on the main process"""
    log_level: LogLevel = "INFO"
    """logging level"""


@dataclass
class PseudolabelConfig:
    """``accelerate launch pseudolabel.py --config configs/pseudolabel/<recipe>.yaml [--section.key value ...]``"""

    source: SourceConfig = field(default_factory=SourceConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        check_config(self)


def check_config(config: PseudolabelConfig) -> None:
    """Refuse values the schema's types cannot express, naming the key and the accepted values."""
    choices = (
        ("source.kind", config.source.kind, SOURCE_KINDS),
        ("preprocess.crop", config.preprocess.crop, CROP_MODES),
        ("teacher.precision", config.teacher.precision, PRECISIONS),
        ("runtime.decode_device", config.runtime.decode_device, DECODE_DEVICES),
    )
    for name, value, accepted in choices:
        if value not in accepted:
            raise ValueError(f"{name} is {value!r}; expected one of {list(accepted)}")
    positive = (
        ("preprocess.width", config.preprocess.width),
        ("preprocess.height", config.preprocess.height),
        ("preprocess.min_short_side", config.preprocess.min_short_side),
        ("output.samples_per_shard", config.output.samples_per_shard),
        ("runtime.batch_size", config.runtime.batch_size),
        ("runtime.encode_threads", config.runtime.encode_threads),
        ("runtime.queue_batches", config.runtime.queue_batches),
    )
    for name, value in positive:
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    check_teachers(config.teacher)
    if config.teacher.short_side is not None and config.teacher.short_side < 1:
        raise ValueError(f"teacher.short_side must be at least 1 (or null: the family's own), got "
                         f"{config.teacher.short_side}")
    if config.source.sample_count < 0:
        raise ValueError(f"source.sample_count must be 0 (every input) or more, got {config.source.sample_count}")
    check_prefix(config.output.prefix, "output.prefix")


def check_teachers(teacher: TeacherConfig) -> None:
    """At least one teacher; ``kind`` and ``revision`` lists one entry per teacher; kinds from ``LABEL_KINDS``."""
    models = teacher.models()
    if not models or not all(isinstance(model, str) and model for model in models):
        raise ValueError(f"teacher.model is a teacher or a list of teachers, got {teacher.model!r}")
    for name in ("kind", "revision"):
        value = getattr(teacher, name)
        if isinstance(value, list) and len(value) != len(models):
            raise ValueError(f"teacher.{name} lists {len(value)} values for {len(models)} teachers: give one per "
                             f"teacher (null where the teacher says), or a single value for all")
    for kind in teacher.each("kind"):
        if kind is not None and kind not in LABEL_KINDS:
            raise ValueError(f"teacher.kind is {kind!r}; expected one of {list(LABEL_KINDS)}")
