"""The synthetic order book around the last closed bar (pure; no I/O).

mid = the last close; best bid and ask sit `spread_bps / 2` either side (at least one tick
away, on the tick grid); further levels step out by about one basis point each. Each level
holds `level_share` of the bar's volume (at least one lot), so a market order larger than the
bar could absorb walks several levels and pays for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from huracan.testing.emulator.candles import Bar
from huracan.testing.emulator.markets import MarketRules


@dataclass(frozen=True, slots=True)
class Level:
    price: Decimal
    qty: Decimal


@dataclass(frozen=True, slots=True)
class SyntheticBook:
    bids: tuple[Level, ...]  # best (highest) first
    asks: tuple[Level, ...]  # best (lowest) first

    @property
    def best_bid(self) -> Decimal:
        return self.bids[0].price

    @property
    def best_ask(self) -> Decimal:
        return self.asks[0].price

    @property
    def mid(self) -> Decimal:
        return (self.best_bid + self.best_ask) / 2


def synthetic_book(
    bar: Bar,
    rules: MarketRules,
    spread_bps: Decimal = Decimal(4),
    levels: int = 20,
    level_share: Decimal = Decimal("0.02"),
) -> SyntheticBook:
    mid = bar.close
    half = max(mid * spread_bps / Decimal(20_000), rules.tick_size)
    bid = rules.floor_price(mid - half)
    ask = rules.ceil_price(mid + half)
    if bid <= 0:
        bid = rules.tick_size
    if ask <= bid:
        ask = bid + rules.tick_size
    gap = max(rules.floor_price(mid / Decimal(10_000)), rules.tick_size)
    qty = max(rules.floor_qty(bar.volume * level_share), rules.step_size)
    bids = tuple(Level(bid - gap * i, qty) for i in range(levels) if bid - gap * i > 0)
    asks = tuple(Level(ask + gap * i, qty) for i in range(levels))
    return SyntheticBook(bids, asks)
