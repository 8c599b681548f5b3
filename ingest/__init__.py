"""The batch engine, free of Prefect: a batch of chunks fetched from their provider, validated in one suite call
per calendar, and loaded (or quarantined) one chunk per transaction with its ledger row. tasks/ingest.py wraps it
in the `ingest_chunks` task, handing it the attempt (the last or not), what earlier attempts did and the shared
limits."""

from ingest.batch import Attempt, BatchOutcome, Gates, NoGates, Progress, run_batch
from ingest.retry import is_transient, retry_after_seconds

__all__ = [
    "Attempt",
    "BatchOutcome",
    "Gates",
    "NoGates",
    "Progress",
    "is_transient",
    "retry_after_seconds",
    "run_batch",
]
