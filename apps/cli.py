"""`rtvos` entry point: one parser, one subcommand per app; bad input ends as one line on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import ablate, build_engine, eval, info, segment, train, viz

COMMANDS = (info, segment, eval, viz, ablate, build_engine, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtvos", description="Real-time video object segmentation (RPM-Net).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("rtvos: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, RuntimeError, OSError) as e:
        # Library errors carry one-line messages naming the path/shape/value at fault.
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"rtvos {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
