"""Outcomes of the fault-injection scenarios (tests/test_faults.py), printed as a table after the test run."""

from __future__ import annotations

OUTCOMES: list[tuple[str, str]] = []


def record(scenario: str, outcome: str) -> None:
    OUTCOMES.append((scenario, outcome))


def table() -> list[str]:
    if not OUTCOMES:
        return []
    width = max(len(s) for s, _ in OUTCOMES)
    lines = [f"{'scenario'.ljust(width)} | outcome", f"{'-' * width}-|-{'-' * 40}"]
    lines += [f"{scenario.ljust(width)} | {outcome}" for scenario, outcome in OUTCOMES]
    return lines
