"""Provider errors. The class says whether a retry can help; retry decisions never read the message.

ProviderError                     base: carries provider, symbols, window, http_status, request_id
├── TransientProviderError        rate limit, 5xx, timeout, dropped connection: a retry may help
└── TerminalProviderError         bad key, unknown symbol, other 4xx, bad settings: it will not
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


class ProviderError(Exception):
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
