"""The risk gate and maker entries on the replay path (the harness: tests/replay_stack.py): denials
as risk_events, HALTED letting only exits through, the circuit breaker flattening, maker entries
resting at the bid, following it, falling back to taker or giving up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import asyncpg
import pytest
from replay_stack import (
    BPS,
    BTC,
    ETH,
    RATE,
    STEP,
    Replay,
    config_of,
    contiguous,
    intent,
    open_ms,
    price,
    rows,
    series_of,
    trading_state,
)

from huracan.core.intents import (
    AgentAction,
)
from huracan.risk.portfolio import TradingState
from huracan.risk.state_store import load_state, set_state

pytestmark = pytest.mark.db


# --- 4. the gate ----------------------------------------------------------------------------------


async def test_denials_are_risk_events_and_halted_lets_only_exits_through(db_pool: asyncpg.Pool) -> None:
    config = config_of(symbols=(BTC, ETH))
    s = 9_000
    assert contiguous((BTC, ETH), s, s + 4)
    replay = Replay.build(config, db_pool, start=s)
    await replay.start()
    gate = replay.service.gate
    await replay.bar(
        s,
        lambda i: [intent(AgentAction.EXIT_POSITION, BTC, i), intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)],
    )
    await replay.bar(s + 1, lambda i: [intent(AgentAction.ENTER_LONG_SMALL, BTC, i)])
    assert set(replay.book_positions) == {BTC}

    await set_state(
        db_pool,
        TradingState.HALTED,
        reason="operator_halt",
        by="operator",
        mode="replay",
        now_ms=replay.clock(),
    )
    await gate.poll_operator()  # as the trading task does every few seconds
    assert gate.state is TradingState.HALTED
    await replay.bar(
        s + 2,
        lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, ETH, i), intent(AgentAction.EXIT_POSITION, BTC, i)],
    )
    await replay.bar(s + 3)
    assert replay.book_positions == {}
    (trade,) = await rows(db_pool, "SELECT * FROM trade_memory")
    assert (trade["symbol"], trade["exit_reason"]) == (BTC, "signal")
    assert await db_pool.fetchval("SELECT count(*) FROM orders WHERE symbol = $1", ETH) == 0

    denials = await rows(
        db_pool,
        "SELECT *, intent->>'side' AS side, intent->>'action' AS action FROM risk_events "
        "WHERE decision = 'rejected' ORDER BY id",
    )
    assert [(r["reason_code"], r["symbol"], r["side"], r["action"]) for r in denials] == [
        ("no_position", BTC, "sell", "EXIT_POSITION"),
        ("position_open", BTC, "buy", "ENTER_LONG_SMALL"),
        ("halted", ETH, "buy", "ENTER_LONG_NORMAL"),
    ]
    assert all(r["mode"] == "replay" and r["detail"] for r in denials)
    assert gate.stats.denied == {"no_position": 1, "position_open": 1, "halted": 1}
    halts = await rows(db_pool, "SELECT * FROM risk_events WHERE decision = 'halted'")
    assert [r["reason_code"] for r in halts] == ["operator"]
    assert (await load_state(db_pool, "replay")).state is TradingState.HALTED


async def test_an_entry_while_a_maker_entry_works_is_denied(db_pool: asyncpg.Pool) -> None:
    config = config_of(execution={"maker_entries": True})
    s = 10_000
    replay = Replay.build(config, db_pool, start=s)
    await replay.start()
    await replay.bar(
        s,
        lambda i: [
            intent(AgentAction.ENTER_LONG_NORMAL, BTC, i),
            intent(AgentAction.ENTER_LONG_LARGE, BTC, i),
        ],
    )
    (working,) = replay.service.executor.orders.values()
    assert working.post_only
    assert working.side == "buy"
    assert replay.service.gate.stats.denied == {"entry_in_progress": 1}
    (denial,) = await rows(db_pool, "SELECT * FROM risk_events WHERE decision = 'rejected'")
    assert (denial["reason_code"], denial["symbol"]) == ("entry_in_progress", BTC)
    assert await db_pool.fetchval("SELECT count(*) FROM orders") == 1


def first_losing_bar(symbols: Sequence[str], start: int) -> int:
    """A bar i whose next bar closes below its open for every symbol: an entry filled at that
    open is under water at the close by more than its costs."""
    i = start
    while not (
        contiguous(symbols, i, i + 3)
        and all(price(s, i + 1, "close") < price(s, i + 1, "open") for s in symbols)
    ):
        i += 1
    return i


async def test_circuit_breaker_halts_and_flattens_every_position(db_pool: asyncpg.Pool) -> None:
    config = config_of(symbols=(BTC, ETH), risk={"circuit_breaker_loss": "1"})
    i = first_losing_bar((BTC, ETH), 11_000)
    replay = Replay.build(config, db_pool, start=i)
    await replay.start()
    gate = replay.service.gate
    await replay.bar(
        i,
        lambda i: [
            intent(AgentAction.ENTER_LONG_NORMAL, BTC, i),
            intent(AgentAction.ENTER_LONG_NORMAL, ETH, i),
        ],
    )
    assert trading_state(replay) is TradingState.ACTIVE
    # Both entries fill at the next open and are under water at its close: the breaker trips.
    await replay.bar(i + 1, lambda i: [intent(AgentAction.ENTER_LONG_SMALL, BTC, i)])
    assert trading_state(replay) is TradingState.HALTED
    assert {o.reason for o in replay.service.executor.orders.values()} == {"exit:circuit_breaker"}
    await replay.bar(i + 2)
    assert replay.book_positions == {}
    memory = await rows(db_pool, "SELECT * FROM trade_memory ORDER BY symbol")
    assert [(r["symbol"], r["exit_reason"]) for r in memory] == [
        (BTC, "circuit_breaker"),
        (ETH, "circuit_breaker"),
    ]
    assert all(r["pnl_quote"] < 0 for r in memory)
    state = await load_state(db_pool, "replay")
    assert (state.state, state.reason, state.by) == (TradingState.HALTED, "circuit_breaker", "risk")
    halts = await rows(db_pool, "SELECT * FROM risk_events WHERE decision = 'halted'")
    assert [r["reason_code"] for r in halts] == ["circuit_breaker"]
    assert gate.stats.denied == {"halted": 1}
    await replay.bar(i + 3, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, ETH, i)])
    assert gate.stats.denied == {"halted": 2}
    assert replay.book_positions == {}


# --- 5. maker entries -----------------------------------------------------------------------------

MakerEvent = tuple[str, Decimal | None]


@dataclass(frozen=True, slots=True)
class MakerModel:
    """An independent model of the maker entry rules, in bars (one bar = 300 s of replay time)."""

    offset_bps: Decimal
    reprice_after_bars: int
    max_reprices: int
    taker_fallback: bool
    ttl_bars: int
    half_spread_bps: Decimal = Decimal(1)
    move_bps: Decimal = Decimal(3)  # half spread + slippage
    tick: Decimal = Decimal("0.01")  # BTC/USDT's in replay
    step: Decimal = Decimal("0.00001")

    def execution(self) -> dict[str, Any]:
        return {
            "maker_entries": True,
            "maker_fee_bps": 2.0,
            "maker_offset_bps": float(self.offset_bps),
            "reprice_after_s": self.reprice_after_bars * STEP / 1000,
            "max_reprices": self.max_reprices,
            "taker_fallback": self.taker_fallback,
            "signal_ttl_s": self.ttl_bars * STEP / 1000,
        }

    def limit_after(self, i: int) -> Decimal:
        """The post-only price set after bar i's close: the synthetic bid (half a spread below
        the close) less the offset, down to the tick."""
        bid = price(BTC, i, "close") * (1 - self.half_spread_bps / BPS)
        raw = bid * (1 - self.offset_bps / BPS)
        return (raw / self.tick).to_integral_value(ROUND_DOWN) * self.tick

    def quantity(self, limit: Decimal) -> Decimal:
        """What the gate buys for a normal entry at `limit` (3000 account, no limit binding)."""
        raw = Decimal(3000) / RATE / limit
        return (raw / self.step).to_integral_value(ROUND_DOWN) * self.step

    def events(self, t: int, bars: int = 6) -> list[MakerEvent]:
        """What happens to an entry decided on bar t's close, bar by bar after it: "wait",
        "young" (the bid walked away, but the order has not rested long enough), "reprice"
        (new limit), "fallback", "abandon", "maker_fill" (at the limit), "taker_fill" (at the
        open's taker price), "partial" (the bar's volume share would not fill it all)."""
        limit, placed, reprices = self.limit_after(t), t, 0
        quantity = self.quantity(limit)
        taking = False
        events: list[MakerEvent] = []
        for j in range(t + 1, t + 1 + bars):
            if taking:
                events.append(("taker_fill", price(BTC, j, "open") * (1 + self.move_bps / BPS)))
                break
            if price(BTC, j, "low") < limit:
                enough = price(BTC, j, "volume") * Decimal("0.1") >= quantity
                events.append(("maker_fill" if enough else "partial", limit))
                break
            new = self.limit_after(j)
            if new <= limit:
                events.append(("wait", None))
            elif j - placed < self.reprice_after_bars:
                events.append(("young", None))
            elif reprices < self.max_reprices:
                limit, placed, reprices = new, j, reprices + 1
                events.append(("reprice", new))
            elif self.taker_fallback and j - t <= self.ttl_bars:
                taking = True
                events.append(("fallback", None))
            else:
                events.append(("abandon", None))
                break
        return events

    def find(self, kinds: Sequence[str], *, touch: bool = False, start: int = 300) -> int:
        """The first bar t from `start` on whose entry goes exactly through `kinds`; with
        `touch`, the bar after t must trade down to the first limit exactly, and no lower."""
        series = series_of(BTC)
        for t in range(start, len(series) - 10):
            if touch and price(BTC, t + 1, "low") != self.limit_after(t):
                continue
            events = self.events(t, len(kinds))
            if [k for k, _ in events] == list(kinds) and contiguous((BTC,), t, t + len(kinds)):
                return t
        raise AssertionError(f"no bar in the data shows {kinds}")


@dataclass(slots=True)
class MakerRun:
    replay: Replay
    events: list[MakerEvent]


async def run_maker_entry(pool: asyncpg.Pool, model: MakerModel, t: int, bars: int) -> MakerRun:
    """A normal entry decided on bar t's close, then `bars` bars; the product's events read off
    the executor's stats and working order after each bar."""
    replay = Replay.build(config_of(execution=model.execution()), pool, start=t)
    await replay.start()
    executor = replay.service.executor
    await replay.bar(t, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)])
    (order,) = executor.orders.values()
    assert (order.order_type, order.post_only, order.limit_price) == ("limit", True, model.limit_after(t))
    assert order.quantity == model.quantity(model.limit_after(t))
    row = await pool.fetchrow("SELECT * FROM orders WHERE client_order_id = $1", order.client_order_id)
    assert row is not None
    assert (row["time_in_force"], row["status"]) == ("PO", "ACCEPTED")
    events: list[MakerEvent] = []
    for j in range(t + 1, t + 1 + bars):
        stats = executor.stats
        before = (stats.fills, stats.reprices, stats.fallbacks, stats.abandoned)
        await replay.bar(j)
        if stats.fills > before[0]:
            fill = await pool.fetchrow("SELECT * FROM fills ORDER BY id DESC LIMIT 1")
            assert fill is not None
            events.append((f"{fill['liquidity']}_fill", fill["price"]))
        elif stats.reprices > before[1]:
            (working,) = executor.orders.values()
            events.append(("reprice", working.limit_price))
        elif stats.fallbacks > before[2]:
            events.append(("fallback", None))
        elif stats.abandoned > before[3]:
            events.append(("abandon", None))
        else:
            events.append(("wait", None))
    return MakerRun(replay, events)


def product_view(events: Sequence[MakerEvent]) -> list[MakerEvent]:
    """The model's events as the product shows them (a young order just waits)."""
    return [("wait", None) if kind == "young" else (kind, value) for kind, value in events]


MAKER = MakerModel(Decimal("0.5"), reprice_after_bars=1, max_reprices=2, taker_fallback=True, ttl_bars=12)


async def test_maker_entry_rests_at_the_bid_and_fills_as_maker_when_a_bar_trades_through(
    db_pool: asyncpg.Pool,
) -> None:
    model = MakerModel(Decimal(2), reprice_after_bars=1, max_reprices=2, taker_fallback=True, ttl_bars=12)
    kinds = ("wait", "maker_fill")
    t = model.find(kinds, touch=True)
    expected = model.events(t, len(kinds))
    limit = model.limit_after(t)
    # Bar t+1 traded down to the limit but not through it: a touch is not a fill. Its close
    # left the bid where it was, so the order kept its price; bar t+2 traded through it.
    assert price(BTC, t + 1, "low") == limit > price(BTC, t + 2, "low")
    run = await run_maker_entry(db_pool, model, t, len(kinds))
    assert run.events == product_view(expected)
    executor = run.replay.service.executor
    position = run.replay.book_positions[BTC]
    quantity = model.quantity(limit)
    assert (position.average_entry_price, position.quantity) == (limit, quantity)
    (fill,) = await rows(db_pool, "SELECT * FROM fills")
    assert (fill["liquidity"], fill["price"], fill["quantity"]) == ("maker", limit, quantity)
    assert int(fill["filled_at"].timestamp() * 1000) == open_ms(BTC, t + 2)
    assert fill["fee"] == limit * quantity * 2 / BPS  # the maker fee, not the taker's
    stats = executor.stats
    assert (stats.reprices, stats.fallbacks, stats.abandoned, stats.fills) == (0, 0, 0, 1)
    assert stats.maker_notional == limit * quantity
    assert stats.taker_notional == 0
    assert stats.maker_share == 1.0
    # 10 bps taker fee + 1 half spread + 2 slippage that the maker fill (2 bps) did not pay.
    assert stats.maker_saved_quote == limit * quantity * 11 / BPS
    status = await db_pool.fetchval("SELECT status FROM orders")
    assert status == "FILLED"


async def test_maker_entry_follows_the_bid_then_falls_back_to_taker(db_pool: asyncpg.Pool) -> None:
    kinds = ("reprice", "reprice", "fallback", "taker_fill")
    t = MAKER.find(kinds)
    expected = MAKER.events(t, len(kinds))
    run = await run_maker_entry(db_pool, MAKER, t, len(kinds))
    assert run.events == product_view(expected)
    stats = run.replay.service.executor.stats
    assert (stats.reprices, stats.fallbacks, stats.abandoned, stats.fills) == (2, 1, 0, 1)
    assert stats.maker_notional == 0
    assert stats.taker_notional > 0
    orders = await rows(db_pool, "SELECT * FROM orders ORDER BY id")
    assert [(o["order_type"], o["post_only"], o["status"]) for o in orders] == [
        ("limit", True, "CANCELED"),
        ("limit", True, "CANCELED"),
        ("limit", True, "CANCELED"),
        ("market", False, "FILLED"),
    ]
    prices = [MAKER.limit_after(t), *(value for kind, value in expected if kind == "reprice")]
    assert [o["limit_price"] for o in orders[:3]] == prices
    # Each replacement is assessed again: the same notional at a higher bid is fewer coins.
    quantities = [o["quantity"] for o in orders]
    assert quantities == sorted(quantities, reverse=True)
    (fill,) = await rows(db_pool, "SELECT * FROM fills")
    assert (fill["liquidity"], fill["price"]) == ("taker", expected[-1][1])
    assert BTC in run.replay.book_positions


async def test_maker_entry_is_abandoned_when_the_signal_is_stale(db_pool: asyncpg.Pool) -> None:
    stale = MakerModel(Decimal("0.5"), reprice_after_bars=1, max_reprices=2, taker_fallback=True, ttl_bars=2)
    kinds = ("reprice", "reprice", "abandon")
    t = stale.find(kinds)
    run = await run_maker_entry(db_pool, stale, t, len(kinds))
    assert run.events == product_view(stale.events(t, len(kinds)))
    executor = run.replay.service.executor
    stats = executor.stats
    assert (stats.reprices, stats.fallbacks, stats.abandoned, stats.fills) == (2, 0, 1, 0)
    assert executor.orders == {}
    assert run.replay.book_positions == {}
    statuses = [r["status"] for r in await rows(db_pool, "SELECT status FROM orders ORDER BY id")]
    assert statuses == ["CANCELED"] * 3


async def test_maker_entry_is_not_repriced_before_reprice_after_s(db_pool: asyncpg.Pool) -> None:
    patient = MakerModel(Decimal(0), reprice_after_bars=2, max_reprices=1, taker_fallback=False, ttl_bars=12)
    kinds = ("young", "reprice", "young", "abandon")
    t = patient.find(kinds)
    run = await run_maker_entry(db_pool, patient, t, len(kinds))
    # The bid walked away after one bar, but the order had rested 300 s of the 600 s it must:
    # it kept its price; one bar later it was re-priced, and its replacement waited 600 s too.
    assert patient.limit_after(t + 1) > patient.limit_after(t)
    assert run.events == product_view(patient.events(t, len(kinds)))
    assert run.events[0] == ("wait", None)
    stats = run.replay.service.executor.stats
    assert (stats.reprices, stats.fallbacks, stats.abandoned, stats.fills) == (1, 0, 1, 0)
    orders = await rows(db_pool, "SELECT * FROM orders ORDER BY id")
    assert [(o["status"], o["created_at"].timestamp() * 1000) for o in orders] == [
        ("CANCELED", open_ms(BTC, t + 1)),
        ("CANCELED", open_ms(BTC, t + 3)),
    ]
