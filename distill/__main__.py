"""``python -m distill ...``: training, the same as ``python distill.py ...`` (one process; use accelerate for more)."""

from distill.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
