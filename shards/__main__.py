"""``python -m shards ...``: see :mod:`shards.cli`."""

import sys

from shards.cli import main

if __name__ == "__main__":
    sys.exit(main())
