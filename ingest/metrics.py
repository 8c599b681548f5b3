"""The warehouse as Prometheus metrics, free of Prefect: read on every scrape from the warehouse's tables (bars,
ledger, quarantine, delistings, run history), so they hold after any restart. `WarehouseCollector` is a
prometheus_client collector; `run_registry` holds one run's figures, which a run pushes to a Pushgateway."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from candleflow.freshness import newest_lags
from candleflow.sessions import DEFAULT_CALENDAR
from candleflow.timeframes import get_timeframe
from warehouse.watch import (
    RunRecord,
    bar_totals,
    chunk_status_counts,
    known_delistings,
    last_runs,
    quarantine_counts,
)

logger = logging.getLogger("candleflow.metrics")
PREFIX = "candleflow"
STAGES = ("fetch", "validate", "load")


def _gauge(name: str, doc: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=labels)


class WarehouseCollector(Collector):
    """Every metric read from the warehouse at scrape time. `calendars`: symbol -> exchange calendar
    (CANDLEFLOW_CALENDARS; XNYS otherwise). An unreachable warehouse is `candleflow_warehouse_up 0`."""

    def __init__(self, engine: sa.Engine, calendars: Mapping[str, str] | None = None) -> None:
        self.engine = engine
        self.calendars = dict(calendars or {})

    def describe(self) -> list[Any]:
        return []  # collected on each scrape only: registering must not read the warehouse

    def collect(self) -> Iterator[Any]:
        started = time.perf_counter()
        up = _gauge("warehouse_up", "1 when the warehouse answered this scrape", [])
        try:
            families = list(self._families())
        except sa.exc.SQLAlchemyError as exc:
            logger.warning("metrics: the warehouse did not answer: %s", str(exc).splitlines()[0])
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        yield from families
        took = _gauge("scrape_seconds", "seconds this scrape spent reading the warehouse", [])
        took.add_metric([], time.perf_counter() - started)
        yield took

    def _families(self) -> Iterator[GaugeMetricFamily]:
        series = bar_totals(self.engine)
        pt = ["provider", "timeframe"]
        bars, count = _gauge("bars", "bars held", pt), _gauge("series", "series (symbols) held", pt)
        newest = _gauge("newest_bar_timestamp_seconds", "open time of the newest bar, Unix seconds", pt)
        lag = _gauge(
            "series_lag_sessions",
            "closed sessions of the series' calendar since its newest bar",
            ["provider", "symbol", "timeframe"],
        )
        worst = _gauge("worst_lag_sessions", "the largest lag of a listed series (delisted ones left out)", pt)
        delisted = _gauge("delisted_series", "series whose symbol the vendor stopped listing", pt)
        for (provider, timeframe), group in series.groupby(["provider", "timeframe"], sort=True):
            labels = [str(provider), str(timeframe)]
            bars.add_metric(labels, float(group["bars"].sum()))
            count.add_metric(labels, float(len(group)))
            newest.add_metric(labels, max(group["newest"]).timestamp())
            gone = known_delistings(self.engine, str(provider), list(group["symbol"]))
            behind = self._lags(group, str(timeframe))
            listed = [n for s, n in behind.items() if s not in gone]
            for symbol, n in behind.items():
                lag.add_metric([str(provider), symbol, str(timeframe)], float(n))
            worst.add_metric(labels, float(max(listed, default=0)))
            delisted.add_metric(labels, float(len(gone)))
        yield from (bars, count, newest, lag, worst, delisted)
        chunks = _gauge("chunks", "ledger rows (chunks) by their last status", [*pt, "status"])
        for provider, timeframe, status, n in chunk_status_counts(self.engine):
            chunks.add_metric([provider, timeframe, status], float(n))
        yield chunks
        quarantined = _gauge("quarantined_rows", "rows kept in quarantine", pt)
        for provider, timeframe, n in quarantine_counts(self.engine):
            quarantined.add_metric([provider, timeframe], float(n))
        yield quarantined
        yield from run_families(last_runs(self.engine), "last_run", "the last completed run of the flow")

    def _lags(self, group: pd.DataFrame, timeframe: str) -> dict[str, int]:
        tf = get_timeframe(timeframe)
        calendar_of = {s: self.calendars.get(s, DEFAULT_CALENDAR) for s in group["symbol"]}
        out: dict[str, int] = {}
        for calendar in sorted(set(calendar_of.values())):
            mine = group[[calendar_of[s] == calendar for s in group["symbol"]]]
            out |= dict(zip(map(str, mine["symbol"]), newest_lags(mine["newest"], tf, calendar)[1], strict=True))
        return out


def run_families(runs: list[RunRecord], name: str, what: str) -> Iterator[GaugeMetricFamily]:
    """A run's figures per flow: when it ended, how long it took, its stages, its chunks and bars written."""
    ended = _gauge(f"{name}_timestamp_seconds", f"when {what} ended, Unix seconds", ["flow"])
    seconds = _gauge(f"{name}_duration_seconds", f"how long {what} took", ["flow"])
    stage = _gauge(f"{name}_stage_seconds", f"seconds {what}'s chunk tasks spent per stage", ["flow", "stage"])
    chunks = _gauge(f"{name}_chunks", f"chunks {what} ran", ["flow"])
    written = _gauge(f"{name}_bars_written", f"bars {what} wrote", ["flow"])
    for run in runs:
        ended.add_metric([run.flow], run.ended_at.timestamp())
        seconds.add_metric([run.flow], run.seconds)
        for label, value in zip(STAGES, (run.fetch_seconds, run.validate_seconds, run.load_seconds), strict=True):
            stage.add_metric([run.flow, label], value)
        chunks.add_metric([run.flow], float(run.chunks))
        written.add_metric([run.flow], float(run.bars_written))
    yield from (ended, seconds, stage, chunks, written)


class _Runs(Collector):
    def __init__(self, runs: list[RunRecord]) -> None:
        self.runs = runs

    def collect(self) -> Iterator[Any]:
        yield from run_families(self.runs, "run", "the run")


def run_registry(record: RunRecord) -> CollectorRegistry:
    """One run's figures (`candleflow_run_*`, labelled by flow) and whether it ended ok, to push."""
    registry = CollectorRegistry()
    registry.register(_Runs([record]))
    ok = Gauge(f"{PREFIX}_run_ok", "1 when every chunk of the run ended loaded or empty", ["flow"], registry=registry)
    ok.labels(flow=record.flow).set(1.0 if record.ok else 0.0)
    return registry


def push_run(record: RunRecord, url: str, job: str, timeout: float) -> None:
    """Push one run's figures to the Pushgateway at `url`, grouped by flow (each flow's last run replaces its
    previous one there)."""
    from prometheus_client import push_to_gateway

    push_to_gateway(url, job=job, registry=run_registry(record), grouping_key={"flow": record.flow}, timeout=timeout)
