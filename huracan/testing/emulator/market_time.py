"""Clocks that follow the emulator's market time (`huracan.core.clock.Clock`), for running the
product's services against it.

- `EmulatorClock`: for tests that own an in-process emulator: `now_ms` is its market time, and
  `sleep_until` moves the emulator on by whole bars until that time has come.
- `PacedMarketClock`: for a process that talks to an emulator running elsewhere in paced mode
  (``python -m huracan.testing.emulator --speed N``). There market time is a pure function of
  wall time, described by a `Pace` that the emulator serves at GET /emulator/clock, so a client
  computes it locally instead of asking for it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


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


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class Pace:
    """Paced market time: `bars_per_second` bars of `step_ms` pass per wall second, counted from
    market time `start_ms` at wall time `wall0_ms` (both epoch ms). The emulator's market time is
    stepped: it moves by whole bars, the n-th bar passing at wall time wall0 + n / speed seconds.
    A speed of 0 is frozen market time."""

    start_ms: int
    wall0_ms: int
    bars_per_second: float
    step_ms: int

    def __post_init__(self) -> None:
        if self.step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {self.step_ms}")
        if not (math.isfinite(self.bars_per_second) and self.bars_per_second >= 0):
            raise ValueError(f"bars_per_second must be finite and >= 0, got {self.bars_per_second}")

    def bars_at(self, wall: int) -> int:
        """Whole bars passed by wall time `wall` (ms)."""
        return max(0, math.floor((wall - self.wall0_ms) * self.bars_per_second / 1000))

    def market_ms(self, wall: int) -> int:
        """The emulator's (stepped) market time at wall time `wall`."""
        return self.start_ms + self.bars_at(wall) * self.step_ms

    def wall_of_bar(self, bars: int) -> int:
        """The first wall ms at which `bars` bars have passed (speed > 0)."""
        wall = self.wall0_ms + math.ceil(bars * 1000 / self.bars_per_second)
        while self.bars_at(wall) < bars:  # float rounding: never wake a millisecond early
            wall += 1
        return wall

    def as_json(self) -> dict[str, Any]:
        return {
            "start_ms": self.start_ms,
            "wall0_ms": self.wall0_ms,
            "bars_per_second": self.bars_per_second,
            "step_ms": self.step_ms,
        }

    @classmethod
    def of_json(cls, body: Mapping[str, Any]) -> Pace:
        return cls(
            start_ms=int(body["start_ms"]),
            wall0_ms=int(body["wall0_ms"]),
            bars_per_second=float(body["bars_per_second"]),
            step_ms=int(body["step_ms"]),
        )


class PacedMarketClock:
    """The market time of an emulator in paced mode, computed from its `Pace` and the wall clock.

    `now_ms` moves continuously between bar boundaries (start + elapsed wall time x speed x
    step), where the emulator moves in whole bars; the two agree at every boundary, and the
    emulator's market time is always `now_ms` floored to the bar. Continuous because the product
    waits for fractions of a bar in market time (ingest asks `close_delay_ms` after a bar's close
    and polls stragglers every second): a stepped clock would round each such wait up to a whole
    bar, and ingest would run every other bar. `sleep_until(t)` sleeps the wall time until
    `now_ms` reaches t."""

    def __init__(
        self,
        pace: Pace,
        *,
        wall: Callable[[], int] = wall_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if pace.bars_per_second <= 0:
            raise ValueError("a frozen emulator (bars_per_second 0) has no paced market time to follow")
        self.pace = pace
        self._wall = wall
        self._sleep = sleep
        # Market ms per wall ms.
        self._rate = pace.bars_per_second * pace.step_ms / 1000

    def now_ms(self) -> int:
        elapsed = max(0, self._wall() - self.pace.wall0_ms)
        return self.pace.start_ms + math.floor(elapsed * self._rate)

    def wall_ms_of(self, time_ms: int) -> int:
        """The first wall ms at which market time has reached `time_ms`."""
        wall = self.pace.wall0_ms + max(0, math.ceil((time_ms - self.pace.start_ms) / self._rate))
        while self.pace.start_ms + math.floor((wall - self.pace.wall0_ms) * self._rate) < time_ms:
            wall += 1  # float rounding
        return wall

    async def sleep_until(self, time_ms: int) -> None:
        # A loop, not one sleep: the event loop's timer (monotonic) and the wall clock may
        # disagree by a millisecond, and waking early would hand back a time before `time_ms`.
        while (behind_ms := self.wall_ms_of(time_ms) - self._wall()) > 0:
            await self._sleep(behind_ms / 1000)
