"""The `candleflow` command, on top of every other package: one module per family of subcommands.

cli/runs.py: backfill, update, repair (each a Prefect flow run). cli/coverage.py: status, gaps. cli/universes.py:
universe (refresh, save, list, show). cli/watch.py: freshness, metrics (cli/metrics.py), doctor
(cli/doctor.py). cli/team.py: a team's Prefect (server, worker, setup) and the warm runner
(warm, engine; cli/warm.py).

Exit codes: 0 every chunk ended loaded or empty; 1 some chunk ended rejected or failed (or the run broke);
2 bad input (the message names the input and the fix; nothing is written); 128 + N when stopped by signal N
(the run is marked Crashed; what committed stays committed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from candleflow import environment
from candleflow.errors import BadInputError

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: one line, exit 2
        command = self.prog.split()[-1]
        where = "candleflow" if command == "candleflow" else f"candleflow {command}"  # not `candleflow candleflow`
        self.exit(EXIT_BAD_INPUT, f"candleflow: error: {message} (see {where} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The `candleflow` command: one family of subcommands per module, each setting the `handler` it runs."""
    from cli import coverage, runs, team, universes, watch

    parser = _Parser(prog="candleflow", description="Keep a SQL warehouse of OHLCV bars complete and current.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for family in (runs, coverage, universes, team, watch):
        family.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A command sets variables for its own run (Prefect's quiet console, the warehouse password kept out of the
    # run's parameters); an in-process caller (a test, a notebook) gets its environment back as it was.
    with environment.restored():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    try:
        return int(args.handler(args))
    except BadInputError as exc:
        print(f"candleflow: error: {exc}", file=sys.stderr)  # one line, never wrapped
        return EXIT_BAD_INPUT


def console() -> None:
    """The installed `candleflow` command: `main`, then the exit Python would make, minus tearing the interpreter
    down object by object: after a large run that teardown is a noticeable part of the command (README, Scale),
    with nothing left to do. The other threads are joined and the exit handlers (Prefect sends its last logs and
    events there) run first, as in a normal exit. In-process callers (the tests) use `main`. A run (backfill,
    update, repair) goes to the warm runner of this user and installation when one is running (`candleflow
    warm`): it starts there without importing anything."""
    code = None
    from cli.runs import RUNS

    if len(sys.argv) > 1 and sys.argv[1] in RUNS:
        from cli.warm_client import run_warm

        code = run_warm("cli", sys.argv)
    if code is None:
        code = main()
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (`candleflow status | head`)
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
