"""Notices where no server Automation sends them (a temporary server, or set-up not run): the flows' hooks send
them through the configured channels, with the chunk-level detail; nothing is sent on success unless asked."""

import datetime as dt
import time
from typing import Any

import pytest
from prefect.blocks.notifications import CustomWebhookNotificationBlock

from flows.backfill import historical_backfill
from tasks.notify import webhook_block
from tests.team_server import NoticeReceiver

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_harness")]
D = dt.date
ARGS = dict(start=D(2023, 1, 1), end=D(2023, 12, 31))


def failing_run(symbols: list[str], url: str) -> Any:
    """The final state of a backfill of `symbols` into `url` whose every chunk fails validation."""
    return historical_backfill(
        symbols=symbols, provider_options={"invalid_chunk_rate": 1.0}, warehouse_url=url, return_state=True, **ARGS
    )


def notices_for(receiver: NoticeReceiver, run_name: str) -> list[dict[str, str]]:
    time.sleep(0.5)  # the hook posts before the run call returns; allow the receiver's thread to store it
    return [n for n in receiver.received if run_name in n["subject"]]


def test_a_failed_run_sends_its_chunks_and_counts(sqlite_url: str, receiver: NoticeReceiver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANDLEFLOW_NOTIFY_WEBHOOK_URL", receiver.url)
    state = failing_run(["NTF1", "NTF2"], sqlite_url)
    assert state.is_failed()
    (notice,) = notices_for(receiver, "NTF1,NTF2")
    assert notice["source"] == "candleflow"
    assert (
        notice["subject"] == "candleflow: historical_backfill run synthetic NTF1,NTF2 1d 2023-01-01..2023-12-31 Failed"
    )
    body = notice["body"].splitlines()
    assert body[0] == "historical_backfill run synthetic NTF1,NTF2 1d 2023-01-01..2023-12-31 ended Failed."
    assert body[1].startswith("historical_backfill: 2 chunks run (")
    assert body[2] == "2 of 2 chunk(s) did not load (2 rejected, 0 failed; 0 loaded, 0 empty):"
    for symbol in ("NTF1", "NTF2"):
        label = f"synthetic:{symbol}:1d:2023-01-01..2023-12-31 rejected: 1 bad row(s); all 250 quarantined"
        assert any(line.strip().startswith(label) for line in body[3:5])
    assert body[-1].startswith("run: http://127.0.0.1:") and str(state.state_details.flow_run_id) in body[-1]


def test_success_is_quiet_unless_asked(sqlite_url: str, receiver: NoticeReceiver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANDLEFLOW_NOTIFY_WEBHOOK_URL", receiver.url)
    historical_backfill(symbols=["QUIET"], warehouse_url=sqlite_url, **ARGS)
    assert notices_for(receiver, "QUIET") == []
    monkeypatch.setenv("CANDLEFLOW_NOTIFY_ON_SUCCESS", "true")
    historical_backfill(symbols=["LOUD"], warehouse_url=sqlite_url, **ARGS)
    (notice,) = notices_for(receiver, "LOUD")
    assert notice["subject"].endswith(" Completed")
    assert "historical_backfill: 1 chunks run (1 loaded" in notice["body"]


def test_a_named_block_is_used_as_it_is(sqlite_url: str, receiver: NoticeReceiver, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    webhook_block(receiver.url).save("team-alerts", overwrite=True)
    monkeypatch.setenv("CANDLEFLOW_NOTIFY_BLOCK", "team-alerts")
    state = failing_run(["NAMED"], sqlite_url)
    assert state.is_failed()
    assert len(notices_for(receiver, "NAMED")) == 1
    assert isinstance(CustomWebhookNotificationBlock.load("team-alerts"), CustomWebhookNotificationBlock)


def test_a_missing_block_is_logged_and_the_run_keeps_its_state(sqlite_url: str, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("CANDLEFLOW_NOTIFY_BLOCK", "no-such-block")
    state = failing_run(["NOBLK"], sqlite_url)
    assert state.is_failed() and "NOBLK" in str(state.message)
    assert "no Prefect notification block named 'no-such-block'" in caplog.text
