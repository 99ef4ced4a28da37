"""What a long-lived task of the daemon looks like, and how it shows that it is making progress."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Protocol

from huracan.config import HuracanConfig


class FatalError(Exception):
    """Raised by a service when carrying on would be unsafe: the daemon stops with a non-zero
    status and systemd decides about the restart (after which start-up reconciliation runs)."""


class RunningConfig:
    """The configuration in force. A SIGHUP reload swaps `current`; services read it each cycle
    instead of keeping a copy, so a reloaded value takes effect on their next iteration."""

    def __init__(self, config: HuracanConfig) -> None:
        self.current = config


@dataclass(slots=True)
class Liveness:
    """Until when each service is accounted for, on the monotonic clock: the time of its last
    beat, or later when it announced a deliberate wait (a sleep between heartbeats, a backoff)."""

    quiet_until: dict[str, float] = field(default_factory=dict)

    def beat(self, name: str, quiet_for_s: float = 0.0) -> None:
        self.quiet_until[name] = time.monotonic() + quiet_for_s

    def stale(self, max_silence_s: float, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        return sorted(name for name, until in self.quiet_until.items() if now - until > max_silence_s)

    def forget(self, name: str) -> None:
        self.quiet_until.pop(name, None)


@dataclass(slots=True)
class ServiceContext:
    """Handed to a service's run(): the stop request, the running config, the liveness board."""

    name: str
    config: RunningConfig
    stopping: asyncio.Event
    liveness: Liveness

    def beat(self) -> None:
        self.liveness.beat(self.name)

    async def sleep(self, seconds: float) -> bool:
        """Wait up to `seconds`, waking early on a stop request; True if the service should stop."""
        self.liveness.beat(self.name, quiet_for_s=seconds)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)
        self.beat()
        return self.stopping.is_set()


class Service(Protocol):
    """A long-lived job. run() returns once ctx.stopping is set and its in-flight work is done;
    it raises FatalError to stop the daemon, any other exception to be restarted with backoff."""

    name: str

    async def run(self, ctx: ServiceContext) -> None: ...
