"""Simulated fills for replay and shadow mode: what a bar does to the working orders. Pure.

The agent decides on bar t's close, so nothing it sends can trade inside bar t: an order fills
only on bars whose open time is at or after the time it reached the venue (`placed_ms`). The
first bar that qualifies is bar t+1, and its first price is its open.

Taker rules (the training environment's, huracan/rl/env.py and huracan/rl/reference.py):

- A market order fills completely at the bar's open, moved against it by the half spread and
  the slippage: buy at open * (1 + (half_spread_bps + slippage_bps) / 1e4), sell at
  open * (1 - (half_spread_bps + slippage_bps) / 1e4).
- The fee is taker_fee_bps / 1e4 of the fill's notional (price * quantity), in quote currency.
  The env charges the entry fee on the notional it spends and the exit fee on the proceeds;
  both are price * quantity of the fill, so a market order of the env's quantity gets the env's
  price and fee to float precision (tests/test_fill_model.py plays the reference through this
  module to check it). A policy trained on those costs is evaluated on the same costs here.
- A limit order that is not post-only and is marketable at the open (buy: the taker price at
  the open <= its limit; sell: >= its limit) fills completely as taker at that taker price,
  which is at least as good as its limit. The check is made on every bar it works through:
  the model has no book between bars, so an order that a bar opens through is treated as
  meeting that open, whether it arrived just before the bar or rested from earlier bars.
- Taker fills need the bar's open alone: fill_at_open gives them as soon as the open is known,
  before the bar closes (shadow and replay learn it from the venue's forming bar), and
  fill_on_bar gives the same fills when the bar's first news is its close.

Maker rules (the same in spirit as the exchange emulator, huracan/testing/emulator/matching.py):

- Every other limit order rests. It fills at its own limit price, maker fee, only when the bar
  trades through that price (buy: low < limit; sell: high > limit). Touching it is not enough:
  at the touch the queue ahead of us may have taken all there was.
- All resting fills of one bar share max_volume_share * volume of that bar, in time priority
  (the order of the sequence given); a partial fill leaves the rest of the order working. Taker
  fills at the open do not use up that share (the env has no volume limit on its fills).
- Maker fills are stamped with the bar's open time, like taker fills: the bar does not say when
  inside it the price was reached, and the open time names the bar the fill belongs to.
- Quantities are not rounded: the orders' quantities are already on the market's lot step, and
  a partial fill by volume share keeps full Decimal precision (rounding it down to the lot step
  is the venue adapter's business). A fill is never more than what is left of its order, and a
  zero-quantity fill is never returned.

Every price, quantity and fee is a Decimal; bars arrive as floats and become the decimal the
venue sent through huracan.core.numbers.decimal_of. A bar is a SimBar (every price exact at once)
or a CandleBar (a candle whose prices are made exact only when a rule reads them: the simulated
venue's bars run between the candle close and the decision, and a bar whose orders are all market
orders needs its open alone). Both give the same fills.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Literal, TypeAlias

from huracan.core.candle import Candle
from huracan.core.numbers import decimal_of

if TYPE_CHECKING:
    from huracan.config.sections import ExecutionSettings

__all__ = [
    "DEFAULT_MAX_VOLUME_SHARE",
    "Bar",
    "CandleBar",
    "FillCosts",
    "Liquidity",
    "OrderType",
    "Side",
    "SimBar",
    "SimFill",
    "SimOrder",
    "fee",
    "fill_at_open",
    "fill_on_bar",
    "post_only_would_cross",
    "synthetic_top_of_book",
    "taker_price",
]

Side = Literal["buy", "sell"]
OrderType = Literal["market", "limit"]
Liquidity = Literal["maker", "taker"]

BPS = Decimal(10_000)
ZERO = Decimal(0)
DEFAULT_MAX_VOLUME_SHARE = Decimal("0.1")


def _bps(value: float) -> Decimal:
    """A setting in basis points as the decimal it was written as (10.0 -> Decimal("10.0"))."""
    return Decimal(str(value))


@dataclass(frozen=True, slots=True)
class FillCosts:
    """What a fill costs: fees, the half spread and slippage in bps, and the share of a bar's
    volume that resting orders may fill."""

    taker_fee_bps: Decimal
    maker_fee_bps: Decimal
    half_spread_bps: Decimal
    slippage_bps: Decimal
    max_volume_share: Decimal = DEFAULT_MAX_VOLUME_SHARE

    def __post_init__(self) -> None:
        costs = (self.taker_fee_bps, self.maker_fee_bps, self.half_spread_bps, self.slippage_bps)
        if any(c < 0 for c in costs):
            raise ValueError(f"fees, spread and slippage cannot be negative: {self}")
        if not ZERO < self.max_volume_share <= 1:
            raise ValueError(f"max_volume_share must be in (0, 1], got {self.max_volume_share}")

    @classmethod
    def from_settings(
        cls, execution: ExecutionSettings, *, max_volume_share: Decimal = DEFAULT_MAX_VOLUME_SHARE
    ) -> FillCosts:
        return cls(
            taker_fee_bps=_bps(execution.taker_fee_bps),
            maker_fee_bps=_bps(execution.maker_fee_bps),
            half_spread_bps=_bps(execution.half_spread_bps),
            slippage_bps=_bps(execution.slippage_bps),
            max_volume_share=max_volume_share,
        )


@dataclass(frozen=True, slots=True)
class SimBar:
    """One closed bar with exact decimal prices and volume."""

    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal

    @classmethod
    def of(cls, candle: Candle) -> SimBar:
        return cls(
            candle.open_time_ms,
            decimal_of(candle.open),
            decimal_of(candle.high),
            decimal_of(candle.low),
            decimal_of(candle.close),
            decimal_of(candle.volume),
        )


class CandleBar:
    """A closed candle read as a SimBar: each price made exact (decimal_of) the first time a rule
    reads it, then kept. The same numbers as SimBar.of(candle), without converting the prices
    that no order of the bar asks about."""

    __slots__ = ("_candle", "_high", "_low", "_open", "_volume")

    def __init__(self, candle: Candle) -> None:
        self._candle = candle
        self._open: Decimal | None = None
        self._high: Decimal | None = None
        self._low: Decimal | None = None
        self._volume: Decimal | None = None

    @property
    def open_time_ms(self) -> int:
        return self._candle.open_time_ms

    @property
    def open(self) -> Decimal:
        if self._open is None:
            self._open = decimal_of(self._candle.open)
        return self._open

    @property
    def high(self) -> Decimal:
        if self._high is None:
            self._high = decimal_of(self._candle.high)
        return self._high

    @property
    def low(self) -> Decimal:
        if self._low is None:
            self._low = decimal_of(self._candle.low)
        return self._low

    @property
    def volume(self) -> Decimal:
        if self._volume is None:
            self._volume = decimal_of(self._candle.volume)
        return self._volume


Bar: TypeAlias = SimBar | CandleBar


@dataclass(frozen=True, slots=True)
class SimOrder:
    """A working order as the fill model sees it. `quantity` is what is still to fill;
    `placed_ms` is when it reached the venue: only bars opening at or after it can fill it.
    `post_only` matters for limit orders only; a market order always takes."""

    client_order_id: str
    side: Side
    order_type: OrderType
    quantity: Decimal
    limit_price: Decimal | None
    post_only: bool
    placed_ms: int

    def __post_init__(self) -> None:
        if self.side not in ("buy", "sell"):
            raise ValueError(f"{self.client_order_id}: side must be buy or sell, got {self.side!r}")
        if self.order_type not in ("market", "limit"):
            raise ValueError(f"{self.client_order_id}: unknown order type {self.order_type!r}")
        if self.quantity < 0:
            raise ValueError(f"{self.client_order_id}: negative quantity {self.quantity}")
        if self.order_type == "limit" and (self.limit_price is None or self.limit_price <= 0):
            raise ValueError(f"{self.client_order_id}: a limit order needs a positive limit price")


@dataclass(frozen=True, slots=True)
class SimFill:
    """One fill. `time_ms` is the open time of the bar it happened in, for maker fills too."""

    client_order_id: str
    price: Decimal
    quantity: Decimal
    fee_quote: Decimal
    liquidity: Liquidity
    time_ms: int


def synthetic_top_of_book(last_close: Decimal, costs: FillCosts) -> tuple[Decimal, Decimal]:
    """(bid, ask) half a spread either side of the last close: the book post-only orders meet."""
    half = costs.half_spread_bps / BPS
    return last_close * (1 - half), last_close * (1 + half)


def post_only_would_cross(side: Side, price: Decimal, bid: Decimal, ask: Decimal) -> bool:
    """Whether a post-only order at `price` would take liquidity (the venue rejects it)."""
    return price >= ask if side == "buy" else price <= bid


def taker_price(side: Side, open_price: Decimal, costs: FillCosts) -> Decimal:
    """The env's fill price at a bar's open: against the taker by half spread plus slippage."""
    move = (costs.half_spread_bps + costs.slippage_bps) / BPS
    return open_price * (1 + move) if side == "buy" else open_price * (1 - move)


def fee(notional: Decimal, bps: Decimal) -> Decimal:
    """The fee on `notional` (quote currency) at `bps` basis points."""
    return notional * bps / BPS


def _marketable_at_open(order: SimOrder, price: Decimal) -> bool:
    assert order.limit_price is not None
    return price <= order.limit_price if order.side == "buy" else price >= order.limit_price


def _trades_through(order: SimOrder, bar: Bar) -> bool:
    assert order.limit_price is not None
    return bar.low < order.limit_price if order.side == "buy" else bar.high > order.limit_price


def _taker_fill(order: SimOrder, opened_ms: int, open_price: Decimal, costs: FillCosts) -> SimFill | None:
    """The fill of a market order, or of a limit that is not post-only and is marketable at the
    open, at the open's taker price; None for an order that rests."""
    at_open = taker_price(order.side, open_price, costs)
    if order.order_type != "market" and not _marketable_at_open(order, at_open):
        return None
    fee_quote = fee(at_open * order.quantity, costs.taker_fee_bps)
    return SimFill(order.client_order_id, at_open, order.quantity, fee_quote, "taker", opened_ms)


def fill_at_open(
    orders: Sequence[SimOrder], opened_ms: int, open_price: Decimal, costs: FillCosts
) -> list[SimFill]:
    """The taker fills of a bar that has only opened: what fill_on_bar gives these orders at the
    open, which needs nothing else of the bar. The orders it leaves (resting limits, post-only
    or not marketable) are the bar's to fill once it closes; taker fills do not use up the bar's
    volume share, so taking them first changes no fill."""
    fills: list[SimFill] = []
    for order in orders:
        if (
            order.placed_ms > opened_ms
            or order.quantity <= 0
            or (order.post_only and order.order_type == "limit")
        ):
            continue
        taken = _taker_fill(order, opened_ms, open_price, costs)
        if taken is not None:
            fills.append(taken)
    return fills


def fill_on_bar(orders: Sequence[SimOrder], bar: Bar, costs: FillCosts) -> list[SimFill]:
    """The fills `bar` gives the working `orders` (in time priority: the sequence's order).

    Orders placed after the bar opened are left alone. Market orders, and limit orders that are
    not post-only and are marketable at the open, fill completely as taker at the open's taker
    price. Other limit orders fill as maker at their limit when the bar trades through it, all
    of them together at most max_volume_share of the bar's volume. Fills come back in order."""
    fills: list[SimFill] = []
    opened_ms = bar.open_time_ms
    # Worked out when the first resting order needs it: a CandleBar's volume stays a float until then.
    maker_budget: Decimal | None = None
    for order in orders:
        if order.placed_ms > opened_ms or order.quantity <= 0:
            continue
        # A post-only order never takes, so its taker price is never needed.
        if order.order_type == "market" or not order.post_only:
            taken = _taker_fill(order, opened_ms, bar.open, costs)
            if taken is not None:
                fills.append(taken)
                continue
        if maker_budget is None:
            maker_budget = costs.max_volume_share * bar.volume
        if maker_budget <= 0 or not _trades_through(order, bar):
            continue
        assert order.limit_price is not None
        quantity = min(order.quantity, maker_budget)
        maker_budget -= quantity
        fills.append(
            SimFill(
                order.client_order_id,
                order.limit_price,
                quantity,
                fee(order.limit_price * quantity, costs.maker_fee_bps),
                "maker",
                opened_ms,
            )
        )
    return fills
