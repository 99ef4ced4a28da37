"""Feeds systemd's watchdog only while the daemon is really making progress.

A ping from a timer would prove only that the loop runs. We ping when (a) the loop woke up on
time (a blocking call freezes the loop, and then nothing pings at all) and (b) every service has
shown progress within `daemon.watchdog_stale_after_s`. Otherwise we withhold the ping and say why;
systemd then kills and restarts us after WatchdogSec.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import ServiceContext
from huracan.logs import get_logger

log = get_logger("huracan.daemon.watchdog")


@dataclass(frozen=True, slots=True)
class WatchdogVerdict:
    healthy: bool
    loop_lag_s: float
    stale_services: tuple[str, ...]


def judge(loop_lag_s: float, stale_services: list[str], max_lag_s: float) -> WatchdogVerdict:
    return WatchdogVerdict(loop_lag_s <= max_lag_s and not stale_services, loop_lag_s, tuple(stale_services))


class Watchdog:
    name = "watchdog"

    def __init__(self, notifier: Notifier, interval_s: float) -> None:
        self.notifier = notifier
        # systemd recommends pinging at half the period; the lag budget is the other half.
        self.ping_every_s = interval_s / 2
        self.max_lag_s = interval_s / 2

    async def run(self, ctx: ServiceContext) -> None:
        withheld = False
        while True:
            expected = time.monotonic() + self.ping_every_s
            if await ctx.sleep(self.ping_every_s):
                return
            lag = max(0.0, time.monotonic() - expected)
            stale_after = ctx.config.current.daemon.watchdog_stale_after_s
            verdict = judge(lag, ctx.liveness.stale(stale_after), self.max_lag_s)
            if verdict.healthy:
                self.notifier.watchdog()
                if withheld:
                    log.info("watchdog pings resumed")
                withheld = False
            else:
                withheld = True
                log.warning(
                    "watchdog ping withheld",
                    loop_lag_s=round(lag, 3),
                    stale_services=list(verdict.stale_services),
                )
