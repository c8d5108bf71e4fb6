"""The distillation loop on Accelerate: shards -> student, with its optimizer step, checkpoints, resume, validation
and logs.

Reads as the transformers ``no_trainer`` examples: Accelerator, data, model, optimizer, scheduler, ``prepare``, a
plain loop. :func:`train` builds a :class:`TrainingRun` and runs its parts in order, each step: ``step`` (the
micro-batches and the update), ``log``, ``log_examples``, ``validate``, ``agree_to_stop`` (the ranks' agreement to
stop), ``checkpoint``. Differences, all from Accelerate's traps (docs/library-notes.md): the WebDataset loader is not
prepared (``distill.training.data`` sends each batch to the device; each rank reads its own resampled stream), the LR
scheduler is not prepared (it steps once per optimizer step), checkpoints are written atomically
(``distill.training.checkpoint``), and validation gathers per-image metrics across processes itself.

The optimizer step never waits for the host. A non-finite loss or gradient must skip the update; deciding that on the
host (``float(loss)``, ``bool(norm)``) stalls the GPU at every step until the queued kernels drain. Here the decision
stays on the device, as torch's GradScaler does it: the total gradient norm (already averaged across processes by DDP,
so every rank holds the same value) and the loss flags make a ``found_inf`` tensor, and fused AdamW skips its update,
step count included, where ``found_inf`` is 1. The loss parts and skip counters stay on the device too
(:class:`StepStats`) and are read in one transfer per log interval.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, broadcast_object_list, gather_object, send_to_device, set_seed
from timm.utils import ModelEmaV3
from torch import nn
from tqdm.auto import tqdm

from distill.align import align_scale_shift
from distill.metrics import inverse_depth_metrics, mean_metrics
from distill.students import create_student, save_student, student_output_kind
from distill.training.checkpoint import TrainState, remove_partial_checkpoints, resolve_resume, save_checkpoint
from distill.training.config import DistillConfig
from distill.training.data import (
    TrainBatches,
    batch_in_space,
    build_val_loader,
    log_data_integrity,
    postfix,
    worker_batches,
)
from distill.training.losses import build_loss
from shards.cli.errors import UserError, refuse_filled_folder
from shards.format import RELATIVE_INVERSE_DEPTH, as_inverse_depth, inverse_depth
from shards.tools.pictures import METRES, colorize_depth, image_grid, relative_units

logger = logging.getLogger(__name__)

#: Validation metric that picks the best checkpoint, in order of preference (lower is better).
BEST_METRICS = ("abs_rel_inv", "abs_rel")
#: Steps between checks of the stop flag (a signal on any rank), besides log and checkpoint steps: each check is an
#: all-reduce read on the host.
STOP_CHECK_STEPS = 10


# ---------------------------------------------------------------------------------------------------------------
# The optimizer step: AdamW, its schedule, an update skipped on the device


#: Device types whose fused AdamW takes ``found_inf`` (checked with torch 2.11-2.14).
FUSED_DEVICE_TYPES = ("cuda", "cpu")


class WarmupCosine:
    """LR factor: linear warm-up from 0 over ``warmup`` steps, then cosine down to ``min_ratio`` at ``total``."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_ema(model: nn.Module, decay: float | None, warmup_power: float | None) -> ModelEmaV3 | None:
    """The EMA of the weights (None without ``decay``): with ``warmup_power``, timm's warm-up ramps the decay as
    ``1 - (1 + step)^-power`` up to ``decay``, so the EMA of a run shorter than ``1 / (1 - decay)`` steps follows the
    training instead of staying near the first step's weights."""
    if not decay:
        return None
    if warmup_power is None:
        return ModelEmaV3(model, decay=decay)
    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=warmup_power)


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D parameters)."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float,
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused (one kernel per step, and the on-device skip) where the device supports it."""
    fused = device.type in FUSED_DEVICE_TYPES
    return torch.optim.AdamW(parameter_groups(model, weight_decay), lr=lr, betas=betas, fused=fused or None)


def total_grad_norm(model: nn.Module, clip: float | None, accelerator: Accelerator) -> torch.Tensor:
    """The gradients' total L2 norm (a 0-dim device tensor); clips to ``clip`` when given."""
    if clip:
        return accelerator.clip_grad_norm_(model.parameters(), clip)
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return torch.nn.utils.get_total_norm(grads)


def optimizer_step(accelerator: Accelerator, model: nn.Module, optimizer, clip: float | None,
                   loss_nonfinite: torch.Tensor) -> torch.Tensor:
    """Clip, step, zero. Returns a 0-dim float tensor on the device: 1.0 where the update was skipped.

    ``loss_nonfinite`` is this rank's flag (1.0 if any micro-batch's loss was not finite). With fp16 the grad
    scaler decides instead (it lowers its scale on overflow and skips the step itself; that path reads the host).
    """
    norm = total_grad_norm(model, clip, accelerator)
    if accelerator.scaler is not None:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return torch.tensor(float(accelerator.optimizer_step_was_skipped), device=norm.device)
    found_inf = torch.maximum(loss_nonfinite, (~torch.isfinite(norm)).float())
    if accelerator.num_processes > 1:  # a rank whose loss alone was non-finite: every rank skips together
        found_inf = accelerator.reduce(found_inf, reduction="max")
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper holds the torch optimizer
    if inner.defaults.get("fused"):
        inner.found_inf = found_inf  # read by the fused kernel: no update, no step count where it is 1
        optimizer.step()
    elif not bool(found_inf):  # an unfused optimizer can only be skipped from the host
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return found_inf


# ---------------------------------------------------------------------------------------------------------------
# Figures kept on the device between log intervals


class StepStats:
    """Running loss-part means and non-finite-step counters for one log interval, on ``device``."""

    def __init__(self, device: torch.device, skipped_before: int = 0) -> None:
        self.device = device
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.skipped_total = torch.tensor(float(skipped_before), device=device)
        self.consecutive = torch.zeros((), device=device)  # skips in a row up to now (carried across intervals)
        self.longest_run = torch.zeros((), device=device)  # the longest run of skips seen in this interval

    def add_parts(self, parts: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch's loss parts; non-finite values are left out of the means."""
        for name, value in parts.items():
            value = value.detach().float()
            finite = torch.isfinite(value)
            if name not in self.sums:
                self.sums[name] = torch.zeros((), device=self.device)
                self.counts[name] = torch.zeros((), device=self.device)
            self.sums[name] += torch.where(finite, value, 0.0)
            self.counts[name] += finite.float()

    def add_step(self, skipped: torch.Tensor) -> None:
        """Record one optimizer step; ``skipped`` is 1.0 where its update was skipped."""
        self.skipped_total += skipped
        self.consecutive = (self.consecutive + 1.0) * skipped
        self.longest_run = torch.maximum(self.longest_run, self.consecutive)

    def read(self) -> tuple[dict[str, float], int, int]:
        """(loss-part means, skipped updates so far, longest run of skips in the interval), then a new interval."""
        names = list(self.sums)
        values = torch.stack(
            [self.skipped_total, self.longest_run, *(self.sums[n] for n in names), *(self.counts[n] for n in names)]
        ).tolist()  # the one host synchronisation of the interval
        skipped, longest = int(values[0]), int(values[1])
        sums, counts = values[2 : 2 + len(names)], values[2 + len(names) :]
        means = {name: total / count for name, total, count in zip(names, sums, counts) if count > 0}
        self.sums, self.counts = {}, {}
        self.longest_run = self.consecutive.clone()
        return means, skipped, longest


# ---------------------------------------------------------------------------------------------------------------
# The loop


@dataclasses.dataclass
class TrainResult:
    step: int  # optimizer steps done when the run ended
    completed: bool  # reached train.steps
    signal: int | None  # the signal that stopped the run, if any
    skipped_nonfinite: int
    student: Path | None  # OUTPUT_DIR/student when completed
    validation: dict[str, float] | None  # the last validation's means
    main_process: bool = True  # this process is the main one (it alone reports)


class StopSignal:
    """Records SIGTERM / SIGINT (preemption, Ctrl-C) so the loop can checkpoint at the next step and stop."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.received = signum
        logger.warning("received %s: saving a checkpoint after this step, then stopping", signal.Signals(signum).name)

    def __enter__(self) -> StopSignal:
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)


def _flat_hparams(config: DistillConfig) -> dict[str, Any]:
    """TensorBoard hparams take scalars only."""
    flat = {}
    for section, values in dataclasses.asdict(config).items():
        items = values.items() if isinstance(values, dict) else [("", values)]
        for name, value in items:
            key = f"{section}.{name}" if name else section
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def train(config: DistillConfig, resolved_yaml: str | None = None) -> TrainResult:
    """Run (or resume) a distillation; see ``docs/distill.md``. Every process calls this."""
    output_dir = Path(config.output.dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=config.train.gradient_accumulation_steps,
        log_with="tensorboard" if config.log.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / "logs")),
        step_scheduler_with_optimizer=False,
    )
    try:
        return _train(accelerator, config, resolved_yaml, output_dir)
    finally:
        accelerator.end_training()


def _train(accelerator: Accelerator, config: DistillConfig, resolved_yaml: str | None, output_dir: Path) -> TrainResult:
    """The training loop: step, log, validate, agree to stop, checkpoint; then the student."""
    _prepare_output(accelerator, config, resolved_yaml, output_dir)
    run = TrainingRun(accelerator, config, output_dir)
    stop_signum: int | None = None
    try:
        with StopSignal() as stop:
            while run.state.step < config.train.steps:
                batch, prediction = run.step()
                log_step = run.state.step % config.log.every == 0 or run.state.step == config.train.steps
                if log_step:
                    run.log()
                run.log_examples(batch, prediction)
                run.validate()
                stopping = run.agree_to_stop(stop, log_step)
                run.checkpoint(stopping)
                if stopping:
                    stop_signum = stop.received
                    logger.warning("stopped at step %d; continue with --resume latest", run.state.step)
                    break
    finally:  # on every way out, an error included: a loader left running keeps the process from exiting
        run.batches.close()
        run.progress.close()
    return run.finish(stop_signum)


def _prepare_output(
    accelerator: Accelerator, config: DistillConfig, resolved_yaml: str | None, output_dir: Path
) -> None:
    """Checks that need no model, the output folder (refused when it holds something and the run does not resume;
    resolved config written, half-saved checkpoints removed), and the run's first log lines."""
    config.data.train_sets()  # fail early, on every rank, with the fix in the message
    refusal = None
    if accelerator.is_main_process and config.resume is None:  # one look, before any rank writes there
        try:
            refuse_filled_folder(output_dir, "--output.dir", "pass --resume latest to continue the run there")
        except UserError as error:
            refusal = str(error)
    refusal = broadcast_object_list([refusal])[0]  # every rank stops together (none waits at a barrier)
    if refusal is not None:
        raise UserError(refusal)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        if resolved_yaml is not None:
            (output_dir / "config.yaml").write_text(resolved_yaml)
        remove_partial_checkpoints(output_dir)
    accelerator.wait_for_everyone()
    logger.info("distill: %d process(es), device %s, mixed precision %s", accelerator.num_processes,
                accelerator.device, accelerator.mixed_precision)
    if config.data.allow_eval_split:
        logger.warning("data.allow_eval_split is true: samples of benchmark evaluation splits may be trained and "
                       "validated on; figures on those benchmarks are then not held-out results")


class TrainingRun:
    """This process's side of a run: the student, its EMA, the optimizer, schedule, loss and batches (resumed from a
    checkpoint where asked), and the parts of the loop that :func:`_train` calls in order."""

    def __init__(self, accelerator: Accelerator, config: DistillConfig, output_dir: Path) -> None:
        self.accelerator, self.config, self.output_dir = accelerator, config, output_dir
        set_seed(config.train.seed)
        self.memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
        model = create_student(config.student).to(accelerator.device, memory_format=self.memory_format)
        self.ema = build_ema(model, config.train.ema_decay, config.train.ema_warmup_power)
        optimizer = build_optimizer(
            model, config.optim.lr, tuple(config.optim.betas), config.optim.weight_decay, accelerator.device
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, WarmupCosine(config.optim.warmup_steps, config.train.steps, config.optim.min_lr_ratio)
        )
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.state = TrainState()
        accelerator.register_for_checkpointing(self.scheduler, self.state)
        if self.ema is not None:
            accelerator.register_for_checkpointing(self.ema)
        self.loss_fn = build_loss(config.loss)
        self.wants_aux = config.loss.coarse_weight > 0  # the student's coarse map feeds the loss
        self._resume()
        if accelerator.is_main_process and config.log.tensorboard:
            accelerator.init_trackers("distill", config=_flat_hparams(config))
        self.batches = TrainBatches(config.data, config.train.seed, config.train.gradient_accumulation_steps,
                                    accelerator.device, config.student.prediction)
        self.progress = tqdm(total=config.train.steps, initial=self.state.step,
                             disable=not accelerator.is_local_main_process, desc="distill", dynamic_ncols=True)
        self.start_step = self.state.step
        self.stats = StepStats(accelerator.device, skipped_before=self.state.skipped_nonfinite)
        self.samples = 0  # trained on since the last log
        self.log_started = time.perf_counter()  # training time only: validation and checkpoints are paused out
        self.last_validation: dict[str, float] | None = None

    def _resume(self) -> None:
        checkpoint = resolve_resume(self.config.resume, self.output_dir)
        if checkpoint is not None:
            self.accelerator.load_state(str(checkpoint))
            logger.info("resumed from %s at step %d", checkpoint, self.state.step)
        elif self.config.resume:
            logger.info("--resume %s: no checkpoint yet in %s, starting from step 0", self.config.resume,
                        self.output_dir)

    def step(self) -> tuple[dict, torch.Tensor]:
        """One optimizer step: the micro-batches forward and backward, the update (skipped on the device where a loss
        or gradient is not finite), the schedule, the EMA. Returns the last micro-batch and its prediction."""
        accelerator, config = self.accelerator, self.config
        loss_nonfinite = torch.zeros((), device=accelerator.device)
        for _ in range(config.train.gradient_accumulation_steps):
            batch = self.batches.next(self.state.step)
            image = batch["image"].contiguous(memory_format=self.memory_format)
            with accelerator.accumulate(self.model):
                with accelerator.autocast():
                    if self.wants_aux:
                        prediction, aux = self.model(image, return_aux=True)
                    else:
                        prediction, aux = self.model(image), None
                parts = self.loss_fn(prediction.float(), batch["target"], batch["valid"], image, aux)
                # a non-finite loss still goes backward: its gradients are non-finite and the update is skipped on
                # the device (optimizer_step), with no host read to decide
                loss_nonfinite = torch.maximum(loss_nonfinite, (~torch.isfinite(parts["loss"].detach())).float())
                accelerator.backward(parts["loss"])
                if accelerator.sync_gradients:
                    skipped = optimizer_step(accelerator, self.model, self.optimizer, config.optim.clip_grad_norm,
                                             loss_nonfinite)
            self.samples += image.shape[0]
            self.stats.add_parts(parts)
        with warnings.catch_warnings():  # torch warns when a skipped first step leaves the optimizer unstepped
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
            self.scheduler.step()
        self.state.step += 1
        self.stats.add_step(skipped)
        if self.ema is not None:  # on a skipped step the weights are unchanged: the EMA moves toward the same weights
            self.ema.update(self.accelerator.unwrap_model(self.model), step=self.state.step)
        self.progress.update(1)
        return batch, prediction

    def log(self) -> None:
        """The interval's scalars (loss parts, lr, samples/s, skipped steps, damaged data) to the trackers,
        metrics.jsonl and the progress bar; stops the run on too many non-finite steps in a row."""
        accelerator, config, state = self.accelerator, self.config, self.state
        elapsed = time.perf_counter() - self.log_started
        means, skipped_total, longest_run = self.stats.read()
        if skipped_total > state.skipped_nonfinite:
            logger.warning("steps %d-%d: %d update(s) skipped for a non-finite loss or gradient (%d so far)",
                           state.step - config.log.every + 1, state.step, skipped_total - state.skipped_nonfinite,
                           skipped_total)
        state.skipped_nonfinite = skipped_total
        if longest_run >= config.train.max_consecutive_nonfinite:
            raise FloatingPointError(
                f"{longest_run} non-finite steps in a row by step {state.step}: lower optim.lr, "
                "check the labels (shards verify), or train in fp32 / bf16 instead of fp16"
            )
        scalars = {f"train/{name}": value for name, value in means.items()}
        scalars.update({
            "train/lr": self.scheduler.get_last_lr()[0],
            "train/samples_per_s": self.samples * accelerator.num_processes / max(elapsed, 1e-9),
            "train/skipped_nonfinite": state.skipped_nonfinite,
        })
        if accelerator.device.type == "cuda":  # the model's, the optimizer's and the device path's decoding
            scalars["train/peak_gpu_gib"] = torch.cuda.max_memory_allocated(accelerator.device) / 2**30
        scalars.update(log_data_integrity(accelerator, self.batches.reads, config.data))  # raises past the limit
        accelerator.log(scalars, step=state.step)
        _append_jsonl(accelerator, self.output_dir / "metrics.jsonl", {"step": state.step, **scalars})
        loss = scalars.get("train/loss", float("nan"))
        self.progress.set_postfix(loss=f"{loss:.4f}", **postfix(scalars))
        self.samples, self.log_started = 0, time.perf_counter()

    def log_examples(self, batch: dict, prediction: torch.Tensor) -> None:
        """At ``log.images_every`` steps: input, label and prediction of the last micro-batch, to TensorBoard."""
        config, step = self.config, self.state.step
        if not (config.log.images_every and step % config.log.images_every == 0 and self.accelerator.trackers):
            return
        kind = student_output_kind(config.student)
        examples = as_inverse_depth(prediction.detach().float(), kind)
        target = batch["target"] if kind == RELATIVE_INVERSE_DEPTH else inverse_depth(batch["target"], batch["valid"])
        grid = _example_grid(batch["image"], target, batch["valid"], examples, batch["is_metric"], config.log.images)
        _log_image(self.accelerator, "train/examples", grid, step)

    def validate(self) -> None:
        """At ``log.val_every`` steps and at the end: validation of the EMA (or the model), the best one kept."""
        config, step = self.config, self.state.step
        finished = step >= config.train.steps
        if not config.data.val or not ((config.log.val_every and step % config.log.val_every == 0) or finished):
            return
        evaluated = self.model if self.ema is None else self.ema
        paused = time.perf_counter()
        self.last_validation = _validate_and_keep_best(self.accelerator, evaluated, config, self.state,
                                                       self.output_dir)
        self.log_started += time.perf_counter() - paused  # samples/s counts training time only

    def agree_to_stop(self, stop: StopSignal, log_step: bool) -> bool:
        """Whether every rank stops after this step: ``train.stop_after`` reached, or a signal on any rank (read at
        log, checkpoint and every ``STOP_CHECK_STEPS``-th step: all ranks must agree on the same step)."""
        config, step = self.config, self.state.step
        stopping = config.train.stop_after is not None and step - self.start_step >= config.train.stop_after
        if log_step or step % config.checkpoint.every == 0 or step % STOP_CHECK_STEPS == 0:
            signalled = torch.tensor([float(stop.received is not None)], device=self.accelerator.device)
            stopping = stopping or float(self.accelerator.reduce(signalled, "max")) > 0
        return stopping and step < config.train.steps

    def checkpoint(self, stopping: bool) -> None:
        """At ``checkpoint.every`` steps, before a stop and at the end: a resumable checkpoint."""
        step = self.state.step
        if not (step % self.config.checkpoint.every == 0 or stopping or step >= self.config.train.steps):
            return
        self.state.skipped_nonfinite = int(self.stats.skipped_total)  # the checkpoint holds the exact count
        paused = time.perf_counter()
        save_checkpoint(self.accelerator, self.output_dir, step, self.config.checkpoint.keep)
        self.log_started += time.perf_counter() - paused

    def finish(self, stop_signum: int | None) -> TrainResult:
        """The student saved (EMA weights where kept) when the run reached ``train.steps``, and the result."""
        accelerator, state = self.accelerator, self.state
        completed = state.step >= self.config.train.steps
        student_dir = None
        if completed:
            student_dir = self.output_dir / "student"
            if accelerator.is_main_process:
                final = self.ema.module if self.ema is not None else accelerator.unwrap_model(self.model)
                save_student(final, self.config.student, student_dir)
                logger.info("student saved: %s", student_dir)
            accelerator.wait_for_everyone()
        return TrainResult(state.step, completed, stop_signum, state.skipped_nonfinite, student_dir,
                           self.last_validation, accelerator.is_main_process)


# ---------------------------------------------------------------------------------------------------------------
# Validation and pictures


def _example_grid(image: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, prediction: torch.Tensor,
                  is_metric: torch.Tensor, count: int) -> np.ndarray:
    """Input, label and prediction for ``count`` samples, in the pictures' one convention (docs/evaluation.md): a
    metric label and its prediction in metres, a relative label and its prediction in the teacher's units, near =
    warm in both. ``target`` and ``prediction`` are inverse depth; the prediction is aligned to the label there
    (the losses' invariance), then drawn on the label's colour scale."""
    aligned = align_scale_shift(prediction.float(), target, valid)
    rows = []
    for i in range(min(count, prediction.shape[0])):
        mask, label, guess = valid[i, 0], target[i, 0].float(), aligned[i, 0].detach().float()
        metric = bool(is_metric[i])
        if metric:  # inverse depth -> metres (the same conversion both ways); no depth where the value is not > 0
            label, guess = inverse_depth(label, mask & (label > 0)), inverse_depth(guess, guess > 0)
        label, guess, mask = label.cpu().numpy(), guess.cpu().numpy(), mask.cpu().numpy()
        value_range = tuple(np.percentile(label[mask], [2, 98])) if mask.any() else None
        units = METRES if metric else relative_units("teacher")
        picture = (image[i].float().permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
        rows.append([
            picture,
            colorize_depth(label, mask, value_range, inverse=not metric, units=units),
            colorize_depth(guess, guess != 0 if metric else None, value_range, inverse=not metric, units=units),
        ])
    return image_grid(rows, titles=["input", "label", "prediction (aligned to the label)"])


def validate(
    accelerator: Accelerator, model: nn.Module, config: DistillConfig, step: int, output_dir: Path
) -> tuple[dict[str, float], np.ndarray | None]:
    """Every held-out sample once across processes; per-image metrics gathered, then averaged on every rank.

    Returns the means (plus ``samples`` and per-rank counts) and, on the main process, an example grid.
    """
    was_training = model.training
    model.eval()
    keys: list[str] = []
    per_image: dict[str, list[float]] = {}
    grid = None
    reader = contextlib.closing(worker_batches(build_val_loader(config.data)))  # its workers end however it ends
    with torch.no_grad(), accelerator.autocast(), reader as batches:
        for batch in batches:
            batch = batch_in_space(send_to_device(batch, accelerator.device), "inverse_depth")
            prediction = as_inverse_depth(model(batch["image"]).float(), student_output_kind(config.student))
            target, valid = batch["target"], batch["valid"]
            for name, values in inverse_depth_metrics(prediction, target, valid, batch["is_metric"]).items():
                per_image.setdefault(name, []).extend(values.cpu().tolist())
            keys.extend(batch["key"])
            if grid is None and accelerator.trackers and config.log.images_every:  # trackers: main process only
                grid = _example_grid(batch["image"], target, valid, prediction, batch["is_metric"], config.log.images)
    model.train(was_training)
    gathered = gather_object([{"rank": accelerator.process_index, "keys": keys, "metrics": per_image}])
    means = _write_validation(accelerator, config, step, output_dir, gathered)
    return means, grid


def _write_validation(
    accelerator: Accelerator, config: DistillConfig, step: int, output_dir: Path, gathered: list[dict]
) -> dict[str, float]:
    """Every rank's per-image metrics merged into means; the main process appends them to validation.jsonl (and the
    keys seen, where asked)."""
    all_keys = [key for record in gathered for key in record["keys"]]
    merged: dict[str, list[float]] = {}
    for record in gathered:
        for name, values in record["metrics"].items():
            merged.setdefault(name, []).extend(values)
    means = mean_metrics(merged)
    means["samples"] = float(len(all_keys))
    if accelerator.is_main_process:
        counts = {record["rank"]: len(record["keys"]) for record in gathered}
        summary = {
            "step": step, "world_size": accelerator.num_processes, "samples_per_rank": counts,
            "allow_eval_split": config.data.allow_eval_split, **means,
        }
        with open(output_dir / "validation.jsonl", "a") as handle:
            handle.write(json.dumps(summary) + "\n")
        if config.log.write_val_keys:
            (output_dir / f"val_keys_{step:08d}.txt").write_text("".join(f"{key}\n" for key in all_keys))
    return means


def _best_metric(means: dict[str, float]) -> str | None:
    return next((name for name in BEST_METRICS if name in means), None)


def _validate_and_keep_best(
    accelerator: Accelerator, model: nn.Module, config: DistillConfig, state: TrainState, output_dir: Path
) -> dict[str, float]:
    evaluated = model.module if isinstance(model, ModelEmaV3) else accelerator.unwrap_model(model)
    means, grid = validate(accelerator, evaluated, config, state.step, output_dir)
    accelerator.log({f"val/{name}": value for name, value in means.items()}, step=state.step)
    if grid is not None:
        _log_image(accelerator, "val/examples", grid, state.step)
    name = _best_metric(means)
    if name is not None and (state.best_metric is None or means[name] < state.best_metric):
        state.best_metric, state.best_step = means[name], state.step
        if accelerator.is_main_process:
            save_student(evaluated, config.student, output_dir / "best")
            logger.info("best %s %.4f at step %d: saved %s", name, means[name], state.step, output_dir / "best")
    accelerator.wait_for_everyone()
    return means


def _log_image(accelerator: Accelerator, tag: str, grid: np.ndarray, step: int) -> None:
    if accelerator.is_main_process and accelerator.trackers:
        accelerator.get_tracker("tensorboard", unwrap=True).add_image(tag, grid, step, dataformats="HWC")


def _append_jsonl(accelerator: Accelerator, path: Path, record: dict) -> None:
    if accelerator.is_main_process:
        with open(path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
