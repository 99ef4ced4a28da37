"""The RiskManager: every reason code by hand, then streams of random intents against random
portfolios, each checked against the limits recomputed here independently."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huracan.config.sections import ExecutionSettings, RiskSettings
from huracan.core.intents import SIZE_MULTIPLIER, AgentAction, OrderIntent
from huracan.exchange.models import MarketRules
from huracan.risk import manager as rm
from huracan.risk.manager import RiskManager, floor_to_step
from huracan.risk.portfolio import Holding, Portfolio, RiskAssessment, RiskLimits, TradingState

D = Decimal
NOW = 1_700_000_000_000
BTC, ETH, SOL, XRP = "BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"
SYMBOLS = (BTC, ETH, SOL, XRP)
# Binance-like precision and minimums.
REAL = {
    BTC: ("0.00001", "0.01", "0.00001", "9000", "5"),
    ETH: ("0.0001", "0.01", "0.0001", "9000", "5"),
    SOL: ("0.001", "0.01", "0.001", "90000", "5"),
    XRP: ("0.1", "0.0001", "0.1", "9222449", "5"),
}
TIGHT_MAX = {BTC: "0.01", ETH: "0.2", SOL: "5", XRP: "500"}  # a few hundred USDT: the clamp bites
BASE_PRICE = {BTC: D("60000"), ETH: D("3000"), SOL: D("150"), XRP: D("0.5")}


def rules(symbol: str, *, max_amount: str | None = None, min_notional: str | None = None) -> MarketRules:
    step, tick, min_amount, real_max, real_min_notional = REAL[symbol]
    base, quote = symbol.split("/")
    return MarketRules(
        symbol, base + quote, base, quote, True, D(step), D(tick), D(min_amount),
        D(max_amount or real_max), D(min_notional or real_min_notional), None, None,
    )  # fmt: skip


LIMITS = RiskLimits(
    position_cap=D(5000),
    normal_position=D(3000),
    daily_loss_limit=D(500),
    max_heat_pct=D(15),
    circuit_breaker_loss=D(1000),
    daily_profit_target=D(1000),
    max_open_positions=3,
    max_orders_per_minute=30,
    price_collar_bps=D(100),
    stop_loss_bps=D(150),
)


def book(**changes: Any) -> Portfolio:
    base = Portfolio(
        now_ms=NOW,
        state=TradingState.ACTIVE,
        capital=D(10_000),
        quote_to_account=D(1),
        holdings={},
        last_prices={BTC: D(50_000), ETH: D(3000)},
        markets={BTC: rules(BTC), ETH: rules(ETH)},
    )
    return dataclasses.replace(base, **changes)


def held(symbol: str, quantity: str, stop: str | None = None, *, exiting: bool = False) -> dict[str, Holding]:
    return {symbol: Holding(symbol, D(quantity), D(3000), None if stop is None else D(stop), exiting)}


def make_intent(action: AgentAction, symbol: str, reference_price: Decimal, **kw: Any) -> OrderIntent:
    # Built field by field rather than through from_action: the gate sees plain OrderIntents too.
    return OrderIntent(
        symbol=symbol,
        action=action,
        side="sell" if action is AgentAction.EXIT_POSITION else "buy",
        size_multiplier=SIZE_MULTIPLIER.get(action, 0.0),
        bar_open_time_ms=NOW,
        reference_price=reference_price,
        model_version="m",
        confidence=0.9,
        **kw,
    )


def intent(symbol: str = BTC, action: AgentAction = AgentAction.ENTER_LONG_NORMAL, **kw: Any) -> OrderIntent:
    made: OrderIntent = dataclasses.replace(make_intent(action, symbol, D(50_000)), **kw)
    return made


def assess(portfolio: Portfolio, order: OrderIntent | None = None, **limits: Any) -> RiskAssessment:
    manager = RiskManager(dataclasses.replace(LIMITS, **limits))
    return manager.assess(order or intent(), portfolio)


EXIT = intent(ETH, AgentAction.EXIT_POSITION, reason="stop_loss")


def test_a_normal_entry_is_sized_from_the_normal_position() -> None:
    v = assess(book())
    assert (v.allowed, v.reason, v.quantity, v.scaled_by) == (True, "approved", D("0.06"), ())
    assert v.risk_score == pytest.approx(3000 / 5000)  # the cap is the tightest limit
    assert "3000.00 GBP" in v.detail


def test_the_quantity_converts_to_quote_and_floors_to_the_lot_step() -> None:
    v = assess(book(quote_to_account=D("0.79")))
    assert v.quantity == floor_to_step(D(3000) / D("0.79") / D(50_000), D("0.00001")) == D("0.07594")


def test_a_limit_price_is_used_and_collared() -> None:
    manager = RiskManager(LIMITS)
    assert manager.assess(intent(), book(), price=D(49_600)).quantity == D("0.06048")
    v = manager.assess(intent(), book(), price=D(50_600))
    assert (v.allowed, v.reason, v.risk_score, v.quantity) == (False, "price_collar", 1.0, D(0))
    assert "120.0 bps" in v.detail
    assert manager.check_collar(BTC, D(50_500), book())
    assert not manager.check_collar(BTC, D(49_499), book())
    assert manager.check_collar(SOL, D(1), book())  # no last price: nothing to collar against


def test_without_a_last_price_the_reference_price_is_used() -> None:
    v = assess(book(last_prices={}), intent(reference_price=D(40_000)))
    assert v.quantity == D("0.075")


@pytest.mark.parametrize(
    ("changes", "limits", "reason", "score"),
    [
        ({"state": TradingState.HALTED}, {}, "halted", 1.0),
        ({"state": TradingState.REDUCING}, {}, "reducing", 1.0),
        ({"pnl_since_reset": D(-1000)}, {}, "circuit_breaker", 1.0),
        ({"unresolved": frozenset({BTC})}, {}, "unknown_order", 0.0),
        ({"markets": {}}, {}, "unknown_market", 0.0),
        ({"working_entries": frozenset({BTC})}, {}, "entry_in_progress", 0.0),
        ({"holdings": held(BTC, "0.01")}, {}, "position_open", 0.0),
        ({"pnl_today": D("-500")}, {}, "daily_loss_limit", 1.0),
        ({"pnl_today": D(1000)}, {}, "daily_profit_target", 1.0),
        ({"holdings": held(ETH, "0.1")}, {"max_open_positions": 1}, "max_open_positions", 1.0),
        ({"working_entries": frozenset({ETH})}, {"max_open_positions": 1}, "max_open_positions", 1.0),
        ({"recent_orders_ms": (NOW - 59_999, NOW)}, {"max_orders_per_minute": 2}, "order_rate", 1.0),
        ({}, {"normal_position": D(6000), "scale_down": False}, "position_cap", 1.0),
        ({"holdings": held(ETH, "1", "1520")}, {"scale_down": False}, "max_heat", 1.0),
        ({"holdings": held(ETH, "1", "1500")}, {}, "max_heat", 1.0),  # no room left to scale into
        ({"markets": {BTC: rules(BTC, min_notional="5000")}}, {}, "below_minimum", 0.0),
        ({"last_prices": {}, "markets": {BTC: rules(BTC, max_amount="0.000001")}}, {}, "below_minimum", 0.0),
        ({"quote_to_account": D(0)}, {}, "invalid_price", 0.0),
    ],
)
def test_each_entry_denial(
    changes: dict[str, Any], limits: dict[str, Any], reason: str, score: float
) -> None:
    v = assess(book(**changes), **limits)
    assert (v.allowed, v.reason, v.quantity, v.risk_score) == (False, reason, D(0), score)
    assert v.detail


def test_denial_details_say_the_numbers() -> None:
    assert assess(book(pnl_today=D("-512.3"))).detail == "daily PnL -512.30 GBP <= -500.00 limit"
    assert (
        "2 orders in the last minute"
        in assess(book(recent_orders_ms=(NOW, NOW)), max_orders_per_minute=2).detail
    )


def test_the_order_window_is_the_last_sixty_seconds() -> None:
    stale = (NOW - 60_000, NOW - 60_000, NOW + 1)  # on the boundary and in the future: not counted
    assert assess(book(recent_orders_ms=stale), max_orders_per_minute=1).allowed


def test_a_profit_target_of_none_never_stops_entries() -> None:
    assert assess(book(pnl_today=D(50_000)), daily_profit_target=None).allowed


def test_invalid_size_multipliers_are_refused() -> None:
    for multiplier in (0.0, -1.0, float("nan"), float("inf")):
        assert assess(book(), intent(size_multiplier=multiplier)).reason == "invalid_size"


def test_the_cap_scales_an_oversized_entry_down() -> None:
    v = assess(book(), intent(action=AgentAction.ENTER_LONG_LARGE), normal_position=D(4000))
    assert (v.reason, v.quantity, v.scaled_by) == ("scaled_position_cap", D("0.1"), ("position_cap",))
    assert v.scaled
    assert v.risk_score == 1.0


def test_the_heat_scales_an_entry_into_the_room_left() -> None:
    # The ETH stop loses 1480 of the 1500 allowed: 20 of room at a 1.5% stop is 1333.33 of BTC.
    portfolio = book(holdings=held(ETH, "1", "1520"))
    manager = RiskManager(LIMITS)
    assert manager.heat(portfolio) == D(1480)
    assert manager.allowed_heat(portfolio) == D(1500)
    v = manager.assess(intent(), portfolio)
    assert (v.reason, v.quantity, v.scaled_by) == ("scaled_max_heat", D("0.02666"), ("max_heat",))
    assert D(1480) + v.quantity * D(50_000) * D("0.015") <= D(1500)


def test_a_holding_without_a_stop_is_at_risk_to_the_default_stop_distance() -> None:
    manager = RiskManager(LIMITS)
    assert manager.heat(book(holdings=held(ETH, "2"))) == D(2) * D(3000) * D("0.015")
    assert manager.heat(book(holdings=held(ETH, "2", "3100"))) == 0  # a stop above the price risks nothing


def test_cap_and_heat_both_scale_and_the_first_names_the_reason() -> None:
    order = intent(action=AgentAction.ENTER_LONG_LARGE)
    v = assess(book(holdings=held(ETH, "1", "1520")), order, normal_position=D(4000))
    assert (v.reason, v.scaled_by) == ("scaled_position_cap", ("position_cap", "max_heat"))


def test_the_venue_maximum_clamps_the_quantity() -> None:
    v = assess(book(markets={BTC: rules(BTC, max_amount="0.01")}))
    assert (v.reason, v.quantity, v.scaled_by) == ("scaled_max_amount", D("0.01"), ("max_amount",))


def test_a_quotient_rounded_up_onto_a_step_is_stepped_back_under_the_cap() -> None:
    # 29 significant digits: the division rounds 0.0999...9 up to 0.1 at the context's 28, and
    # 0.1 lot at 3 would be a hair over the cap. The gate steps back a lot rather than overshoot.
    cap = D("0.29999999999999999999999999999")
    market = dataclasses.replace(rules(XRP), amount_step=D("0.01"), min_amount=None, min_notional=None)
    portfolio = book(last_prices={XRP: D(3)}, markets={XRP: market})
    v = assess(portfolio, intent(XRP), position_cap=cap, normal_position=cap)
    assert (v.allowed, v.quantity) == (True, D("0.09"))
    assert v.quantity * 3 <= cap


def test_exits_pass_every_limit_on_new_risk() -> None:
    hostile = book(
        state=TradingState.HALTED,
        holdings=held(ETH, "1.23456789"),
        pnl_today=D(-10_000),
        pnl_since_reset=D(-10_000),
        unresolved=frozenset({ETH}),
        recent_orders_ms=(NOW,) * 100,
        capital=D(1),
    )
    v = RiskManager(dataclasses.replace(LIMITS, max_open_positions=1)).assess(EXIT, hostile, price=D(1))
    assert (v.allowed, v.reason, v.quantity, v.risk_score) == (True, "approved", D("1.2345"), 0)


def test_an_exit_is_not_held_to_the_venue_minimums() -> None:
    portfolio = book(holdings=held(ETH, "0.0001"), markets={ETH: rules(ETH, min_notional="1000")})
    assert assess(portfolio, EXIT).quantity == D("0.0001")


def test_an_exit_without_market_rules_sells_the_whole_holding() -> None:
    assert assess(book(holdings=held(ETH, "0.123456789"), markets={}), EXIT).quantity == D("0.123456789")


@pytest.mark.parametrize(
    ("holdings", "reason"),
    [({}, "no_position"), (held(ETH, "1", exiting=True), "exit_in_progress"), (held(ETH, "0.00009"), "dust")],
)
def test_each_exit_denial(holdings: dict[str, Holding], reason: str) -> None:
    v = assess(book(holdings=holdings), EXIT)
    assert (v.allowed, v.reason, v.quantity, v.risk_score) == (False, reason, D(0), 0.0)


def test_the_breaker_trips_at_its_loss() -> None:
    manager = RiskManager(LIMITS)
    assert not manager.breaker_tripped(book(pnl_since_reset=D("-999.99")))
    assert manager.breaker_tripped(book(pnl_since_reset=D(-1000)))


def test_from_settings_reads_both_sections() -> None:
    risk = RiskSettings(max_heat_pct=0.1, price_collar_bps=12.5, scale_down_instead_of_reject=False)
    manager = RiskManager.from_settings(risk, ExecutionSettings(stop_loss_bps=80.0))
    limits = manager.limits
    # Through str: the floats 0.1 and 12.5 come out as the decimals written in the config.
    assert (limits.max_heat_pct, limits.price_collar_bps, limits.stop_loss_bps) == (
        D("0.1"),
        D("12.5"),
        D(80),
    )
    assert limits.normal_position == D(3000)  # no normal position given: 60% of the cap
    assert limits.scale_down is False
    assert limits.position_cap == risk.position_cap
    assert limits.daily_profit_target == risk.daily_profit_target
    custom = RiskManager.from_settings(risk, ExecutionSettings(), normal_position=D(1234))
    assert custom.limits.normal_position == D(1234)


# --- property: random intent streams against random portfolios -----------------------------------------
def _price(symbol: str, offset_bps: int, markets: Mapping[str, MarketRules]) -> Decimal:
    tick = markets[symbol].tick_size if symbol in markets else D("0.0001")
    return floor_to_step(BASE_PRICE[symbol] * (1 + D(offset_bps) / 10_000), tick)


RECENT_MS = [-120_000, -60_000, -59_999, -1000, 0]  # order times around the one-minute window's edge
Scenario = tuple[RiskLimits, Portfolio, list[tuple[OrderIntent, Decimal | None, int]]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    limits = RiskLimits(
        position_cap=draw(st.sampled_from([D(500), D(2000), D(5000)])),
        normal_position=draw(st.sampled_from([D(1000), D(3000), D(4000)])),
        daily_loss_limit=D(500),
        max_heat_pct=draw(st.sampled_from([D("0.2"), D("0.5"), D(1), D(5), D(15)])),
        circuit_breaker_loss=D(1000),
        daily_profit_target=draw(st.sampled_from([None, D(1000)])),
        max_open_positions=draw(st.integers(1, 4)),
        max_orders_per_minute=draw(st.sampled_from([1, 2, 3, 30])),
        price_collar_bps=draw(st.sampled_from([D(50), D(100)])),
        stop_loss_bps=draw(st.sampled_from([D(0), D(100), D(150)])),
        scale_down=draw(st.booleans()),
    )
    kinds = draw(st.tuples(*[st.sampled_from(["real"] * 5 + ["tight"] * 4 + ["missing"])] * 4))
    markets = {
        s: rules(s) if k == "real" else rules(s, max_amount=TIGHT_MAX[s], min_notional="400")
        for s, k in zip(SYMBOLS, kinds, strict=True)
        if k != "missing"
    }
    last_offsets = draw(st.tuples(*[st.one_of(st.none(), st.integers(-300, 300))] * 4))
    last_prices = {
        s: _price(s, o, markets) for s, o in zip(SYMBOLS, last_offsets, strict=True) if o is not None
    }
    holdings: dict[str, Holding] = {}
    # Per symbol: the holding's notional (None: not held), its stop distance in bps (None: the
    # default; negative: a stop above the price), an exit working, a fraction of a step over.
    draws = st.tuples(
        st.sampled_from([None] * 5 + [D(0), D(1000), D(3000), D(10_000)]),
        st.sampled_from([None, 50, 150, 500, -100]),
        st.booleans(),
        st.sampled_from([D(0), D(0), D("0.3")]),
    )
    for symbol, (notional, stop_bps, exiting, off_step) in zip(
        SYMBOLS, draw(st.tuples(*[draws] * 4)), strict=True
    ):
        if notional is not None:
            step = D(REAL[symbol][0])
            # Notional 0: a dust remainder, less than one lot step.
            quantity = (
                floor_to_step(notional / BASE_PRICE[symbol], step) + off_step * step if notional else step / 3
            )
            stop = None if stop_bps is None else BASE_PRICE[symbol] * (1 - D(stop_bps) / 10_000)
            holdings[symbol] = Holding(symbol, quantity, BASE_PRICE[symbol], stop, exiting)
    flags = draw(
        st.tuples(
            *[st.tuples(st.sampled_from([False] * 3 + [True]), st.sampled_from([False] * 9 + [True]))] * 4
        )
    )
    working = {s for s, (w, _) in zip(SYMBOLS, flags, strict=True) if w and s not in holdings}
    portfolio = Portfolio(
        now_ms=NOW,
        state=draw(st.sampled_from([TradingState.ACTIVE] * 8 + [TradingState.REDUCING, TradingState.HALTED])),
        capital=draw(st.sampled_from([D(2000), D(10_000), D(50_000)])),
        quote_to_account=draw(st.sampled_from([D("0.79"), D(1)])),
        holdings=holdings,
        last_prices=last_prices,
        markets=markets,
        pnl_today=draw(
            st.sampled_from([D(0)] * 5 + [D(-600), D(-500), D("-499.99"), D(-200), D("999.99"), D(1000)])
        ),
        pnl_since_reset=draw(st.sampled_from([D(0)] * 6 + [D(-1000), D("-999.99"), D(-200)])),
        working_entries=frozenset(working),
        entry_notional={s: draw(st.sampled_from([D(0), D(500), D(2000)])) for s in sorted(working)},
        unresolved=frozenset(s for s, (_, u) in zip(SYMBOLS, flags, strict=True) if u),
        recent_orders_ms=tuple(NOW + t for t in draw(st.lists(st.sampled_from(RECENT_MS), max_size=4))),
    )
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(SYMBOLS),
                st.sampled_from([AgentAction.ENTER_LONG_SMALL, AgentAction.ENTER_LONG_NORMAL,
                                 AgentAction.ENTER_LONG_LARGE, AgentAction.EXIT_POSITION]),
                st.sampled_from(["agent", "stop_loss", "take_profit", "time_exit"]),
                st.one_of(st.none(), st.integers(-200, 200)),
                st.sampled_from([0, 0, 1000, 30_000, 61_000]),
            ),
            min_size=1,
            max_size=8,
        )
    )  # fmt: skip
    stream = []
    for symbol, action, reason, limit_offset, advance_ms in steps:
        order = make_intent(action, symbol, BASE_PRICE[symbol], reason=reason)
        price = None if limit_offset is None else _price(symbol, limit_offset, markets)
        stream.append((order, price, advance_ms))
    return limits, portfolio, stream


def reference_heat(limits: RiskLimits, portfolio: Portfolio) -> Decimal:
    total = D(0)
    for h in portfolio.holdings.values():
        last = portfolio.last_prices.get(h.symbol, h.average_price)
        stop = h.stop_price if h.stop_price is not None else last * (1 - limits.stop_loss_bps / 10_000)
        total += h.quantity * max(last - stop, D(0)) * portfolio.quote_to_account
    # A working entry is risk to the stops once it fills: its notional at the default distance.
    return total + sum(portfolio.entry_notional.values(), D(0)) * limits.stop_loss_bps / 10_000


def check_entry(limits: RiskLimits, p: Portfolio, order: OrderIntent, limit_price: Decimal | None) -> None:
    """An approved entry breaks no limit, each recomputed here from the snapshot it was given."""
    symbol = order.symbol
    price = limit_price if limit_price is not None else p.last_prices.get(symbol, order.reference_price)
    assert p.state is TradingState.ACTIVE
    assert p.pnl_since_reset > -limits.circuit_breaker_loss
    assert symbol not in p.unresolved
    assert symbol not in p.working_entries
    assert symbol not in p.holdings
    assert p.pnl_today > -limits.daily_loss_limit
    assert limits.daily_profit_target is None or p.pnl_today < limits.daily_profit_target
    assert len(p.holdings) + len(p.working_entries) + 1 <= limits.max_open_positions
    recent = [t for t in p.recent_orders_ms if p.now_ms - 60_000 < t <= p.now_ms]
    assert len(recent) + 1 <= limits.max_orders_per_minute
    if symbol in p.last_prices:
        assert abs(price / p.last_prices[symbol] - 1) * 10_000 <= limits.price_collar_bps


@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_no_stream_of_intents_breaks_a_limit(
    scenario: Scenario,
) -> None:
    limits, portfolio, stream = scenario
    manager = RiskManager(limits)
    for order, limit_price, advance_ms in stream:
        portfolio = dataclasses.replace(portfolio, now_ms=portfolio.now_ms + advance_ms)
        v = manager.assess(order, portfolio, price=limit_price)
        assert 0.0 <= v.risk_score <= 1.0
        assert v.allowed == (v.reason == "approved" or v.reason.startswith("scaled_"))
        assert v.allowed or v.quantity == 0
        symbol, rules_ = order.symbol, portfolio.markets.get(order.symbol)
        if order.side == "sell":
            holding = portfolio.holdings.get(symbol)
            sellable = None if holding is None else holding.quantity
            if holding is not None and rules_ is not None:
                sellable = floor_to_step(holding.quantity, rules_.amount_step)
            if holding is not None and not holding.exit_working and sellable is not None and sellable > 0:
                # The whole point of the gate's asymmetry: nothing on the risk side stops an exit.
                assert (v.allowed, v.quantity) == (True, sellable)
            if v.allowed:
                assert holding is not None
                holdings = {**portfolio.holdings, symbol: dataclasses.replace(holding, exit_working=True)}
                portfolio = dataclasses.replace(
                    portfolio,
                    holdings=holdings,
                    recent_orders_ms=(*portfolio.recent_orders_ms, portfolio.now_ms),
                )
            continue
        if not v.allowed:
            assert v.risk_score == (1.0 if v.reason in rm.LIMIT_DENIALS else 0.0)
            continue
        check_entry(limits, portfolio, order, limit_price)
        assert rules_ is not None
        price = (
            limit_price
            if limit_price is not None
            else portfolio.last_prices.get(symbol, order.reference_price)
        )
        quantity = v.quantity
        notional = quantity * price * portfolio.quote_to_account
        assert notional <= limits.position_cap
        allowed_heat = limits.max_heat_pct / 100 * portfolio.capital
        assert reference_heat(limits, portfolio) + notional * limits.stop_loss_bps / 10_000 <= allowed_heat
        assert quantity > 0
        assert quantity % rules_.amount_step == 0
        assert rules_.min_amount is None or quantity >= rules_.min_amount
        assert rules_.min_notional is None or quantity * price >= rules_.min_notional
        assert rules_.max_amount is None or quantity <= rules_.max_amount
        if not limits.scale_down:
            assert set(v.scaled_by) <= {"max_amount"}
        # The approved entry is working now: the next intents are assessed with its heat.
        portfolio = dataclasses.replace(
            portfolio,
            working_entries=portfolio.working_entries | {symbol},
            entry_notional={**portfolio.entry_notional, symbol: notional},
            recent_orders_ms=(*portfolio.recent_orders_ms, portfolio.now_ms),
        )


@settings(max_examples=500, deadline=None)
@given(scenarios())
def test_halted_and_reducing_approve_no_entry(
    scenario: Scenario,
) -> None:
    limits, portfolio, stream = scenario
    manager = RiskManager(limits)
    for state in (TradingState.HALTED, TradingState.REDUCING):
        stopped = dataclasses.replace(portfolio, state=state)
        for order, limit_price, _ in stream:
            v = manager.assess(order, stopped, price=limit_price)
            if order.side == "buy":
                assert (v.allowed, v.reason) == (False, state.value.lower())


@given(
    st.decimals(min_value=0, max_value=10**6, places=9), st.sampled_from([D("0.1"), D("0.00001"), D(1), D(5)])
)
def test_floor_to_step_never_rounds_up(quantity: Decimal, step: Decimal) -> None:
    floored = floor_to_step(quantity, step)
    assert floored % step == 0
    assert 0 <= quantity - floored < step
