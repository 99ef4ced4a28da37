"""The emulator's market time: a point on the candles' time axis that moves in whole bars.

Market time is not wall time. Bars whose close is at or before `now_ms` are history the
emulator serves; the bar that contains `now_ms` has not closed and is never served. Order and
trade timestamps are market time; only `/api/v3/time` and the recvWindow check use wall time,
because ccxt signs requests with its own wall clock.
"""

from __future__ import annotations


class MarketClock:
    """Market time in milliseconds, advanced in steps of `step_ms` (the finest bar length)."""

    def __init__(self, start_ms: int, step_ms: int) -> None:
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms}")
        self._now_ms = start_ms
        self.step_ms = step_ms

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, bars: int = 1) -> tuple[int, int]:
        """Move forward by `bars` whole bars; returns (before, after)."""
        if bars < 0:
            raise ValueError(f"market time only moves forward, got bars={bars}")
        before = self._now_ms
        self._now_ms += bars * self.step_ms
        return before, self._now_ms
