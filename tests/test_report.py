"""Run summaries: where the time went."""

import pandas as pd
import pytest

from candleflow.model import Chunk, ChunkResult, LedgerStatus
from candleflow.report import RunSummary, StageTimes

CHUNK = Chunk("synthetic", "A", "1d", pd.Timestamp("2020-01-01", tz="UTC"), pd.Timestamp("2025-01-01", tz="UTC"))


def test_busy_time_is_the_union_of_the_task_spans() -> None:
    stages = StageTimes(spans=[(0.0, 4.0), (1.0, 3.0), (5.0, 6.0), (5.5, 7.0)])
    assert stages.busy() == pytest.approx(6.0)  # 0-4 and 5-7
    assert StageTimes().busy() == 0.0


def test_the_breakdown_adds_up_to_the_wall_clock() -> None:
    summary = RunSummary(flow="historical_backfill", elapsed_seconds=10.0)
    summary.results.append(ChunkResult(chunk=CHUNK, status=LedgerStatus.LOADED, rows=1258, written=1258))
    # two tasks in parallel for 6 s of wall clock, 12 s of their own time: 6 fetching, 3 validating, 3 loading
    summary.stages = StageTimes(fetch=6.0, validate=3.0, load=3.0, spans=[(1.0, 7.0), (1.0, 7.0)])
    breakdown = summary.time_breakdown()
    assert breakdown == pytest.approx({"fetch": 3.0, "validate": 1.5, "load": 1.5, "orchestration": 4.0})
    assert sum(breakdown.values()) == pytest.approx(summary.elapsed_seconds)
    line = summary.time_line()
    assert line == "time 10.0 s: fetch 3.0 s (30%), validate 1.5 s (15%), load 1.5 s (15%), orchestration 4.0 s (40%)"
    assert "| orchestration | 4.00 | 40% | |" in summary.markdown()
    assert "| fetch | 3.00 | 30% | 6.00 |" in summary.markdown()


def test_a_run_that_fetched_nothing_was_all_orchestration() -> None:
    summary = RunSummary(flow="incremental_update", elapsed_seconds=2.0)
    assert summary.time_breakdown() == {"fetch": 0.0, "validate": 0.0, "load": 0.0, "orchestration": 2.0}
