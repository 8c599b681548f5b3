"""The provider's shape: the registry of classes, each one's settings (options over its variables, key aliases,
its Secret block), and the one mapping of HTTP answers to error classes."""

import dataclasses
from pathlib import Path
from typing import get_args

import pytest

from candleflow.errors import BadInputError, CandleflowError
from providers import PROVIDERS, ProviderName, get_provider
from providers.errors import ProviderError, TerminalProviderError, TransientProviderError, http_error
from providers.settings import KeyBlock

WHERE = {"provider": "p", "symbols": ["AAPL"]}
REFUSED = "the API key was refused; check P_KEY"


@pytest.fixture(autouse=True)
def _no_dotenv_here(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read `.env` in the working directory: work where there is none but the test's own."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CANDLEFLOW_POLYGON_API_KEY_BLOCK", raising=False)


def test_the_name_type_is_the_registry() -> None:
    assert get_args(ProviderName) == tuple(PROVIDERS)
    for name, cls in PROVIDERS.items():
        assert cls.name == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            cls.capabilities.requests_per_second = 1.0  # type: ignore[misc]


def test_every_provider_error_is_a_candleflow_error() -> None:
    assert issubclass(TransientProviderError, ProviderError) and issubclass(ProviderError, CandleflowError)


@pytest.mark.parametrize(
    ("status", "retry_after", "kind", "message", "seconds"),
    [
        (429, "7", TransientProviderError, "rate limited (HTTP 429)", 7.0),
        (503, "Wed, 21 Oct 2026 07:28:00 GMT", TransientProviderError, "server error (HTTP 503)", None),
        (500, None, TransientProviderError, "server error (HTTP 500)", None),
        (401, "7", TerminalProviderError, f"HTTP 401: {REFUSED}", None),
        (403, None, TerminalProviderError, f"HTTP 403: {REFUSED}", None),
        (404, None, TerminalProviderError, "HTTP 404 for AAPL", None),
    ],
)
def test_one_mapping_of_http_answers(
    status: int, retry_after: str | None, kind: type, message: str, seconds: float | None
) -> None:
    error = http_error(status, WHERE, refused=REFUSED, request_id="r-1", retry_after=retry_after, detail=" for AAPL")
    assert type(error) is kind and error.args[0] == message
    assert (error.http_status, error.request_id, error.retry_after, error.symbols) == (
        status,
        "r-1",
        seconds,
        ("AAPL",),
    )


def test_the_vendors_own_name_for_a_failure_can_decide() -> None:
    slow = http_error(400, WHERE, refused=REFUSED, label="RequestTimeout", transient=True)
    assert isinstance(slow, TransientProviderError) and slow.args[0] == "RequestTimeout (HTTP 400)"
    denied = http_error(400, WHERE, refused=REFUSED, label="InvalidToken", key_refused=True)
    assert isinstance(denied, TerminalProviderError) and denied.args[0] == f"InvalidToken (HTTP 400): {REFUSED}"


def test_a_key_by_any_of_its_names_the_first_winning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASSIVE_API_KEY", "")  # empty: as if unset
    monkeypatch.setenv("POLYGON_API_KEY", "old-name")
    assert get_provider("polygon").settings.key() == "old-name"
    monkeypatch.setenv("MASSIVE_API_KEY", "new-name")
    assert get_provider("polygon").settings.key() == "new-name"
    assert get_provider("polygon", {"api_key": "given"}).settings.key() == "given"  # an option wins
    monkeypatch.delenv("MASSIVE_API_KEY")
    monkeypatch.delenv("POLYGON_API_KEY")
    assert get_provider("polygon").settings.missing_keys() == "MASSIVE_API_KEY (or POLYGON_API_KEY)"


def test_options_fall_back_to_the_providers_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CANDLEFLOW_POLYGON_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CANDLEFLOW_CSV_DIR", str(tmp_path))
    assert get_provider("polygon").settings.base_url == "http://127.0.0.1:9"
    assert get_provider("polygon", {"base_url": "http://x"}).settings.base_url == "http://x"
    assert get_provider("csv").directory() == tmp_path


def test_the_secret_block_is_the_providers_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_DATABENTO_API_KEY_BLOCK", "db-key")
    databento = get_provider("databento", {"dataset": "XNAS.ITCH"})
    assert databento.settings.key_block() == KeyBlock("db-key", "CANDLEFLOW_DATABENTO_API_KEY_BLOCK")
    assert get_provider("polygon").settings.key_block() == KeyBlock(None, "CANDLEFLOW_POLYGON_API_KEY_BLOCK")
    assert get_provider("polygon-flatfiles").settings.key_block() is None  # its keys come from the environment


def test_a_dotenv_file_is_read_and_its_other_lines_left_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "CANDLEFLOW_WAREHOUSE_URL=sqlite:///x.db\nCANDLEFLOW_POLYGON_API_KEY_BLOCK=from-dotenv\nCANDLEFLOW_POLYGON_X=1\n"
    )
    monkeypatch.chdir(tmp_path)
    assert get_provider("polygon").settings.api_key_block == "from-dotenv"


@pytest.mark.parametrize("option", ["colour", "_env_file", "MASSIVE_API_KEY"])
def test_only_the_providers_own_options_are_taken(option: str) -> None:
    with pytest.raises(BadInputError, match=f"bad option for provider 'polygon': {option}: Extra inputs"):
        get_provider("polygon", {option: "x"})
