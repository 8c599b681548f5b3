"""The warm runner (`candleflow warm`): a command handed to it prints, exits and stores what the same command run
in a process of its own does; signals reach it; a killed caller leaves nothing running; a runner holding other
code than the caller's is not used. (Deployment runs through `candleflow worker`'s runner: tests/test_deployments.)"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.team_server import BIN, ROOT, alive, wait_for

pytestmark = pytest.mark.postgres


class Runner:
    def __init__(self, socket: Path, env: dict[str, str]) -> None:
        self.socket = socket
        self.env = {**env, "CANDLEFLOW_WARM_SOCKET": str(socket)}
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [str(BIN / "candleflow"), "warm"], env=self.env, cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for("the warm runner to be ready", lambda: any("ready on" in line for line in self.lines), 120)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def pids(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines if (m := re.search(r"warm runner: pid (\d+): ", line))]


@pytest.fixture
def runner(team: Any, tmp_path: Path) -> Iterator[Runner]:
    started = Runner(tmp_path / "warm.sock", team.env())
    try:
        yield started
    finally:
        started.process.terminate()
        started.process.wait(60)


def cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "candleflow"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def without_timings(text: str) -> str:
    text = re.sub(r"[0-9][0-9,]*(\.[0-9]+)? (s|bars/s)\b", "T", text)
    text = re.sub(r"\([0-9]+%\)", "(P)", text)
    return re.sub(r"\d+:\d\d:\d\d", "T", text)


def bars(url: str) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT * FROM bars ORDER BY symbol, ts"))]
    finally:
        engine.dispose()


def test_a_backfill_in_the_warm_runner_is_the_same_as_one_in_its_own_process(runner: Runner, tmp_path: Path) -> None:
    cold_url, warm_url = (f"sqlite:///{tmp_path / name}.db" for name in ("cold", "warm"))
    args = ["backfill", "--symbols", "AAPL,MSFT", "--timeframe", "1d", "--start", "2023-01-01", "--end", "2024-06-30"]
    cold = cli([*args, "--warehouse", cold_url], {**runner.env, "CANDLEFLOW_WARM_SOCKET": ""}, tmp_path)
    warm = cli([*args, "--warehouse", warm_url], runner.env, tmp_path)
    assert (warm.returncode, cold.returncode) == (0, 0), warm.stderr + cold.stderr
    assert len(runner.pids()) == 1, runner.lines  # the warm one ran in a fork of the runner, the cold one not
    assert without_timings(warm.stdout) == without_timings(cold.stdout)
    assert "2 chunks run (2 loaded" in warm.stdout
    assert without_timings(warm.stderr) == without_timings(cold.stderr)
    assert bars(warm_url) == bars(cold_url) and len(bars(warm_url)) > 700
    ended = f"candleflow: warm runner: pid {runner.pids()[0]} ended, exit code 0"
    wait_for("the runner to report the exit", lambda: ended in runner.lines, 30)
    # the caller's environment, not the runner's: another warehouse from CANDLEFLOW_WAREHOUSE_URL
    env_url = f"sqlite:///{tmp_path / 'from_env.db'}"
    again = cli(args, {**runner.env, "CANDLEFLOW_WAREHOUSE_URL": env_url}, tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(runner.pids()) == 2 and bars(env_url) == bars(cold_url)


def test_bad_input_gets_the_same_error_and_exit_code(runner: Runner, tmp_path: Path) -> None:
    args = ["backfill", "--symbols", "AAPL", "--timeframe", "7x", "--start", "2024-01-01", "--end", "2024-01-31"]
    cold = cli(args, {**runner.env, "CANDLEFLOW_WARM_SOCKET": ""}, tmp_path)
    warm = cli(args, runner.env, tmp_path)
    assert warm.returncode == cold.returncode == 2
    assert warm.stderr == cold.stderr and warm.stderr.startswith("candleflow: error: ")
    assert len(runner.pids()) == 1


def test_sigterm_reaches_the_run_and_a_killed_caller_leaves_nothing_running(runner: Runner, tmp_path: Path) -> None:
    args = ["backfill", "--symbols", "W1,W2,W3", "--timeframe", "1m", "--start", "2021-01-01", "--end", "2023-12-31"]
    args += ["--warehouse", f"sqlite:///{tmp_path / 'w.db'}"]

    def start() -> subprocess.Popen[str]:
        command = [str(BIN / "candleflow"), *args]
        return subprocess.Popen(
            command, env=runner.env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    caller = start()
    wait_for("the run to start", lambda: runner.pids(), 60)
    (run,) = runner.pids()
    wait_for("chunks to be fetched", lambda: (tmp_path / "w.db").exists(), 120)
    caller.send_signal(signal.SIGTERM)
    _, err = caller.communicate(timeout=120)
    assert caller.returncode == 128 + signal.SIGTERM, err
    assert err.splitlines()[-1].startswith("candleflow: stopped by SIGTERM: the run was marked Crashed")
    assert not alive(run)

    # SIGKILL cannot be relayed: the runner sees its caller gone and stops the command
    caller = start()
    wait_for("the second run to start", lambda: len(runner.pids()) == 2, 60)
    second = runner.pids()[1]
    caller.kill()
    caller.wait(30)
    wait_for("the orphaned command to stop", lambda: not alive(second), 60)
    ended = f"candleflow: warm runner: pid {second} ended, by SIGKILL"
    wait_for("the runner to report it", lambda: ended in runner.lines, 30)

    # the command killed (the kernel's OOM killer, say): its caller dies of the same signal, as the command would
    caller = start()
    wait_for("the third run to start", lambda: len(runner.pids()) == 3, 60)
    os.kill(runner.pids()[2], signal.SIGKILL)
    caller.communicate(timeout=60)
    assert caller.returncode == -signal.SIGKILL


def test_a_runner_with_other_code_is_not_used_and_stops(runner: Runner, tmp_path: Path) -> None:
    edited = ROOT / "flows" / "__init__.py"  # as when someone edits the code after the runner started
    before = edited.stat()
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        args = ["backfill", "--symbols", "AAPL", "--timeframe", "1d", "--start", "2024-01-01", "--end", "2024-01-31"]
        done = cli([*args, "--warehouse", f"sqlite:///{tmp_path / 'o.db'}"], runner.env, tmp_path)
    finally:
        os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert done.returncode == 0, done.stderr
    assert "1 chunks run (1 loaded" in done.stdout
    assert runner.pids() == []  # ran in its own process
    runner.process.wait(60)  # the runner stopped itself: the next one starts with the new code
    assert any("the code or the installation changed" in line for line in runner.lines)
    assert not runner.socket.exists()


def test_the_workers_flow_runs_start_in_its_warm_runner(team: Any, deployed: Any, team_warehouse: str) -> None:
    # until its runner is ready (a few seconds after the worker starts) the worker's runs start cold, as before
    ready = "warm runner ready on"
    wait_for("the worker's warm runner", lambda: ready in deployed.worker_log.read_text(errors="replace"), 120)
    parameters = {"symbols": ["WARM1"], "start": "2024-01-01", "end": "2024-03-31", "timeframe": "1d"}
    run_id = team.run_deployment("historical_backfill", "backfill", parameters)
    run = team.wait_final(run_id, timeout=180)
    assert run["state_type"] == "COMPLETED", run["state"]["message"]
    log = deployed.worker_log.read_text(errors="replace")
    found = re.search(rf"warm runner: pid (\d+): flow run {run_id}", log)
    assert found, log[-3000:]
    # runpy's warning that the engine module ran as __main__ after the runner imported it is not the user's
    assert "'prefect.engine' found in sys.modules" not in log, log[-3000:]
    wait_for(
        "the runner to report the run's end",
        lambda: (
            f"warm runner: pid {found.group(1)} ended, exit code 0" in deployed.worker_log.read_text(errors="replace")
        ),
        30,
    )


def test_a_command_sends_nothing_to_a_socket_of_another_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.getuid() != 0:
        pytest.skip("starting a listener as another user needs root")
    from cli.warm_client import run_warm

    folder = Path(tempfile.mkdtemp(prefix="candleflow-stranger-"))  # pytest's own folders are closed to others
    folder.chmod(0o777)
    socket_path, received = folder / "warm.sock", folder / "received"
    listener = textwrap.dedent(
        f"""
        import os, socket
        os.setgid(65534); os.setuid(65534)  # nobody
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind({str(socket_path)!r}); server.listen(1)
        conn, _ = server.accept()
        conn.settimeout(5)
        data = b""
        try:
            while chunk := conn.recv(65536):
                data += chunk
        except OSError:
            pass
        open({str(received)!r}, "wb").write(data)
        """
    )
    stranger = subprocess.Popen([sys.executable, "-c", listener])
    try:
        wait_for("the other user's listener", socket_path.exists, 30)
        monkeypatch.setenv("CANDLEFLOW_WARM_SOCKET", str(socket_path))
        monkeypatch.setenv("SOME_API_KEY", "do-not-send")
        assert run_warm("cli", ["candleflow", "backfill"]) is None  # the caller runs the command itself
        stranger.wait(30)
        assert received.read_bytes() == b""
    finally:
        stranger.kill()
        shutil.rmtree(folder, ignore_errors=True)


def test_the_runner_refuses_a_folder_others_may_write_to(tmp_path: Path) -> None:
    folder = tmp_path / "open"
    folder.mkdir()
    folder.chmod(0o777)
    env = {**os.environ, "CANDLEFLOW_WARM_SOCKET": str(folder / "warm.sock")}
    done = subprocess.run([str(BIN / "candleflow"), "warm"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"candleflow: error: the warm runner's folder {folder} belongs to another user or others may write to it: "
        "remove it, or set CANDLEFLOW_WARM_SOCKET to a path in a folder of your own"
    )
    assert not (folder / "warm.sock").exists()
