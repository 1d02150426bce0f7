"""`rtvos` entry point: one parser, one subcommand per app; bad input ends as one line on stderr."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from rtvos.common import Stopped, one_line

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
    g.add_argument("--debug", action="store_true", help="also show the full traceback of an error (the exit status is unchanged)",
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


def _stop_signals() -> Callable[[bool], None]:
    """The first SIGINT/SIGTERM raises (KeyboardInterrupt / rtvos.Stopped("SIGTERM"): handled exactly like Ctrl-C,
    so every sink is flushed and the summary printed) so the run stops and flushes; any later
    one is ignored, so an impatient second Ctrl-C cannot cut the flush, the summary or the exit short (the
    pipeline's own teardown turns it into "skip the frames still queued"). Returns the undo: ``undo(exiting)``
    puts the previous handlers back (main() may run in-process, e.g. in tests), except when the process is
    about to exit after a stop signal: then both are ignored, since Python's shutdown would otherwise reset them
    to the default and a late second signal would kill a finished, clean run (rc -15). Main thread only."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda exiting: None  # signal handlers can only be set from the main thread
    seen: list[int] = []

    def handler(signum: int, frame: object) -> None:
        seen.append(signum)
        if len(seen) == 1:
            raise Stopped("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig, old in previous.items():
        if old is not None:  # None: set outside Python, left alone
            signal.signal(sig, handler)

    def undo(exiting: bool) -> None:
        for sig, old in previous.items():
            if old is not None:
                signal.signal(sig, signal.SIG_IGN if exiting and seen else old)

    return undo


def _debug_traceback(debug: bool) -> None:
    """--debug: the full traceback of the error being handled, before its one line; the exit status stays the
    error kind's (2 bad input, 1 runtime failure, 130 Ctrl-C), so scripts see the same code with or without it."""
    if debug:
        import traceback

        traceback.print_exc()


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 success (an interrupted run that printed its summary included), 1 runtime failure
    (RuntimeError, OSError such as a full disk or a denied write, or any unexpected exception), 2 usage or bad
    input (argparse, rtvos.io.InputError, ValueError, TypeError, and a path given that does not exist or is the
    wrong kind: FileNotFoundError, NotADirectoryError, IsADirectoryError), 130 Ctrl-C. --debug adds the traceback, same status."""
    _quiet_openmp()
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    configure_logging(args.verbose, args.log_level)
    undo_signals = _stop_signals()
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        _debug_traceback(args.debug)
        print("rtvos: interrupted", file=sys.stderr)
        return 130
    except BAD_INPUT as e:  # rtvos.io.InputError is a ValueError: bad input, one line naming it
        _debug_traceback(args.debug)
        print(f"rtvos {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # RuntimeError, OSError, and anything unexpected: a runtime failure
        _debug_traceback(args.debug)
        print(f"rtvos {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 1
    finally:
        undo_signals(argv is None)  # argv None: the process's own command line, it exits next


if __name__ == "__main__":
    sys.exit(main())
