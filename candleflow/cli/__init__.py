"""The `candleflow` command.

Runs: backfill, update, repair (each a Prefect flow run; see prefect_api for which server).
Coverage: status, gaps. A team's Prefect: server, worker, setup (see deployments/).

Exit codes: 0 every chunk ended loaded or empty; 1 some chunk ended rejected or failed (or the run broke);
2 bad input (the message names the input and the fix; nothing is written); 128 + N when stopped by signal N
(the run is marked Crashed; what committed stays committed).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from candleflow.errors import BadInputError, BudgetExceededError, IncompleteRunError

EXIT_OK, EXIT_INCOMPLETE, EXIT_BAD_INPUT = 0, 1, 2

_QUIET_PREFECT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "GX_ANALYTICS_ENABLED": "false",
    # Without PREFECT_API_URL a temporary server starts; on a 2-core machine that takes 10-20 s (longer on its
    # first database migration), past Prefect's default 20 s timeout.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
    # Runs tell a lasting server they are alive; its Automation crashes runs whose heartbeats stop.
    "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
}
_QUIET_CONSOLE = {
    # Prefect 3.8 logs everything through one `console` handler. Its lines would tear through the live progress
    # display; the run's records still go to the Prefect API (the UI shows them) and the closing summary names
    # every chunk that did not load. --verbose shows them all.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
}
RUNS = ("backfill", "update", "repair")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # argparse's own errors: one line, exit 2
        self.exit(EXIT_BAD_INPUT, f"candleflow: error: {message} (see candleflow {self.prog.split()[-1]} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="candleflow", description="Keep a SQL warehouse of OHLCV bars complete and current.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser, series: bool = True, timeframes: bool = False) -> None:
        p.add_argument(
            "--warehouse",
            help="SQLAlchemy URL (env CANDLEFLOW_WAREHOUSE_URL; default sqlite:///candleflow.db)",
        )
        if series:
            p.add_argument("--provider", default="synthetic", help="provider name (default synthetic)")
            p.add_argument("--symbols", required=True, help="comma-separated symbols, e.g. AAPL,MSFT")
            what = "comma-separated timeframes of 1m, 5m, 15m, 1h, 1d" if timeframes else "1m, 5m, 15m, 1h or 1d"
            p.add_argument("--timeframe", default="1d", help=f"{what} (default 1d)")

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--on-invalid",
            choices=["reject", "quarantine_rows"],
            default="reject",
            help="a chunk failing validation: keep it out (reject) or load its good rows",
        )
        p.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="provider option, repeatable (synthetic: seed, invalid_chunk_rate, ...)",
        )
        p.add_argument(
            "--max-cost-usd",
            default=None,
            help="refuse the run, before downloading, if a charging vendor (databento) quotes more than this",
        )
        p.add_argument(
            "--calendar",
            default=None,
            help="exchange calendar of the symbols, e.g. XNYS, XLON, CME_Equity (default: CANDLEFLOW_CALENDARS, "
            "else XNYS)",
        )
        p.add_argument("--verbose", action="store_true", help="show Prefect's log lines on the terminal")

    b = sub.add_parser("backfill", help="fill a date range")
    common(b, timeframes=True)
    b.add_argument("--start", required=True, help="first session date, YYYY-MM-DD (inclusive)")
    b.add_argument("--end", required=True, help="last session date, YYYY-MM-DD (inclusive)")
    b.add_argument("--mode", default="missing", help="missing (default), failed or all")
    b.add_argument("--dry-run", action="store_true", help="print the plan; fetch and write nothing")
    run_options(b)

    u = sub.add_parser("update", help="bring series up to date from their watermark")
    common(u, timeframes=True)
    u.add_argument("--lookback-days", default="30", help="how far back a new series starts (default 30)")
    u.add_argument("--overlap-days", default=None, help="re-fetch this many days before the watermark")
    u.add_argument("--end", default=None, help="last session date (default today, UTC)")
    run_options(u)

    r = sub.add_parser("repair", help="fetch again what `gaps` reports missing over a lookback, nothing else")
    common(r, timeframes=True)
    r.add_argument("--lookback-days", default="30", help="how many days back to look for gaps (default 30)")
    r.add_argument("--end", default=None, help="last session date (default today, UTC)")
    r.add_argument("--dry-run", action="store_true", help="print what would be fetched; fetch and write nothing")
    run_options(r)

    s = sub.add_parser("status", help="coverage per symbol and timeframe")
    common(s, series=False)
    s.add_argument("--provider")
    s.add_argument("--symbols")
    s.add_argument("--timeframe")
    s.add_argument("--json", action="store_true", help="one object per series, as JSON")

    g = sub.add_parser("gaps", help="sessions without (enough) bars, and why")
    common(g)
    g.add_argument("--start", required=True, help="first session date, YYYY-MM-DD (inclusive)")
    g.add_argument("--end", required=True, help="last session date, YYYY-MM-DD (inclusive)")
    g.add_argument("--json", action="store_true", help="every incomplete session as JSON, one object each")
    g.add_argument("--calendar", default=None, help="exchange calendar (default: CANDLEFLOW_CALENDARS, else XNYS)")

    from deployments.cli import add_team_commands

    add_team_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with _environment_restored():
        return _main(args)


@contextlib.contextmanager
def _environment_restored() -> Iterator[None]:
    """A command sets variables for its own run (Prefect's quiet console, the warehouse password kept out of the
    run's parameters); an in-process caller (a test, a notebook) gets its environment back as it was."""
    before = os.environ.copy()
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        os.environ.update(before)


def _main(args: argparse.Namespace) -> int:
    try:
        if args.command in RUNS:
            return _run(args)
        if args.command == "status":
            from candleflow.cli.commands import status

            return status(args)
        if args.command == "gaps":
            from candleflow.cli.commands import gaps

            return gaps(args)
        return int(args.team_command(args))
    except BadInputError as exc:
        print(f"candleflow: error: {exc}", file=sys.stderr)  # one line, never wrapped
        return EXIT_BAD_INPUT


def _run(args: argparse.Namespace) -> int:
    for key, value in _QUIET_PREFECT.items():
        os.environ.setdefault(key, value)
    if not args.verbose:
        for key, value in _QUIET_CONSOLE.items():
            os.environ.setdefault(key, value)
    if "prefect" in sys.modules:  # already imported (in a warm runner): it reads the settings above again
        from deployments.prefect_api import apply_environment

        apply_environment()
    from candleflow.cli.commands import check_run_inputs, err, print_plan, print_summary, run_with_progress

    params, inputs = check_run_inputs(args)  # every input checked before Prefect starts or anything is written
    if getattr(args, "dry_run", False):
        try:
            if print_plan(args.command, inputs):  # no Prefect server for a plan
                return EXIT_OK
        except BudgetExceededError as exc:
            err.print(f"candleflow: {exc}", markup=False)
            return EXIT_INCOMPLETE
    else:
        from expectations import prepare_validation

        # Great Expectations' import (about 2.5 s) here, before the run: imported in a thread while Prefect
        # started the run, both took longer than one after the other (one interpreter lock: 7.9 s against 7.4 s
        # for a 1m backfill of 476k bars), and the run's first validation waited for the rest
        prepare_validation()
    from deployments import prefect_api

    try:
        with prefect_api.signals_unwind(), prefect_api.prefect_server(lambda line: err.print(line, markup=False)):
            summary, error = run_with_progress(args.command, params)
    except (KeyboardInterrupt, prefect_api.Interrupted) as stop:
        signum = stop.signum if isinstance(stop, prefect_api.Interrupted) else signal.SIGINT
        name = signal.Signals(signum).name
        err.print(
            f"candleflow: stopped by {name}: the run was marked Crashed; chunks committed before it stay, "
            "and the same command fetches the rest",
            markup=False,
        )
        return 128 + int(signum)
    print_summary(summary, error)
    if error is not None and not isinstance(error, IncompleteRunError):
        return EXIT_INCOMPLETE
    return EXIT_OK if summary is not None and summary.ok else EXIT_INCOMPLETE


def console() -> None:
    """The installed `candleflow` command: `main`, then the exit Python would make, minus tearing the interpreter
    down object by object. After a 500-symbol run that teardown took 1.3 s of a 10 s command, with nothing left
    to do: the other threads are joined and the exit handlers (Prefect sends its last logs and events there) run
    first, as in a normal exit. In-process callers (the tests) use `main`. A run (backfill, update, repair) goes
    to the warm runner of this user and installation when one is running (`candleflow warm`): it starts there
    without importing anything."""
    code = None
    if len(sys.argv) > 1 and sys.argv[1] in RUNS:
        from deployments.warm_client import run_warm

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
