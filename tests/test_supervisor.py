"""The supervisor: restarts with bounded backoff, fatal escalation, graceful and forced stop;
and the watchdog, which pings only while the loop and every service make progress."""

from __future__ import annotations

import asyncio
import random
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from huracan.config import ConfigSources, load_config
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import FatalError, Liveness, RunningConfig, ServiceContext
from huracan.daemon.supervisor import Supervisor, restart_delay
from huracan.daemon.watchdog import Watchdog, judge


def config(**daemon: object) -> RunningConfig:
    env = {f"HURACAN_DAEMON__{k.upper()}": str(v) for k, v in daemon.items()}
    return RunningConfig(load_config(ConfigSources(environ=env)))


FAST = {"restart_backoff_initial_s": 0.01, "restart_backoff_max_s": 0.05, "shutdown_timeout_s": 2}


class Flaky:
    """Crashes `crashes` times, then runs until asked to stop."""

    name = "flaky"

    def __init__(self, crashes: int) -> None:
        self.crashes_left = crashes
        self.starts = 0

    async def run(self, ctx: ServiceContext) -> None:
        self.starts += 1
        if self.crashes_left > 0:
            self.crashes_left -= 1
            raise ValueError("venue hiccup")
        await ctx.stopping.wait()


async def stop_when(supervisor: Supervisor, condition: Callable[[], bool], within_s: float = 5) -> None:
    deadline = time.monotonic() + within_s
    # Polling keeps the services under test free of test hooks.
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    supervisor.request_stop()


async def test_a_crashed_service_is_restarted() -> None:
    flaky = Flaky(crashes=3)
    supervisor = Supervisor([flaky], config(**FAST, max_restarts=5), Liveness())
    await asyncio.gather(supervisor.serve(), stop_when(supervisor, lambda: flaky.starts == 4))
    assert flaky.starts == 4


async def test_a_service_that_keeps_crashing_stops_the_daemon() -> None:
    flaky = Flaky(crashes=100)
    supervisor = Supervisor([flaky], config(**FAST, max_restarts=2), Liveness())
    with pytest.raises(FatalError, match="crashed 3 times"):
        await asyncio.wait_for(supervisor.serve(), timeout=5)
    assert flaky.starts == 3


async def test_a_fatal_error_stops_every_service_at_once() -> None:
    class Doomed:
        name = "doomed"

        async def run(self, ctx: ServiceContext) -> None:
            raise FatalError("ledger disagrees with the venue")

    bystander = Flaky(crashes=0)
    supervisor = Supervisor([Doomed(), bystander], config(**FAST), Liveness())
    with pytest.raises(FatalError, match="ledger"):
        await asyncio.wait_for(supervisor.serve(), timeout=5)
    assert bystander.starts == 1


async def test_returning_without_a_stop_counts_as_a_crash() -> None:
    class Quitter:
        name = "quitter"
        runs = 0

        async def run(self, ctx: ServiceContext) -> None:
            self.runs += 1

    quitter = Quitter()
    supervisor = Supervisor([quitter], config(**FAST, max_restarts=1), Liveness())
    with pytest.raises(FatalError):
        await asyncio.wait_for(supervisor.serve(), timeout=5)
    assert quitter.runs == 2


async def test_graceful_stop_lets_in_flight_work_finish() -> None:
    class Writer:
        name = "writer"
        committed = 0

        async def run(self, ctx: ServiceContext) -> None:
            while not ctx.stopping.is_set():
                await asyncio.sleep(0.2)  # a write in flight when the stop arrives
                self.committed += 1

    writer = Writer()
    supervisor = Supervisor([writer], config(**FAST), Liveness())
    task = asyncio.create_task(supervisor.serve())
    await asyncio.sleep(0.1)
    supervisor.request_stop()
    await asyncio.wait_for(task, timeout=2)
    assert writer.committed == 1


async def test_a_service_ignoring_the_stop_is_cancelled_after_the_timeout() -> None:
    class Stubborn:
        name = "stubborn"
        cancelled = False

        async def run(self, ctx: ServiceContext) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise

    stubborn = Stubborn()
    supervisor = Supervisor([stubborn], config(**FAST), Liveness())
    task = asyncio.create_task(supervisor.serve(shutdown_timeout_s=lambda: 0.3))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    supervisor.request_stop()
    await asyncio.wait_for(task, timeout=2)
    assert 0.25 < time.monotonic() - started < 1.5
    assert stubborn.cancelled


@given(
    crashes=st.integers(min_value=1, max_value=60),
    initial=st.floats(min_value=0.001, max_value=10),
    ceiling=st.floats(min_value=10, max_value=600),
    seed=st.integers(min_value=0, max_value=2**32),
)
def test_restart_delay_grows_and_stays_bounded(
    crashes: int, initial: float, ceiling: float, seed: int
) -> None:
    delay = restart_delay(crashes, initial, ceiling, random.Random(seed))
    step = min(ceiling, initial * 2 ** (crashes - 1))
    assert step / 2 <= delay <= step <= ceiling


def test_judge() -> None:
    assert judge(0.01, [], max_lag_s=1).healthy
    assert not judge(2.0, [], max_lag_s=1).healthy
    assert not judge(0.0, ["ingest"], max_lag_s=1).healthy


class WatchdogListener:
    def __init__(self, tmp_path: Path) -> None:
        self.address = str(tmp_path / f"notify-{uuid.uuid4().hex[:8]}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.setblocking(False)
        self.pings: list[float] = []

    def drain(self) -> list[float]:
        while True:
            try:
                if self.sock.recv(4096) == b"WATCHDOG=1":
                    self.pings.append(time.monotonic())
            except BlockingIOError:
                return self.pings


async def run_watchdog(
    tmp_path: Path, other: object, seconds: float, cfg: RunningConfig | None = None
) -> WatchdogListener:
    listener = WatchdogListener(tmp_path)
    notifier = Notifier({"NOTIFY_SOCKET": listener.address, "WATCHDOG_USEC": "200000"})
    assert notifier.watchdog_interval_s == 0.2
    supervisor = Supervisor([Watchdog(notifier, 0.2), other], cfg or config(**FAST), Liveness())  # type: ignore[list-item]
    task = asyncio.create_task(supervisor.serve())
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        listener.drain()
    supervisor.request_stop()
    await asyncio.wait_for(task, timeout=2)
    listener.drain()
    return listener


async def test_watchdog_pings_while_services_make_progress(tmp_path: Path) -> None:
    listener = await run_watchdog(tmp_path, Flaky(crashes=0), seconds=1.0)
    assert len(listener.pings) >= 5  # every 0.1 s


async def test_watchdog_stops_pinging_while_the_loop_is_blocked(tmp_path: Path) -> None:
    class Blocker:
        name = "blocker"

        async def run(self, ctx: ServiceContext) -> None:
            await asyncio.sleep(0.3)
            time.sleep(0.8)  # noqa: ASYNC251 -- a blocking call freezes the whole loop: the bug the watchdog exists for
            await ctx.stopping.wait()

    listener = await run_watchdog(tmp_path, Blocker(), seconds=1.6)
    gaps = [b - a for a, b in zip(listener.pings, listener.pings[1:], strict=False)]
    assert max(gaps) >= 0.75


async def test_watchdog_withholds_pings_when_a_service_stops_making_progress(tmp_path: Path) -> None:
    class Wedged:
        """Beats for a while, then waits forever on something that never comes."""

        name = "wedged"

        async def run(self, ctx: ServiceContext) -> None:
            for _ in range(3):
                await ctx.sleep(0.05)
            await ctx.stopping.wait()  # no beats while waiting

    cfg = config(**FAST, watchdog_stale_after_s=0.3)
    listener = await run_watchdog(tmp_path, Wedged(), seconds=1.5, cfg=cfg)
    assert listener.pings, "pinged while the service was healthy"
    silent_for = time.monotonic() - listener.pings[-1]
    assert silent_for > 0.8, "kept pinging after the service went quiet"
