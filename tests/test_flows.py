"""The flows under a real (temporary) Prefect server, on SQLite and PostgreSQL."""

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from candleflow.errors import IncompleteRunError
from candleflow.model import LedgerStatus
from flows.backfill import historical_backfill
from flows.incremental import incremental_update
from tests.conftest import count
from warehouse.engine import get_engine
from warehouse.queries import has_schema, read_ledger

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
D = dt.date


def bars_of(url: str) -> pd.DataFrame:
    with get_engine(url).connect() as conn:
        frame = pd.read_sql(sa.text("SELECT * FROM bars ORDER BY symbol, timeframe, ts"), conn)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def test_backfill_then_rerun_fetches_nothing(warehouse_url: str) -> None:
    args = dict(symbols=["AAPL", "MSFT"], start=D(2023, 6, 1), end=D(2024, 12, 31), warehouse_url=warehouse_url)
    first = historical_backfill(**args)
    assert first.counts()["loaded"] == 2 and first.skipped == 0  # one 2020-2024 chunk per symbol
    assert first.bars_written == count(warehouse_url, "SELECT count(*) FROM bars") == 2 * (147 + 252)
    second = historical_backfill(**args)
    assert second.results == [] and second.skipped == 2
    assert "nothing to fetch" in second.headline()
    mode_all = historical_backfill(**args, mode="all")
    assert len(mode_all.results) == 2 and mode_all.unchanged == 2 and mode_all.bars_written == 0


def test_transient_failures_are_retried_and_equal_a_clean_run(warehouse_url: str, reference_url: str) -> None:
    args = dict(symbols=["IBM", "KO", "PEP"], start=D(2024, 1, 1), end=D(2024, 6, 30), timeframe="1h")
    flaky = historical_backfill(
        **args,
        warehouse_url=warehouse_url,
        provider_options={"transient_failure_rate": 1.0, "transient_failures_per_request": 2, "seed": 5},
    )
    assert flaky.ok and flaky.counts()["loaded"] == 6
    clean = historical_backfill(**args, warehouse_url=reference_url, provider_options={"seed": 5})
    assert clean.ok
    assert len(bars_of(reference_url)) == 3 * 124 * 7  # 124 sessions in H1 2024, 7 hourly bars each
    pd.testing.assert_frame_equal(bars_of(warehouse_url), bars_of(reference_url), check_dtype=False)


def test_too_many_transient_failures_end_failed_in_the_ledger(warehouse_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANDLEFLOW_RETRIES", "1")
    with pytest.raises(IncompleteRunError) as info:
        historical_backfill(
            symbols=["AAPL"],
            start=D(2024, 1, 1),
            end=D(2024, 1, 31),
            warehouse_url=warehouse_url,
            provider_options={"transient_failure_rate": 1.0, "transient_failures_per_request": 5, "seed": 11},
        )
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.FAILED and "TransientProviderError" in (result.error or "")
    (entry,) = read_ledger(get_engine(warehouse_url))
    assert entry.status is LedgerStatus.FAILED


def test_one_task_for_many_chunks_retries_only_those_that_did_not_end(sqlite_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from providers.synthetic import SyntheticProvider

    monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "1")  # one batch: every chunk in one task
    monkeypatch.setenv("CANDLEFLOW_RETRY_BACKOFF_SECONDS", "0")
    calls: list[str] = []
    real_fetch = SyntheticProvider.fetch

    def counted(self, request):  # type: ignore[no-untyped-def]
        calls.append(request.symbols[0])
        return real_fetch(self, request)

    monkeypatch.setattr(SyntheticProvider, "fetch", counted)
    symbols = [f"R{i:02d}" for i in range(12)]
    options = {"transient_failure_rate": 0.25, "transient_failures_per_request": 1, "seed": 4}
    summary = historical_backfill(
        symbols=symbols, start=D(2024, 1, 1), end=D(2024, 12, 31), warehouse_url=sqlite_url, provider_options=options
    )
    assert summary.ok and summary.counts()["loaded"] == 12 and summary.bars_written == 12 * 252
    fetched = {s: calls.count(s) for s in symbols}
    flaky = [s for s, n in fetched.items() if n == 2]
    assert flaky and set(fetched.values()) <= {1, 2}, fetched  # a chunk that loaded is never fetched again
    assert summary.stages.fetch > 0 and summary.stages.validate > 0 and summary.stages.load > 0
    # one failure per flaky request: the first attempt did every other chunk, the one retry all the flaky ones
    assert len(summary.stages.spans) == 2


@pytest.mark.postgres
def test_chunk_tasks_in_a_pool_of_processes_load_what_threads_load(
    postgres_url: str, reference_url: str, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from flows.runs import chunk_task_runner

    monkeypatch.setenv("CANDLEFLOW_TASK_RUNNER", "processes")
    monkeypatch.setenv("CANDLEFLOW_TASK_WORKERS", "2")
    runner = chunk_task_runner()
    assert type(runner).__name__ == "ProcessPoolTaskRunner"
    args = dict(symbols=["AAPL", "MSFT"], start=D(2024, 1, 1), end=D(2024, 1, 31), timeframe="1m")
    in_processes = historical_backfill.with_options(task_runner=runner)(**args, warehouse_url=postgres_url)
    assert in_processes.ok and in_processes.counts()["loaded"] == 2
    assert in_processes.stages.load > 0 and len(in_processes.stages.spans) == 2  # one batch per process
    in_threads = historical_backfill(**args, warehouse_url=reference_url)
    pd.testing.assert_frame_equal(bars_of(postgres_url), bars_of(reference_url), check_dtype=False)
    assert in_processes.bars_written == in_threads.bars_written


def test_terminal_errors_are_not_retried(warehouse_url: str) -> None:
    state = historical_backfill(
        symbols=["AAPL", "NOPE"],
        start=D(2024, 1, 1),
        end=D(2024, 1, 31),
        warehouse_url=warehouse_url,
        provider_options={"unknown_symbols": ["NOPE"]},
        return_state=True,
    )
    assert state.is_failed()
    summary = state.result(raise_on_failure=False).summary
    statuses = {r.chunk.symbol: r.status for r in summary.results}
    assert statuses == {"AAPL": LedgerStatus.LOADED, "NOPE": LedgerStatus.FAILED}
    from prefect import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs()
    nope = [
        r
        for r in runs
        if r.name.startswith("ingest") and "NOPE" in r.name and r.flow_run_id == state.state_details.flow_run_id
    ]
    assert len(nope) == 1 and nope[0].run_count == 1  # one attempt, no retry


def test_invalid_bars_are_rejected_quarantined_and_reported(warehouse_url: str) -> None:
    state = historical_backfill(
        symbols=["AAPL", "MSFT", "SPY", "QQQ"],
        start=D(2024, 1, 1),
        end=D(2024, 12, 31),
        warehouse_url=warehouse_url,
        provider_options={"invalid_chunk_rate": 0.5, "seed": 3},
        return_state=True,
    )
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, IncompleteRunError)
    rejected = [r for r in error.summary.results if r.status is LedgerStatus.REJECTED]
    loaded = [r for r in error.summary.results if r.status is LedgerStatus.LOADED]
    assert rejected and loaded, "seed 3 corrupts some but not all of the four chunks"
    for r in rejected:
        assert r.failed_expectations and r.chunk.label() in str(error)
        assert r.error is not None and "quarantined, none loaded" in r.error
    engine = get_engine(warehouse_url)
    with engine.connect() as conn:
        loaded_symbols = set(pd.read_sql(sa.text("SELECT DISTINCT symbol FROM bars"), conn)["symbol"])
        quarantined = pd.read_sql(sa.text("SELECT DISTINCT symbol, flow_run_id FROM quarantine"), conn)
    assert loaded_symbols == {r.chunk.symbol for r in loaded}
    assert set(quarantined["symbol"]) == {r.chunk.symbol for r in rejected}
    assert set(quarantined["flow_run_id"]) == {str(state.state_details.flow_run_id)}
    assert {e.symbol for e in read_ledger(engine) if e.status is LedgerStatus.REJECTED} == {
        r.chunk.symbol for r in rejected
    }
    # a rerun in mode=failed fetches only the rejected chunks (still corrupt: same seed, same answer)
    with pytest.raises(IncompleteRunError) as again:
        historical_backfill(
            symbols=["AAPL", "MSFT", "SPY", "QQQ"],
            start=D(2024, 1, 1),
            end=D(2024, 12, 31),
            warehouse_url=warehouse_url,
            provider_options={"invalid_chunk_rate": 0.5, "seed": 3},
            mode="failed",
        )
    assert {r.chunk.symbol for r in again.value.summary.results} == {r.chunk.symbol for r in rejected}


def test_quarantine_rows_mode_loads_the_rest_and_settles(warehouse_url: str) -> None:
    args = dict(
        symbols=["AAPL"],
        start=D(2024, 1, 1),
        end=D(2024, 12, 31),
        warehouse_url=warehouse_url,
        provider_options={"invalid_chunk_rate": 1.0},
        on_invalid="quarantine_rows",
    )
    with pytest.raises(IncompleteRunError) as info:  # the run that finds bad rows reports them
        historical_backfill(**args)
    (result,) = info.value.summary.results
    assert result.status is LedgerStatus.PARTIAL
    assert result.error is not None and result.error.startswith("1 bad row(s) quarantined, the other 251 loaded: ")
    assert "did not load everything (1 partial, 0 rejected" in str(info.value)

    def state() -> tuple[int, int, list[tuple[LedgerStatus, int | None]]]:
        ledger = [(e.status, e.rows) for e in read_ledger(get_engine(warehouse_url))]
        return (
            count(warehouse_url, "SELECT count(*) FROM bars"),
            count(warehouse_url, "SELECT count(*) FROM quarantine"),
            ledger,
        )

    assert state() == (251, 1, [(LedgerStatus.PARTIAL, 251)])
    # settled: neither missing nor failed fetches it again; all refetches it and, the source unchanged, writes nothing
    assert historical_backfill(**args, mode="failed").results == []
    assert historical_backfill(**args).results == []
    with pytest.raises(IncompleteRunError) as again:
        historical_backfill(**args, mode="all")
    (result,) = again.value.summary.results
    assert result.unchanged and again.value.summary.bars_written == 0
    assert state() == (251, 1, [(LedgerStatus.PARTIAL, 251)])
    # the same bad source, rejected whole: the ledger still counts the good bars that stay from before
    with pytest.raises(IncompleteRunError):
        historical_backfill(**{**args, "on_invalid": "reject"}, mode="all")
    assert state() == (251, 252, [(LedgerStatus.REJECTED, 251)])
    with pytest.raises(IncompleteRunError):
        historical_backfill(**{**args, "on_invalid": "reject"}, mode="failed")
    assert state() == (251, 252, [(LedgerStatus.REJECTED, 251)])


def test_incremental_resumes_from_the_watermark(warehouse_url: str, reference_url: str) -> None:
    historical_backfill(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 3, 28), warehouse_url=warehouse_url)
    update = incremental_update(
        symbols=["AAPL", "NEW"], end=D(2024, 4, 30), lookback_days=10, warehouse_url=warehouse_url
    )
    assert update.ok
    starts = {r.chunk.symbol: r.chunk.window_start for r in update.results}
    assert starts["AAPL"] == pd.Timestamp("2024-03-27", tz="UTC")  # one session before the 03-28 watermark
    assert starts["NEW"] == pd.Timestamp("2024-04-20", tz="UTC")  # lookback for a new series
    historical_backfill(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 4, 30), warehouse_url=reference_url)
    mine = bars_of(warehouse_url)
    pd.testing.assert_frame_equal(
        mine[mine.symbol == "AAPL"].reset_index(drop=True), bars_of(reference_url), check_dtype=False
    )
    assert mine[mine.symbol == "NEW"]["ts"].min() == pd.Timestamp("2024-04-22", tz="UTC")
    again = incremental_update(symbols=["AAPL"], end=D(2024, 4, 30), warehouse_url=warehouse_url)
    assert again.bars_written == 0 and again.results[0].chunk.window_start == pd.Timestamp("2024-04-29", tz="UTC")


def test_incremental_intraday_overlap_is_one_day(sqlite_url: str) -> None:
    historical_backfill(
        symbols=["SPY"], start=D(2024, 3, 1), end=D(2024, 3, 15), timeframe="5m", warehouse_url=sqlite_url
    )
    update = incremental_update(symbols=["SPY"], timeframes=["5m"], end=D(2024, 3, 20), warehouse_url=sqlite_url)
    assert update.results[0].chunk.window_start == pd.Timestamp("2024-03-14", tz="UTC")
    assert count(sqlite_url, "SELECT count(*) FROM bars") == 78 * 14


def test_dry_run_writes_nothing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'dry.db'}"
    summary = historical_backfill(
        symbols=["AAPL", "MSFT"], start=D(2015, 1, 1), end=D(2024, 12, 31), warehouse_url=url, dry_run=True
    )
    # two five-year chunks per symbol
    assert summary.dry_run and summary.planned == 4 and len(summary.todo) == 4 and summary.results == []
    assert not (tmp_path / "dry.db").exists() or not has_schema(get_engine(url))


def test_configured_limits_are_used(sqlite_url: str) -> None:
    from prefect import get_client

    from cli import main
    from tasks.limits import configured_limits

    assert configured_limits("synthetic", sqlite_url).warehouse is None  # a fresh warehouse has no limit
    assert (
        main(
            [
                "setup",
                "--provider",
                "synthetic",
                "--warehouse",
                sqlite_url,
                "--requests-per-second",
                "100",
                "--warehouse-slots",
                "2",
            ]
        )
        == 0
    )
    names = configured_limits("synthetic", sqlite_url)
    assert names.provider == "candleflow-provider-synthetic" and names.warehouse is not None
    summary = historical_backfill(
        symbols=["AAPL", "MSFT"], start=D(2024, 1, 1), end=D(2024, 2, 29), warehouse_url=sqlite_url
    )
    assert summary.ok and summary.counts()["loaded"] == 2
    with get_client(sync_client=True) as client:
        warehouse_limit = client.read_global_concurrency_limit_by_name(names.warehouse)
        provider_limit = client.read_global_concurrency_limit_by_name(names.provider)
    assert warehouse_limit.limit == 2 and warehouse_limit.active_slots == 0  # taken and given back
    assert provider_limit.slot_decay_per_second == 100


def test_csv_provider_backfills_through_the_flow(warehouse_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests.providers_support import synthetic_bars, write_csv_dir

    options = {"directory": str(write_csv_dir(tmp_path))}
    args = dict(
        symbols=["AAPL", "MSFT"],
        start=D(2024, 1, 1),
        end=D(2024, 3, 31),
        provider="csv",
        warehouse_url=warehouse_url,
        provider_options=options,
    )
    summary = historical_backfill(**args)
    assert summary.ok and summary.counts()["loaded"] == 2 and summary.bars_written == 2 * 61
    assert historical_backfill(**args).results == []
    stored = bars_of(warehouse_url)
    assert set(stored["provider"]) == {"csv"}
    expected = synthetic_bars("AAPL", "1d")
    assert np.allclose(stored[stored.symbol == "AAPL"]["close"].to_numpy(), expected["close"].to_numpy())
    with pytest.raises(IncompleteRunError, match="no file for ZZZ"):
        historical_backfill(**{**args, "symbols": ["ZZZ"]})


def test_polygon_provider_backfills_through_the_flow(warehouse_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.polygon_server import KEY, polygon_stand_in
    from tests.providers_support import synthetic_bars

    with polygon_stand_in({"AAPL", "MSFT"}, page_size=300) as server:
        monkeypatch.setenv("MASSIVE_API_KEY", KEY)
        server.scripted.append((429, {"Retry-After": "0"}))  # the first request is rate limited: Prefect retries
        args = dict(
            symbols=["AAPL", "MSFT"],
            start=D(2024, 1, 1),
            end=D(2024, 3, 31),
            timeframe="1h",
            provider="polygon",
            warehouse_url=warehouse_url,
            provider_options={"base_url": server.url},
        )
        summary = historical_backfill(**args)
        assert summary.ok and summary.counts()["loaded"] == 2 and summary.bars_written == 2 * 61 * 7
        assert historical_backfill(**args).results == []
    stored = bars_of(warehouse_url)
    expected = synthetic_bars("MSFT", "1h")
    assert np.allclose(stored[stored.symbol == "MSFT"]["close"].to_numpy(), expected["close"].to_numpy())
    assert KEY not in str(stored.to_dict()) and set(stored["provider"]) == {"polygon"}


def test_keys_from_a_secret_block_never_leak(sqlite_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from prefect import get_client
    from prefect.blocks.system import Secret
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    from tests.polygon_server import KEY, polygon_stand_in

    monkeypatch.delenv("MASSIVE_API_KEY", raising=False)
    monkeypatch.delenv("POLYGON_API_KEY", raising=False)
    Secret(value=KEY).save("candleflow-test-polygon-key", overwrite=True)
    Secret(value="refused-key-7e2b").save("candleflow-test-bad-key", overwrite=True)
    with polygon_stand_in({"AAPL"}) as server:
        args = dict(
            symbols=["AAPL"],
            start=D(2024, 3, 1),
            end=D(2024, 3, 31),
            provider="polygon",
            warehouse_url=sqlite_url,
            provider_options={"base_url": server.url},
        )
        monkeypatch.setenv("CANDLEFLOW_POLYGON_API_KEY_BLOCK", "candleflow-test-polygon-key")
        good = historical_backfill(**args, return_state=True)
        assert good.is_completed() and good.result().counts()["loaded"] == 1
        assert server.requests[0]["authorization"] == f"Bearer {KEY}"
        monkeypatch.setenv("CANDLEFLOW_POLYGON_API_KEY_BLOCK", "candleflow-test-bad-key")
        bad = historical_backfill(**{**args, "mode": "all"}, return_state=True)
        assert bad.is_failed()
        error = bad.result(raise_on_failure=False)
        assert "HTTP 401" in str(error) and "MASSIVE_API_KEY" in str(error)
    runs = [good.state_details.flow_run_id, bad.state_details.flow_run_id]
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=runs)))
        artifacts = client.read_artifacts()
        flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=runs)))
    with get_engine(sqlite_url).connect() as conn:
        ledger = pd.read_sql(sa.text("SELECT * FROM ingest_ledger"), conn)
    seen = " ".join(
        [
            str(error),
            repr(error),
            " ".join(log.message for log in logs),
            " ".join(str(a.data) + str(a.description) for a in artifacts),
            " ".join(str(r.parameters) + str(r.state) for r in flow_runs),
            ledger.to_csv(),
        ]
    )
    assert logs and "401" in seen
    for key in (KEY, "refused-key-7e2b"):
        assert key not in seen


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"symbols": ["AAPL", "NOT OK"]}, "malformed symbol 'NOT OK'"),
        ({"timeframe": "2h"}, "unknown timeframe '2h'"),
        ({"provider": "yahoo"}, "unknown provider 'yahoo'"),
        ({"end": D(2023, 1, 1)}, "is before start date"),
        ({"mode": "some"}, "unknown mode 'some'"),
        ({"provider": "csv", "provider_options": {"timezone": "New_York"}}, "unknown time zone 'New_York'"),
        ({"provider": "csv", "provider_options": {"directory": "/no/such/dir"}}, "directory /no/such/dir does not"),
        (
            {"provider": "csv", "symbols": ["../../etc/SECRET"], "provider_options": {"directory": "/tmp"}},
            "symbol '../../ETC/SECRET' points outside the directory /tmp",
        ),
    ],
)
def test_flows_reject_bad_input_from_any_caller(sqlite_url: str, tmp_path, changes, message) -> None:  # type: ignore[no-untyped-def]
    from candleflow.errors import BadInputError

    args = dict(symbols=["AAPL"], start=D(2024, 1, 1), end=D(2024, 1, 31), warehouse_url=sqlite_url) | changes
    with pytest.raises(BadInputError, match=message):
        historical_backfill(**args)
    assert not (tmp_path / "warehouse.db").exists()  # nothing written


def test_small_runs_spread_over_the_workers_only_where_their_tasks_can_overlap() -> None:
    from candleflow.settings import RunSettings
    from flows.chunks import spread_over
    from providers import get_provider

    threads, processes = RunSettings(task_workers=4), RunSettings(task_workers=4, task_runner="processes")
    local, remote = get_provider("synthetic").capabilities, get_provider("polygon", {"api_key": "k"}).capabilities
    assert not local.remote and remote.remote and not get_provider("csv").capabilities.remote
    assert spread_over(threads, local) == 1  # computed bars hold the GIL: one batch, one suite call
    assert spread_over(processes, local) == 4
    assert spread_over(threads, remote) == 4  # a vendor's waits overlap


def test_a_retried_batch_reports_every_chunk_as_it_ended(sqlite_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A restatement whose batch was retried: the chunks the first attempt revised still count as revised."""
    from providers.base import FetchRequest, FetchResult
    from providers.synthetic import SyntheticProvider

    monkeypatch.setenv("CANDLEFLOW_RETRY_BACKOFF_SECONDS", "0")
    symbols = [f"R{i:02d}" for i in range(12)]
    args = dict(symbols=symbols, start=D(2024, 1, 1), end=D(2024, 12, 31), warehouse_url=sqlite_url)
    assert historical_backfill(**args, provider_options={"seed": 1}).ok
    calls: list[str] = []
    real_fetch = SyntheticProvider.fetch

    def counted(self: SyntheticProvider, request: FetchRequest) -> FetchResult:
        calls.append(request.symbols[0])
        return real_fetch(self, request)

    monkeypatch.setattr(SyntheticProvider, "fetch", counted)
    flaky = {"seed": 2, "transient_failure_rate": 0.25, "transient_failures_per_request": 1}
    restated = historical_backfill(**args, mode="all", provider_options=flaky)
    assert len(calls) > len(set(calls)) == 12  # some were retried, and none that ended was fetched again
    assert restated.ok and restated.revised == 12 and restated.counts()["loaded"] == 12


def test_a_run_ends_with_its_chunk_count_on_its_labels(sqlite_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The labels a crash notice reads are written in the background, throttled: the last count still lands
    before the run ends, and a lower count never overwrites it."""
    from prefect import get_client

    monkeypatch.setenv("CANDLEFLOW_BATCH_CHUNKS", "1")  # a task per chunk: many counts asked close together
    state = historical_backfill(
        symbols=["AAPL", "MSFT", "NVDA"],
        start="2023-01-01",
        end="2024-12-31",
        warehouse_url=sqlite_url,
        timeframe="1h",
        return_state=True,
    )
    assert state.is_completed()
    with get_client(sync_client=True) as client:
        labels = client.read_flow_run(state.state_details.flow_run_id).labels
    planned = labels["candleflow.chunks_planned"]
    assert planned > 3 and labels["candleflow.chunks_ended"] == planned
