"""Entry point for ``accelerate launch distill.py --config ...``; the code lives in the ``distill`` package."""

if __name__ == "__main__":
    from distill.cli import main

    raise SystemExit(main())
