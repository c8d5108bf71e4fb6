"""``accelerate launch distill.py --config configs/distill/<recipe>.yaml [--section.key value ...]``: training.

The only reader of ``sys.argv`` for training. Parses the config (unknown keys stop with their name, exit 2), trains,
and exits 0 when the run reached ``train.steps`` or stopped on purpose (``train.stop_after``), 128 + the signal number
when SIGTERM / SIGINT stopped it (after a checkpoint: continue with ``--resume latest``), and 1 with a message and no
traceback for known failures (missing shards or encoder weights, a bad config value).
"""

from __future__ import annotations

import logging
import os
import sys

from distill.config import DistillConfig
from shards.config import parse_config

logger = logging.getLogger("distill")

DESCRIPTION = (
    "Distil a depth teacher's pseudo-labels (WebDataset shards) into a FastDepth student. "
    "Launch with `accelerate launch distill.py ...` for several processes or mixed precision."
)


def main(argv: list[str] | None = None) -> int:
    try:
        config, resolved_yaml = parse_config(DistillConfig, argv, prog="distill.py", description=DESCRIPTION)
    except ValueError as error:
        print(f"distill.py: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("DISTILL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from distill.train import train  # torch, timm, accelerate: only once the config is known to be valid

    try:
        result = train(config, resolved_yaml)
    except (FileNotFoundError, ValueError, FloatingPointError) as error:
        print(f"distill.py: error: {error}", file=sys.stderr)
        return 1
    if result.signal is not None:
        return 128 + int(result.signal)
    if result.completed and result.main_process:
        logger.info("done: %d steps, %d skipped (non-finite); student in %s", result.step, result.skipped_nonfinite,
                    result.student)
    return 0
