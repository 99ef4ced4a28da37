"""What the price did after a trade closed: one `post_exit_tracking` row per horizon.

Windows (bars by open time, `open_time_ms` = bar start):
- hold window: from the open of the bar that contains the entry up to the exit,
  [bar_open(entry), exit); at least that entry bar, so a trade closed inside its entry bar still
  has one. With the engine's fills at bar opens this is exactly [entry, exit).
- post-exit window: [exit, exit + horizon).

Conventions:
- Prices are the bars' highs and lows: the best price for a long is the highest high, for a short
  the lowest low (`TradeFacts.sign` turns every move into "in the trade's favour"). A bar's
  extreme is stamped with the bar's open time (the bar does not say when inside it the extreme
  printed); ties go to the earliest bar.
- Moves are in basis points of the price they start from; `favourable_bps` > 0 is a gain for the
  trade.
- The cost of the exit is half the trade's fees (`fees_bps / 2`): holding on, or having left
  sooner, would have paid the same exit fee, so a difference smaller than it is not a mistake.
- The price at the horizon is the close of the last bar of the post-exit window (the bar that ends
  at the horizon when the exit is at a bar open).

`track_post_exit` returns None until the candles reach the horizon (the last bar closes at or
after it) and, after that, when the whole post-exit window is a gap in the data (a venue outage):
`horizon_covered` tells the caller which of the two it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from huracan.analysis.trades import HORIZONS, TradeFacts
from huracan.core.candle import CandleSeries

BPS = 10_000.0


def favourable_bps(sign: float, from_price: float, to_price: float) -> float:
    """The move from `from_price` to `to_price` in the trade's favour, bps of `from_price`."""
    return sign * (to_price / from_price - 1.0) * BPS


def entry_bar_open_ms(trade: TradeFacts, timeframe_ms: int) -> int:
    """Open time of the bar that contains the entry (bars are aligned to the Unix epoch)."""
    return trade.entry_time_ms - trade.entry_time_ms % timeframe_ms


def hold_window(trade: TradeFacts, candles: CandleSeries, timeframe_ms: int) -> CandleSeries:
    start = entry_bar_open_ms(trade, timeframe_ms)
    return candles.between(start, max(trade.exit_time_ms, start + timeframe_ms))


def post_window(trade: TradeFacts, candles: CandleSeries, horizon: str) -> CandleSeries:
    return candles.between(trade.exit_time_ms, trade.exit_time_ms + _horizon_ms(horizon))


@dataclass(frozen=True, slots=True)
class Extremes:
    """The best and the worst price for the trade's direction within some bars."""

    best_price: float
    best_at_ms: int
    worst_price: float
    worst_at_ms: int


def extremes(bars: CandleSeries, sign: float) -> Extremes | None:
    """Best and worst price of `bars` for a trade of direction `sign`; None for no bars."""
    if len(bars) == 0:
        return None
    favourable, adverse = (bars.high, bars.low) if sign > 0 else (bars.low, bars.high)
    best = int(np.argmax(sign * favourable))
    worst = int(np.argmin(sign * adverse))
    return Extremes(
        float(favourable[best]),
        int(bars.open_time_ms[best]),
        float(adverse[worst]),
        int(bars.open_time_ms[worst]),
    )


def horizon_covered(trade: TradeFacts, candles: CandleSeries, horizon: str, timeframe_ms: int) -> bool:
    """Whether the candles reach `horizon` after the exit: their last bar closes at or after it."""
    if len(candles) == 0:
        return False
    return int(candles.open_time_ms[-1]) + timeframe_ms >= trade.exit_time_ms + _horizon_ms(horizon)


@dataclass(frozen=True, slots=True)
class PostExit:
    """One post_exit_tracking row (times in ms since the epoch, prices in quote currency)."""

    horizon: str  # '1h' | '4h' | '24h'
    horizon_time_ms: int  # exit_time_ms + HORIZONS[horizon]
    price_at_horizon: float
    best_price: float  # best for the trade's direction, exit..horizon
    best_price_at_ms: int
    worst_price: float
    worst_price_at_ms: int
    missed_profit_bps: float  # >= 0: favourable move from the exit price to the best price
    optimal_exit_time_ms: int | None  # when exiting would have paid most, entry..horizon
    optimal_exit_price: float  # the best price for the trade's direction, entry..horizon
    should_have_held: bool
    should_have_exited_earlier: bool


def best_move_from_entry(
    sign: float,
    entry_price: float,
    exit_price: float,
    entry_ms: int,
    optimal_exit_price: float | None,
    optimal_exit_ms: int,
) -> tuple[float, int]:
    """The best favourable move from entry (bps, at least the exit's) through the tracked
    horizon, hold window included, and how long after entry it came: what the pattern library's
    exit threshold and best hold are made of. `optimal_exit_price` None (a row from before it was
    recorded): the exit's move. Bar open times: the best bar may have opened up to a bar before
    the entry fill, so the time is at least 0."""
    move = favourable_bps(sign, entry_price, exit_price)
    if optimal_exit_price is not None:
        move = max(move, favourable_bps(sign, entry_price, optimal_exit_price))
    return move, max(0, optimal_exit_ms - entry_ms)


def track_post_exit(
    trade: TradeFacts, candles: CandleSeries, horizon: str, timeframe_ms: int
) -> PostExit | None:
    """None while `candles` do not yet cover the whole horizon after the exit (the caller retries later)."""
    if timeframe_ms <= 0:
        raise ValueError(f"timeframe_ms must be positive, got {timeframe_ms} (trade {trade.trade_id})")
    if not horizon_covered(trade, candles, horizon, timeframe_ms):
        return None
    after = post_window(trade, candles, horizon)
    post = extremes(after, trade.sign)
    if post is None:
        return None
    exit_cost_bps = trade.fees_bps / 2.0
    at_horizon = float(after.close[-1])
    held = extremes(hold_window(trade, candles, timeframe_ms), trade.sign)
    optimal_at, optimal_price = post.best_at_ms, post.best_price
    if held is not None and trade.sign * held.best_price >= trade.sign * post.best_price:
        optimal_at, optimal_price = held.best_at_ms, held.best_price  # the earlier bar wins a tie
    return PostExit(
        horizon=horizon,
        horizon_time_ms=trade.exit_time_ms + _horizon_ms(horizon),
        price_at_horizon=at_horizon,
        best_price=post.best_price,
        best_price_at_ms=post.best_at_ms,
        worst_price=post.worst_price,
        worst_price_at_ms=post.worst_at_ms,
        missed_profit_bps=max(0.0, favourable_bps(trade.sign, trade.exit_price, post.best_price)),
        optimal_exit_time_ms=optimal_at,
        optimal_exit_price=optimal_price,
        should_have_held=favourable_bps(trade.sign, trade.exit_price, at_horizon) > exit_cost_bps,
        should_have_exited_earlier=(
            held is not None and favourable_bps(trade.sign, trade.exit_price, held.best_price) > exit_cost_bps
        ),
    )


def _horizon_ms(horizon: str) -> int:
    try:
        return HORIZONS[horizon]
    except KeyError:
        raise ValueError(
            f"unknown post-exit horizon {horizon!r}: expected one of {sorted(HORIZONS)}"
        ) from None
