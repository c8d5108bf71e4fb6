"""``python -m distill.benchmark``: latency and throughput of students on this machine.

The code lives in :mod:`distill.deploy.benchmark`; this module only runs its ``main``.
"""

from distill.deploy.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
