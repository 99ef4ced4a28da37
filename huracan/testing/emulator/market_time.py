"""A `huracan.core.clock.Clock` that follows a running emulator's market time, for tests that
run services (ingestion, the agent) against the emulator: `now_ms` is the emulator's market
time, and `sleep_until` moves the emulator on by whole bars until that time has come."""

from __future__ import annotations

import asyncio
from typing import Protocol


class MarketTimeSource(Protocol):
    @property
    def now_ms(self) -> int: ...

    @property
    def step_ms(self) -> int: ...

    def advance(self, bars: int = 1) -> None: ...


class EmulatorClock:
    """Market time of `emulator` (a RunningEmulator). Sleeping advances the emulator by the
    fewest whole bars that reach the wake-up time (resting orders fill on the way)."""

    def __init__(self, emulator: MarketTimeSource) -> None:
        self.emulator = emulator

    def now_ms(self) -> int:
        return self.emulator.now_ms

    async def sleep_until(self, time_ms: int) -> None:
        await asyncio.sleep(0)  # let the consumers of the last bar run first, as ReplayClock does
        behind = time_ms - self.emulator.now_ms
        if behind > 0:
            step = self.emulator.step_ms
            self.emulator.advance(-(-behind // step))
