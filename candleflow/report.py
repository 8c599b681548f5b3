"""Run summaries: what a flow run did, as numbers and as a table. Pure."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from candleflow.model import Chunk, ChunkResult, LedgerStatus


@dataclass
class StageTimes:
    """Where chunk tasks spent their time: seconds fetching, validating and loading (summed over tasks, which may
    overlap), and each task's working span (start, end) on the machine's monotonic clock."""

    fetch: float = 0.0
    validate: float = 0.0
    load: float = 0.0
    spans: list[tuple[float, float]] = field(default_factory=list)

    def add(self, other: StageTimes) -> None:
        self.fetch += other.fetch
        self.validate += other.validate
        self.load += other.load
        self.spans += other.spans

    def busy(self) -> float:
        """Wall-clock seconds during which at least one task was working on chunks (the union of the spans)."""
        total, reached = 0.0, float("-inf")
        for start, end in sorted(self.spans):
            if end > reached:
                total += end - max(start, reached)
                reached = end
        return total


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
    request_note: str | None = None  # how the provider asks for the chunks, when it is not one request each
    # what the symbols input resolved to, when it named files or universes: `universe:sp500 (503): 503 symbols`
    universe: str | None = None
    stages: StageTimes = field(default_factory=StageTimes)
    # A run cut into partitions (child flow runs on the work pool): how many, and the counts they reported
    # (written, unchanged, revised, removed), which their chunks' ledger rows do not hold.
    partitions: int | None = None
    reported: dict[str, int] | None = None

    def counts(self) -> dict[str, int]:
        counter = Counter(str(r.status) for r in self.results)
        return {str(s): counter.get(str(s), 0) for s in LedgerStatus}

    @property
    def unchanged(self) -> int:
        return self.reported["unchanged"] if self.reported is not None else sum(r.unchanged for r in self.results)

    @property
    def revised(self) -> int:
        return self.reported["revised"] if self.reported is not None else sum(r.revised for r in self.results)

    @property
    def removed(self) -> int:
        """Bars deleted because their source no longer has them."""
        return self.reported["removed"] if self.reported is not None else sum(r.removed for r in self.results)

    @property
    def bars_written(self) -> int:
        return self.reported["written"] if self.reported is not None else sum(r.written for r in self.results)

    @property
    def bars_per_second(self) -> float:
        return self.bars_written / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return all(r.status.ok for r in self.results)

    def problems(self) -> list[ChunkResult]:
        return [r for r in self.results if not r.status.ok]

    def _extras(self) -> str:
        extras = [f"symbols {self.universe}"] if self.universe else []
        if self.sessions_to_repair:
            extras.append(f"{self.sessions_to_repair} session(s) to repair")
        if self.not_published:
            dates = sorted({c.window_start.date() for c in self.not_published})
            extras.append(f"{len(self.not_published)} chunks not published yet ({len(dates)} dates, from {dates[0]})")
        if self.cost_usd is not None:
            extras.append(f"vendor quote ${self.cost_usd:,.2f}")
        if self.request_note and self.todo:
            extras.append(self.request_note)
        if self.partitions:
            extras.append(f"in {self.partitions} partition{'s' if self.partitions != 1 else ''} on the work pool")
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
            + (f", {self.removed} bar{'s' if self.removed != 1 else ''} removed" if self.removed else "")
            + "), "
            f"{self.skipped} skipped{note}; "
            f"{self.bars_written} bars written in {self.elapsed_seconds:.1f} s ({self.bars_per_second:,.0f} bars/s)"
            + self._extras()
        )

    def time_breakdown(self) -> dict[str, float]:
        """The run's wall-clock seconds shared out: the time some task was working on chunks goes to fetch,
        validate and load in proportion to the tasks' own time in each; the rest (planning, reading the ledger,
        Prefect's task engine and API calls, reports) is orchestration. The four add up to the elapsed time."""
        stages = self.stages
        work = stages.fetch + stages.validate + stages.load
        busy = min(stages.busy(), self.elapsed_seconds)
        share = busy / work if work > 0 else 0.0
        return {
            "fetch": stages.fetch * share,
            "validate": stages.validate * share,
            "load": stages.load * share,
            "orchestration": max(0.0, self.elapsed_seconds - (busy if work > 0 else 0.0)),
        }

    def time_line(self) -> str:
        """`time 12.3 s: fetch 2.1 s (17%), validate ...`: the breakdown as one line, for the CLI and logs. A run
        cut into partitions says only its time: each child's breakdown is in its own summary."""
        if self.partitions and self.elapsed_seconds > 0:
            return f"time {self.elapsed_seconds:.1f} s, each partition's own breakdown in its run's summary"
        parts = [
            f"{stage} {seconds:.1f} s ({seconds / self.elapsed_seconds:.0%})"
            for stage, seconds in self.time_breakdown().items()
        ]
        return f"time {self.elapsed_seconds:.1f} s: " + ", ".join(parts) if self.elapsed_seconds > 0 else ""

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
        counts: dict[str, object] = {
            **({"symbols": self.universe} if self.universe else {}),
            "chunks planned": self.planned,
            "skipped (held)": self.skipped,
            "not published": len(self.not_published),
            **{str(s): c[str(s)] for s in LedgerStatus},
            "unchanged": self.unchanged,
            "revised": self.revised,
            "bars removed": self.removed,
            "bars written": self.bars_written,
            "seconds": f"{self.elapsed_seconds:.1f}",
        }
        # one row per count: twelve columns side by side were cut off at the UI's 1440 px
        rows = ["| count | value |", "|---|---:|", *(f"| {name} | {value} |" for name, value in counts.items())]
        if self.results and self.elapsed_seconds > 0 and not self.partitions:
            breakdown = self.time_breakdown()
            stages = self.stages
            summed = {"fetch": stages.fetch, "validate": stages.validate, "load": stages.load}
            rows += [
                "",
                "Where the time went (wall clock; the time tasks worked is shared out by their own time per stage, "
                "summed over tasks running in parallel):",
                "",
                "| stage | seconds | share | task seconds (summed) |",
                "|---|---:|---:|---:|",
            ]
            rows += [
                f"| {stage} | {seconds:.2f} | {seconds / self.elapsed_seconds:.0%} | {summed[stage]:.2f} |"
                if stage in summed
                else f"| {stage} | {seconds:.2f} | {seconds / self.elapsed_seconds:.0%} | |"
                for stage, seconds in breakdown.items()
            ]
        if self.problems():
            rows += ["", "| chunk | status | why |", "|---|---|---|"]
            rows += [
                f"| {r.chunk.label()} | {r.status} | {(r.error or '').replace('|', '/')} |" for r in self.problems()
            ]
        return "\n".join(rows)
