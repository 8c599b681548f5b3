"""A content checksum of a chunk's bars: equal bars give an equal checksum, in any row order."""

from __future__ import annotations

import hashlib

import pandas as pd

from candleflow.model import BAR_COLUMNS


def frame_checksum(frame: pd.DataFrame) -> str:
    """blake2b over pandas' stable per-row hashes of the bar columns, rows ordered by (symbol, ts)."""
    if frame.empty:
        return hashlib.blake2b(b"", digest_size=16).hexdigest()
    ordered = frame.loc[:, list(BAR_COLUMNS)].sort_values(["symbol", "ts"], kind="stable")
    row_hashes = pd.util.hash_pandas_object(ordered, index=False).to_numpy()
    return hashlib.blake2b(row_hashes.tobytes(), digest_size=16).hexdigest()
