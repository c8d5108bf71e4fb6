"""``python -m distill.export``: export a student to ONNX, check parity, optionally quantise to int8.

The code lives in :mod:`distill.deploy.export`; this module only runs its ``main``.
"""

from distill.deploy.export import main

if __name__ == "__main__":
    raise SystemExit(main())
