"""Events that flow between the daemon's tasks. Immutable: a consumer that needs a variant
builds a new one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from huracan.core.candle import Candle


@dataclass(frozen=True, slots=True)
class CandleClosed:
    """Every symbol's bar of one bar time, published once the bars are validated and stored.
    Symbols whose bar did not arrive in time are listed in `missing`; the decision step sees one
    batch per bar time, as the agent's batched inference wants."""

    timeframe: str
    open_time_ms: int
    candles: Mapping[str, Candle]
    missing: tuple[str, ...] = ()
