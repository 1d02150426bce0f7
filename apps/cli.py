"""`rtvos` entry point: one parser, one subcommand per app; bad input ends as one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from . import ablate, bench, build_engine, eval, info, segment, serve, stream, train, viz, webcam

COMMANDS = (info, segment, webcam, stream, serve, eval, bench, viz, ablate, build_engine, train)


LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Exit 2 (bad usage or input): what the user typed is wrong. Everything else that escapes a command exits 1.
BAD_INPUT = (ValueError, TypeError, FileNotFoundError, NotADirectoryError, IsADirectoryError)


def _add_global_options(p: argparse.ArgumentParser, *, top: bool) -> None:
    """-v/--log-level/--debug, accepted before or after the command: on a subcommand their default is
    SUPPRESS, so `rtvos -v segment` is not reset by the subparser and `rtvos segment -v` still counts."""
    d = {} if top else {"default": argparse.SUPPRESS}
    g = p.add_argument_group("logging and errors") if top else p.add_argument_group("logging and errors (also before COMMAND)")
    g.add_argument("-v", "--verbose", action="count", help="more log output: -v INFO, -vv DEBUG (default: warnings only)",
                   **({"default": 0} if top else d))
    g.add_argument("--log-level", metavar="LEVEL", type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
                   help="log level of the `rtvos` loggers (overrides -v)", **({"default": None} if top else d))
    g.add_argument("--debug", action="store_true", help="show the full traceback of an error instead of one line",
                   **({"default": False} if top else d))


def build_parser() -> argparse.ArgumentParser:
    from rtvos import __version__

    parser = argparse.ArgumentParser(prog="rtvos", description="Real-time video object segmentation (RPM-Net).",
                                     epilog="exit status: 0 success (or interrupted with a summary), 1 runtime failure, "
                                     "2 bad usage or input, 130 Ctrl-C")
    parser.add_argument("--version", action="version", version=f"rtvos {__version__}")
    _add_global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(sub)
    for p in sub.choices.values():
        _add_global_options(p, top=False)
    return parser


def configure_logging(verbose: int = 0, level: str | None = None) -> None:
    """Formatted `logging` records on stderr: WARNING by default, -v INFO, -vv DEBUG, or --log-level."""
    import logging

    class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to whatever sys.stderr is at emit time (it may be replaced after main() configured logging)."""

        @property  # type: ignore[override]
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    chosen = level or ("DEBUG" if verbose >= 2 else "INFO" if verbose == 1 else "WARNING")
    logging.basicConfig(level=chosen, format=LOG_FORMAT, handlers=[StderrHandler()], force=True)
    logging.getLogger("rtvos").setLevel(chosen)


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


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success (an interrupted run that printed its summary included), 1 runtime failure
    (RuntimeError, OSError such as a full disk or a denied write, or any unexpected exception), 2 usage or bad
    input (argparse, rtvos.io.InputError, ValueError, TypeError, and a path given that does not exist or is the
    wrong kind: FileNotFoundError, NotADirectoryError, IsADirectoryError), 130 Ctrl-C. --debug re-raises."""
    _quiet_openmp()
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    configure_logging(args.verbose, args.log_level)
    _sigterm_as_interrupt()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("rtvos: interrupted", file=sys.stderr)
        return 130
    except BAD_INPUT as e:  # rtvos.io.InputError is a ValueError: bad input, one line naming it
        if args.debug:
            raise
        print(f"rtvos {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # RuntimeError, OSError, and anything unexpected: a runtime failure
        if args.debug:
            raise
        print(f"rtvos {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
