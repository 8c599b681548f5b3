"""Great Expectations suites (the JSON files here) and the code that runs them on bar frames. No Prefect."""

from expectations.validate import ChunkVerdict, ValidationReport, load_suite, prepare_validation, validate_bars

__all__ = ["ChunkVerdict", "ValidationReport", "load_suite", "prepare_validation", "validate_bars"]
