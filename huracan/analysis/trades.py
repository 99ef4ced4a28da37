"""A closed trade as the learning code reads it: the facts of one `trade_memory` row (joined
with its position's stop) in plain floats, so the analyzers, the post-exit tracker and the
pattern library are pure functions of it and of candles.

Money here is for explaining, not for settling: floats are exact enough for ratios and basis
points, and nothing computed from them goes back to the order path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from huracan.core.timeframe import timeframe_ms

# Post-exit horizons, as the post_exit_tracking.horizon check names them.
HORIZONS: dict[str, int] = {"1h": 3_600_000, "4h": 14_400_000, "24h": 86_400_000}
# The analyzers judge a trade once this horizon after its exit is tracked.
ANALYSIS_HORIZON = "4h"


@dataclass(frozen=True, slots=True)
class TradeFacts:
    trade_id: int
    symbol: str
    direction: str  # 'long' (the only direction traded so far) or 'short'
    entry_time_ms: int
    exit_time_ms: int
    entry_price: float  # average of the entry fills
    exit_price: float  # average of the exit fills
    pnl_bps: float  # net of fees, over the entry notional
    fees_bps: float  # every fee of the trade, over the entry notional
    slippage_bps: float  # fills against the decisions' reference prices, adverse > 0
    exit_reason: str  # trade_memory.exit_reason
    entry_regime: str
    exit_regime: str | None
    confidence: float | None  # the model's probability of the entry action
    size_multiplier: float
    model_version: str
    # The state the model saw at entry: 70 raw market features, then the 10 context numbers.
    entry_features: npt.NDArray[np.float64]
    stop_loss_price: float | None  # the position's stop; None when it had none
    take_profit_price: float | None

    @property
    def won(self) -> bool:
        """As trade_memory.is_win: the net result is positive."""
        return self.pnl_bps > 0

    @property
    def sign(self) -> float:
        """+1 for a long, -1 for a short: multiplies a price move into the trade's favour."""
        return 1.0 if self.direction == "long" else -1.0

    @property
    def gross_move_bps(self) -> float:
        """The price move from entry to exit in the trade's favour, before costs."""
        return self.sign * (self.exit_price / self.entry_price - 1.0) * 10_000.0

    @property
    def stop_distance_bps(self) -> float | None:
        if self.stop_loss_price is None:
            return None
        return abs(self.entry_price - self.stop_loss_price) / self.entry_price * 10_000.0

    def hold_bars(self, timeframe: str) -> int:
        return max(0, (self.exit_time_ms - self.entry_time_ms) // timeframe_ms(timeframe))
