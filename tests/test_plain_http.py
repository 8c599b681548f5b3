"""Prefect's clients of a plain-http API get a CA file of one certificate (deployments/prefect_api.py): each client
Prefect makes builds a TLS context, and with the whole CA bundle that cost ~25 ms of CPU per client during a
run, for connections that never use TLS. Checked here: the file is a real one-certificate bundle, only http gets
it, and it reaches the threads where Prefect's services build their clients, then goes away."""

from __future__ import annotations

import ssl
import threading
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY, temporary_settings

from deployments.prefect_api import plain_http_ca_file, plain_http_clients


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path


def test_a_plain_http_api_gets_a_bundle_of_one_certificate(runtime_dir: Path) -> None:
    path = plain_http_ca_file("http://127.0.0.1:4200/api")
    assert path is not None and Path(path).parent == runtime_dir
    text = Path(path).read_text()
    assert text.count("-----BEGIN CERTIFICATE-----") == 1 and text.endswith("-----END CERTIFICATE-----\n")
    context = ssl.create_default_context(cafile=path)  # what Prefect does with it
    assert context.cert_store_stats()["x509_ca"] == 1
    assert plain_http_ca_file("http://127.0.0.1:4200/api") == path  # made once, then reused


@pytest.mark.parametrize("url", ["https://prefect.example.com/api", "HTTPS://prefect.example.com/api"])
def test_an_https_api_keeps_the_users_certificates(url: str) -> None:
    assert plain_http_ca_file(url) is None


def test_no_file_where_verification_is_off() -> None:
    with temporary_settings(updates={PREFECT_API_TLS_INSECURE_SKIP_VERIFY: True}):
        assert plain_http_ca_file("http://127.0.0.1:4200/api") is None


def test_the_setting_reaches_threads_started_in_the_block_and_is_given_back() -> None:
    before = PREFECT_API_SSL_CERT_FILE.value()
    seen: list[str | None] = []
    with plain_http_clients("http://127.0.0.1:4200/api"):
        thread = threading.Thread(target=lambda: seen.append(PREFECT_API_SSL_CERT_FILE.value()))
        thread.start()
        thread.join()
    assert seen == [plain_http_ca_file("http://127.0.0.1:4200/api")]
    assert PREFECT_API_SSL_CERT_FILE.value() == before
    with plain_http_clients("https://prefect.example.com/api"):
        assert PREFECT_API_SSL_CERT_FILE.value() == before
