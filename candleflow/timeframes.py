"""The timeframes candleflow stores and how each is cut into chunks."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, get_args

import pandas as pd

from candleflow.errors import BadInputError


class ChunkPeriod(StrEnum):
    FIVE_YEARS = "five_years"  # 2020-2024, 2025-2029, ...: calendar years in blocks starting at years divisible by 5
    YEAR = "year"
    QUARTER = "quarter"
    MONTH = "month"
    SESSION = "session"  # one chunk per session date, for providers that publish one file per date


@dataclass(frozen=True)
class Timeframe:
    name: str
    step: pd.Timedelta
    chunk_period: ChunkPeriod

    @property
    def intraday(self) -> bool:
        return bool(self.step < pd.Timedelta(days=1))


TIMEFRAMES: dict[str, Timeframe] = {
    tf.name: tf
    for tf in (
        Timeframe("1m", pd.Timedelta(minutes=1), ChunkPeriod.MONTH),
        Timeframe("5m", pd.Timedelta(minutes=5), ChunkPeriod.MONTH),
        Timeframe("15m", pd.Timedelta(minutes=15), ChunkPeriod.MONTH),
        Timeframe("1h", pd.Timedelta(hours=1), ChunkPeriod.QUARTER),
        Timeframe("1d", pd.Timedelta(days=1), ChunkPeriod.FIVE_YEARS),
    )
}


# The names as a type: the Prefect UI's run form shows a Literal as a dropdown.
TimeframeName = Literal["1m", "5m", "15m", "1h", "1d"]
assert set(get_args(TimeframeName)) == set(TIMEFRAMES), "TimeframeName must list every timeframe"


def get_timeframe(name: str) -> Timeframe:
    """Return the timeframe called `name`, or raise BadInputError listing the valid ones."""
    try:
        return TIMEFRAMES[str(name).strip()]
    except KeyError:
        valid = ", ".join(TIMEFRAMES)
        raise BadInputError(f"unknown timeframe {name!r}: use one of {valid}") from None
