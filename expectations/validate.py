"""Run the OHLCV suite on bar frames, many chunks per call, and map each failure back to its chunk and row.

Validation has a fixed cost of ~0.1 s per call whatever the size (DESIGN.md), so callers hand in every chunk
they hold at once. The suite file is the one definition of a valid bar; this module only adds, per row, the
values the suite checks that depend on the row's chunk or calendar: `window_start`, `window_end`,
`grid_offset_us` and `in_session` (the bar lies inside a session of the exchange calendar).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from candleflow import environment
from candleflow.model import Chunk
from candleflow.sessions import DEFAULT_CALENDAR, SessionHours, sessions_of
from candleflow.timeframes import get_timeframe
from expectations.gx_import import import_great_expectations

SUITE_DIR = Path(__file__).resolve().parent
_lock = threading.Lock()


@dataclass
class ChunkVerdict:
    chunk: Chunk
    failed_rules: list[str] = field(default_factory=list)
    bad_rows: dict[int, list[str]] = field(default_factory=dict)  # row position in the chunk's frame -> rules

    @property
    def ok(self) -> bool:
        return not self.failed_rules


@dataclass
class ValidationReport:
    verdicts: list[ChunkVerdict]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)


def suite_path(name: str) -> Path:
    return SUITE_DIR / f"{name}.json"


def load_suite(name: str = "ohlcv") -> Any:
    """The Great Expectations suite stored in expectations/<name>.json; fails loudly on any bad entry."""
    gx = import_great_expectations()

    spec = json.loads(suite_path(name).read_text())
    suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"], meta=spec.get("meta"))
    if len(suite.expectations) != len(spec["expectations"]):
        # GX only logs configurations it cannot build; a suite that silently lost a rule checks less.
        raise ValueError(f"suite {name}: {len(spec['expectations']) - len(suite.expectations)} expectation(s) invalid")
    return suite


@lru_cache(maxsize=1)
def _batch_definition() -> Any:
    environment.set_default("GX_ANALYTICS_ENABLED", "false")
    gx = import_great_expectations()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("candleflow").add_dataframe_asset("bars")
    return asset.add_batch_definition_whole_dataframe("frame")


@lru_cache(maxsize=4)
def _suite(name: str) -> Any:
    return load_suite(name)


def prepare_validation(suite_name: str = "ohlcv") -> None:
    """Import Great Expectations and build its context and the suite now (about 2.5 s, once per process), rather
    than at the first validation."""
    with _lock:
        _batch_definition()
        _suite(suite_name)


def _with_chunk_columns(
    parts: Sequence[tuple[Chunk, pd.DataFrame]], calendar: str, hours: SessionHours
) -> pd.DataFrame:
    """All frames in one, with the columns the suite checks that depend on each row's chunk, computed over the
    whole batch at once (per timeframe), and `_chunk`/`_row` to map failures back."""
    frames = [frame.reset_index(drop=True) for _, frame in parts]
    lengths = np.array([len(frame) for frame in frames], dtype="int64")
    combined = pd.concat(frames, ignore_index=True)
    for name, column in combined.items():
        # GX compares nullable integers (trades: Int64) one Python call per row, numpy columns in one vector
        # operation: as float64 the same values (counts, far below 2**53) and nulls (NaN) cost a fortieth.
        numeric = pd.api.types.is_integer_dtype(column) or pd.api.types.is_float_dtype(column)
        if numeric and isinstance(column.dtype, pd.api.extensions.ExtensionDtype):
            combined[name] = column.to_numpy(dtype="float64", na_value=np.nan)
    chunk_of = np.repeat(np.arange(len(parts)), lengths)
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype("int64")
    if "ts" in combined.columns:
        ts = pd.to_datetime(combined["ts"], utc=True)
        offset = pd.Series(pd.NA, index=combined.index, dtype="Int64")
        in_session = np.ones(len(combined), dtype=bool)
        names = np.array([chunk.timeframe for chunk, _ in parts], dtype=object)[chunk_of]
        for name in dict.fromkeys(chunk.timeframe for chunk, _ in parts):
            timeframe = get_timeframe(name)
            rows = np.flatnonzero(names == name)
            mine = ts.iloc[rows]
            offset.iloc[rows] = ((mine - mine.dt.floor(timeframe.step)) // pd.Timedelta(microseconds=1)).astype("Int64")
            # a null ts is its own failure (ts not null); only a known time can be outside every session
            in_session[rows] = (sessions_of(mine, timeframe, calendar, hours).notna() | mine.isna()).to_numpy()
        combined["grid_offset_us"] = offset
        combined["in_session"] = in_session
    starts = pd.DatetimeIndex([chunk.window_start for chunk, _ in parts])
    ends = pd.DatetimeIndex([chunk.window_end for chunk, _ in parts])
    combined["window_start"] = starts[chunk_of] if len(chunk_of) else starts[:0]
    combined["window_end"] = ends[chunk_of] if len(chunk_of) else ends[:0]
    combined["_chunk"] = chunk_of
    combined["_row"] = np.arange(len(combined)) - offsets[chunk_of]
    return combined


def validate_bars(
    parts: Sequence[tuple[Chunk, pd.DataFrame]],
    suite_name: str = "ohlcv",
    *,
    calendar: str = DEFAULT_CALENDAR,
    hours: SessionHours = "regular",
) -> ValidationReport:
    """Validate every (chunk, frame) pair in one Great Expectations call; a verdict per chunk, in order.
    Bars are checked against the sessions of `calendar` (regular hours, or `extended` for providers that send
    pre- and post-market bars)."""
    verdicts = [ChunkVerdict(chunk) for chunk, _ in parts]
    nonempty = [i for i, (_, f) in enumerate(parts) if len(f)]
    if not nonempty:  # a window without bars is valid (it ends `empty`), and there is nothing to check
        return ValidationReport(verdicts)
    combined = _with_chunk_columns([parts[i] for i in nonempty], calendar, hours)
    with _lock:
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": combined})
        # BOOLEAN_ONLY costs half of COMPLETE; the row indices are only needed when something failed.
        if batch.validate(_suite(suite_name), result_format="BOOLEAN_ONLY").success:
            return ValidationReport(verdicts)
        result = batch.validate(_suite(suite_name), result_format={"result_format": "COMPLETE"})
    chunk_of = combined["_chunk"].to_numpy()
    row_of = combined["_row"].to_numpy()
    for res in result.results:
        if res.success:
            continue
        rule = (res.expectation_config.meta or {}).get("rule") or res.expectation_config.type
        indices = (res.result or {}).get("unexpected_index_list") or []
        if not indices:  # a table-level failure or an exception: it concerns every chunk in the call
            for i in nonempty:
                verdicts[i].failed_rules.append(rule)
            continue
        for index in indices:
            position = index["index"] if isinstance(index, dict) else index
            verdict = verdicts[nonempty[int(chunk_of[position])]]
            verdict.bad_rows.setdefault(int(row_of[position]), []).append(rule)
            if rule not in verdict.failed_rules:
                verdict.failed_rules.append(rule)
    return ValidationReport(verdicts)
