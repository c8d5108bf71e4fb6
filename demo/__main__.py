"""``python -m demo --out DIR``: the whole pipeline, offline on CPU, on generated RGB-D scenes (``make demo``).

Every step is the command a user would type, run as a subprocess and printed before it runs, so the demo doubles
as a transcript of the real recipe. See README.md for what each step shows.
"""

from __future__ import annotations

import argparse
import sys

from demo.pipeline import DemoSize, run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output folder (reused scenes and teacher are kept)")
    parser.add_argument("--small", action="store_true", help="a reduced size for CI (about a third of the time)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first")
    args = parser.parse_args(argv)
    size = DemoSize.small() if args.small else DemoSize.full()
    return run_demo(args.out, size, fresh=args.fresh)


if __name__ == "__main__":
    sys.exit(main())
