"""``accelerate launch pseudolabel.py --config configs/pseudolabel/<recipe>.yaml [--section.key value ...]``

The only reader of ``sys.argv``. Parses the config, runs the stage and prints the summary on the main process. User
errors (an unknown key, a missing teacher or dataset, a changed manifest) print one line without a traceback and exit
2 (:mod:`shards.cli.errors`); an incomplete run exits 1.
"""

from __future__ import annotations

import json
import logging

from pseudolabel.config import PseudolabelConfig
from shards.cli.config import Command
from shards.cli.errors import run_command

logger = logging.getLogger("pseudolabel")

DESCRIPTION = (
    "Label images with a depth teacher into WebDataset shards of relative inverse depth at 512x384. "
    "Rerunning the same command continues an interrupted run."
)


def format_summary(summary: dict) -> str:
    """A few human lines; the full record is summary.json."""
    reasons = ", ".join(f"{reason} {count}" for reason, count in summary["rejected_by_reason"].items()) or "none"
    run = summary["this_run"]
    speed = f"{summary['images_per_second']} images/s" if summary["images_per_second"] else "nothing left to do"
    return "\n".join(
        [
            f"labeled {summary['labeled']} of {summary['inputs']} inputs into {summary['shards']} shards in "
            f"{summary['output']} ({'complete' if summary['complete'] else 'INCOMPLETE'})",
            f"rejected {summary['rejected']}: {reasons} (see rejects.jsonl)",
            f"this run: {run['inputs']} inputs in {run['jobs']} jobs on {run['world_size']} processes, "
            f"{summary['seconds']} s, {speed}",
        ]
    )


#: ``pseudolabel.py``: its config.
COMMAND = Command("pseudolabel.py", PseudolabelConfig, about=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return run_command(_main, argv, COMMAND.prog)


def _main(argv: list[str] | None) -> int:
    config, resolved_yaml = COMMAND.parse(argv)
    logging.basicConfig(
        level=config.runtime.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from pseudolabel.run import run  # torch, transformers: only once the config is known to be valid

    summary = run(config, resolved_yaml)
    if summary is None:  # not the main process
        return 0
    print(format_summary(summary))
    logger.debug("summary: %s", json.dumps(summary))
    return 0 if summary["complete"] else 1
