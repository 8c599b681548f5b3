"""A plan is made without Prefect: the command line's --dry-run asks the warehouse and the vendor with plain calls
(no server, no Great Expectations), and says exactly what the flow's own dry run says."""

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.backfill import historical_backfill
from flows.inputs import check_backfill, check_repair
from flows.plan import PLAIN_ASKS, plan_backfill, plan_repair
from flows.repair import repair_gaps
from tests.conftest import ROOT

D = dt.date

PROBE = """
import json, sys
from cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "prefect": "prefect" in sys.modules, "gx": "great_expectations" in sys.modules}))
"""


def test_a_dry_run_needs_no_prefect_server_and_writes_nothing(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # nothing listens there: a call to a server would fail
    }
    argv = ["backfill", "--symbols", "AAPL,MSFT", "--timeframe", "1d,1h", "--start", "2024-01-01"]
    argv += ["--end", "2024-06-30"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv, "--dry-run"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "historical_backfill: dry run, 6 chunks planned, 6 to fetch, 0 held"
    assert "  would fetch synthetic:MSFT:1h:2024-04-01..2024-06-30" in lines
    assert json.loads(lines[-1]) == {"code": 0, "prefect": False, "gx": False}
    assert list(tmp_path.iterdir()) == []  # no warehouse file


@pytest.mark.flows
@pytest.mark.usefixtures("prefect_harness")
def test_the_plain_plan_is_the_flows_own(sqlite_url: str) -> None:
    args = dict(symbols=["AAPL", "MSFT"], warehouse_url=sqlite_url)
    historical_backfill(**args, timeframe="1h", start=D(2024, 1, 1), end=D(2024, 2, 29))  # some held already
    backfill = dict(**args, timeframes=["1d", "1h"], start=D(2023, 7, 1), end=D(2024, 6, 30), dry_run=True)
    by_flow = historical_backfill(**backfill)
    plain = plan_backfill(check_backfill(**{**backfill, "provider": "synthetic"}), PLAIN_ASKS)
    assert [c.label() for c in plain.todo] == [c.label() for c in by_flow.todo]
    assert (plain.planned, plain.skipped) == (by_flow.planned, by_flow.skipped)
    assert "synthetic:AAPL:1h:2024-03-01..2024-03-31" in [c.label() for c in plain.todo]  # January and February held

    repair = dict(**args, timeframes=["1h"], lookback_days=90, end=D(2024, 3, 28), dry_run=True)
    by_flow = repair_gaps(**repair)
    plain = plan_repair(check_repair(**{**repair, "provider": "synthetic"}), PLAIN_ASKS)
    assert [c.label() for c in plain.todo] == [c.label() for c in by_flow.todo] != []
    assert plain.sessions_to_repair == by_flow.sessions_to_repair
