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
    return get_provider("synthetic").fetch(request).bars


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


def test_checksums_kept_in_ledgers_never_change() -> None:
    """Ledgers store these: a different hash of the same bars would make every loaded chunk look restated."""
    frame = pd.DataFrame(
        {
            "provider": ["synthetic"] * 3,
            "symbol": ["AAPL", "AAPL", "MSFT"],
            "timeframe": ["1m"] * 3,
            "ts": pd.to_datetime(["2024-03-01T14:30:00Z", "2024-03-01T14:31:00Z", "2024-03-01T14:30:00Z"], utc=True),
            "open": [180.1, 180.2, 410.0],
            "high": [180.5, 180.3, 411.0],
            "low": [180.0, 180.1, 409.5],
            "close": [180.2, 180.25, 410.5],
            "volume": [1200.0, 800.0, 300.0],
            "vwap": [180.3, np.nan, 410.2],
            "trades": pd.array([12, pd.NA, 3], dtype="Int64"),
        }
    )
    assert frame_checksum(frame) == "1ab7a00c1b93a98a8007bca566ac34cc"
    assert frame_checksum(frame.iloc[::-1]) == "1ab7a00c1b93a98a8007bca566ac34cc"
    assert frame_checksum(frame[frame["symbol"] == "AAPL"]) == "3047780a65b59910ed92b659db71695d"
    assert frame_checksum(frame.iloc[0:0]) == "cae66941d9efbd404e4d88758ea67670"
