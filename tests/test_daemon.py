"""The daemon end to end: a real `huracan run` process against a real PostgreSQL database,
driven by signals, with its sd_notify messages read from a socket the test owns."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from huracan.config import ConfigSources, load_config
from huracan.daemon.app import Daemon, Phase
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import FatalError, Service, ServiceContext
from huracan.daemon.services import ServiceDeps
from huracan.exit_codes import EX_SOFTWARE, EX_UNAVAILABLE
from huracan.logs import MASK
from huracan.memory.cluster import PrivateCluster

pytestmark = pytest.mark.db
SECRET = "sk-e2e-do-not-log-7f3a9"
KEY_BEFORE = "key-before-rotation-51b2"
KEY_AFTER = "key-after-rotation-90ce"


class DaemonProcess:
    def __init__(self, tmp_path: Path, dsn: str) -> None:
        self.config_path = tmp_path / "local.yaml"
        self.config_path.write_text("daemon:\n  heartbeat_interval_s: 0.2\n")
        self.socket_path = tmp_path / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.messages: list[list[str]] = []
        self.credentials = tmp_path / "credentials"
        self.credentials.mkdir()
        (self.credentials / "exchange.api_key").write_text(KEY_BEFORE)
        env = {
            "CREDENTIALS_DIRECTORY": str(self.credentials),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "NOTIFY_SOCKET": str(self.socket_path),
            "WATCHDOG_USEC": "1000000",
            "HURACAN_DATABASE__DSN": dsn,
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state"),
            "HURACAN_LOGGING__FORMAT": "json",
            "HURACAN_EXCHANGE__API_SECRET": SECRET,
        }
        self.log_path = tmp_path / "daemon.log"
        self.log_file = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "huracan.cli", "run", "--config", str(self.config_path)],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )

    def expect(self, first_line: str, timeout: float = 30) -> list[str]:
        """Wait for a notification whose first line is `first_line`, keeping all seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode().split("\n")
            except TimeoutError:
                break
            self.messages.append(message)
            if message[0] == first_line:
                return message
        raise AssertionError(
            f"no {first_line} within {timeout} s; got {self.messages}; log:\n{self.output()}"
        )

    def output(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.output().splitlines() if line.startswith("{")]

    def wait_for_event(self, name: str, timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.events() if e["event"] == name]
            if found:
                return found[-1]
            time.sleep(0.05)
        raise AssertionError(f"no {name!r} event; log:\n{self.output()}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.sock.close()
        self.log_file.close()


@pytest.fixture
def daemon(tmp_path: Path, db_dsn: str) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path, db_dsn)
    yield process
    process.close()


async def test_run_reload_and_stop(daemon: DaemonProcess, db_dsn: str) -> None:
    ready = daemon.expect("READY=1")
    assert ready[1].startswith("STATUS=running")
    daemon.expect("WATCHDOG=1", timeout=5)
    assert not [e for e in daemon.events() if e["event"] == "heartbeat"]  # debug, filtered at info
    assert daemon.wait_for_event("daemon started")["event_loop"] == "uvloop"

    # A good file: live keys applied, restart-only keys reported and not applied; a rotated
    # credential is reported masked.
    daemon.config_path.write_text(
        "daemon:\n  heartbeat_interval_s: 0.1\nlogging:\n  level: debug\ndatabase:\n  pool_max_size: 3\n"
    )
    (daemon.credentials / "exchange.api_key").write_text(KEY_AFTER)
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.expect("RELOADING=1")
    daemon.expect("READY=1")
    reloaded = daemon.wait_for_event("config reloaded")
    assert {c["key"] for c in reloaded["changed"]} == {"daemon.heartbeat_interval_s", "logging.level"}
    assert reloaded["needs_restart"] == [
        {"key": "database.pool_max_size", "old": "8", "new": "3"},
        {"key": "exchange.api_key", "old": MASK, "new": MASK},
    ]
    daemon.wait_for_event("heartbeat")  # a debug event: the new level is in force

    # A bad file: the daemon keeps running on the configuration it has.
    daemon.config_path.write_text("daemon:\n  heartbeat_interval_s: -1\n  bogus: 1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.expect("RELOADING=1")
    daemon.expect("READY=1")
    failed = daemon.wait_for_event("config reload failed; keeping the running configuration")
    assert len(failed["problems"]) == 2
    assert daemon.proc.poll() is None

    daemon.proc.send_signal(signal.SIGTERM)
    stopping = daemon.expect("STOPPING=1")
    assert stopping[1] == "STATUS=stopping: SIGTERM"
    assert daemon.proc.wait(timeout=20) == 0
    events = daemon.events()
    assert events[-1]["event"] == "daemon stopped"
    for event in events:
        assert {"ts", "level", "event", "logger"} <= event.keys()
        assert event["ts"].endswith("Z")
    for secret in (SECRET, KEY_BEFORE, KEY_AFTER):
        assert secret not in daemon.output()

    conn = await asyncpg.connect(db_dsn)
    try:
        heartbeat = await conn.fetchrow("SELECT value, updated_at FROM daemon_state WHERE key = 'heartbeat'")
    finally:
        await conn.close()
    assert heartbeat is not None
    assert orjson.loads(heartbeat["value"])["beats"] >= 3


def test_ctrl_c_stops_cleanly(daemon: DaemonProcess) -> None:
    daemon.expect("READY=1")
    daemon.proc.send_signal(signal.SIGINT)
    daemon.expect("STOPPING=1")
    assert daemon.proc.wait(timeout=20) == 0
    assert "daemon stopped" in daemon.output()


async def test_a_fatal_service_error_exits_non_zero(db_dsn: str, tmp_path: Path) -> None:
    class Doomed:
        name = "doomed"

        async def run(self, ctx: ServiceContext) -> None:
            raise FatalError("positions disagree with the venue")

    async def services(deps: ServiceDeps, resources: contextlib.AsyncExitStack) -> list[Service]:
        return [Doomed()]

    sources = ConfigSources(
        environ={"HURACAN_DATABASE__DSN": db_dsn, "HURACAN_DAEMON__STATE_DIR": str(tmp_path)}
    )
    listener = Listener(tmp_path)
    daemon = Daemon(load_config(sources), sources, notifier=listener.notifier, services=services)
    assert await daemon.run() == EX_SOFTWARE
    assert listener.received()[-1] == [
        "STOPPING=1",
        "STATUS=stopping: fatal error: positions disagree with the venue",
    ]


async def test_unreachable_database_exits_unavailable(tmp_path: Path) -> None:
    sources = ConfigSources(
        environ={
            "HURACAN_DATABASE__DSN": f"postgresql://nobody@/x?host={tmp_path}&port=1",
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path),
        }
    )
    daemon = Daemon(load_config(sources), sources, notifier=Notifier({}))
    assert await daemon.run() == EX_UNAVAILABLE


async def run_briefly(daemon: Daemon) -> int:
    """Run the daemon until its services are up, then ask it to stop."""
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(60):
        # Watching from outside, as an operator would, keeps test hooks out of the daemon.
        while daemon.supervisor is None and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    daemon.request_stop("test")
    return await task


async def test_embedded_default_starts_migrates_and_stops_its_own_cluster(
    reachable_tmp: Callable[[], Path],
) -> None:
    state_dir = reachable_tmp()
    sources = ConfigSources(environ={"HURACAN_DAEMON__STATE_DIR": str(state_dir)})
    daemon = Daemon(load_config(sources), sources, notifier=Notifier({}))
    cluster = PrivateCluster(state_dir / "postgres")
    assert await run_briefly(daemon) == 0
    assert not cluster.is_running(), "the daemon started the cluster, so it stops it"
    cluster.ensure_started()
    try:
        conn = await asyncpg.connect(cluster.dsn("huracan"))
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") >= 4
            assert await conn.fetchval("SELECT count(*) FROM daemon_state WHERE key = 'heartbeat'") == 1
        finally:
            await conn.close()
        # A cluster someone else started (make db-start) is reused and left running.
        daemon = Daemon(load_config(sources), sources, notifier=Notifier({}))
        assert await run_briefly(daemon) == 0
        assert cluster.is_running()
    finally:
        cluster.stop()


class Listener:
    """A notify socket for in-process daemons."""

    def __init__(self, tmp_path: Path) -> None:
        path = tmp_path / f"notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.notifier = Notifier({"NOTIFY_SOCKET": str(path)})

    def received(self) -> list[list[str]]:
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096).decode().split("\n"))
            except BlockingIOError:
                return messages


def test_reload_waits_for_start_up_and_is_ignored_while_stopping(tmp_path: Path) -> None:
    sources = ConfigSources(environ={"HURACAN_DAEMON__STATE_DIR": str(tmp_path)})
    listener = Listener(tmp_path)
    daemon = Daemon(load_config(sources), sources, notifier=listener.notifier)
    assert daemon.reload() is False  # starting: deferred, and no READY=1 before start-up is done
    assert listener.received() == []
    daemon.request_stop("test")
    assert daemon.reload() is False
    assert [m[0] for m in listener.received()] == ["STOPPING=1"]


def test_a_crashing_reload_keeps_the_config_and_still_answers_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = ConfigSources(environ={"HURACAN_DAEMON__STATE_DIR": str(tmp_path)})
    listener = Listener(tmp_path)
    config = load_config(sources)
    daemon = Daemon(config, sources, notifier=listener.notifier)
    daemon.phase = Phase.RUNNING

    def broken(_: ConfigSources) -> None:
        raise RuntimeError("a bug in the loader")

    monkeypatch.setattr("huracan.daemon.app.load_config", broken)
    assert daemon.reload() is False
    assert daemon.config.current is config
    assert [m[0] for m in listener.received()] == ["RELOADING=1", "READY=1"]


async def test_a_leaked_connection_cannot_hold_up_the_stop(db_dsn: str, tmp_path: Path) -> None:
    class Leaky:
        """Takes a connection and never gives it back: pool.close() alone would wait forever."""

        name = "leaky"

        def __init__(self, pool: asyncpg.Pool) -> None:
            self.pool = pool

        async def run(self, ctx: ServiceContext) -> None:
            self.conn = await self.pool.acquire()
            await ctx.stopping.wait()

    sources = ConfigSources(
        environ={
            "HURACAN_DATABASE__DSN": db_dsn,
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path),
            "HURACAN_DAEMON__SHUTDOWN_TIMEOUT_S": "0.5",
        }
    )

    async def services(deps: ServiceDeps, resources: contextlib.AsyncExitStack) -> list[Service]:
        return [Leaky(deps.pool)]

    daemon = Daemon(load_config(sources), sources, notifier=Notifier({}), services=services)
    # The budget is 0.5 s; the pool gets at least 1 s of its own before its connections are cut.
    assert await asyncio.wait_for(run_briefly(daemon), timeout=10) == 0
