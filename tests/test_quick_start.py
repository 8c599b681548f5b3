"""A quick start: what a process imports before it works, and settings read when a run starts (not at import)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import ROOT


def _python(code: str) -> dict:  # type: ignore[type-arg]
    """Run `code` in a new interpreter (nothing imported yet) and return the JSON it prints last."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_validation_runs_without_importing_scipy_stats_or_altair() -> None:
    seen = _python(
        """
        import json, sys
        from candleflow.model import Chunk
        from expectations import validate_bars
        from expectations.gx_import import DeferredModule
        from providers.base import request_for
        from providers.synthetic import SyntheticProvider
        import pandas as pd
        start, end = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")
        chunk = Chunk("synthetic", "AAPL", "1d", start, end)
        other = Chunk("synthetic", "MSFT", "1d", chunk.window_start, chunk.window_end)
        good = SyntheticProvider().fetch(request_for([chunk])).bars
        bad = SyntheticProvider().fetch(request_for([other])).bars
        bad.loc[bad.index[3], "high"] = bad["low"].iloc[3] - 1
        report = validate_bars([(chunk, good), (other, bad)])
        json.dump({
            "bars": len(good),
            "verdicts": [v.ok for v in report.verdicts],
            "bad_rows": {str(k): v for k, v in report.verdicts[1].bad_rows.items()},
            "deferred": {n: isinstance(sys.modules.get(n), DeferredModule) for n in ("scipy.stats", "altair")},
        }, sys.stdout)
        """
    )
    assert seen["bars"] > 50 and seen["verdicts"] == [True, False]
    assert "3" in seen["bad_rows"]
    assert seen["deferred"] == {"scipy.stats": True, "altair": True}  # the suite never needed them


def test_a_deferred_module_is_the_real_one_at_its_first_use() -> None:
    seen = _python(
        """
        import json, sys
        from expectations.gx_import import DeferredModule, import_great_expectations
        import_great_expectations()
        deferred = {name: isinstance(sys.modules[name], DeferredModule) for name in ("scipy.stats", "altair")}
        import scipy.stats as stats_module  # another import of it: still the stand-in, nothing run yet
        still = isinstance(sys.modules["scipy.stats"], DeferredModule)
        from scipy.stats import entropy  # the first use imports the real module
        import scipy
        json.dump({
            "deferred": deferred,
            "still_deferred_after_import": still,
            "entropy": float(entropy([0.5, 0.5], [0.9, 0.1])),
            "real_in_sys_modules": not isinstance(sys.modules["scipy.stats"], DeferredModule),
            "parent_attribute_is_real": scipy.stats is sys.modules["scipy.stats"],
            "stand_in_reads_real_names": stats_module.norm is sys.modules["scipy.stats"].norm,
        }, sys.stdout)
        """
    )
    assert seen["deferred"] == {"scipy.stats": True, "altair": True}
    assert seen["still_deferred_after_import"] is True
    assert seen["entropy"] == pytest.approx(0.5108256237659907)
    assert seen["real_in_sys_modules"] and seen["parent_attribute_is_real"] and seen["stand_in_reads_real_names"]


def test_a_module_imported_before_is_left_as_it_is() -> None:
    seen = _python(
        """
        import json, sys
        import scipy.stats
        from expectations.gx_import import DeferredModule, defer
        json.dump({"deferred": defer("scipy.stats"), "real": not isinstance(sys.modules["scipy.stats"], DeferredModule),
                   "missing": defer("no_such_module_here")}, sys.stdout)
        """
    )
    assert seen == {"deferred": False, "real": True, "missing": False}


def test_task_runner_is_chosen_when_the_run_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.backfill import historical_backfill
    from flows.incremental import incremental_update
    from flows.repair import repair_gaps

    for flow in (historical_backfill, incremental_update, repair_gaps):
        monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "processes")
        monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "3")
        runner = flow.task_runner.duplicate()
        assert (type(runner).__name__, runner._max_workers) == ("ProcessPoolTaskRunner", 3)  # type: ignore[attr-defined]
        monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "threads")
        runner = flow.task_runner.duplicate()
        assert (type(runner).__name__, runner._max_workers) == ("ThreadPoolTaskRunner", 3)  # type: ignore[attr-defined]


def test_a_run_uses_the_task_runner_set_after_the_flow_was_imported(
    prefect_harness: None, sqlite_url: str, reference_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import resource

    from flows.backfill import historical_backfill  # imported (its decorator evaluated) before the setting changes

    def children_cpu() -> float:  # CPU seconds of this process's children that have ended
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    args = dict(symbols=["AAPL", "MSFT"], start=dt.date(2024, 1, 1), end=dt.date(2024, 1, 31), timeframe="1m")
    monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "2")
    monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "threads")
    before = children_cpu()
    in_threads = historical_backfill(**args, warehouse_url=reference_url)
    threads_cpu = children_cpu() - before
    monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "processes")
    before = children_cpu()
    in_processes = historical_backfill(**args, warehouse_url=sqlite_url)
    processes_cpu = children_cpu() - before
    assert in_threads.ok and in_processes.ok and in_processes.bars_written == in_threads.bars_written
    # the pool's processes each import Prefect and the providers (seconds of CPU); threads start no process
    assert threads_cpu < 0.2 < processes_cpu
