"""`python -m rtvos ...`: the same entry point as the `rtvos` command."""

import sys

from rtvos.apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
