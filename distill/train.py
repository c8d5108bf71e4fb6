"""The distillation loop on Accelerate: shards -> student, with checkpoints, resume, validation and logs.

Reads top to bottom as the transformers ``no_trainer`` examples: Accelerator, data, model, optimizer, scheduler,
``prepare``, a plain loop. Differences, all from Accelerate's traps (docs/library-notes.md): the WebDataset loader
is not prepared (batches go to the device with ``send_to_device``; each rank reads its own resampled stream), the LR
scheduler is not prepared (it steps once per optimizer step), checkpoints are written atomically
(``distill.checkpoint``), and validation gathers per-image metrics across processes itself.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, gather_object, send_to_device, set_seed
from timm.utils import ModelEmaV3
from torch import nn
from tqdm.auto import tqdm

from distill import integrity
from distill.align import align_scale_shift, as_inverse_depth
from distill.checkpoint import TrainState, remove_partial_checkpoints, resolve_resume, save_checkpoint
from distill.config import DistillConfig
from distill.data import build_train_loader, build_val_loader
from distill.losses import build_loss, prepare_target
from distill.metrics import inverse_depth_metrics, mean_metrics
from distill.optim import WarmupCosine, build_optimizer, optimizer_step
from distill.step_stats import StepStats
from distill.students import create_student, save_student
from shards.viz import colorize_depth, image_grid

logger = logging.getLogger(__name__)

#: Validation metric that picks the best checkpoint, in order of preference (lower is better).
BEST_METRICS = ("abs_rel_inv", "abs_rel")
#: Steps between checks of the stop flag (a signal on any rank), besides log and checkpoint steps: each check is an
#: all-reduce read on the host.
STOP_CHECK_STEPS = 10


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


class TrainBatches:
    """The batches of step ``s`` onwards: data epoch ``s // epoch_steps``, rebuilt at each epoch boundary, the
    batches already used in the current epoch read and discarded (deterministic stream, see distill.data)."""

    def __init__(self, config: DistillConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.micro_steps = config.data.epoch_steps * config.train.gradient_accumulation_steps
        self._epoch: int | None = None
        self._iterator: Iterator[dict] | None = None

    def next(self, step: int) -> dict:
        epoch, offset = divmod(step, self.config.data.epoch_steps)
        if epoch != self._epoch:
            loader = build_train_loader(self.config.data, self.config.train.seed, epoch, self.micro_steps)
            skip = offset * self.config.train.gradient_accumulation_steps
            if skip:
                logger.info("resuming inside data epoch %d: reading and discarding %d batches", epoch, skip)
            self._iterator = itertools.islice(iter(loader), skip, self.micro_steps)
            self._epoch = epoch
        return send_to_device(next(self._iterator), self.device)


def _example_grid(batch: dict, prediction: torch.Tensor, count: int) -> np.ndarray:
    """Input, label and prediction (aligned to the label, on the label's colour scale) for ``count`` samples."""
    target, valid = prepare_target(batch["target"], batch["valid"], batch["is_metric"])
    aligned = align_scale_shift(prediction.float(), target, valid)
    rows = []
    for i in range(min(count, prediction.shape[0])):
        mask = valid[i, 0].cpu().numpy()
        label = target[i, 0].cpu().numpy()
        value_range = tuple(np.percentile(label[mask], [2, 98])) if mask.any() else None
        image = (batch["image"][i].float().permute(1, 2, 0).cpu().numpy() * 255).round().clip(0, 255).astype(np.uint8)
        rows.append([
            image,
            colorize_depth(label, mask, value_range),
            colorize_depth(aligned[i, 0].detach().cpu().numpy(), None, value_range),
        ])
    return image_grid(rows, titles=["input", "label (inverse depth)", "prediction (aligned)"])


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
    with torch.no_grad(), accelerator.autocast():
        for batch in build_val_loader(config.data):
            batch = send_to_device(batch, accelerator.device)
            prediction = as_inverse_depth(model(batch["image"]).float(), config.student.prediction)
            target, valid = prepare_target(batch["target"], batch["valid"], batch["is_metric"])
            for name, values in inverse_depth_metrics(prediction, target, valid, batch["is_metric"]).items():
                per_image.setdefault(name, []).extend(values.cpu().tolist())
            keys.extend(batch["key"])
            if grid is None and accelerator.trackers and config.log.images_every:  # trackers: main process only
                grid = _example_grid(batch, prediction, config.log.images)
    model.train(was_training)
    gathered = gather_object([{"rank": accelerator.process_index, "keys": keys, "metrics": per_image}])
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
    return means, grid


def _best_metric(means: dict[str, float]) -> str | None:
    return next((name for name in BEST_METRICS if name in means), None)


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
    config.data.train_sets()  # fail early, on every rank, with the fix in the message
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

    set_seed(config.train.seed)
    model = create_student(config.student)
    memory_format = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(accelerator.device, memory_format=memory_format)
    ema = ModelEmaV3(model, decay=config.train.ema_decay) if config.train.ema_decay else None
    optimizer = build_optimizer(
        model, config.optim.lr, tuple(config.optim.betas), config.optim.weight_decay, accelerator.device
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, WarmupCosine(config.optim.warmup_steps, config.train.steps, config.optim.min_lr_ratio)
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainState()
    accelerator.register_for_checkpointing(scheduler, state)
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
    loss_fn = build_loss(config.loss, space=config.student.prediction)
    wants_aux = config.loss.coarse_weight > 0  # the student's coarse map feeds the loss

    checkpoint = resolve_resume(config.resume, output_dir)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        logger.info("resumed from %s at step %d", checkpoint, state.step)
    elif config.resume:
        logger.info("--resume %s: no checkpoint yet in %s, starting from step 0", config.resume, output_dir)
    if accelerator.is_main_process and config.log.tensorboard:
        accelerator.init_trackers("distill", config=_flat_hparams(config))

    batches = TrainBatches(config, accelerator.device)
    progress = tqdm(total=config.train.steps, initial=state.step, disable=not accelerator.is_local_main_process,
                    desc="distill", dynamic_ncols=True)
    start_step, samples = state.step, 0
    stats = StepStats(accelerator.device, skipped_before=state.skipped_nonfinite)
    log_started = time.perf_counter()
    last_validation: dict[str, float] | None = None
    stop_signum: int | None = None
    with StopSignal() as stop:
        while state.step < config.train.steps:
            loss_nonfinite = torch.zeros((), device=accelerator.device)
            for _ in range(config.train.gradient_accumulation_steps):
                batch = batches.next(state.step)
                image = batch["image"].contiguous(memory_format=memory_format)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        if wants_aux:
                            prediction, aux = model(image, return_aux=True)
                        else:
                            prediction, aux = model(image), None
                    parts = loss_fn(
                        prediction.float(), batch["target"], batch["valid"], batch["is_metric"], image, aux
                    )
                    # a non-finite loss still goes backward: its gradients are non-finite and the update is
                    # skipped on the device (distill.optim), with no host read to decide
                    loss_nonfinite = torch.maximum(loss_nonfinite, (~torch.isfinite(parts["loss"].detach())).float())
                    accelerator.backward(parts["loss"])
                    if accelerator.sync_gradients:
                        skipped = optimizer_step(accelerator, model, optimizer, config.optim.clip_grad_norm,
                                                 loss_nonfinite)
                samples += image.shape[0]
                stats.add_parts(parts)
            with warnings.catch_warnings():  # torch warns when a skipped first step leaves the optimizer unstepped
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)` before")
                scheduler.step()
            state.step += 1
            stats.add_step(skipped)
            if ema is not None:  # on a skipped step the weights are unchanged: the EMA moves toward the same weights
                ema.update(accelerator.unwrap_model(model), step=state.step)
            progress.update(1)

            log_step = state.step % config.log.every == 0 or state.step == config.train.steps
            if log_step:
                elapsed = time.perf_counter() - log_started
                means, skipped_total, longest_run = stats.read()
                if skipped_total > state.skipped_nonfinite:
                    logger.warning("steps %d-%d: %d update(s) skipped for a non-finite loss or gradient (%d so far)",
                                   state.step - config.log.every + 1, state.step,
                                   skipped_total - state.skipped_nonfinite, skipped_total)
                state.skipped_nonfinite = skipped_total
                if longest_run >= config.train.max_consecutive_nonfinite:
                    raise FloatingPointError(
                        f"{longest_run} non-finite steps in a row by step {state.step}: lower optim.lr, "
                        "check the labels (shards verify), or train in fp32 / bf16 instead of fp16"
                    )
                scalars = {f"train/{name}": value for name, value in means.items()}
                scalars.update({
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/samples_per_s": samples * accelerator.num_processes / max(elapsed, 1e-9),
                    "train/skipped_nonfinite": state.skipped_nonfinite,
                })
                scalars.update(integrity.log_data_integrity(accelerator, config.data))  # raises past the limit
                accelerator.log(scalars, step=state.step)
                _append_jsonl(accelerator, output_dir / "metrics.jsonl", {"step": state.step, **scalars})
                loss = scalars.get("train/loss", float("nan"))
                progress.set_postfix(loss=f"{loss:.4f}", **integrity.postfix(scalars))
                samples, log_started = 0, time.perf_counter()
            if config.log.images_every and state.step % config.log.images_every == 0 and accelerator.trackers:
                examples = as_inverse_depth(prediction.detach().float(), config.student.prediction)
                _log_image(accelerator, "train/examples", _example_grid(batch, examples, config.log.images),
                           state.step)

            finished = state.step >= config.train.steps
            if config.data.val and ((config.log.val_every and state.step % config.log.val_every == 0) or finished):
                evaluated = model if ema is None else ema
                paused = time.perf_counter()
                last_validation = _validate_and_keep_best(accelerator, evaluated, config, state, output_dir)
                log_started += time.perf_counter() - paused  # samples/s counts training time only

            stopping = config.train.stop_after is not None and state.step - start_step >= config.train.stop_after
            checkpoint_step = state.step % config.checkpoint.every == 0
            if log_step or checkpoint_step or state.step % STOP_CHECK_STEPS == 0:
                # every rank must agree to stop at the same step (a signal may reach one rank first)
                signalled = torch.tensor([float(stop.received is not None)], device=accelerator.device)
                stopping = stopping or float(accelerator.reduce(signalled, "max")) > 0
            stopping = stopping and not finished
            if checkpoint_step or stopping or finished:
                state.skipped_nonfinite = int(stats.skipped_total)  # the checkpoint holds the exact count
                paused = time.perf_counter()
                save_checkpoint(accelerator, output_dir, state.step, config.checkpoint.keep)
                log_started += time.perf_counter() - paused
            if stopping:
                stop_signum = stop.received
                logger.warning("stopped at step %d; continue with --resume latest", state.step)
                break
    progress.close()

    student_dir = None
    if state.step >= config.train.steps:
        student_dir = output_dir / "student"
        if accelerator.is_main_process:
            final = ema.module if ema is not None else accelerator.unwrap_model(model)
            save_student(final, config.student, student_dir)
            logger.info("student saved: %s", student_dir)
        accelerator.wait_for_everyone()
    return TrainResult(state.step, state.step >= config.train.steps, stop_signum, state.skipped_nonfinite,
                       student_dir, last_validation, accelerator.is_main_process)


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
