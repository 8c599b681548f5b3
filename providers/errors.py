"""Provider errors. The class says whether a retry can help; retry decisions never read the message.

CandleflowError                   candleflow's one root (candleflow/errors.py)
└── ProviderError                 carries provider, symbols, window, http_status, request_id, retry_after
    ├── TransientProviderError    rate limit, 5xx, timeout, dropped connection: a retry may help
    └── TerminalProviderError     bad key, unknown symbol, other 4xx, bad settings: it will not

Every HTTP vendor's answer is classed by one mapping, `http_error`, called where the vendor's client hands the
answer back (as databento-python maps its errors once, where the response arrives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from candleflow.errors import CandleflowError


class ProviderError(CandleflowError):
    def __init__(
        self,
        message: str,
        *,
        provider: str,
        symbols: Sequence[str] = (),
        window: tuple[pd.Timestamp, pd.Timestamp] | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.provider = provider
        self.symbols = tuple(symbols)
        self.window = window
        self.http_status = http_status
        self.request_id = request_id
        self.retry_after = retry_after
        super().__init__(message)

    def __str__(self) -> str:
        parts = [f"{self.provider}: {self.args[0]}"]
        if self.symbols:
            parts.append(f"symbols={','.join(self.symbols)}")
        if self.window is not None:
            parts.append(f"window=[{self.window[0].isoformat()}, {self.window[1].isoformat()})")
        if self.http_status is not None:
            parts.append(f"http_status={self.http_status}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        return " ".join(parts)


class TransientProviderError(ProviderError):
    """The same request may succeed later."""


class TerminalProviderError(ProviderError):
    """The same request will fail again until someone changes something."""


def connection_error(
    error: BaseException | None, where: Mapping[str, Any], what: str = "connection problem"
) -> ProviderError:
    """No HTTP answer at all (refused, timed out, dropped): a retry may help."""
    return TransientProviderError(f"{what}: {type(error).__name__}", **where)


def http_error(
    status: int | None,
    where: Mapping[str, Any],
    *,
    refused: str,
    request_id: str | None = None,
    retry_after: str | None = None,
    label: str | None = None,
    detail: str = "",
    transient: bool = False,
    key_refused: bool = False,
) -> ProviderError:
    """The error for an HTTP answer that is not a success. 429 and 5xx are transient (the Retry-After header, in
    seconds, is kept); 401 and 403 are terminal and say what to check (`refused`, naming the key's variable, never
    the key); any other status is terminal with the vendor's `detail` appended (" for AAPL", ": its message").
    `where` names the provider, symbols and window. `label` is the vendor's own name for the failure (an S3 error
    code); `transient` and `key_refused` let that name decide where the status alone would not (S3's SlowDown,
    AccessDenied)."""
    common: dict[str, Any] = {**where, "http_status": status, "request_id": request_id}
    head = f"{label} (HTTP {status})" if label else f"HTTP {status}"
    if transient or status == 429 or (status or 0) >= 500:
        what = label or ("rate limited" if status == 429 else "server error")
        return TransientProviderError(f"{what} (HTTP {status})", retry_after=_seconds(retry_after), **common)
    if key_refused or status in (401, 403):
        return TerminalProviderError(f"{head}: {refused}", **common)
    return TerminalProviderError(f"{head}{detail}", **common)


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header given in seconds; None when absent or given as a date."""
    try:
        return float(retry_after) if retry_after else None
    except ValueError:
        return None
