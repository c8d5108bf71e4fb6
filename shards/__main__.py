"""``python -m shards ...``: see :mod:`shards.tools.commands`."""

import sys

from shards.tools.commands import main

if __name__ == "__main__":
    sys.exit(main())
