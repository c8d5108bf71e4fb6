"""Resumable training checkpoints: atomic, named by step, the newest K kept.

``accelerator.save_state`` writes model, optimizer, registered objects (scheduler, EMA, :class:`TrainState`) and
every process's RNG state. Around it we avoid Accelerate's traps (docs/library-notes.md, "Accelerate"): a
checkpoint is written into ``checkpoints/.tmp-step_XXXXXXXX``, marked complete, then renamed to
``checkpoints/step_XXXXXXXX``; older ones are pruned only after the new one is complete, and a folder without the
marker is never resumed from. The output folder
must be shared by all processes (one machine, or a shared file system across nodes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from accelerate import Accelerator

logger = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
COMPLETE_MARKER = "complete.json"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


@dataclass
class TrainState:
    """Loop counters saved with every checkpoint (registered with ``accelerator.register_for_checkpointing``)."""

    step: int = 0  # optimizer steps done (skipped non-finite steps included: the data stream moved on)
    skipped_nonfinite: int = 0
    best_metric: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


def checkpoint_name(step: int) -> str:
    return f"{_PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``output_dir/checkpoints``, oldest first."""
    root = Path(output_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and (p / COMPLETE_MARKER).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX) :]))


def resolve_resume(resume: str | None, output_dir: str | os.PathLike) -> Path | None:
    """``None`` -> no resume; ``"latest"`` -> the newest complete checkpoint (None when there is none yet, so a
    preemptible job can always pass ``--resume latest``); a path -> that checkpoint, which must be complete."""
    if resume is None:
        return None
    if resume == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / COMPLETE_MARKER).is_file():
        raise FileNotFoundError(
            f"--resume {resume}: not a complete checkpoint (no {COMPLETE_MARKER}); complete ones: "
            f"{[str(p) for p in list_checkpoints(output_dir)] or 'none'}"
        )
    return path


def remove_partial_checkpoints(output_dir: str | os.PathLike) -> None:
    """Delete temporary folders left by a save that was killed (main process, before training starts)."""
    root = Path(output_dir) / CHECKPOINTS
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(_TMP_PREFIX):
                logger.warning("removing the partial checkpoint %s left by an interrupted save", path)
                shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(accelerator: Accelerator, output_dir: str | os.PathLike, step: int, keep: int) -> Path:
    """Every process calls this; returns the final folder. Atomic: temporary folder, marker, rename, then prune."""
    root = Path(output_dir) / CHECKPOINTS
    final = root / checkpoint_name(step)
    tmp = root / f"{_TMP_PREFIX}{checkpoint_name(step)}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        record = {"step": step, "num_processes": accelerator.num_processes}
        (tmp / COMPLETE_MARKER).write_text(json.dumps(record) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in list_checkpoints(output_dir)[: -max(1, keep)]:
            shutil.rmtree(old, ignore_errors=True)
        logger.info("checkpoint saved: %s", final)
    accelerator.wait_for_everyone()
    return final
