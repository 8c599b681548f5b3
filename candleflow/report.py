"""Run summaries: what a flow run did, as numbers and as a table. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from candleflow.model import Chunk, ChunkResult, LedgerStatus


@dataclass
class RunSummary:
    flow: str
    planned: int = 0
    skipped: int = 0
    results: list[ChunkResult] = field(default_factory=list)
    elapsed_seconds: float = 0.0
    dry_run: bool = False
    todo: list[Chunk] = field(default_factory=list)
    not_published: list[Chunk] = field(default_factory=list)  # the vendor has no file for their date yet
    cost_usd: float | None = None  # the vendor's quote for the chunks to fetch, for providers that charge
    sessions_to_repair: int | None = None  # repair_gaps: the sessions its chunks cover
    # Why held chunks were skipped, when the reason is not obvious: e.g. another csv collection already loaded
    # under the same provider key.
    skip_note: str | None = None

    def counts(self) -> dict[str, int]:
        counter = Counter(str(r.status) for r in self.results)
        return {str(s): counter.get(str(s), 0) for s in LedgerStatus}

    @property
    def unchanged(self) -> int:
        return sum(r.unchanged for r in self.results)

    @property
    def revised(self) -> int:
        return sum(r.revised for r in self.results)

    @property
    def bars_written(self) -> int:
        return sum(r.written for r in self.results)

    @property
    def bars_per_second(self) -> float:
        return self.bars_written / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return all(r.status.ok for r in self.results)

    def problems(self) -> list[ChunkResult]:
        return [r for r in self.results if not r.status.ok]

    def _extras(self) -> str:
        extras = []
        if self.sessions_to_repair:
            extras.append(f"{self.sessions_to_repair} session(s) to repair")
        if self.not_published:
            dates = sorted({c.window_start.date() for c in self.not_published})
            extras.append(f"{len(self.not_published)} chunks not published yet ({len(dates)} dates, from {dates[0]})")
        if self.cost_usd is not None:
            extras.append(f"vendor quote ${self.cost_usd:,.2f}")
        return "".join(f"; {e}" for e in extras)

    def headline(self) -> str:
        c = self.counts()
        if self.dry_run:
            return (
                f"{self.flow}: dry run, {self.planned} chunks planned, {len(self.todo)} to fetch, {self.skipped} held"
                + self._extras()
            )
        if not self.results and self.sessions_to_repair is not None and not self.todo:
            return f"{self.flow}: nothing to fetch: no missing sessions{self._extras()}"
        if not self.results:
            held = f"all {self.skipped} planned chunks are already in the ledger"
            if self.not_published:
                held = f"{self.skipped} planned chunks are already in the ledger"
            note = f" {self.skip_note}" if self.skip_note and self.skipped else ""
            return f"{self.flow}: nothing to fetch: {held}{note}{self._extras()}"
        note = f" {self.skip_note}" if self.skip_note and self.skipped else ""
        return (
            f"{self.flow}: {len(self.results)} chunks run ({c['loaded']} loaded, {c['empty']} empty, "
            + (f"{c['partial']} partial, " if c["partial"] else "")
            + f"{c['rejected']} rejected, {c['failed']} failed; {self.unchanged} unchanged"
            + (f", {self.revised} revised" if self.revised else "")
            + "), "
            f"{self.skipped} skipped{note}; "
            f"{self.bars_written} bars written in {self.elapsed_seconds:.1f} s ({self.bars_per_second:,.0f} bars/s)"
            + self._extras()
        )

    def failure_message(self, limit: int = 50) -> str:
        """Which chunks did not load and why, with the counts: the Failed state's message, which notices carry."""
        c = self.counts()
        lines = [
            f"{len(self.problems())} of {len(self.results)} chunk(s) did not load"
            + (f" everything ({c['partial']} partial, " if c["partial"] else " (")
            + f"{c['rejected']} rejected, {c['failed']} failed; {c['loaded']} loaded, {c['empty']} empty):"
        ]
        lines += [f"  {r.chunk.label()} {r.status}: {r.error}" for r in self.problems()[:limit]]
        if len(self.problems()) > limit:
            lines.append(f"  ... and {len(self.problems()) - limit} more (see the ingest_ledger table)")
        return "\n".join(lines)

    def markdown(self) -> str:
        c = self.counts()
        rows = [
            "| chunks planned | skipped (held) | not published | loaded | empty | partial | rejected | failed "
            "| unchanged | revised | bars written | seconds |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {self.planned} | {self.skipped} | {len(self.not_published)} | {c['loaded']} | {c['empty']} "
            f"| {c['partial']} | {c['rejected']} | {c['failed']} | {self.unchanged} | {self.revised} "
            f"| {self.bars_written} "
            f"| {self.elapsed_seconds:.1f} |",
        ]
        if self.problems():
            rows += ["", "| chunk | status | why |", "|---|---|---|"]
            rows += [
                f"| {r.chunk.label()} | {r.status} | {(r.error or '').replace('|', '/')} |" for r in self.problems()
            ]
        return "\n".join(rows)
