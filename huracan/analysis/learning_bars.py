"""The bars the learning task reads around closed trades, and the regime at each exit."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, date, datetime

import numpy as np

from huracan.analysis.trades import TradeFacts
from huracan.core.candle import CandleSeries
from huracan.features.market import Ohlcv, compute_market_features, regime_names
from huracan.memory.candles import CandleStore


async def bars_around(
    candles: CandleStore,
    exchange: str,
    timeframe: str,
    trades: Sequence[TradeFacts],
    *,
    before_ms: int,
    after_ms: int,
) -> dict[str, CandleSeries]:
    """Per symbol, one read of the bars opening in every trade's [entry - before, exit + after)."""
    out: dict[str, CandleSeries] = {}
    for symbol in sorted({t.symbol for t in trades}):
        mine = [t for t in trades if t.symbol == symbol]
        start = min(t.entry_time_ms for t in mine) - before_ms
        end = max(t.exit_time_ms for t in mine) + after_ms
        out[symbol] = await candles.read_series(exchange, symbol, timeframe, start, end)
        await asyncio.sleep(0)  # a long backlog must not hold the decision step up
    return out


def exit_regimes(
    trades: Sequence[TradeFacts], series: dict[str, CandleSeries], step_ms: int
) -> list[str | None]:
    """The market regime of the last bar closed at each exit (None without enough bars): the
    features of each symbol's bars computed once for the batch."""
    features = {s: compute_market_features(Ohlcv.from_series(bars)) for s, bars in series.items()}
    regimes: list[str | None] = []
    for trade in trades:
        bars = series[trade.symbol]
        last = int(np.searchsorted(bars.open_time_ms, trade.exit_time_ms - step_ms, side="right")) - 1
        name = regime_names(features[trade.symbol][last : last + 1])[0] if last >= 0 else "unknown"
        regimes.append(None if name == "unknown" else name)
    return regimes


def utc_day(time_ms: int) -> date:
    """The UTC calendar day of a time: the day of `model_performance`'s rows."""
    return datetime.fromtimestamp(time_ms // 1000, tz=UTC).date()
