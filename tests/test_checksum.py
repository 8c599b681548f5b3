import numpy as np
import pandas as pd

from candleflow.checksum import frame_checksum
from candleflow.timeframes import get_timeframe
from providers import get_provider
from providers.base import FetchRequest


def bars(symbol: str = "AAPL") -> pd.DataFrame:
    request = FetchRequest(
        (symbol,), get_timeframe("1h"), pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
    )
    return get_provider("synthetic").fetch(request)


def test_same_bars_same_checksum_in_any_order() -> None:
    frame = bars()
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert frame_checksum(frame) == frame_checksum(shuffled) == frame_checksum(frame.copy())


def test_any_change_changes_the_checksum() -> None:
    frame = bars()
    base = frame_checksum(frame)
    for column, value in [("close", 1.0), ("volume", 0.0), ("trades", 7), ("vwap", np.nan), ("trades", pd.NA)]:
        changed = frame.copy()
        changed.loc[5, column] = value
        assert frame_checksum(changed) != base, column
    assert frame_checksum(frame.iloc[:-1]) != base
    assert frame_checksum(frame.assign(ts=frame["ts"] + pd.Timedelta(hours=1))) != base
    assert frame_checksum(bars("MSFT")) != base
    assert frame_checksum(frame.assign(provider="csv")) != base


def test_nulls_hash_stably_and_multi_symbol_frames_work() -> None:
    frame = bars()
    a, b = frame.copy(), frame.copy()
    a.loc[3, "vwap"] = np.nan
    b.loc[3, "vwap"] = -np.nan
    assert frame_checksum(a) == frame_checksum(b)
    both = pd.concat([bars("MSFT"), frame], ignore_index=True)
    assert frame_checksum(both) == frame_checksum(pd.concat([frame, bars("MSFT")], ignore_index=True))
    assert frame_checksum(frame.iloc[0:0]) == frame_checksum(bars().iloc[0:0])
