"""``accelerate launch pseudolabel.py --config configs/pseudolabel/<recipe>.yaml [--section.key value ...]``

The only reader of ``sys.argv``. Parses the config (unknown keys stop with their name, exit 2), runs the stage and
prints the summary on the main process. Known failures (a missing teacher or dataset, a changed manifest) print their
message without a traceback and exit 1.
"""

from __future__ import annotations

import json
import logging
import sys

from pseudolabel.config import PseudolabelConfig
from pseudolabel.jobs import ManifestMismatchError
from pseudolabel.sources import SourceError
from pseudolabel.teachers import TeacherNotFoundError
from shards.config import parse_config

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


def main(argv: list[str] | None = None) -> int:
    try:
        config, resolved_yaml = parse_config(PseudolabelConfig, argv, prog="pseudolabel.py", description=DESCRIPTION)
    except ValueError as error:
        print(f"pseudolabel.py: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.runtime.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from pseudolabel.run import run  # torch, transformers: only once the config is known to be valid

    try:
        summary = run(config, resolved_yaml)
    except (TeacherNotFoundError, SourceError, ManifestMismatchError) as error:
        print(f"pseudolabel.py: error: {error}", file=sys.stderr)
        return 1
    if summary is None:  # not the main process
        return 0
    print(format_summary(summary))
    logger.debug("summary: %s", json.dumps(summary))
    return 0 if summary["complete"] else 1
