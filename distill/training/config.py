"""The distillation stage's config: one dataclass per concern, the reference recipe as defaults.

Read by ``shards.cli.config.parse_config`` (``--config recipe.yaml`` plus dotted overrides such as ``--data.train DIR``,
``--output.dir DIR``, ``--optim.lr 3e-4``). Accelerate's own settings (processes, mixed precision) stay in the
``accelerate launch`` flags. Light on purpose: no torch, timm or webdataset at import, so that the command line is
read and checked before the training code loads (the student section's check imports the student families).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal, get_args

import yaml

from distill.students.config import STUDENT_SIZE, StudentConfig, check_input_size
from shards.decode_device import DECODE_DEVICES, DecodeDevice

logger = logging.getLogger(__name__)

#: The longest learning-rate warm-up, as a share of ``train.steps``: a longer ``optim.warmup_steps`` is cut to it, so
#: that a short run (``--train.steps 30`` with the reference recipe's 1000-step warm-up) still trains at its peak rate.
MAX_WARMUP_SHARE = 0.05


#: How a sample with several teachers' labels is trained on (``data.teachers``; :mod:`distill.training.data`).
TeacherMode = Literal["first", "mean", "random"]
TEACHER_MODES = get_args(TeacherMode)


@dataclass
class DataConfig:
    """Shards and augmentation.

    ``train``: one shard set (a folder, pattern or comma list) or a list of sets mixed with ``train_weights``;
    ``val``: held-out shards for validation and for choosing the best checkpoint."""

    train: str | list[str] = ""
    """training shards: one set (a folder, brace pattern or comma list) or a list of sets mixed by train_weights"""
    train_weights: list[float] | None = None
    """one weight per set in ``train``; default equal"""
    val: str | None = None
    """held-out shards for validation and for choosing the best checkpoint (null: no validation)"""
    size: list[int] = field(default_factory=lambda: list(STUDENT_SIZE))
    """(width, height), multiples of 32"""
    batch_size: int = 64
    """per process and micro-step"""
    val_batch_size: int = 64
    """validation batch size per process"""
    num_workers: int = 8
    """DataLoader workers per process (0 = read in the training process)"""
    shuffle_buffer: int = 2000
    """samples"""
    epoch_steps: int = 1000
    """optimizer steps per data epoch (the stream is re-seeded at each)"""
    crop_scale: list[float] = field(default_factory=lambda: [0.64, 1.0])
    """crop area / sample area"""
    crop_ratio: list[float] = field(default_factory=lambda: [0.9, 1.1])
    """crop aspect / output aspect"""
    flip: float = 0.5
    """probability of a horizontal flip"""
    brightness: float = 0.2
    """colour jitter: factors drawn from [1 - x, 1 + x]"""
    contrast: float = 0.2
    """colour jitter: contrast factor drawn from [1 - x, 1 + x]"""
    saturation: float = 0.2
    """colour jitter: saturation factor drawn from [1 - x, 1 + x]"""
    checksums: bool = True
    """check every member's sha256 before decoding (docs/shards.md; cost in BENCHMARKS.md)"""
    max_damaged_fraction: float = 0.01
    """stop when more of the samples read are damaged or lost (see distill.training.data)"""
    allow_eval_split: bool = False
    """true: read samples marked as a benchmark's evaluation split (test-set leakage; the reports say so)"""
    teachers: TeacherMode = "first"
    """which label of a sample several teachers labelled is trained on: first (the first teacher's), mean (every
    label as inverse depth, aligned to the first by least-squares scale and shift, averaged: relative), or random
    (one teacher's label per sample per step); docs/distill.md says when each helps. Validation reads the first"""
    decode_device: DecodeDevice = "auto"
    """where training images are decoded, cropped, flipped and jittered: auto = on the training GPU when there is one
    (workers decode the labels and draw the parameters), cpu = in the DataLoader workers, model = on the training
    device whatever it is (on a CPU: for tests). Validation decodes in the workers"""

    def __post_init__(self) -> None:
        check_input_size(*self.size, "data.size")
        if self.teachers not in TEACHER_MODES:
            raise ValueError(f"data.teachers is {self.teachers!r}; expected one of {list(TEACHER_MODES)}")
        if self.decode_device not in DECODE_DEVICES:
            raise ValueError(f"data.decode_device is {self.decode_device!r}; expected one of {list(DECODE_DEVICES)}")
        if not 0.0 <= self.max_damaged_fraction <= 1.0:
            raise ValueError(f"data.max_damaged_fraction must lie in [0, 1], got {self.max_damaged_fraction}")

    def train_sets(self) -> list[str]:
        sets = [self.train] if isinstance(self.train, str) else list(self.train)
        sets = [s for s in sets if s]
        if not sets:
            raise ValueError("no training shards: set --data.train to a folder of shards (or a list of shard sets)")
        return sets


#: The losses by name, as a type, so that the config lists them; ``distill.training.losses`` checks that its ``LOSSES``
#: table has exactly these keys.
LossName = Literal["ssi", "ssi_lsq", "l1", "mse", "ssim_l1_smooth", "l1_edge_ssim"]
LOSS_NAMES = get_args(LossName)


@dataclass
class LossConfig:
    """Which loss and its weights; defaults are the reference recipe (MiDaS SSI, trimmed 20%, gradient weight 0.5)."""

    name: LossName = "ssi"
    """the loss (docs/distill.md describes each)"""
    trim: float = 0.2
    """ssi: fraction of the largest residuals per image left out"""
    gradient_weight: float = 0.5
    """ssi, ssi_lsq: weight of the multi-scale gradient-matching term (0 = off)"""
    gradient_scales: int = 4
    """each scale half the resolution of the previous"""
    ssim_weight: float = 0.85
    """ssim_l1_smooth: SSIM share (L1 gets 1 - ssim_weight); l1_edge_ssim: SSIM weight"""
    smoothness_weight: float = 1e-3
    """ssim_l1_smooth: edge-aware smoothness weight"""
    l1_weight: float = 1.0
    """l1_edge_ssim: L1 weight"""
    edge_weight: float = 1.0
    """l1_edge_ssim: weight of the L1 between prediction and label image gradients"""
    invariant: bool = False
    """l1, mse, ssim_l1_smooth, l1_edge_ssim: median / MAD normalise both first"""
    coarse_weight: float = 0.0
    """> 0: RMSE of the student's coarse map (student.coarse_head) with this weight"""

    def __post_init__(self) -> None:
        if self.name not in LOSS_NAMES:
            raise ValueError(f"unknown loss {self.name!r}; choose one of {sorted(LOSS_NAMES)}")
        if self.invariant and self.name in ("ssi", "ssi_lsq"):
            raise ValueError(f"loss {self.name!r} is scale-and-shift invariant already: leave loss.invariant false")
        if self.coarse_weight < 0:
            raise ValueError(f"loss.coarse_weight must be >= 0, got {self.coarse_weight}")
        if not 0.0 <= self.trim < 1.0:
            raise ValueError(f"loss.trim is the fraction of residuals left out, in [0, 1); got {self.trim}")


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``."""

    lr: float = 1e-3
    """peak learning rate"""
    weight_decay: float = 1e-4
    """not applied to biases and normalisation weights"""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW's (beta1, beta2)"""
    warmup_steps: int = 1000
    """steps of linear warm-up from 0 to lr, at most 5% of train.steps (MAX_WARMUP_SHARE: a short run trains at its
    peak lr; the run's config.yaml shows the steps used)"""
    min_lr_ratio: float = 0.01
    """the cosine decay ends at lr * min_lr_ratio"""
    clip_grad_norm: float | None = 1.0
    """None: no clipping"""


@dataclass
class TrainConfig:
    """The loop: length, accumulation, EMA, the non-finite guard."""

    steps: int = 60_000
    """optimizer steps in the whole run (sizes the schedule)"""
    gradient_accumulation_steps: int = 1
    """micro-batches per optimizer step"""
    seed: int = 0
    """seeds the student's initialisation, the data order and the augmentation"""
    ema_decay: float | None = 0.999
    """None: no EMA; otherwise validation and the saved student use the EMA weights"""
    ema_warmup_power: float | None = 0.75
    """the EMA decay ramps up with the run as 1 - (1 + step)^-power, capped at ema_decay (timm's ModelEmaV3 warm-up;
    0.75 reaches 0.999 near step 10k), so a short run's EMA follows its training; null: ema_decay from step 1"""
    channels_last: bool = True
    """train in channels-last memory format (faster convolutions on GPU)"""
    max_consecutive_nonfinite: int = 100
    """stop with an error after this many skipped steps in a row"""
    stop_after: int | None = None
    """checkpoint and stop after this many steps in this run (time-limited jobs)"""

    def __post_init__(self) -> None:
        if self.ema_warmup_power is not None and self.ema_warmup_power <= 0:
            raise ValueError(f"train.ema_warmup_power must be > 0 (null: no warm-up), got {self.ema_warmup_power}")


@dataclass
class CheckpointConfig:
    """Resumable checkpoints (model, optimizer, scheduler, EMA, RNG, step) under ``OUTPUT_DIR/checkpoints``."""

    every: int = 1000
    """steps; best a multiple of data.epoch_steps (resume then skips no batch)"""
    keep: int = 3
    """the newest K checkpoints are kept"""


@dataclass
class LogConfig:
    """Logging: scalars, TensorBoard image grids, validation."""

    every: int = 50
    """steps between scalar logs (loss parts, lr, samples/s)"""
    images_every: int = 1000
    """steps between TensorBoard image grids (0 = never)"""
    images: int = 4
    """samples per grid"""
    val_every: int = 2000
    """steps between validations (and at the end; 0 = only at the end)"""
    tensorboard: bool = True
    """write TensorBoard logs under OUTPUT_DIR/logs"""
    write_val_keys: bool = False
    """write the keys each validation saw (val_keys_<step>.txt): for checking splits"""


@dataclass
class OutputConfig:
    """Where the run writes."""

    dir: str = "runs/distill"
    """checkpoints/, logs/, best/, student/, config.yaml, metrics.jsonl"""


@dataclass
class DistillConfig:
    """Distil a teacher's pseudo-labels (shards) into a FastDepth student."""

    student: StudentConfig = field(default_factory=StudentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    log: LogConfig = field(default_factory=LogConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    resume: str | None = None
    """"latest" (newest complete checkpoint in OUTPUT_DIR) or a checkpoint folder"""

    def __post_init__(self) -> None:
        """Checks across sections, so a recipe that cannot train stops before any data is read; the warm-up cut to
        its share of the run (``MAX_WARMUP_SHARE``)."""
        self.optim.warmup_steps = min(self.optim.warmup_steps, int(MAX_WARMUP_SHARE * self.train.steps))
        if self.loss.coarse_weight > 0 and not self.student.coarse_head:
            raise ValueError("loss.coarse_weight > 0 needs student.coarse_head: true (an RT-MonoDepth student)")
        if self.student.coarse_head and self.loss.coarse_weight == 0:
            raise ValueError(
                "student.coarse_head: true without loss.coarse_weight > 0 trains a head nothing uses (and several "
                "processes stop on its missing gradients): set loss.coarse_weight, or coarse_head false"
            )


def resolved_as_used(config: DistillConfig, resolved_yaml: str) -> str:
    """The resolved config with the values the run uses where the config changed what was given (the warm-up cut to
    ``MAX_WARMUP_SHARE`` of the run), said in the log, so the run's config.yaml tells how it was trained."""
    values = yaml.safe_load(resolved_yaml)
    given = values["optim"]["warmup_steps"]
    if given == config.optim.warmup_steps:
        return resolved_yaml
    logger.warning("optim.warmup_steps %d is more than %.0f%% of train.steps %d: warming up over %d steps", given,
                   100 * MAX_WARMUP_SHARE, config.train.steps, config.optim.warmup_steps)
    values["optim"]["warmup_steps"] = config.optim.warmup_steps
    return yaml.safe_dump(values, sort_keys=False)
