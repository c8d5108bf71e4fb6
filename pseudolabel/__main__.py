"""``python -m pseudolabel ...``: the same as ``python pseudolabel.py ...`` (one process; use accelerate for more)."""

from pseudolabel.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
