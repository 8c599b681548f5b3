"""backfill, update and repair: each a Prefect flow run in this process (see deployments.prefect_api for which
server), its inputs checked first, a live progress bar, and a summary naming what did not load."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from candleflow import environment
from candleflow.errors import BadInputError, BudgetExceededError, IncompleteRunError
from cli.options import series_options

EXIT_OK, EXIT_INCOMPLETE = 0, 1
RUNS = ("backfill", "update", "repair")
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


def add_commands(sub: Any) -> None:
    b = sub.add_parser("backfill", help="fill a date range")
    series_options(b, timeframes=True)
    b.add_argument("--start", required=True, help="first session date, YYYY-MM-DD (inclusive)")
    b.add_argument("--end", required=True, help="last session date, YYYY-MM-DD (inclusive)")
    b.add_argument("--mode", default="missing", help="missing (default), failed or all")
    b.add_argument("--dry-run", action="store_true", help="print the plan; fetch and write nothing")
    _run_options(b)
    _pool_options(b)

    u = sub.add_parser("update", help="bring series up to date from their watermark")
    series_options(u, timeframes=True)
    u.add_argument("--lookback-days", default="30", help="how far back a new series starts (default 30)")
    u.add_argument("--overlap-days", default=None, help="re-fetch this many days before the watermark")
    u.add_argument("--end", default=None, help="last session date (default today, UTC)")
    _run_options(u)
    _pool_options(u)

    r = sub.add_parser("repair", help="fetch again what `gaps` reports missing over a lookback, nothing else")
    series_options(r, timeframes=True)
    r.add_argument("--lookback-days", default="30", help="how many days back to look for gaps (default 30)")
    r.add_argument("--end", default=None, help="last session date (default today, UTC)")
    r.add_argument("--dry-run", action="store_true", help="print what would be fetched; fetch and write nothing")
    _run_options(r)
    for name in RUNS:
        sub.choices[name].set_defaults(handler=run)


def _run_options(p: argparse.ArgumentParser) -> None:
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
        help="exchange calendar of the symbols, e.g. XNYS, XLON, CME_Equity (default: CANDLEFLOW_CALENDARS, else XNYS)",
    )
    p.add_argument("--verbose", action="store_true", help="show Prefect's log lines on the terminal")


def _pool_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--on-pool",
        action="store_true",
        help="hand the run to the work pool of the lasting server (PREFECT_API_URL) instead of running it here: a "
        "large one is cut into partitions that every worker shares; the workers' warehouse unless --warehouse",
    )
    p.add_argument(
        "--pool-wait",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --on-pool: how long to wait for a worker to take the run before giving up (default 60)",
    )


def run(args: argparse.Namespace) -> int:
    """backfill, update or repair: inputs checked, then the flow run in this process with a live progress bar."""
    environment.set_defaults(_QUIET_PREFECT)
    if not args.verbose:
        environment.set_defaults(_QUIET_CONSOLE)
    if "prefect" in sys.modules:  # already imported (in a warm runner): it reads the settings above again
        from deployments.prefect_api import apply_environment

        apply_environment()
    from cli.output import err
    from cli.run_report import check_run_inputs, print_plan, print_summary, run_with_progress

    on_pool = getattr(args, "on_pool", False)
    if on_pool and getattr(args, "dry_run", False):
        raise BadInputError("--dry-run prints the plan here, without the pool: drop --on-pool")
    # every input checked before Prefect starts or anything is written
    params, inputs = check_run_inputs(args, connect=not on_pool)
    if on_pool:
        from cli.on_pool import hand_to_pool

        return hand_to_pool(args, params)
    if getattr(args, "dry_run", False):
        try:
            if print_plan(args.command, inputs):  # no Prefect server for a plan
                return EXIT_OK
        except BudgetExceededError as exc:
            err.print(f"candleflow: {exc}", markup=False)
            return EXIT_INCOMPLETE
    else:
        from cli.warm import preload

        # What every run's first steps would import and build (Great Expectations' import and suite, about
        # 2.5 s; its first validation's metrics; the calendar; the flows) here, before the run, as the warm
        # runner does once: the flow run then does only its work. Imported in a thread while Prefect started the
        # run, both took longer than one after the other (one interpreter lock: 7.9 s against 7.4 s for a 1m
        # backfill of 476k bars), and the run's first validation waited for the rest
        preload()
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
