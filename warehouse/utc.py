"""The warehouse's one way to read a timestamp: whatever a database, a file or a frame gave, as a UTC time."""

from __future__ import annotations

import datetime as dt

import pandas as pd


def as_utc(value: object) -> pd.Timestamp | None:
    """`value` as an aware UTC timestamp, a naive one taken as UTC already (SQLite returns naive UTC, PostgreSQL
    aware); None for None, NaT or what is not a time at all (a quarantined row's unparseable `ts`)."""
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def to_utc(value: object) -> pd.Timestamp:
    """`as_utc` of a value that must be a time (a ledger window, a watermark): ValueError when it is not."""
    ts = as_utc(value)
    if ts is None:
        raise ValueError(f"not a time: {value!r}")
    return ts


def as_utc_datetime(value: object) -> dt.datetime | None:
    """`as_utc` as a datetime, for a parameter of a statement."""
    ts = as_utc(value)
    return None if ts is None else ts.to_pydatetime()
