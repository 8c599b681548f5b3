"""The Prefect UI's run form is the backfill interface: checked in a real browser (Playwright driving Debian's
Chromium) against the team server, with the worker running what the form submits."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, count
from tests.team_server import TeamServer

pytestmark = [pytest.mark.postgres, pytest.mark.server]

CHROMIUM = "/usr/bin/chromium"
OUTPUT = ROOT / "test-output" / "ui"
# Chromium as root on a machine without internet: no sandbox, no background calls home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# What the form must show for each parameter of historical_backfill: its label and its description.
SYMBOLS = "symbols (Optional)"  # empty when the universe chosen is ALL
FIELDS = {
    SYMBOLS: "Tickers to backfill, e.g. AAPL, MSFT, BRK.B",
    "universe (Optional)": "What symbols lists. tickers: the tickers themselves",
    "start": "First session date to fill (inclusive).",
    "end": "Last session date to fill (inclusive); on or after start.",
    "provider (Optional)": "Where the bars come from.",
    "timeframe (Optional)": "Bar size: 1m, 5m, 15m, 1h or 1d.",
    "mode (Optional)": "missing fetches what the ledger does not hold as loaded or empty",
    "on_invalid (Optional)": "A chunk failing validation: reject keeps all of it out",
    "dry_run (Optional)": "Plan only: say which chunks would be fetched",
    "max_cost_usd (Optional)": "For vendors that charge (databento)",
    "provider_options (Optional)": "Options for the provider, e.g.",
    "warehouse_url (Optional)": "SQLAlchemy URL of the warehouse.",
}


@pytest.fixture(scope="module")
def page(team: TeamServer, deployed: Any) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1800})
        context.route(re.compile(r"^https?://(?!127\.0\.0\.1|localhost)"), lambda route: route.abort())
        context.set_default_timeout(30_000)
        yield context.new_page()
        browser.close()


def field(page: Any, label: str) -> Any:
    """One parameter's block in the form: its label, its description and its input."""
    text = re.compile(rf"^{re.escape(label)}$")
    return page.locator("label[data-slot=label]").filter(has_text=text).locator("xpath=ancestor::div[./fieldset][1]")


def open_form(page: Any, team: TeamServer) -> str:
    from playwright.sync_api import expect

    deployment = team.deployment("historical_backfill", "backfill")
    page.goto(f"{team.ui}/v2/deployments/deployment/{deployment['id']}/run")
    expect(field(page, SYMBOLS)).to_be_visible()  # the form renders after its heading: wait for a field
    return str(deployment["id"])


def set_symbols(page: Any, values: list[str]) -> None:
    from playwright.sync_api import expect

    block = field(page, SYMBOLS)
    for i, value in enumerate(values):
        block.get_by_role("button", name="Add item", exact=True).click()
        block.locator("textarea").nth(i).fill(value)
    expect(block.locator("textarea")).to_have_count(len(values))


def set_date(page: Any, label: str, iso: str) -> None:
    from playwright.sync_api import expect

    picker = field(page, label).locator("fieldset button[aria-haspopup=dialog]")
    picker.click()
    box = page.get_by_label("Date (yyyy-MM-dd)")
    box.fill(iso)
    page.keyboard.press("Escape")
    expect(box).to_have_count(0)
    expect(picker).not_to_have_text("Pick a date")


def choose(page: Any, label: str, option: str) -> None:
    from playwright.sync_api import expect

    trigger = field(page, label).locator("fieldset button[aria-haspopup=listbox]")
    trigger.click()
    page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()
    expect(page.get_by_role("listbox")).to_have_count(0)
    expect(trigger).to_have_text(option)


def submit(page: Any, deployment_id: str) -> dict[str, Any]:
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/deployments/{deployment_id}/create_flow_run")
    ) as answer:
        page.get_by_role("button", name="Submit", exact=True).click()
    response = answer.value
    assert response.status == 201, response.text()
    return dict(response.json())


def test_the_run_form_shows_every_parameter_and_starts_a_backfill(
    page: Any, team: TeamServer, team_warehouse: str
) -> None:
    from playwright.sync_api import expect

    deployment_id = open_form(page, team)
    for label, description in FIELDS.items():
        block = field(page, label)
        expect(block).to_be_visible()
        expect(block.locator("label[data-slot=label] + p")).to_contain_text(description)
    choices = {"provider (Optional)": 5, "universe (Optional)": 4, "timeframe (Optional)": 5, "mode (Optional)": 3}
    for label, options in choices.items():
        field(page, label).locator("fieldset button[aria-haspopup=listbox]").click()
        expect(page.get_by_role("listbox").get_by_role("option")).to_have_count(options)
        page.keyboard.press("Escape")
    expect(field(page, "timeframe (Optional)").locator("fieldset button[aria-haspopup=listbox]")).to_have_text("1d")
    expect(field(page, "dry_run (Optional)").get_by_role("switch")).to_have_attribute("aria-checked", "false")

    set_symbols(page, ["AAPL", "MSFT"])
    set_date(page, "start", "2024-01-02")
    set_date(page, "end", "2024-01-31")
    choose(page, "timeframe (Optional)", "1h")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / "backfill-run-form.png"), full_page=True)
    run = submit(page, deployment_id)

    stored = team.flow_run(run["id"])["parameters"]
    assert {k: stored[k] for k in ("symbols", "start", "end", "timeframe", "provider", "mode")} == {
        "symbols": ["AAPL", "MSFT"],
        "start": "2024-01-02",
        "end": "2024-01-31",
        "timeframe": "1h",
        "provider": "synthetic",
        "mode": "missing",
    }
    final = team.wait_final(run["id"], timeout=180)  # the worker runs what the form submitted
    assert final["state_type"] == "COMPLETED", final["state"]["message"]
    sql = "SELECT count(*) FROM bars WHERE timeframe = '1h' AND ts >= '2024-01-02' AND ts < '2024-02-01'"
    assert count(team_warehouse, sql) == 2 * 21 * 7  # 21 sessions from 2 to 31 January 2024, 7 bars each


def test_a_form_run_with_start_after_end_fails_at_once_naming_it(page: Any, team: TeamServer) -> None:
    deployment_id = open_form(page, team)
    set_symbols(page, ["AAPL"])
    set_date(page, "start", "2024-01-31")
    set_date(page, "end", "2024-01-02")  # the form accepts it: the flow is where the contract lives
    run = submit(page, deployment_id)
    final = team.wait_final(run["id"], timeout=120)
    assert final["state_type"] == "FAILED"
    message = final["state"]["message"]
    assert message.endswith("end date 2024-01-02 is before start date 2024-01-31: swap them or fix one"), message
    assert len(message.splitlines()) == 1


def test_the_form_edits_provider_options_as_json(page: Any, team: TeamServer) -> None:
    from playwright.sync_api import expect

    deployment_id = open_form(page, team)
    set_symbols(page, ["AAPL"])
    set_date(page, "start", "2024-03-01")
    set_date(page, "end", "2024-03-28")
    editor = field(page, "provider_options (Optional)").get_by_role("textbox")
    expect(editor).to_be_visible()
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps({"seed": 7}))  # typed keys would get auto-closed brackets
    expect(editor).to_have_text('{"seed": 7}')
    dry_run = field(page, "dry_run (Optional)").get_by_role("switch")
    dry_run.click()
    expect(dry_run).to_have_attribute("aria-checked", "true")
    run = submit(page, deployment_id)
    stored = team.flow_run(run["id"])["parameters"]
    assert stored["provider_options"] == {"seed": 7} and stored["dry_run"] is True
    final = team.wait_final(run["id"], timeout=120)
    assert final["state_type"] == "COMPLETED", final["state"]["message"]


def test_the_form_offers_every_ticker_and_a_run_of_all_loads_each_session_whole(
    page: Any, team: TeamServer, team_warehouse: str
) -> None:
    """The universe choice ALL, symbols left empty, loads every ticker the provider lists, one ledger row per
    session."""
    deployment_id = open_form(page, team)
    choose(page, "universe (Optional)", "ALL")
    set_date(page, "start", "2019-05-06")
    set_date(page, "end", "2019-05-10")
    editor = field(page, "provider_options (Optional)").get_by_role("textbox")
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text(json.dumps({"listed_symbols": 12}))
    run = submit(page, deployment_id)
    stored = team.flow_run(run["id"])["parameters"]
    assert stored["universe"] == "ALL" and not stored.get("symbols"), stored
    final = team.wait_final(run["id"], timeout=180)
    assert final["state_type"] == "COMPLETED", final["state"]["message"]
    window = "provider = 'synthetic' AND timeframe = '1d' AND ts >= '2019-05-06' AND ts < '2019-05-11'"
    assert count(team_warehouse, f"SELECT count(DISTINCT symbol) FROM bars WHERE {window}") == 12
    assert count(team_warehouse, f"SELECT count(*) FROM bars WHERE {window}") == 12 * 5
    sessions = "symbol = '*' AND window_start >= '2019-05-06' AND window_start < '2019-05-11'"
    assert count(team_warehouse, f"SELECT count(*) FROM ingest_ledger WHERE {sessions}") == 5


def test_the_form_runs_a_named_universe_given_by_its_name(page: Any, team: TeamServer, team_warehouse: str) -> None:
    """The universe choice named, with the universe's name in symbols, backfills its tickers."""
    from warehouse.universes import save_universe

    save_universe(team_warehouse, "ui-pair", "typed by hand", ["UIA", "UIB"])
    deployment_id = open_form(page, team)
    choose(page, "universe (Optional)", "named")
    set_symbols(page, ["ui-pair"])
    set_date(page, "start", "2024-03-04")
    set_date(page, "end", "2024-03-08")
    run = submit(page, deployment_id)
    stored = team.flow_run(run["id"])["parameters"]
    assert (stored["universe"], stored["symbols"]) == ("named", ["ui-pair"])
    final = team.wait_final(run["id"], timeout=180)
    assert final["state_type"] == "COMPLETED", final["state"]["message"]
    sql = "SELECT count(*) FROM bars WHERE symbol IN ('UIA', 'UIB') AND timeframe = '1d'"
    assert count(team_warehouse, sql) == 2 * 5
