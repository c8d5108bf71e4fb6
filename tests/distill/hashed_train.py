"""``distill.py`` with a record of every optimizer step on every rank, for the multi-machine test.

Launched by ``accelerate launch`` like ``distill.py`` (the training creates its ``Accelerator()``); a global optimizer
post-step hook appends ``{"rank", "world", "step", "sha256"}`` of all parameters to
``$PARAM_HASH_DIR/rank<R>.jsonl``, so the test can compare the ranks after each step.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook


def _record(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    import torch.distributed as dist

    digest = hashlib.sha256()
    params = [param for group in optimizer.param_groups for param in group["params"]]
    for param in params:
        digest.update(param.detach().cpu().contiguous().numpy().tobytes())
    state = optimizer.state.get(params[0], {})
    step = int(state["step"]) if "step" in state else -1
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    with open(Path(os.environ["PARAM_HASH_DIR"]) / f"rank{rank}.jsonl", "a") as handle:
        handle.write(json.dumps({"rank": rank, "world": world, "step": step, "sha256": digest.hexdigest()}) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from distill.cli import main

    register_optimizer_step_post_hook(_record)
    sys.exit(main(sys.argv[1:]))
