"""Issue #17 (trust, second round), the command line's items: each reproduced first through `candleflow.cli.main`
in-process, against a real SQLite warehouse and the session's Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest

from candleflow.cli import main
from tests.conftest import count

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]


def bars_of(url: str, timeframe: str) -> int:
    return count(url, f"SELECT count(*) FROM bars WHERE timeframe = '{timeframe}'")


def test_backfill_runs_every_timeframe_given(sqlite_url: str, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    argv = ["backfill", "--symbols", "AAPL", "--timeframe", "1d,1h", "--start", "2024-01-02", "--end", "2024-01-05"]
    assert main([*argv, "--warehouse", sqlite_url]) == 0
    assert bars_of(sqlite_url, "1d") == 4
    assert bars_of(sqlite_url, "1h") == 4 * 7  # 09:30..15:30 New York, one bar an hour
    out = capsys.readouterr().out
    assert out.count("historical_backfill:") == 1  # one run, one summary


def test_the_backfill_form_offers_several_timeframes_beside_the_one() -> None:
    from prefect.utilities.callables import parameter_schema

    from flows.backfill import historical_backfill

    props = parameter_schema(historical_backfill.fn).model_dump_for_openapi()["properties"]
    assert props["timeframe"]["enum"] == ["1m", "5m", "15m", "1h", "1d"] and props["timeframe"]["default"] == "1d"
    (listed, _none) = props["timeframes"]["anyOf"]
    assert listed["items"]["enum"] == ["1m", "5m", "15m", "1h", "1d"]
    assert "replace timeframe" in props["timeframes"]["description"]
