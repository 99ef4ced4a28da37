"""The simulated venue's fills, order states and trades: hand-worked bars, and a seeded stream of
orders over real bundled bars held to a plain reference that runs fill_on_bar directly (every
order of the symbol scanned, the bar made exact at once, the fill model's view rebuilt on each
bar), with every Decimal equal in value and in representation (compared through repr)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import Candle, CandleSeries
from huracan.core.numbers import decimal_of
from huracan.exchange.errors import OrderNotFound, OrderRejected, PostOnlyWouldTake
from huracan.exchange.models import MarketRules, Order, OrderRequest, Trade
from huracan.execution.fill_model import (
    CandleBar,
    FillCosts,
    Side,
    SimBar,
    SimOrder,
    fill_on_bar,
    post_only_would_cross,
    synthetic_top_of_book,
)
from huracan.execution.positions import floor_to_step
from huracan.execution.sim_venue import SimulatedVenue, replay_market_rules
from huracan.market.candle_files import read_candle_file

D = Decimal
STEP_MS = 300_000
T0 = 1_700_000_000_000
SYMBOL = "TST/USDT"
# taker 10 bps, maker 2 bps; half spread 1 + slippage 2 = 3 bps against the taker.
COSTS = FillCosts(D(10), D(2), D(1), D(2), D("0.1"))
RULES = MarketRules(
    symbol=SYMBOL,
    market_id="TSTUSDT",
    base="TST",
    quote="USDT",
    active=True,
    amount_step=D("0.01"),
    tick_size=D("0.01"),
    min_amount=D("0.01"),
    max_amount=None,
    min_notional=D(5),
    min_price=None,
    max_price=None,
)


def candle(bar: int, open_: float, high: float, low: float, close: float, volume: float) -> Candle:
    return Candle("binance", SYMBOL, "5m", T0 + bar * STEP_MS, open_, high, low, close, volume)


def venue() -> SimulatedVenue:
    return SimulatedVenue("binance", {SYMBOL: RULES}, COSTS, lambda: T0)


# --- hand-worked bars ---------------------------------------------------------------------------


async def test_a_market_order_fills_whole_at_the_next_open() -> None:
    sim = venue()
    assert sim.on_bar(candle(0, 100, 101, 99, 100, 10)) == []
    ack = await sim.create_order(
        OrderRequest(SYMBOL, "buy", "market", D("0.5"), "c1", reference_price=D(100))
    )
    assert (ack.via, ack.order.amount, ack.order.timestamp_ms) == ("response", D("0.50"), T0 + STEP_MS)
    # Placed at bar 0's close: bar 1 fills it at its open, 100 * (1 + 3/1e4) = 100.03, and the
    # fee is 10 bps of 100.03 * 0.5 = 50.015, i.e. 0.050015.
    (trade,) = sim.on_bar(candle(1, 100, 101, 99, 100.5, 10))
    assert (trade.id, trade.order_id, trade.side, trade.taker_or_maker) == ("c1-1", "sim-c1", "buy", "taker")
    assert (trade.price, trade.amount, trade.cost, trade.fee) == (
        D("100.03"),
        D("0.5"),
        D("50.015"),
        D("0.050015"),
    )
    assert (trade.fee_asset, trade.timestamp_ms) == ("USDT", T0 + STEP_MS)
    order = await sim.fetch_order(SYMBOL, client_order_id="c1")
    assert (order.status, order.filled, order.remaining, order.cost, order.average) == (
        "closed",
        D("0.5"),
        D(0),
        D("50.015"),
        D("100.03"),
    )
    assert await sim.fetch_open_orders(SYMBOL) == []
    assert await sim.fetch_my_trades(SYMBOL, T0 + STEP_MS) == [trade]
    assert await sim.fetch_my_trades(SYMBOL, T0 + STEP_MS + 1) == []
    sim.forget_closed()
    with pytest.raises(OrderNotFound):
        await sim.fetch_order(SYMBOL, client_order_id="c1")
    assert await sim.fetch_my_trades(SYMBOL, 0) == []


async def test_a_resting_limit_fills_by_volume_share_on_the_lot_step_until_canceled() -> None:
    sim = venue()
    sim.on_bar(candle(0, 100, 101, 99, 100, 10))
    # The book is 100 -/+ 1 bp: bid 99.99, ask 100.01. A post-only buy at 100.02 would take.
    with pytest.raises(PostOnlyWouldTake):
        await sim.create_order(OrderRequest(SYMBOL, "buy", "limit", D(1), "p1", D("100.02"), post_only=True))
    with pytest.raises(OrderNotFound):
        await sim.fetch_order(SYMBOL, client_order_id="p1")
    await sim.create_order(OrderRequest(SYMBOL, "buy", "limit", D(5), "m1", D("99.5"), post_only=True))
    # Bar 1 trades through 99.5 (low 99.4); the resting share is 0.1 * 12.345 = 1.2345, cut to
    # the lot step: 1.23 at 99.5, maker fee 2 bps of 122.385 = 0.024477.
    (first,) = sim.on_bar(candle(1, 100, 100.2, 99.4, 99.8, 12.345))
    assert (first.id, first.taker_or_maker, first.price, first.amount) == (
        "m1-1",
        "maker",
        D("99.5"),
        D("1.23"),
    )
    assert first.fee == D("0.024477")
    order = await sim.fetch_order(SYMBOL, client_order_id="m1")
    assert (order.status, order.filled, order.remaining, order.average) == (
        "open",
        D("1.23"),
        D("3.77"),
        D("99.5"),
    )
    # A bar that only touches the limit (low 99.5) leaves it; another symbol's bar does too.
    assert sim.on_bar(candle(2, 100, 100.2, 99.5, 99.8, 50)) == []
    other = Candle("binance", "OTHER/USDT", "5m", T0 + 2 * STEP_MS, 1, 1, 0.5, 1, 1e6)
    assert sim.on_bar(other) == []
    # Bar 3: share 0.1 * 20 = 2 of the 3.77 left.
    (second,) = sim.on_bar(candle(3, 99.9, 100, 99, 99.6, 20))
    assert (second.id, second.amount, second.fee) == ("m1-2", D(2), D("0.0398"))  # 2 bps of 199
    assert [o.client_order_id for o in await sim.fetch_open_orders(SYMBOL)] == ["m1"]
    canceled = await sim.cancel_order(SYMBOL, client_order_id="m1")
    assert canceled.outcome == "canceled"
    assert canceled.order is not None
    assert (canceled.order.status, canceled.order.filled) == ("canceled", D("3.23"))
    assert (await sim.cancel_order(SYMBOL, client_order_id="m1")).outcome == "already_closed"
    assert sim.on_bar(candle(4, 95, 96, 90, 95, 1000)) == []
    assert await sim.fetch_open_orders(SYMBOL) == []
    assert await sim.fetch_my_trades(SYMBOL, 0) == [first, second]
    sim.forget_closed()
    assert await sim.fetch_my_trades(SYMBOL, 0) == []
    assert (await sim.cancel_order(SYMBOL, client_order_id="m1")).outcome == "not_found"


# --- the lazily exact bar gives the fills of the exact one ----------------------------------------


def prices() -> st.SearchStrategy[float]:
    # Floats as a venue's decimal strings parse: up to 8 decimals.
    return st.integers(1, 10**12).map(lambda n: float(D(n) / D(10**8)))


@settings(max_examples=200, deadline=None)
@given(
    o=prices(),
    h=prices(),
    lo=prices(),
    c=prices(),
    volume=prices(),
    specs=st.lists(
        st.tuples(
            st.sampled_from(["buy", "sell"]),
            st.booleans(),
            st.booleans(),
            st.integers(1, 10**6),
            st.integers(1, 10**12),
            st.sampled_from([-1, 0, 1]),
        ),
        max_size=6,
    ),
)
def test_a_candle_bar_fills_as_its_exact_sim_bar(
    o: float,
    h: float,
    lo: float,
    c: float,
    volume: float,
    specs: list[tuple[Side, bool, bool, int, int, int]],
) -> None:
    bar = Candle("binance", SYMBOL, "5m", T0, o, h, lo, c, volume)
    orders = [
        SimOrder(
            f"o{i}",
            side,
            "market" if is_market else "limit",
            D(qty) / 1000,
            None if is_market else D(price) / D(10**8),
            post_only,
            T0 + shift,
        )
        for i, (side, is_market, post_only, qty, price, shift) in enumerate(specs)
    ]
    lazy, exact = CandleBar(bar), SimBar.of(bar)
    assert repr(fill_on_bar(orders, lazy, COSTS)) == repr(fill_on_bar(orders, exact, COSTS))
    # Read after the fills (some prices converted then, some now): still the exact bar's.
    fields = ("open_time_ms", "open", "high", "low", "volume")
    assert [repr(getattr(lazy, f)) for f in fields] == [repr(getattr(exact, f)) for f in fields]


# --- a seeded stream over real bars against the plain reference ------------------------------------


@dataclass(slots=True)
class RefOrder:
    order: Order
    post_only: bool
    fills: int = 0


class Reference:
    """The venue's rules written plainly: every order scanned on every bar, the bar exact at once,
    SimOrders built afresh, fills cut to the lot step and orders updated with replace."""

    def __init__(self, markets: dict[str, MarketRules], costs: FillCosts) -> None:
        self.markets, self.costs = markets, costs
        self.orders: dict[str, RefOrder] = {}
        self.trades: dict[str, list[Trade]] = {s: [] for s in markets}
        self.cut_fills = 0  # fills the lot step made smaller

    def on_bar(self, bar: Candle) -> list[Trade]:
        working = [r for r in self.orders.values() if r.order.symbol == bar.symbol and r.order.is_open]
        sim_orders = [
            SimOrder(
                r.order.client_order_id or r.order.id,
                r.order.side,
                "market" if r.order.type == "market" else "limit",
                r.order.remaining if r.order.remaining is not None else r.order.amount,
                r.order.price,
                r.post_only,
                r.order.timestamp_ms or 0,
            )
            for r in working
        ]
        trades = []
        for fill in fill_on_bar(sim_orders, SimBar.of(bar), self.costs):
            quantity = floor_to_step(fill.quantity, self.markets[bar.symbol].amount_step)
            if quantity <= 0:
                continue
            self.cut_fills += quantity != fill.quantity
            ref = self.orders[fill.client_order_id]
            filled = ref.order.filled + quantity
            cost = (ref.order.cost or D(0)) + fill.price * quantity
            remaining = ref.order.amount - filled
            ref.fills += 1
            ref.order = replace(
                ref.order,
                filled=filled,
                remaining=remaining,
                cost=cost,
                average=cost / filled,
                status="closed" if remaining <= 0 else "open",
            )
            trade = Trade(
                f"{fill.client_order_id}-{ref.fills}",
                ref.order.id,
                bar.symbol,
                ref.order.side,
                fill.price,
                quantity,
                fill.price * quantity,
                fill.fee_quote * quantity / fill.quantity,
                self.markets[bar.symbol].quote,
                fill.liquidity,
                fill.time_ms,
            )
            self.trades[bar.symbol].append(trade)
            trades.append(trade)
        return trades

    def forget_closed(self) -> None:
        self.orders = {cid: r for cid, r in self.orders.items() if r.order.is_open}
        for symbol, trades in self.trades.items():
            self.trades[symbol] = [t for t in trades if t.id.rsplit("-", 1)[0] in self.orders]


def bundled(symbol: str) -> CandleSeries:
    return read_candle_file(BUNDLED_CANDLES_DIR / f"binance_{symbol.replace('/', '-')}_5m.csv")


def request(rng: random.Random, symbol: str, close: Decimal, cid: str) -> OrderRequest:
    side: Side = rng.choice(["buy", "sell"])
    amount = D(rng.randint(20, 60_000)) / close  # 20 to 60k USDT: the large ones outgrow a bar's share
    kind = rng.random()
    if kind < 0.4:
        return OrderRequest(symbol, side, "market", amount, cid, reference_price=close)
    # Within 40 bps of the close either way: some limits are marketable, some post-only ones cross.
    limit = close * (1 + D(rng.randint(-40, 40)) / 10_000)
    return OrderRequest(
        symbol, side, "limit", amount, cid, limit, post_only=kind < 0.75, reference_price=close
    )


async def test_a_seeded_order_stream_fills_as_the_plain_reference() -> None:
    symbols = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
    series = {s: bundled(s) for s in symbols}
    first, bars = 9_000, 400
    times = series[symbols[0]].open_time_ms[first : first + bars]
    assert all((series[s].open_time_ms[first : first + bars] == times).all() for s in symbols)
    markets = replay_market_rules(series)
    costs = FillCosts(D(10), D(2), D(1), D(2), D("0.002"))
    clock = [int(times[0])]
    sim = SimulatedVenue("binance", markets, costs, lambda: clock[0])
    ref = Reference(markets, costs)
    rng = random.Random(20210301)
    seen: dict[str, int] = {"taker": 0, "maker": 0, "partial": 0, "canceled": 0, "refused": 0}
    next_id = 0
    for i in range(first, first + bars):
        clock[0] = int(series[symbols[0]].open_time_ms[i]) + STEP_MS
        for symbol in rng.sample(symbols, len(symbols)):
            bar = series[symbol].candle(i)
            trades = sim.on_bar(bar)
            assert repr(trades) == repr(ref.on_bar(bar)), (i, symbol)
            for t in trades:
                seen[t.taker_or_maker or "?"] += 1
                seen["partial"] += ref.orders[t.id.rsplit("-", 1)[0]].order.is_open
        for cid, r in ref.orders.items():
            assert repr(await sim.fetch_order(r.order.symbol, client_order_id=cid)) == repr(r.order)
            assert repr(await sim.fetch_order(r.order.symbol, order_id=r.order.id)) == repr(r.order)
        for symbol in symbols:
            since = int(series[symbol].open_time_ms[max(first, i - rng.randint(0, 5))])
            assert repr(await sim.fetch_my_trades(symbol, since)) == repr(
                [t for t in ref.trades[symbol] if t.timestamp_ms >= since]
            )
            open_orders = [
                r.order for r in ref.orders.values() if r.order.symbol == symbol and r.order.is_open
            ]
            assert repr(await sim.fetch_open_orders(symbol)) == repr(open_orders)
        for cid in [c for c, r in ref.orders.items() if r.order.is_open and rng.random() < 0.1]:
            result = await sim.cancel_order(ref.orders[cid].order.symbol, client_order_id=cid)
            ref.orders[cid].order = replace(ref.orders[cid].order, status="canceled")
            assert (result.outcome, repr(result.order)) == ("canceled", repr(ref.orders[cid].order))
            seen["canceled"] += 1
        if rng.random() < 0.3:
            sim.forget_closed()
            ref.forget_closed()
        for _ in range(rng.randint(0, 4)):
            next_id += 1
            symbol = rng.choice(symbols)
            close = decimal_of(float(series[symbol].close[i]))
            placed = await place(sim, request(rng, symbol, close, f"{next_id:06d}"), close, costs)
            if placed is None:
                seen["refused"] += 1
            else:
                ref.orders[placed.order.client_order_id or ""] = RefOrder(placed.order, placed.post_only)
    # The stream went through every rule it is meant to check.
    assert min(seen.values()) > 0, seen
    assert ref.cut_fills > 0


@dataclass(frozen=True, slots=True)
class Placed:
    order: Order
    post_only: bool


async def place(sim: SimulatedVenue, req: OrderRequest, close: Decimal, costs: FillCosts) -> Placed | None:
    """The request through the venue; a refusal only where the reference's rules say so."""
    bid, ask = synthetic_top_of_book(close, costs)
    try:
        ack = await sim.create_order(req)
    except PostOnlyWouldTake:
        assert req.post_only
        assert req.price is not None
        assert post_only_would_cross(req.side, on_tick(sim, req), bid, ask)
        return None
    except OrderRejected:  # below the market's minimums
        return None
    order = ack.order
    expected: dict[str, Any] = {
        "id": f"sim-{req.client_order_id}",
        "status": "open",
        "amount": floor_to_step(req.amount, sim.markets[req.symbol].amount_step),
        "filled": D(0),
        "cost": D(0),
        "average": None,
    }
    assert {k: getattr(order, k) for k in expected} == expected
    assert order.remaining == order.amount
    if req.post_only:
        assert order.price is not None
        assert not post_only_would_cross(req.side, order.price, bid, ask)
    return Placed(order, req.post_only)


def on_tick(sim: SimulatedVenue, req: OrderRequest) -> Decimal:
    """The request's price rounded to the market's tick, half to even (as prepare_order's)."""
    assert req.price is not None
    tick = sim.markets[req.symbol].tick_size
    return (req.price / tick).to_integral_value() * tick
