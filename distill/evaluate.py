"""``python -m distill.evaluate``: evaluate one model on one data set under a protocol.

The code lives in :mod:`distill.evaluation.evaluate`; this module only runs its ``main``.
"""

from distill.evaluation.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
