"""A real, lasting Prefect server for the deployment tests: `candleflow server` on a free port of 127.0.0.1, its
database a throwaway one on the local PostgreSQL; a local receiver for notices; helpers that talk to the
server's REST API the way the UI does, and that find and stop processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import psycopg

from tests.conftest import PG_DSN, ROOT
from tests.polygon_server import serving

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@dataclass
class TeamServer:
    port: int
    database: str
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment a command run against this server gets."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
        return {**base, "PREFECT_API_URL": self.api, "PREFECT_HOME": str(self.home), **extra}

    def get(self, path: str) -> Any:
        response = httpx.get(f"{self.api}{path}", timeout=30)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = httpx.post(f"{self.api}{path}", json=body, timeout=30)
        response.raise_for_status()
        return response.json()

    def deployment(self, flow: str, name: str) -> dict[str, Any]:
        return dict(self.get(f"/deployments/name/{flow}/{name}"))

    def run_deployment(self, flow: str, name: str, parameters: dict[str, Any]) -> str:
        """Start a run of a deployment with `parameters` as JSON, as the UI's run form sends them."""
        deployment = self.deployment(flow, name)
        run = self.post(f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters})
        return str(run["id"])

    def flow_run(self, run_id: str) -> dict[str, Any]:
        return dict(self.get(f"/flow_runs/{run_id}"))

    def wait_final(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        run = wait_for(
            f"flow run {run_id} to end",
            lambda: (r := self.flow_run(run_id)) and r["state_type"] in FINAL and r,
            timeout,
        )
        return dict(run)

    def task_runs(self, run_id: str) -> list[dict[str, Any]]:
        body = {"flow_runs": {"id": {"any_": [run_id]}}, "limit": 200}
        return list(self.post("/task_runs/filter", body))

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return list(self.post("/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [run_id]}}}))

    def flow_runs(self, flow: str) -> list[dict[str, Any]]:
        body = {"flows": {"name": {"any_": [flow]}}, "sort": "START_TIME_DESC", "limit": 50}
        return list(self.post("/flow_runs/filter", body))

    def heartbeats(self, run_id: str) -> int:
        body = {
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
                "occurred": {"since": "2000-01-01T00:00:00Z"},
            },
            "limit": 50,
        }
        return int(self.post("/events/filter", body)["total"])


@contextmanager
def team_server(tmp: Path) -> Iterator[TeamServer]:
    """`candleflow server` on a free port with a fresh PostgreSQL database; stopped and dropped afterwards."""
    database = f"cf_prefect_test_{uuid.uuid4().hex[:8]}"
    port = free_port()
    home = tmp / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    log = tmp / "prefect-server.log"
    url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    # proactive triggers (the heartbeat Automation) evaluated every second, not every 5: a faster test
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_EVENTS_PROACTIVE_GRANULARITY="PT1S",
    )
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(BIN / "candleflow"), "server", "--port", str(port), "--database-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
        )
    server = TeamServer(port, database, home, process, log)
    try:

        def healthy() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"candleflow server exited {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{server.api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server to answer", healthy, timeout=180)
        yield server
    finally:
        stop(process)
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def stop(process: subprocess.Popen[Any], timeout: float = 20) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Deployed:
    """What `candleflow setup` (run twice) and `prefect deploy --all` printed, and the running worker."""

    setup_first: subprocess.CompletedProcess[str]
    setup_second: subprocess.CompletedProcess[str]
    deploy: subprocess.CompletedProcess[str]
    worker: subprocess.Popen[bytes]
    worker_log: Path


@dataclass
class NoticeReceiver:
    """A local HTTP endpoint standing in for a Slack or webhook receiver: keeps every JSON body POSTed to it."""

    server: ThreadingHTTPServer
    received: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/candleflow-notices"

    def about(self, text: str) -> list[dict[str, Any]]:
        return [n for n in list(self.received) if text in json.dumps(n)]


@contextmanager
def notice_receiver() -> Iterator[NoticeReceiver]:
    holder: list[NoticeReceiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            holder[0].received.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = NoticeReceiver(http)
    holder.append(receiver)
    with serving(http):
        yield receiver


def run_command(args: list[str], env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def processes_with(text: str) -> list[int]:
    """Pids whose environment or command line holds `text` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "environ").read_bytes() + (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in blob:
            found.append(int(entry.name))
    return found


def children_of(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
