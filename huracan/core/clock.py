"""Market time. Live code reads the wall clock; replay jumps from bar to bar as fast as the
consumers keep up (or at a set speed). Everything that waits for a bar asks a Clock."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_until(self, time_ms: int) -> None: ...


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    async def sleep_until(self, time_ms: int) -> None:
        delay = (time_ms - self.now_ms()) / 1000
        if delay > 0:
            await asyncio.sleep(delay)


class ReplayClock:
    """Market time that moves only when someone sleeps: each sleep_until jumps there at once
    (speed 0) or after (gap in bars / speed) real seconds, so a replay runs as fast as it goes
    or at a set number of bars per second."""

    def __init__(self, start_ms: int, *, bar_ms: int, bars_per_second: float = 0.0) -> None:
        self._now_ms = start_ms
        self.bar_ms = bar_ms
        self.bars_per_second = bars_per_second

    def now_ms(self) -> int:
        return self._now_ms

    async def sleep_until(self, time_ms: int) -> None:
        if time_ms <= self._now_ms:
            await asyncio.sleep(0)
            return
        if self.bars_per_second > 0:
            await asyncio.sleep((time_ms - self._now_ms) / self.bar_ms / self.bars_per_second)
        else:
            await asyncio.sleep(0)  # let the consumers of the last bar run first
        self._now_ms = max(self._now_ms, time_ms)
