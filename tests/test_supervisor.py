"""The supervisor: restarts with bounded backoff, fatal escalation, graceful and forced stop;
and the watchdog, which pings only while the loop and every service make progress."""

from __future__ import annotations

import asyncio
import itertools
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


async def test_watchdog_withholds_the_ping_when_the_loop_woke_up_late(tmp_path: Path) -> None:
    """A blocked loop cannot ping at all; the watchdog must also not ping straight after the
    block as if all were well: it judges the lag first and pings again one interval later."""
    unblocked_at: list[float] = []

    class Blocker:
        name = "blocker"

        async def run(self, ctx: ServiceContext) -> None:
            await asyncio.sleep(0.3)
            time.sleep(0.8)  # noqa: ASYNC251 -- a blocking call freezes the whole loop
            unblocked_at.append(time.monotonic())
            ctx.beat()
            await ctx.stopping.wait()

    listener = await run_watchdog(tmp_path, Blocker(), seconds=1.6)
    (unblocked,) = unblocked_at
    after = [t for t in listener.pings if t >= unblocked]
    assert after, "pings resumed once the loop was healthy again"
    assert after[0] - unblocked >= 0.08, "pinged right after the stall"


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


async def test_backoff_is_applied_between_restarts() -> None:
    starts: list[float] = []

    class Crasher:
        name = "crasher"

        async def run(self, ctx: ServiceContext) -> None:
            starts.append(time.monotonic())
            raise ValueError("boom")

    settings = {**FAST, "restart_backoff_initial_s": 0.1, "restart_backoff_max_s": 0.2, "max_restarts": 3}
    supervisor = Supervisor([Crasher()], config(**settings), Liveness())
    with pytest.raises(FatalError):
        await asyncio.wait_for(supervisor.serve(), timeout=5)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(gaps) == 3
    assert gaps[0] >= 0.05  # half the first step at least (jitter)
    assert gaps[2] >= 0.1  # the step doubled, then hit the 0.2 ceiling


async def test_a_cancellation_from_inside_a_service_is_a_crash_not_the_end() -> None:
    class Victim:
        """Awaits a request that another component cancels (a venue client closing, say)."""

        name = "victim"
        starts = 0

        async def run(self, ctx: ServiceContext) -> None:
            self.starts += 1
            if self.starts == 1:
                request: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                asyncio.get_running_loop().call_later(0.01, request.cancel)
                await request
            await ctx.stopping.wait()

    victim = Victim()
    supervisor = Supervisor([victim], config(**FAST), Liveness())
    await asyncio.gather(supervisor.serve(), stop_when(supervisor, lambda: victim.starts == 2))
    assert victim.starts == 2


async def test_on_fatal_is_told_before_the_other_services_drain() -> None:
    events: list[str] = []

    class Doomed:
        name = "doomed"

        async def run(self, ctx: ServiceContext) -> None:
            await asyncio.sleep(0.05)
            raise FatalError("venue says our orders are not ours")

    class SlowDrain:
        name = "slow-drain"

        async def run(self, ctx: ServiceContext) -> None:
            await ctx.stopping.wait()
            await asyncio.sleep(0.2)
            events.append("drained")

    supervisor = Supervisor(
        [Doomed(), SlowDrain()],
        config(**FAST),
        Liveness(),
        on_fatal=lambda exc: events.append(f"fatal: {exc}"),
    )
    with pytest.raises(FatalError):
        await asyncio.wait_for(supervisor.serve(), timeout=5)
    assert events == ["fatal: venue says our orders are not ours", "drained"]


def test_a_deliberate_wait_is_not_silence() -> None:
    liveness = Liveness()
    liveness.beat("heartbeat", quiet_for_s=60)
    liveness.beat("ingest")
    now = time.monotonic()
    assert liveness.stale(30, now=now + 45) == ["ingest"]
    assert liveness.stale(30, now=now + 95) == ["heartbeat", "ingest"]


async def test_a_service_sleeping_between_beats_is_not_stale() -> None:
    liveness = Liveness()
    ctx = ServiceContext("heartbeat", config(), asyncio.Event(), liveness)
    nap = asyncio.create_task(ctx.sleep(0.5))
    await asyncio.sleep(0.4)
    assert liveness.stale(0.3) == []
    assert await nap is False
