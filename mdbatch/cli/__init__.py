"""The `mdbatch` command: parses arguments, calls the library, renders results.

Each subcommand lives in its own module with a `register(subparsers)` that adds its parser and
sets `func`. Exit codes: 0 success and no findings; 1 findings exist (audit, as --fail-on says) or
something changed (status); 2 usage or fatal error (one
line on stderr, traceback only with --debug); 3 interrupted by a signal (completed batches are
saved); 130 Ctrl-C; 141, silently, when stdout's reader went away (`mdbatch runs list | head -1`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import select
import sys
import traceback
from collections.abc import Sequence

from ..errors import MdbatchError
from ..lifecycle import STOP
from ..version import __version__
from .common import Parser, add_global_flags

#: Subcommand modules, in the order `mdbatch --help` lists them (imported by `build_parser`, inside
#: `main`: a stop signal during start-up is then an Interrupted that `main` turns into exit 3).
MODULES = ("audit", "status", "findings", "runs", "sync", "dedupe", "repair", "registry", "report", "completion")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="mdbatch", description="Audit, catalogue and deduplicate large simulation campaigns on Dask.")
    parser.add_argument("--version", action="version", version=f"mdbatch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors (also after the subcommand)")
    parser.add_argument("--quiet", action="store_true", help="no progress and no human summaries (also after the subcommand)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    add_global_flags(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    # First of all: a walltime signal (SIGUSR1/SIGTERM) from now on stops the command gracefully.
    installed = STOP.install()
    try:
        return _main(argv)
    finally:
        if installed:
            STOP.uninstall()


def _main(argv: Sequence[str] | None) -> int:
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        args = build_parser().parse_args(argv)
        code = int(args.func(args))
        sys.stdout.flush()  # a reader gone (`| head`) shows here, not as a message at exit
        return code
    except MdbatchError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the one place that turns surprises into exit 2
        if _stdout_closed(exc):
            return _quiet_exit()
        if debug:
            traceback.print_exc()
        print(f"error: internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", file=sys.stderr)
        return 2


def _stdout_closed(exc: BaseException) -> bool:
    """Whether `exc` is a BrokenPipeError from stdout: its reader went away (`mdbatch ... | head`).
    Told from other pipes by polling stdout, which reports an error once a pipe has no reader."""
    if not isinstance(exc, BrokenPipeError):
        return False
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (io.UnsupportedOperation is both)
        return False


def _quiet_exit() -> int:
    """End like a Unix tool whose reader left: nothing on stderr, exit 141 (128 + SIGPIPE). Output
    still buffered goes to /dev/null, so the flush at exit cannot fail again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141
