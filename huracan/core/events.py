"""Events that flow between the daemon's tasks. Immutable: a consumer that needs a variant
builds a new one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from huracan.core.candle import Candle


@dataclass(frozen=True, slots=True)
class CandleClosed:
    """Every symbol's bar of one bar time, published once the bars are validated and stored.
    Symbols whose bar did not arrive in time are listed in `missing`; the decision step sees one
    batch per bar time, as the agent's batched inference wants.

    `next_opens`: the first price of the next bar, by symbol, where it was known when the bar
    was published (the venue's forming bar, or the next bar of a backlog). The simulated venue
    fills market orders at it at once, as a live venue would, instead of when that bar closes."""

    timeframe: str
    open_time_ms: int
    candles: Mapping[str, Candle]
    missing: tuple[str, ...] = ()
    next_opens: Mapping[str, float] = field(default_factory=dict)
