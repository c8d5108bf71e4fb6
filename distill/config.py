"""The distillation stage's config: one dataclass per concern, the reference recipe as defaults.

Read by ``shards.config.parse_config`` (``--config recipe.yaml`` plus dotted overrides such as ``--data.train DIR``,
``--output.dir DIR``, ``--optim.lr 3e-4``). Accelerate's own settings (processes, mixed precision) stay in the
``accelerate launch`` flags.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from distill.data import DataConfig
from distill.losses import LossConfig
from distill.students import StudentConfig


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
    """steps of linear warm-up from 0 to lr"""
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
    channels_last: bool = True
    """train in channels-last memory format (faster convolutions on GPU)"""
    max_consecutive_nonfinite: int = 100
    """stop with an error after this many skipped steps in a row"""
    stop_after: int | None = None
    """checkpoint and stop after this many steps in this run (time-limited jobs)"""


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
        """Checks across sections, so a recipe that cannot train stops before any data is read."""
        if self.loss.coarse_weight > 0 and not self.student.coarse_head:
            raise ValueError("loss.coarse_weight > 0 needs student.coarse_head: true (an RT-MonoDepth student)")
        if self.student.coarse_head and self.loss.coarse_weight == 0:
            raise ValueError(
                "student.coarse_head: true without loss.coarse_weight > 0 trains a head nothing uses (and several "
                "processes stop on its missing gradients): set loss.coarse_weight, or coarse_head false"
            )
