"""The whole market (issue #19), for `bench/e2e_bench.py --only market`: `--symbols ALL` backfills of generated
vendor files at real width (tests/market_files.py) served by the local S3 server (moto) and by the grouped-daily
stand-in, each beside the binary-COPY floor of exactly the bars it stores, with the ledger rows it wrote and its
peak RSS. The harness (the lasting server, the CLI runner, the table's rows) is e2e_bench's, handed in."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pandas as pd

from candleflow.sessions import schedule
from tests.flatfiles_server import flatfiles_stand_in
from tests.market_files import MARKET_TICKERS, as_bars, day_table, gzip_csv, minute_table
from tests.polygon_server import KEY, polygon_stand_in
from warehouse.dialects import pgcopy

FLATFILES = "polygon-flatfiles"
MINUTE_DAY_ROWS = 2_000_000


class Harness:
    """What the market cases need of e2e_bench: its Postgres, lasting server, CLI runner and rows."""

    def __init__(
        self,
        pg: Any,
        api: str,
        rows: list[Any],
        row: Callable[..., Any],
        run_cli: Callable[[list[str], dict[str, str]], Any],
        quiet_env: Callable[..., dict[str, str]],
        flow_seconds: Callable[[str, str], float],
        copy_floor: Callable[[Any, str, list[bytes]], float],
    ) -> None:
        self.pg, self.api, self.rows, self.row = pg, api, rows, row
        self.run_cli, self.quiet_env, self.flow_seconds = run_cli, quiet_env, flow_seconds
        self.copy_floor = copy_floor

    def floor(self, frames: list[pd.DataFrame], timeframe: str) -> float:
        """The floor of these frames' bars, each row under its own ticker (pre-encoded: not counted)."""
        payloads = [pgcopy.encode_tickers(frame, (FLATFILES, timeframe)) for frame in frames]
        return self.copy_floor(self.pg, f"floor_market_{timeframe}", payloads)

    def backfill(self, name: str, case: str, args: list[str], env: dict[str, str], floor: float | None) -> int:
        """Run one `--symbols ALL` backfill into a new database: its rows (CLI wall, then the flow run with the
        ledger rows it wrote). Returns the bars stored."""
        database = self.pg.fresh(name)
        done = self.run_cli([*args, "--warehouse", self.pg.url(database)], env)
        stored = int(self.pg.count(database))
        ledger = int(self.pg.count(database, "ingest_ledger"))
        self.rows.append(self.row(name, f"{case} (CLI wall)", stored, done.wall, floor, done.rss_mb, done.time_line()))
        seconds = self.flow_seconds(self.api, "historical_backfill")
        note = f"{ledger:,} ledger rows"
        self.rows.append(self.row(name, "  the flow run itself, start to end", stored, seconds, floor, None, note))
        again = self.run_cli([*args, "--warehouse", self.pg.url(database)], env)
        self.rows.append(
            self.row(name, "  the same again: held, nothing written (CLI wall)", again.written(), again.wall)
        )
        return stored


def market_cases(h: Harness, scale: int) -> None:
    """A year of whole-market day files, one whole-market minute file, and the year by grouped daily."""
    sessions = [d.date() for d in schedule(dt.date(2024, 1, 1), dt.date(2024, 12, 31)).index]
    sessions = sessions[: max(2, len(sessions) // scale)]
    first, last = sessions[0], sessions[-1]
    window = ["--start", first.isoformat(), "--end", last.isoformat()]
    with flatfiles_stand_in() as files:
        env = h.quiet_env(PREFECT_API_URL=h.api) | files.env()
        frames = []
        for day in sessions:
            table = day_table(day)
            files.put_body(day, "day_aggs_v1", gzip_csv(table))
            frames.append(as_bars(table, daily=True, stored=True))
        bars = sum(len(f) for f in frames)
        name = f"ALL 1d {first:%Y}, {len(sessions)} files"
        floor = h.floor(frames, "1d")
        h.rows.append(h.row(name, "floor: binary COPY into an empty keyed table", bars, floor, floor))
        frames.clear()
        args = ["backfill", "--provider", FLATFILES, "--symbols", "ALL", "--timeframe", "1d", *window]
        stored = h.backfill(name, "candleflow --symbols ALL, flat files", args, env, floor)
        assert stored == bars, (stored, bars)

        day = sessions[len(sessions) // 2]
        table = minute_table(day, rows=MINUTE_DAY_ROWS // scale)
        files.put_body(day, "minute_aggs_v1", gzip_csv(table))
        frame = as_bars(table, daily=False, stored=True)
        name = f"ALL 1m {day}, one file"
        floor = h.floor([frame], "1m")
        h.rows.append(h.row(name, "floor: binary COPY into an empty keyed table", len(frame), floor, floor))
        args = ["backfill", "--provider", FLATFILES, "--symbols", "ALL", "--timeframe", "1m"]
        args += ["--start", day.isoformat(), "--end", day.isoformat()]
        stored = h.backfill(name, "candleflow --symbols ALL, the flat file", args, env, floor)
        assert stored == len(frame), (stored, len(frame))

    with polygon_stand_in(set(), page_size=5000) as srv:  # grouped daily: a request per session, 5 a second
        srv.market_tickers = MARKET_TICKERS
        env = h.quiet_env(PREFECT_API_URL=h.api, MASSIVE_API_KEY=KEY, CANDLEFLOW_POLYGON_BASE_URL=srv.url)
        args = ["backfill", "--provider", "polygon", "--symbols", "ALL", "--timeframe", "1d", *window]
        h.backfill(f"ALL 1d {first:%Y}, grouped daily", "candleflow --symbols ALL, grouped daily", args, env, None)
