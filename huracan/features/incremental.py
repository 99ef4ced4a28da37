"""Market features live: one new bar per symbol, the same arithmetic as training.

Each symbol keeps its last WARMUP_BARS bars (NaN before its first bar, as the batch path pads
before the data start) and the carried filter state. A push appends the bar of each symbol
that has one and computes its new row with the compiled step (live_step.py: market_kernel's
arithmetic for one position, tens of microseconds for 20 symbols where the numpy kernel takes
hundreds); a symbol whose bar is missing does not advance and keeps its previous row and state.
Priming runs the batch kernel (run_kernel) over stored bars: the carried state is shared.

The compiled step is loaded, or compiled on a cold numba cache (seconds), when the first
instance is constructed, not on the first bar.
"""

from __future__ import annotations

import array
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from huracan.core.candle import Candle, CandleSeries
from huracan.features.kernels import Array
from huracan.features.live_step import DERIVED_ROWS, REACH, WORK_ROWS, derive_all, live_push
from huracan.features.market import (
    DEFAULT_COST,
    MARKET_WIDTH,
    WARMUP_BARS,
    CostAssumptions,
    FeatureCarry,
    Ohlcv,
    run_kernel,
)

_FIELDS = 6  # open, high, low, close, volume, open time


class IncrementalFeatures:
    def __init__(self, symbols: Sequence[str], cost: CostAssumptions = DEFAULT_COST) -> None:
        self.symbols = tuple(symbols)
        self.cost = cost
        self._cost = (float(cost.taker_fee_bps), float(cost.half_spread_bps), float(cost.slippage_bps))
        self._index = {s: i for i, s in enumerate(self.symbols)}
        n = len(self.symbols)
        # Each symbol's bars twice over (live_push's ring: slot j at j and j + WARMUP_BARS), so
        # its last WARMUP_BARS bars are one contiguous run without shifting the buffer per bar;
        # `derived` holds the per-bar series (logs) beside them, computed once per bar.
        self._ring: Array = np.full((n, _FIELDS, 2 * WARMUP_BARS), np.nan)
        self._derived: Array = np.full((n, DERIVED_ROWS, 2 * WARMUP_BARS), np.nan)
        self._slots = np.full(n, WARMUP_BARS - 1, dtype=np.int64)
        self.carry = FeatureCarry.empty((n,))
        self.rows: Array = np.full((n, MARKET_WIDTH), np.nan)
        self.bars_seen = np.zeros(n, dtype=np.int64)
        # A push's bars and which symbols have one, written through an array.array and a
        # bytearray that numpy views: their item stores are plain Python, several times cheaper
        # than numpy's, and nothing is allocated per push.
        self._new_items = array.array("d", [np.nan]) * (_FIELDS * n)
        self._new: Array = np.frombuffer(self._new_items, dtype=np.float64).reshape(n, _FIELDS)
        self._present_flags = bytearray(n)
        self._present: npt.NDArray[np.bool_] = np.frombuffer(self._present_flags, dtype=np.bool_)
        self._none_present = bytes(n)
        self._log_close: Array = np.empty(n)  # numpy's log of the closes (live_step's doc)
        self._work: Array = np.empty((WORK_ROWS, REACH))  # the step's scratch
        # Load or compile the step now, on arguments of the types the pushes pass: no symbol
        # is present, so nothing changes.
        self._step()
        derive_all(np.full((_FIELDS, 1), np.nan), np.full(1, np.nan), np.empty((DERIVED_ROWS, 1)))

    @property
    def present(self) -> npt.NDArray[np.bool_]:
        """[S] which symbols had a bar in the last push (a view, rewritten by the next push)."""
        return self._present

    @property
    def warm_mask(self) -> npt.NDArray[np.bool_]:
        """Symbols whose current row is complete (every window inside their history)."""
        return np.asarray(np.isfinite(self.rows).all(axis=1))

    def is_warm(self, symbol: str) -> bool:
        return bool(self.warm_mask[self._index[symbol]])

    @property
    def buffer(self) -> Array:
        """[S, 6, WARMUP_BARS]: each symbol's last bars, oldest first (a copy), as market_kernel
        takes them (Ohlcv.bars)."""
        run = self._slots[:, None] + 1 + np.arange(WARMUP_BARS)
        return np.take_along_axis(self._ring, run[:, None, :], axis=2)

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
            frame = np.full((_FIELDS, WARMUP_BARS), np.nan)
            frame[:, WARMUP_BARS - tail.shape[-1] :] = tail
            derived = np.empty((DERIVED_ROWS, WARMUP_BARS))
            derive_all(frame, np.log(frame[3]), derived)
            # Slot WARMUP_BARS - 1 is the newest: the run is the ring's second half.
            self._ring[i] = np.concatenate((frame, frame), axis=-1)
            self._derived[i] = np.concatenate((derived, derived), axis=-1)
            self._slots[i] = WARMUP_BARS - 1
            self.carry.emas[i] = carry.emas[0]
            self.carry.macd_signal[i] = carry.macd_signal[0]
            self.carry.vol_history[i] = carry.vol_history[0]
            self.rows[i] = rows[0, -1]
            self.bars_seen[i] = len(series)

    def push(self, open_time_ms: int, bars: Mapping[str, Candle]) -> Array:
        """Rows [S, 70] after this bar time, in constructor order (NaN until warm)."""
        flags, items = self._present_flags, self._new_items
        flags[:] = self._none_present
        time = float(open_time_ms)
        advanced = False
        for symbol, candle in bars.items():
            i = self._index.get(symbol)
            if i is None:
                continue
            flags[i] = 1
            j = _FIELDS * i
            items[j] = candle.open
            items[j + 1] = candle.high
            items[j + 2] = candle.low
            items[j + 3] = candle.close
            items[j + 4] = candle.volume
            items[j + 5] = time
            advanced = True
        if advanced:
            self._step()
        return self.rows.copy()

    def _step(self) -> None:
        """Appends the present symbols' bars and steps them (rows, carry, bars_seen in place)."""
        np.log(self._new[:, 3], out=self._log_close)
        live_push(
            self._ring,
            self._derived,
            self._slots,
            self._new,
            self._log_close,
            self._present,
            self.carry.emas,
            self.carry.macd_signal,
            self.carry.vol_history,
            self._cost,
            self.rows,
            self.bars_seen,
            self._work,
        )
