"""``python -m distill.compare``: several models on several data sets in one table.

The code lives in :mod:`distill.evaluation.compare`; this module only runs its ``main``.
"""

from distill.evaluation.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
