"""Market features live: one new bar per symbol, the same kernel as training.

Each symbol keeps a buffer of its last WARMUP_BARS bars (NaN before its first bar, as the batch
path pads before the data start) and the carried filter state. A push shifts the buffers of
the symbols that have a bar, runs the kernel for one position for all symbols at once, and
keeps the new rows and state of those symbols only: a symbol whose bar is missing does not
advance and keeps its previous row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from huracan.core.candle import Candle, CandleSeries
from huracan.features.kernels import Array
from huracan.features.market import (
    DEFAULT_COST,
    MARKET_WIDTH,
    WARMUP_BARS,
    CostAssumptions,
    FeatureCarry,
    Ohlcv,
    market_kernel,
    run_kernel,
)


class IncrementalFeatures:
    def __init__(self, symbols: Sequence[str], cost: CostAssumptions = DEFAULT_COST) -> None:
        self.symbols = tuple(symbols)
        self.cost = cost
        self._index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        self.buffer: Array = np.full((n, 6, WARMUP_BARS), np.nan)
        self.carry = FeatureCarry.empty((n,))
        self.rows: Array = np.full((n, MARKET_WIDTH), np.nan)
        self.bars_seen = np.zeros(n, dtype=np.int64)

    @property
    def warm_mask(self) -> npt.NDArray[np.bool_]:
        """Symbols whose current row is complete (every window inside their history)."""
        return np.asarray(np.isfinite(self.rows).all(axis=1))

    def is_warm(self, symbol: str) -> bool:
        return bool(self.warm_mask[self._index[symbol]])

    def prime(self, history: Mapping[str, CandleSeries]) -> None:
        """Start each listed symbol from stored bars (oldest first), as if they had been pushed
        one by one: the batch kernel over them, then its buffer tail and state."""
        for symbol, series in history.items():
            i = self._index[symbol]
            if len(series) == 0:
                continue
            bars = Ohlcv.from_series(series).bars()[None]
            rows, carry = run_kernel(bars, self.cost)
            tail = bars[0, :, -WARMUP_BARS:]
            self.buffer[i] = np.nan
            self.buffer[i, :, WARMUP_BARS - tail.shape[-1] :] = tail
            self.carry.emas[i] = carry.emas[0]
            self.carry.macd_signal[i] = carry.macd_signal[0]
            self.carry.vol_history[i] = carry.vol_history[0]
            self.rows[i] = rows[0, -1]
            self.bars_seen[i] = len(series)

    def push(self, open_time_ms: int, bars: Mapping[str, Candle]) -> Array:
        """Rows [S, 70] after this bar time, in constructor order (NaN until warm)."""
        present = np.array([s in bars for s in self.symbols])
        if not present.any():
            return self.rows.copy()
        new = np.full((len(self.symbols), 6), np.nan)
        for symbol, candle in bars.items():
            i = self._index.get(symbol)
            if i is not None:
                new[i] = (
                    candle.open,
                    candle.high,
                    candle.low,
                    candle.close,
                    candle.volume,
                    float(open_time_ms),
                )
        # Shift in place: a symbol without a bar keeps its buffer (the kernel's output for it
        # is computed but discarded below).
        if present.all():
            self.buffer[:, :, :-1] = self.buffer[:, :, 1:]
            self.buffer[:, :, -1] = new
        else:
            held = np.flatnonzero(present)
            self.buffer[held, :, :-1] = self.buffer[held, :, 1:]
            self.buffer[held, :, -1] = new[held]
        rows, carry = market_kernel(self.buffer, self.carry, 1, self.cost)
        if present.all():  # the usual bar: every symbol advances, nothing to merge
            self.carry = carry
            self.rows = rows[:, 0, :].copy()
        else:
            keep = present[:, None]
            self.carry = FeatureCarry(
                np.where(keep, carry.emas, self.carry.emas),
                np.where(keep, carry.macd_signal, self.carry.macd_signal),
                np.where(keep, carry.vol_history, self.carry.vol_history),
            )
            self.rows = np.where(keep, rows[:, 0, :], self.rows)
        self.bars_seen += present
        return self.rows.copy()
