"""Errors of candleflow's own making: every one derives from CandleflowError.

CandleflowError
├── BadInputError        a user input is wrong; the message names it and the fix (CLI exit 2)
│   └── BudgetExceededError  the vendor's quote for a run is above its max_cost_usd; nothing was fetched
├── IncompleteRunError   a run finished but some chunks ended rejected or failed (CLI exit 1)
├── StaleSeriesError     a freshness check found series lagging more than allowed (CLI exit 1)
├── ProviderError        a vendor failed to answer: transient or terminal (providers/errors.py)
└── WarehouseError       the warehouse cannot be used, with the fix (warehouse/errors.py)
"""

from __future__ import annotations

from typing import Any


class CandleflowError(Exception):
    """Base of every error candleflow raises itself."""


class BadInputError(CandleflowError, ValueError):
    """An input is wrong. The message names the input and what to do about it."""


class BudgetExceededError(BadInputError):
    """A charging vendor quoted more than the run may spend; raised before anything is downloaded."""


class StaleSeriesError(CandleflowError):
    """A freshness check found series lagging more than its max_lag_sessions; the message names them and why."""


class IncompleteRunError(CandleflowError):
    """Some chunks of a run ended `rejected` or `failed`; carries the run summary."""

    def __init__(self, message: str, summary: Any = None) -> None:
        super().__init__(message)
        self.summary = summary
