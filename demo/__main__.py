"""``python -m demo --out DIR``: the whole pipeline, offline on CPU, on generated RGB-D scenes (``make demo``).

Every step is the command a user would type, run as a subprocess and printed before it runs, so the demo doubles
as a transcript of the real recipe. See README.md for what each step shows.
"""

from __future__ import annotations

import argparse
import os
import sys

#: Set before torch loads (the demo's steps inherit them). Two threads: the figures depend on the thread count
#: (sums are reduced in another order), so the demo pins the count of the 2-core machine it is sized for and gives
#: the same figures on every machine. Passive waiting: a thread that waits for its partner sleeps instead of
#: spinning, so a busy machine does not stall every parallel region (the demo's teacher fit ran 1.7-2x faster beside
#: other work, with bit-identical losses; BENCHMARKS.md "The demo"). A value the user set is kept.
DEMO_THREADING = {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}


def main(argv: list[str] | None = None) -> int:
    for name, value in DEMO_THREADING.items():
        os.environ.setdefault(name, value)
    from demo.pipeline import DemoSize, run_demo  # after the threading settings: it loads torch
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output folder (reused scenes and teacher are kept)")
    parser.add_argument("--small", action="store_true", help="a reduced size for CI (about a third of the time)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first")
    args = parser.parse_args(argv)
    size = DemoSize.small() if args.small else DemoSize.full()
    return run_demo(args.out, size, fresh=args.fresh)


if __name__ == "__main__":
    sys.exit(main())
