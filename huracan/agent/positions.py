"""What the agent needs to know about positions and the day's trading, per symbol.

The position book belongs to execution (huracan/execution/positions.py); the decision step
reads it through `PositionView`. An A/B challenger, which never trades, reads its paper book
(huracan/agent/paper.py) instead. Pattern memory likewise comes through
`PatternMemoryView`; `NoPatternMemory` gives the zeros the state schema specifies until the
pattern library feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from huracan.features.context import PATTERN_MEMORY_WIDTH


@dataclass(frozen=True, slots=True)
class PositionSnapshot:
    """Per symbol, in the order asked for; arrays of one length."""

    has_position: npt.NDArray[np.bool_]
    size_multiplier: npt.NDArray[np.float64]
    unrealised_pnl_bps: npt.NDArray[np.float64]
    hold_bars: npt.NDArray[np.float64]
    drawdown: npt.NDArray[np.float64]  # of the account, fraction of peak equity
    trades_today: npt.NDArray[np.float64]
    wins_today: npt.NDArray[np.float64]

    @classmethod
    def flat(cls, n: int) -> PositionSnapshot:
        zeros = np.zeros(n)
        return cls(np.zeros(n, dtype=bool), zeros, zeros, zeros, zeros, zeros, zeros)


class PositionView(Protocol):
    def snapshot(self, symbols: Sequence[str]) -> PositionSnapshot: ...


class PatternMemoryView(Protocol):
    def nearest_setups(
        self, symbols: Sequence[str], market_rows: npt.NDArray[np.float64], as_of_ms: int
    ) -> npt.NDArray[np.float64]:
        """[S, 3]: win rate, average profit in bps and reliability of the nearest past setups,
        from the trades that had exited before as_of_ms (the decided bar's close, Unix ms) and
        nothing learned later: a replay over history that a memory already holds must not see
        its own future."""
        ...


class NoPatternMemory:
    def nearest_setups(
        self, symbols: Sequence[str], market_rows: npt.NDArray[np.float64], as_of_ms: int
    ) -> npt.NDArray[np.float64]:
        return np.zeros((len(symbols), PATTERN_MEMORY_WIDTH))
