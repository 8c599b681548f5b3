"""Which Prefect server a command's run talks to, and making sure nothing outlives the command.

- PREFECT_API_URL set (environment or Prefect profile): that server, checked up front. Runs stay in its history,
  its Automations announce failures, and nothing starts here.
- Not set: a temporary server for this command (Prefect's own SQLite-backed one, 10-20 s to start), stopped when
  the command ends, and on Linux killed by the kernel if this process is killed (PR_SET_PDEATHSIG), so a
  SIGKILLed command leaves no server behind.
SIGTERM and SIGINT end a run the way Prefect ends it (the run is marked Crashed), then the server is stopped and
the command exits 128 + the signal's number.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from candleflow import environment
from candleflow.errors import BadInputError

PR_SET_PDEATHSIG = 1  # linux/prctl.h


class Interrupted(BaseException):  # a signal, like KeyboardInterrupt: no `except Exception` catches it
    """The command got SIGTERM (or SIGHUP): unwind, stop the temporary server, exit 128 + signum."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_interrupted(signum: int, _frame: Any) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_unwind() -> Iterator[None]:
    """For the block, SIGTERM and SIGHUP unwind like Ctrl-C does, so `finally` blocks (stopping the server) run.
    During a flow run Prefect's own SIGTERM handler marks the run Crashed first, then hands the signal on."""
    previous = {signum: signal.signal(signum, _raise_interrupted) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def die_with_parent(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:  # runs in the child after fork (before exec, or a warm runner's fork before its command)
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def apply_environment() -> None:
    """Prefect reads its settings and sets up its logging when it is imported: read them again from os.environ
    now. A warm runner's command (cli/warm.py) gets the caller's environment after Prefect was imported,
    and the CLI sets its quiet logging before a run."""
    if "prefect.context" not in sys.modules:
        return
    from prefect.context import refresh_global_settings_context
    from prefect.logging.configuration import setup_logging

    refresh_global_settings_context()
    setup_logging(incremental=False)


def _temporary_server_class() -> Any:
    import prefect
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import get_current_settings

    class TemporaryServer(SubprocessASGIServer):
        """Prefect's temporary server (the same app, arguments and environment as Prefect 3.8 starts it with),
        started so that the kernel stops it when this process dies."""

        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            env = {
                **environment.current(),
                "PREFECT_UI_ENABLED": "0",
                "PREFECT__SERVER_EPHEMERAL": "1",
                "PREFECT__SERVER_FINAL": "1",
                **get_current_settings().to_environment_variables(exclude_unset=True),
            }
            app_dir = str(prefect.__module_path__.parent)
            args = ["--app-dir", app_dir, "--factory", "prefect.server.api.server:create_app"]
            args += ["--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
            return subprocess.Popen(
                [sys.executable, "-m", "uvicorn", *args],
                env=env,
                preexec_fn=die_with_parent(os.getpid()) if sys.platform == "linux" else None,
            )

    return TemporaryServer


def configured_api_url() -> str | None:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def check_server(url: str) -> None:
    """Refuse to run when PREFECT_API_URL names a server that does not answer."""
    try:
        # no CA bundle parsed (25 ms) for a plain-http API, where no certificate is checked
        response = httpx.get(f"{url.rstrip('/')}/health", timeout=10, verify=not url.startswith("http://"))
        response.raise_for_status()
    except (httpx.HTTPError, ValueError) as exc:
        raise BadInputError(
            f"cannot reach the Prefect server at PREFECT_API_URL={url} ({type(exc).__name__}): start it "
            "(candleflow server) or unset PREFECT_API_URL to use a temporary one"
        ) from None


PLAIN_HTTP_CA_FILE = "prefect-plain-http-ca.pem"
CA_FILE_SETTING = "PREFECT_API_SSL_CERT_FILE"


def plain_http_ca_file(url: str) -> str | None:
    """For an API on plain http (no TLS: no certificate is ever checked), a CA file of one certificate to give
    Prefect as PREFECT_API_SSL_CERT_FILE; None for https, or where verification is off (Prefect then loads the
    system's certificates whatever the file). Prefect builds a TLS context for every client it makes (about
    eight in a run: the run's own, its logs', its events', its concurrency slots', the version check) and each
    parses the whole CA bundle, some 25 ms of CPU under the interpreter lock while the run works; one
    certificate takes under 1 ms."""
    from prefect.settings import get_current_settings

    if not url.startswith("http://") or get_current_settings().api.tls_insecure_skip_verify:
        return None
    path = environment.runtime_dir() / PLAIN_HTTP_CA_FILE
    if not path.exists():
        import certifi

        bundle = Path(certifi.where()).read_text()
        end = "-----END CERTIFICATE-----\n"
        first = bundle[bundle.index("-----BEGIN CERTIFICATE-----") : bundle.index(end) + len(end)]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_text(first)
        partial.replace(path)  # whole or not at all, whatever runs beside
    return str(path)


@contextlib.contextmanager
def plain_http_clients(url: str) -> Iterator[None]:
    """For the block, Prefect's clients of a plain-http API skip parsing the CA bundle (see plain_http_ca_file).
    Through the environment and Prefect's global settings: its services build their clients in threads of their
    own, where a temporary_settings context of this thread does not reach."""
    ca_file = plain_http_ca_file(url)
    if ca_file is None:
        yield
        return
    from prefect.context import refresh_global_settings_context

    try:
        with environment.restored():
            environment.set_value(CA_FILE_SETTING, ca_file)
            refresh_global_settings_context()
            yield
    finally:
        refresh_global_settings_context()


@contextlib.contextmanager
def prefect_server(say: Callable[[str], None]) -> Iterator[str]:
    """Use the server at PREFECT_API_URL, or a temporary one for the block; yields the API URL."""
    url = configured_api_url()
    if url:
        check_server(url)
        say(f"prefect: using the server at {url}")
        with plain_http_clients(url):
            yield url
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    say(
        "prefect: PREFECT_API_URL is not set, starting a temporary server for this run (10-20 s; "
        "`candleflow server` starts a lasting one)"
    )
    server = _temporary_server_class()()
    try:
        server.start(timeout=180)  # its first start migrates a new database: slow on 2 cores
        with plain_http_clients(server.api_url), temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield str(server.api_url)
            finally:
                drain_prefect_services()
    finally:
        server.stop()
        # Records a run's threads log after the drain (chunks still in flight after a SIGTERM), and what a drain
        # under load did not send in time, can no longer reach the server: Prefect would try at exit and write
        # "--- Error logging to API ---" and "All connection attempts failed" under the command's last line.
        logging.raiseExceptions = False


def drain_prefect_services(timeout: float = 10.0) -> None:
    """Send the run's last logs and events while the temporary server still listens (Prefect would otherwise
    try at exit, after the server is gone, and retry for a minute)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            service.drain_all(timeout=timeout)
