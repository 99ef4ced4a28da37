"""The fill model: hand-computed fills for each rule, the taker path against the training env's
reference on real bars, and properties of maker fills on random bars and orders."""

from __future__ import annotations

import functools
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.config.sections import ExecutionSettings
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import Candle, CandleSeries
from huracan.core.intents import FLAT_ACTIONS, LONG_ACTIONS, AgentAction
from huracan.core.numbers import decimal_of
from huracan.execution.fill_model import (
    DEFAULT_MAX_VOLUME_SHARE,
    FillCosts,
    Side,
    SimBar,
    SimFill,
    SimOrder,
    fee,
    fill_on_bar,
    post_only_would_cross,
    synthetic_top_of_book,
    taker_price,
)
from huracan.market.candle_files import read_candle_file
from huracan.rl.env import EnvConfig
from huracan.rl.reference import simulate

D = Decimal
# taker 10 bps, maker 2 bps, half spread 1 + slippage 2 = 3 bps against the taker.
COSTS = FillCosts(
    taker_fee_bps=D(10),
    maker_fee_bps=D(2),
    half_spread_bps=D(1),
    slippage_bps=D(2),
    max_volume_share=D("0.1"),
)
T0 = 1_700_000_000_000


def bar(
    open_: str = "100",
    high: str = "101",
    low: str = "99",
    close: str = "100",
    volume: str = "10",
    at: int = T0,
) -> SimBar:
    return SimBar(at, D(open_), D(high), D(low), D(close), D(volume))


def market(cid: str, side: Side, qty: str, placed_ms: int = T0) -> SimOrder:
    return SimOrder(cid, side, "market", D(qty), None, False, placed_ms)


def limit(
    cid: str, side: Side, qty: str, price: str, *, post_only: bool = False, placed_ms: int = T0
) -> SimOrder:
    return SimOrder(cid, side, "limit", D(qty), D(price), post_only, placed_ms)


# --- hand-computed examples ---------------------------------------------------------------------


def test_market_buy_fills_at_open_plus_spread_and_slippage_with_taker_fee() -> None:
    (fill,) = fill_on_bar([market("b", "buy", "0.5")], bar(), COSTS)
    # 100 * 1.0003 = 100.03; fee = 100.03 * 0.5 * 10 / 1e4 = 0.050015
    assert fill == SimFill("b", D("100.03"), D("0.5"), D("0.050015"), "taker", T0)


def test_market_sell_fills_at_open_minus_spread_and_slippage_with_taker_fee() -> None:
    (fill,) = fill_on_bar([market("s", "sell", "2")], bar(), COSTS)
    # 100 * 0.9997 = 99.97; fee = 199.94 * 0.001 = 0.19994
    assert fill == SimFill("s", D("99.97"), D("2"), D("0.19994"), "taker", T0)


def test_market_orders_ignore_volume_share() -> None:
    (fill,) = fill_on_bar([market("b", "buy", "500")], bar(volume="10"), COSTS)
    assert fill.quantity == D(500)


def test_price_helpers() -> None:
    assert taker_price("buy", D("200"), COSTS) == D("200.06")
    assert taker_price("sell", D("200"), COSTS) == D("199.94")
    assert fee(D("1000"), D("7.5")) == D("0.75")
    assert synthetic_top_of_book(D("100"), COSTS) == (D("99.99"), D("100.01"))


def test_marketable_limit_takes_at_the_taker_price_not_its_limit() -> None:
    buy, sell = limit("b", "buy", "1", "100.05"), limit("s", "sell", "1", "99.90")
    fills = fill_on_bar([buy, sell], bar(), COSTS)
    assert fills == [
        SimFill("b", D("100.03"), D("1"), D("0.10003"), "taker", T0),
        SimFill("s", D("99.97"), D("1"), D("0.09997"), "taker", T0),
    ]
    # Exactly at the taker price is marketable too.
    (at_limit,) = fill_on_bar([limit("b", "buy", "1", "100.03")], bar(low="100.03"), COSTS)
    assert (at_limit.price, at_limit.liquidity) == (D("100.03"), "taker")


def test_limit_below_the_taker_price_rests_and_fills_as_maker_at_its_limit() -> None:
    # Taker price 100.03 > 100.02: not marketable; the bar trades down to 99 < 100.02.
    (fill,) = fill_on_bar([limit("b", "buy", "0.5", "100.02")], bar(), COSTS)
    # fee = 100.02 * 0.5 * 2 / 1e4 = 0.010002
    assert fill == SimFill("b", D("100.02"), D("0.5"), D("0.010002"), "maker", T0)
    (sell,) = fill_on_bar([limit("s", "sell", "0.5", "100.5")], bar(high="101"), COSTS)
    assert (sell.price, sell.liquidity, sell.fee_quote) == (D("100.5"), "maker", D("0.01005"))


def test_resting_buy_fills_only_when_the_low_trades_through() -> None:
    order = limit("b", "buy", "1", "99")
    assert fill_on_bar([order], bar(low="99"), COSTS) == []
    assert fill_on_bar([order], bar(low="99.5"), COSTS) == []
    (fill,) = fill_on_bar([order], bar(low="98.99"), COSTS)
    assert (fill.price, fill.quantity, fill.liquidity) == (D("99"), D("1"), "maker")


def test_resting_sell_fills_only_when_the_high_trades_through() -> None:
    order = limit("s", "sell", "1", "101")
    assert fill_on_bar([order], bar(high="101"), COSTS) == []
    (fill,) = fill_on_bar([order], bar(high="101.01"), COSTS)
    assert (fill.price, fill.liquidity) == (D("101"), "maker")


def test_post_only_limit_never_takes_even_when_the_open_gaps_through_it() -> None:
    # The open's taker price 100.03 is below the buy's 100.05: a plain limit would take, a
    # post-only one rests and fills at its limit as maker (the bar trades below it).
    (fill,) = fill_on_bar([limit("b", "buy", "1", "100.05", post_only=True)], bar(), COSTS)
    assert (fill.price, fill.liquidity, fill.fee_quote) == (D("100.05"), "maker", D("0.020010"))


def test_volume_share_is_shared_in_time_priority_and_leaves_the_rest_working() -> None:
    # share 0.1 of volume 10: 1 unit for all resting orders of the bar.
    a, b = limit("a", "buy", "0.7", "99.5"), limit("b", "buy", "0.5", "99.5")
    assert [(f.client_order_id, f.quantity) for f in fill_on_bar([a, b], bar(low="98"), COSTS)] == [
        ("a", D("0.7")),
        ("b", D("0.3")),
    ]
    assert [(f.client_order_id, f.quantity) for f in fill_on_bar([b, a], bar(low="98"), COSTS)] == [
        ("b", D("0.5")),
        ("a", D("0.5")),
    ]
    # Once the share is used up, later orders get nothing (no zero-quantity fills).
    big = limit("big", "buy", "5", "99.5")
    fills = fill_on_bar([big, a], bar(low="98"), COSTS)
    assert [(f.client_order_id, f.quantity) for f in fills] == [("big", D("1.0"))]


def test_taker_fills_do_not_use_the_maker_share() -> None:
    fills = fill_on_bar([market("m", "buy", "3"), limit("a", "buy", "0.4", "99.5")], bar(low="98"), COSTS)
    assert [(f.client_order_id, f.quantity, f.liquidity) for f in fills] == [
        ("m", D("3"), "taker"),
        ("a", D("0.4"), "maker"),
    ]


def test_no_volume_no_maker_fill_and_no_quantity_no_fill() -> None:
    assert fill_on_bar([limit("a", "buy", "1", "99.5")], bar(low="98", volume="0"), COSTS) == []
    assert fill_on_bar([market("m", "buy", "0")], bar(), COSTS) == []


def test_post_only_crossing() -> None:
    bid, ask = synthetic_top_of_book(D("100"), COSTS)
    assert post_only_would_cross("buy", D("100.01"), bid, ask)
    assert post_only_would_cross("buy", D("100.5"), bid, ask)
    assert not post_only_would_cross("buy", D("100.00"), bid, ask)
    assert post_only_would_cross("sell", D("99.99"), bid, ask)
    assert post_only_would_cross("sell", D("99"), bid, ask)
    assert not post_only_would_cross("sell", D("100"), bid, ask)


def test_a_bar_that_opened_before_the_order_arrived_fills_nothing() -> None:
    orders = [market("m", "buy", "1", placed_ms=T0 + 1), limit("l", "buy", "1", "99.5", placed_ms=T0 + 1)]
    assert fill_on_bar(orders, bar(low="90", at=T0), COSTS) == []
    assert [f.client_order_id for f in fill_on_bar(orders, bar(low="90", at=T0 + 300_000), COSTS)] == [
        "m",
        "l",
    ]


def test_from_settings_and_sim_bar_of_candle() -> None:
    costs = FillCosts.from_settings(ExecutionSettings(taker_fee_bps=7.5, maker_fee_bps=2, slippage_bps=0.3))
    assert costs == FillCosts(D("7.5"), D("2.0"), D("1.0"), D("0.3"), DEFAULT_MAX_VOLUME_SHARE)
    share = FillCosts.from_settings(ExecutionSettings(), max_volume_share=D("0.25")).max_volume_share
    assert share == D("0.25")
    candle = Candle("binance", "BTC/USDT", "5m", T0, 28923.63, 29017.5, 28913.12, 28975.65, 182.889878)
    assert SimBar.of(candle) == SimBar(
        T0, D("28923.63"), D("29017.5"), D("28913.12"), D("28975.65"), D("182.889878")
    )


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="limit price"):
        SimOrder("x", "buy", "limit", D(1), None, False, T0)
    with pytest.raises(ValueError, match="negative"):
        SimOrder("x", "buy", "market", D(-1), None, False, T0)
    with pytest.raises(ValueError, match="max_volume_share"):
        FillCosts(D(1), D(1), D(1), D(1), D(0))
    with pytest.raises(ValueError, match="negative"):
        FillCosts(D(-1), D(1), D(1), D(1))


# --- the taker path against the training env's reference -----------------------------------------


@functools.cache
def btc() -> tuple[CandleSeries, list[float], list[float]]:
    """One bundled file of real bars, with its opens and closes as the reference takes them."""
    series = read_candle_file(BUNDLED_CANDLES_DIR / "binance_BTC-USDT_5m.csv")
    return series, series.open.tolist(), series.close.tolist()


def valid_sequence(choices: list[int]) -> list[int]:
    """Free choices made valid: the position state follows from the actions alone."""
    actions, long = [], False
    for choice in choices:
        allowed = LONG_ACTIONS if long else FLAT_ACTIONS
        action = allowed[choice % len(allowed)]
        actions.append(int(action))
        if action is AgentAction.EXIT_POSITION:
            long = False
        elif action in FLAT_ACTIONS[1:]:
            long = True
    return actions


def bps() -> st.SearchStrategy[float]:
    return st.integers(0, 5000).map(lambda x: x / 100)


@settings(max_examples=80, deadline=None)
@given(
    start_fraction=st.floats(0, 1),
    choices=st.lists(st.integers(0, 3), min_size=1, max_size=150),
    fee_bps=bps(),
    half_spread_bps=bps(),
    slippage_bps=bps(),
    position_fraction=st.floats(0.05, 1.0),
)
def test_market_orders_fill_like_the_reference(
    start_fraction: float,
    choices: list[int],
    fee_bps: float,
    half_spread_bps: float,
    slippage_bps: float,
    position_fraction: float,
) -> None:
    series, opens, closes = btc()
    actions = valid_sequence(choices)
    start = int(start_fraction * (len(series) - len(actions) - 2))
    config = EnvConfig(
        episode_bars=len(actions),
        fee_bps=fee_bps,
        half_spread_bps=half_spread_bps,
        slippage_bps=slippage_bps,
        position_fraction=position_fraction,
        max_drawdown=1.0,
    )
    result = simulate(opens, closes, actions, start, config)
    costs = FillCosts(D(str(fee_bps)), D(0), D(str(half_spread_bps)), D(str(slippage_bps)))
    expected_fills = sum(1 for a in actions if a in (*FLAT_ACTIONS[1:], AgentAction.EXIT_POSITION))
    assert len(result.fills) == expected_fills
    for ref in result.fills:
        opened = int(series.open_time_ms[ref.bar])
        order = SimOrder("x", ref.side, "market", decimal_of(ref.quantity), None, False, opened)
        # The bar the decision was made on cannot fill it; the next one fills it at its open.
        assert fill_on_bar([order], SimBar.of(series.candle(ref.bar - 1)), costs) == []
        (fill,) = fill_on_bar([order], SimBar.of(series.candle(ref.bar)), costs)
        assert (fill.liquidity, fill.time_ms, fill.quantity) == ("taker", opened, order.quantity)
        assert math.isclose(float(fill.price), ref.price, rel_tol=1e-12), (fill, ref)
        assert math.isclose(float(fill.fee_quote), ref.fee, rel_tol=1e-12, abs_tol=0.0), (fill, ref)


# --- properties of maker fills ------------------------------------------------------------------


@st.composite
def bars(draw: st.DrawFn) -> SimBar:
    cents = st.integers(9_000, 11_000)
    open_, close = draw(cents), draw(cents)
    low = draw(st.integers(8_500, min(open_, close)))
    high = draw(st.integers(max(open_, close), 11_500))
    volume = D(draw(st.integers(0, 1_000))) / 100
    return SimBar(T0, D(open_) / 100, D(high) / 100, D(low) / 100, D(close) / 100, volume)


@st.composite
def orders(draw: st.DrawFn) -> list[SimOrder]:
    made = []
    for i in range(draw(st.integers(0, 8))):
        side: Side = draw(st.sampled_from(["buy", "sell"]))
        qty = D(draw(st.integers(0, 500))) / 100
        placed = T0 + draw(st.sampled_from([-300_000, 0, 1]))
        if draw(st.booleans()):
            made.append(SimOrder(f"o{i}", side, "market", qty, None, False, placed))
        else:
            price = D(draw(st.integers(8_000, 12_000))) / 100
            made.append(SimOrder(f"o{i}", side, "limit", qty, price, draw(st.booleans()), placed))
    return made


@settings(max_examples=300, deadline=None)
@given(bar_=bars(), orders_=orders(), share=st.integers(1, 100).map(lambda x: D(x) / 100))
def test_fill_properties(bar_: SimBar, orders_: list[SimOrder], share: Decimal) -> None:
    costs = FillCosts(D(10), D(2), D(1), D(2), share)
    fills = fill_on_bar(orders_, bar_, costs)
    by_id = {o.client_order_id: o for o in orders_}
    ids = [f.client_order_id for f in fills]
    assert len(set(ids)) == len(ids)  # at most one fill per order and bar
    assert ids == [o.client_order_id for o in orders_ if o.client_order_id in ids]  # time priority
    for f in fills:
        order = by_id[f.client_order_id]
        assert order.placed_ms <= bar_.open_time_ms
        assert D(0) < f.quantity <= order.quantity
        assert f.time_ms == bar_.open_time_ms
        if f.liquidity == "maker":
            assert order.order_type == "limit"
            assert f.price == order.limit_price
            assert f.fee_quote == fee(f.price * f.quantity, costs.maker_fee_bps)
            assert bar_.low < f.price if order.side == "buy" else bar_.high > f.price
        else:
            assert not order.post_only
            assert f.price == taker_price(order.side, bar_.open, costs)
            assert f.quantity == order.quantity
            assert f.fee_quote == fee(f.price * f.quantity, costs.taker_fee_bps)
    maker_total = sum((f.quantity for f in fills if f.liquidity == "maker"), D(0))
    assert maker_total <= share * bar_.volume
    for order in orders_:
        if order.order_type == "market" and order.placed_ms <= bar_.open_time_ms and order.quantity > 0:
            assert order.client_order_id in ids
