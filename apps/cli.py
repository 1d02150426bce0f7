"""`rtvos` entry point: one parser, one subcommand per app; bad input ends as one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import ablate, bench, build_engine, eval, info, segment, stream, train, viz, webcam

COMMANDS = (info, segment, webcam, stream, eval, bench, viz, ablate, build_engine, train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rtvos", description="Real-time video object segmentation (RPM-Net).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    return parser


def _quiet_openmp() -> None:
    """Sleeping (not spinning) OpenMP workers, unless the user chose otherwise: on a shared or small machine
    spinning threads starve the decoder/encoder threads and other processes (measured: ~10x slower steps on
    2 loaded cores). Must run before torch is first imported, which the apps do lazily."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _Terminated(KeyboardInterrupt):
    """SIGTERM (kill, timeout, systemd, container stop): handled exactly like Ctrl-C, so every sink is flushed
    and the summary printed; the run then exits 0 like an interrupted-by-Ctrl-C run."""


def _sigterm_as_interrupt() -> None:
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread (e.g. main() called from a test thread)

    def handler(signum: int, frame: object) -> None:
        raise _Terminated()

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_openmp()
    args = build_parser().parse_args(argv)
    _sigterm_as_interrupt()
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
