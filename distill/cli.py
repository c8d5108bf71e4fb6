"""``accelerate launch distill.py --config configs/distill/<recipe>.yaml [--section.key value ...]``: training.

The only reader of ``sys.argv`` for training. Parses the config, trains, and exits 0 when the run reached
``train.steps`` or stopped on purpose (``train.stop_after``), 128 + the signal number when SIGTERM / SIGINT stopped it
(after a checkpoint: continue with ``--resume latest``), 2 with one line and no traceback for user errors (an unknown
key, missing shards or encoder weights, a bad config value; :mod:`shards.cli.errors`), and 1 when training diverged.
"""

from __future__ import annotations

import logging
import os
import sys

from distill.training.config import DistillConfig, resolved_as_used
from shards.cli.config import Command
from shards.cli.errors import UserError, run_command

logger = logging.getLogger("distill")

DESCRIPTION = (
    "Distil a depth teacher's pseudo-labels (WebDataset shards) into a FastDepth student. "
    "Launch with `accelerate launch distill.py ...` for several processes or mixed precision."
)


#: ``distill.py``: its config.
COMMAND = Command("distill.py", DistillConfig, about=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    logging.basicConfig(
        level=os.environ.get("DISTILL_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    resolved_yaml = resolved_as_used(config, resolved_yaml)
    # accelerate, webdataset and the loop load only once the config is valid (checking the student section has
    # imported the student families, so torch and timm are loaded by now: distill.training.config itself is light)
    from distill.training.train import train

    try:
        result = train(config, resolved_yaml)
    except ValueError as error:  # a config value the run refuses (named in the message)
        raise UserError(str(error)) from error
    except FloatingPointError as error:  # diverged: not the user's input, but no bug to trace either
        print(f"{COMMAND.prog}: error: {error}", file=sys.stderr)
        return 1
    if result.signal is not None:
        return 128 + int(result.signal)
    if result.completed and result.main_process:
        logger.info("done: %d steps, %d skipped (non-finite); student in %s", result.step, result.skipped_nonfinite,
                    result.student)
    return 0
