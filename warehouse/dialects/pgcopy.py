"""Encode bar frames in PostgreSQL's binary COPY format with numpy, without a Python loop over rows.

Each row is `int16 field count`, then per field `int32 length` and the value (big-endian), or length -1 for
NULL. Rows of one chunk share their text values (provider, symbol, timeframe), so every row with the same
pattern of NULLs has the same layout: one numpy structured array per NULL pattern writes them all at once.
Row order inside a COPY does not matter to a keyed table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
TRAILER = (-1).to_bytes(2, "big", signed=True)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in microseconds since 1970


@dataclass(frozen=True)
class CopyColumn:
    """One column to encode: `kind` is text (one constant value), texts (a value per row, all of one length in
    bytes: numpy `S<n>`), timestamptz, float8 or int8."""

    kind: str
    values: np.ndarray | bytes
    nulls: np.ndarray | None = None  # True where NULL; None when the column has no NULLs


def frame_columns(frame: pd.DataFrame, constants: Sequence[str] = ()) -> list[CopyColumn]:
    """The bar columns of `frame` in table order; `constants` are leading text values shared by every row."""
    columns = [CopyColumn("text", value.encode()) for value in constants]
    ts_us = frame["ts"].dt.as_unit("us").astype("int64").to_numpy() - _PG_EPOCH_US
    columns.append(CopyColumn("timestamptz", ts_us))
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        values = frame[name].to_numpy(dtype="float64")
        nulls = np.isnan(values)
        columns.append(CopyColumn("float8", values, nulls if nulls.any() else None))
    trades = frame["trades"]
    trade_nulls = trades.isna().to_numpy()
    trade_values = trades.fillna(0).to_numpy(dtype="int64")
    columns.append(CopyColumn("int8", trade_values, trade_nulls if trade_nulls.any() else None))
    return columns


_FIELD = {"timestamptz": ">i8", "float8": ">f8", "int8": ">i8"}


def _field_type(col: CopyColumn) -> str:
    if col.kind == "text":
        return f"S{len(col.values)}"
    if col.kind == "texts":
        assert isinstance(col.values, np.ndarray)
        return f"S{col.values.dtype.itemsize}"
    return _FIELD[col.kind]


def _field_length(col: CopyColumn) -> int:
    if col.kind == "text":
        return len(col.values)
    if col.kind == "texts":
        assert isinstance(col.values, np.ndarray)
        return int(col.values.dtype.itemsize)
    return 8


def encode_tickers(frame: pd.DataFrame, series: tuple[str, str] | None = None) -> bytes:
    """The complete payload for bars of many tickers, each row under its own `symbol` (a chunk of every ticker):
    `provider, symbol, timeframe, ts, values` with `series` (provider, timeframe), else `symbol, ts, values`. Rows
    are grouped by their ticker's length in bytes, so each group keeps one fixed layout (a dozen groups for a
    market's tickers, not one per ticker)."""
    if frame.empty:
        return HEADER + TRAILER
    texts = frame["symbol"].to_numpy(dtype=str)  # numpy unicode: lengths and encoding below run in C
    try:
        ascii_ = texts.astype(np.bytes_)  # ASCII, as every vendor's tickers are: a character is a byte
        encoded = None
        lengths = np.char.str_len(ascii_)
    except UnicodeEncodeError:
        encoded = np.array([t.encode() for t in texts.tolist()], dtype=object)
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
    body = []
    for length in np.unique(lengths):
        rows = np.flatnonzero(lengths == length)
        sub = frame.iloc[rows]
        kind = f"S{int(length)}"
        values = ascii_[rows].astype(kind) if encoded is None else np.array(encoded[rows].tolist(), dtype=kind)
        tickers = CopyColumn("texts", values)
        columns = [tickers]
        if series is not None:
            columns = [CopyColumn("text", series[0].encode()), tickers, CopyColumn("text", series[1].encode())]
        body.append(encode([*columns, *frame_columns(sub)], len(sub))[len(HEADER) : -len(TRAILER)])
    return HEADER + b"".join(body) + TRAILER


def encode(columns: Sequence[CopyColumn], n_rows: int) -> bytes:
    """The complete binary COPY payload (header, rows, trailer) for `n_rows` rows."""
    if n_rows == 0:
        return HEADER + TRAILER
    patterns = np.zeros(n_rows, dtype=np.int64)
    for i, col in enumerate(columns):
        if col.nulls is not None:
            patterns |= col.nulls.astype(np.int64) << i
    distinct = np.unique(patterns)
    parts = [HEADER]
    for pattern in distinct:
        rows: slice | np.ndarray = slice(None) if len(distinct) == 1 else np.flatnonzero(patterns == pattern)
        count = n_rows if isinstance(rows, slice) else len(rows)
        null = [bool((int(pattern) >> i) & 1) for i in range(len(columns))]
        fields: list[tuple[str, str]] = [("n", ">i2")]
        for i, col in enumerate(columns):
            fields.append((f"l{i}", ">i4"))
            if not null[i]:
                fields.append((f"v{i}", _field_type(col)))
        # One template row holds everything rows share (field count, lengths, constant text); repeating it is a
        # memcpy, so only the numeric values are written field by field.
        template = np.zeros(1, dtype=np.dtype(fields))
        template["n"] = len(columns)
        for i, col in enumerate(columns):
            template[f"l{i}"] = -1 if null[i] else _field_length(col)
            if col.kind == "text" and not null[i]:
                template[f"v{i}"] = col.values
        out = np.repeat(template, count)
        for i, col in enumerate(columns):
            if col.kind != "text" and not null[i]:
                assert isinstance(col.values, np.ndarray)
                out[f"v{i}"] = col.values[rows]
        parts.append(out.tobytes())
    parts.append(TRAILER)
    return b"".join(parts)
