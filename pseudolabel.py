"""Entry point for ``accelerate launch pseudolabel.py --config ...``; the code lives in the ``pseudolabel`` package."""

if __name__ == "__main__":
    from pseudolabel.cli import main

    raise SystemExit(main())
