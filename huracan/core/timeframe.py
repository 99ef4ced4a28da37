"""Bar lengths as ccxt names them ("1m", "5m", "1h"...), in milliseconds."""

from __future__ import annotations

_UNIT_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_ms(timeframe: str) -> int:
    """Milliseconds in one bar of `timeframe`; ValueError naming the value if it is not one."""
    amount, unit = timeframe[:-1], timeframe[-1:]
    if unit not in _UNIT_MS or not amount.isdigit() or int(amount) <= 0:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: expected a count and a unit of m, h, d or w, e.g. '5m'"
        )
    return int(amount) * _UNIT_MS[unit]


def bar_open(time_ms: int, timeframe: str) -> int:
    """Open time of the bar that contains `time_ms` (bars are aligned to the Unix epoch)."""
    step = timeframe_ms(timeframe)
    return time_ms - time_ms % step
