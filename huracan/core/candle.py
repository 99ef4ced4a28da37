"""One OHLCV bar, and a whole series of them as columns for vectorised work."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class Candle:
    """A closed bar. Prices and volume are floats as ccxt delivers them (parsed from the venue's
    decimal strings, whose shortest repr round-trips); they are stored as numeric."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float

    @property
    def open_time(self) -> datetime:
        return datetime.fromtimestamp(self.open_time_ms / 1000, tz=UTC)


@dataclass(frozen=True, slots=True)
class CandleSeries:
    """Bars of one market and timeframe as columns, oldest first."""

    exchange: str
    symbol: str
    timeframe: str
    open_time_ms: npt.NDArray[np.int64]
    open: npt.NDArray[np.float64]
    high: npt.NDArray[np.float64]
    low: npt.NDArray[np.float64]
    close: npt.NDArray[np.float64]
    volume: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return len(self.open_time_ms)

    def candle(self, index: int) -> Candle:
        return Candle(
            self.exchange,
            self.symbol,
            self.timeframe,
            int(self.open_time_ms[index]),
            float(self.open[index]),
            float(self.high[index]),
            float(self.low[index]),
            float(self.close[index]),
            float(self.volume[index]),
        )

    def between(self, start_ms: int, end_ms: int) -> CandleSeries:
        """Bars whose open time is in [start_ms, end_ms)."""
        lo, hi = np.searchsorted(self.open_time_ms, [start_ms, end_ms])
        return CandleSeries(
            self.exchange,
            self.symbol,
            self.timeframe,
            self.open_time_ms[lo:hi],
            self.open[lo:hi],
            self.high[lo:hi],
            self.low[lo:hi],
            self.close[lo:hi],
            self.volume[lo:hi],
        )
