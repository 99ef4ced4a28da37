"""The execution path end to end on real bars: TradingService.on_bar over the simulated venue,
the real risk gate, executor, position book, journal and reconciler, a real PostgreSQL.

A harness drives the service bar by bar as the daemon does (the decision step waits for the
book to take the bar, then sends its intents and the BarDecided marker); the test's clock is
the bar's close, so an order sent on bar t's close reaches the venue at bar t+1's open.

1. the taker path reproduces the training environment's fills and per-trade returns
   (huracan/rl/reference.py) on random valid action sequences;
2. trade memory, positions, orders and fills agree after a replay with every kind of exit, and
   the exit reasons are the ones an independent model of the exit rules predicts;
3. a restart (shadow mode) rebuilds the position book from the journal;
4. the gate: denials are risk_events rows; HALTED blocks entries but not exits; a second entry
   while a maker entry works is denied; the circuit breaker halts and flattens;
5. maker entries rest at the synthetic bid, fill as maker only when a bar trades through, are
   re-priced when the bid walks away and end as taker fallback or abandoned; an independent
   model of those rules finds the real bars that show each path.

Tests named test_bug_* (at the end) assert the correct behaviour where the product is wrong
today; their docstrings say what is wrong and where."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError
from replay_stack import (
    BPS,
    BTC,
    ETH,
    RATE,
    Replay,
    config_of,
    contiguous,
    intent,
    open_ms,
    price,
    rows,
    series_of,
)

from huracan.core.intents import (
    ENTRY_ACTIONS,
    FLAT_ACTIONS,
    LONG_ACTIONS,
    AgentAction,
    OrderIntent,
)
from huracan.exchange.models import Trade
from huracan.execution.approval import ApprovedOrder, gate_pass
from huracan.execution.positions import Position
from huracan.execution.writer import JournalWriteFailed
from huracan.rl.env import EnvConfig
from huracan.rl.reference import Fill, simulate

pytestmark = pytest.mark.db


# --- 1. the taker path is the training environment --------------------------------------------


def random_actions(rng: random.Random, count: int) -> list[AgentAction]:
    """A valid sequence: flat -> wait or enter, long -> hold or exit."""
    actions: list[AgentAction] = []
    long = False
    for _ in range(count):
        if long:
            action = AgentAction.EXIT_POSITION if rng.random() < 0.3 else AgentAction.HOLD_POSITION
        else:
            action = rng.choice(ENTRY_ACTIONS) if rng.random() < 0.4 else AgentAction.DO_NOTHING
        assert action in (LONG_ACTIONS if long else FLAT_ACTIONS)
        actions.append(action)
        long = (long and action is not AgentAction.EXIT_POSITION) or action in ENTRY_ACTIONS
    return actions


def reference_return_bps(buy: Fill, sell: Fill) -> float:
    """The env's trade return: exit proceeds less both fees, over the entry notional."""
    entry_notional = buy.price * buy.quantity
    return (sell.price * sell.quantity - sell.fee - entry_notional - buy.fee) / entry_notional * 1e4


@pytest.mark.parametrize(("seed", "next_opens"), [(7, False), (2024, False), (7, True)])
async def test_taker_path_fills_and_trade_returns_equal_the_training_reference(
    db_pool: asyncpg.Pool, seed: int, next_opens: bool
) -> None:
    rng = random.Random(seed)
    series = series_of(BTC)
    count = 240
    start = rng.randrange(300, len(series) - count - 2)
    actions = random_actions(rng, count)
    fee, half_spread, slippage = 7.5, 1.5, 2.5
    config = config_of(
        execution={"taker_fee_bps": fee, "half_spread_bps": half_spread, "slippage_bps": slippage}
    )
    env = EnvConfig(
        episode_bars=count,
        fee_bps=fee,
        half_spread_bps=half_spread,
        slippage_bps=slippage,
        max_drawdown=1.0,
    )
    reference = simulate(series.open.tolist(), series.close.tolist(), [int(a) for a in actions], start, env)
    assert reference.end == "episode_end"
    assert len(reference.fills) >= 20, "the seed makes too few trades to compare"

    replay = Replay.build(config, db_pool, start=start, next_opens=next_opens)
    await replay.start()
    for step in range(count + 1):
        index = start + step

        def decide(i: int, step: int = step) -> Sequence[OrderIntent]:
            # When step k is decided the book holds what the env holds at step k.
            assert (BTC in replay.book_positions) == reference.bars[step].has_position, f"bar {i}"
            if step == count or actions[step] not in (*ENTRY_ACTIONS, AgentAction.EXIT_POSITION):
                return ()
            return (intent(actions[step], BTC, i),)

        await replay.bar(index, decide)

    gate = replay.service.gate
    assert gate.stats.denied == {}
    fills = await rows(
        db_pool,
        "SELECT f.side, f.price, f.quantity, f.fee, f.liquidity, f.filled_at, o.order_type "
        "FROM fills f JOIN orders o ON o.id = f.order_id ORDER BY f.id",
    )
    assert len(fills) == len(reference.fills)
    for got, want in zip(fills, reference.fills, strict=True):
        assert (got["side"], got["liquidity"], got["order_type"]) == (want.side, "taker", "market")
        assert int(got["filled_at"].timestamp() * 1000) == open_ms(BTC, want.bar)
        assert math.isclose(float(got["price"]), want.price, rel_tol=1e-9), (got, want)
        # The fee is the same share of the fill's notional (sizes differ, rates must not).
        assert math.isclose(float(got["fee"] / (got["price"] * got["quantity"])), env.fee_rate, rel_tol=1e-9)

    pairs = list(zip(reference.fills[0::2], reference.fills[1::2], strict=False))
    closed = [(b, s) for b, s in pairs if b.side == "buy" and s.side == "sell"]
    assert len(closed) == len(pairs) == reference.trades
    trades = replay.service.executor.stats.trades
    memory = await rows(db_pool, "SELECT * FROM trade_memory ORDER BY id")
    assert len(trades) == len(memory) == len(closed)
    for trade, row, (buy, sell) in zip(trades, memory, closed, strict=True):
        expected = reference_return_bps(buy, sell)
        assert math.isclose(trade.pnl_bps, expected, rel_tol=1e-6, abs_tol=1e-9), (trade, expected)
        assert math.isclose(row["pnl_bps"], expected, rel_tol=1e-6, abs_tol=1e-9), (row, expected)
        assert math.isclose(float(row["entry_price"]), buy.price, rel_tol=1e-9)
        assert math.isclose(float(row["exit_price"]), sell.price, rel_tol=1e-9)
        assert row["exit_reason"] == "signal"


# --- 2. trade memory and the journal agree ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelTrade:
    entry_bar: int  # the bar whose open filled the entry
    exit_bar: int  # the bar whose open filled the exit
    entry_price: Decimal
    exit_price: Decimal
    reason: str


@dataclass(frozen=True, slots=True)
class ExitRules:
    stop_loss_bps: Decimal
    take_profit_bps: Decimal
    max_hold_bars: int
    move_bps: Decimal = Decimal(3)  # half spread + slippage (the defaults)


def exits_model(
    symbol: str, first: int, last: int, rules: ExitRules
) -> tuple[dict[int, AgentAction], list[ModelTrade]]:
    """An independent model of the book's exit rules, with a scripted agent: it enters whenever
    it is flat with nothing working (except on bars divisible by 5), and every third trade it
    exits by signal after two bars held. Returns the agent's decisions by bar and the trades."""
    move = rules.move_bps / BPS
    decisions: dict[int, AgentAction] = {}
    trades: list[ModelTrade] = []
    buying = False
    selling: str | None = None
    entry: tuple[int, Decimal] | None = None
    hold = 0
    for i in range(first, last + 1):
        if buying:
            entry, hold, buying = (i, price(symbol, i, "open") * (1 + move)), 0, False
        elif selling is not None:
            assert entry is not None
            exit_price = price(symbol, i, "open") * (1 - move)
            trades.append(ModelTrade(entry[0], i, entry[1], exit_price, selling))
            entry, selling = None, None
        if entry is not None:
            hold += 1  # the mark at the bar's close
            stop = entry[1] * (1 - rules.stop_loss_bps / BPS)
            target = entry[1] * (1 + rules.take_profit_bps / BPS)
            if selling is None:
                if price(symbol, i, "low") <= stop:
                    selling = "stop_loss"
                elif price(symbol, i, "high") >= target:
                    selling = "take_profit"
                elif hold >= rules.max_hold_bars:
                    selling = "time_exit"
            if selling is None and hold == 2 and len(trades) % 3 == 2:
                decisions[i], selling = AgentAction.EXIT_POSITION, "signal"
        elif not buying and i % 5 != 0 and i < last:
            decisions[i], buying = AgentAction.ENTER_LONG_NORMAL, True
    return decisions, trades


async def test_trade_memory_positions_orders_and_fills_agree(db_pool: asyncpg.Pool) -> None:
    rules = ExitRules(Decimal(40), Decimal(60), 5)
    first, last = 6_500, 6_660
    assert contiguous((BTC,), first, last)
    decisions, expected = exits_model(BTC, first, last, rules)
    reasons = {t.reason for t in expected}
    assert {"stop_loss", "take_profit", "time_exit", "signal"} <= reasons, reasons  # the window shows all
    config = config_of(
        execution={
            "stop_loss_bps": float(rules.stop_loss_bps),
            "take_profit_bps": float(rules.take_profit_bps),
            "max_hold_bars": rules.max_hold_bars,
        }
    )
    replay = Replay.build(config, db_pool, start=first)
    await replay.start()

    def decide(i: int) -> Sequence[OrderIntent]:
        action = decisions.get(i)
        return () if action is None else (intent(action, BTC, i),)

    for i in range(first, last + 1):
        await replay.bar(i, decide)
    executor = replay.service.executor
    assert replay.service.gate.stats.denied == {}

    memory = await rows(db_pool, "SELECT * FROM trade_memory ORDER BY id")
    got = [
        (int(r["entry_time"].timestamp() * 1000), int(r["exit_time"].timestamp() * 1000), r["exit_reason"])
        for r in memory
    ]
    assert got == [(open_ms(BTC, t.entry_bar), open_ms(BTC, t.exit_bar), t.reason) for t in expected]
    for row, model in zip(memory, expected, strict=True):
        assert (row["entry_price"], row["exit_price"]) == (model.entry_price, model.exit_price)

    for row in memory:
        position = await db_pool.fetchrow("SELECT * FROM positions WHERE id = $1", row["position_id"])
        assert position is not None, row
        assert position["status"] == "closed"
        assert position["quantity"] == 0
        assert position["closed_at"] == row["exit_time"]
        assert position["opened_at"] == row["entry_time"]
        assert (position["entry_order_id"], position["exit_order_id"]) == (
            row["entry_order_id"],
            row["exit_order_id"],
        )
        assert position["realised_pnl_quote"] == row["pnl_quote"]
        assert position["fees_quote"] == row["fees_quote"]
        legs: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
        for side, order_id in (("buy", row["entry_order_id"]), ("sell", row["exit_order_id"])):
            order = await db_pool.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
            assert order is not None
            assert (order["side"], order["status"], order["order_type"]) == (side, "FILLED", "market")
            want_reason = "entry" if side == "buy" else f"exit:{row['exit_reason']}"
            assert order["reason"] == want_reason
            fills = await rows(db_pool, "SELECT * FROM fills WHERE order_id = $1", order_id)
            assert fills
            quantity = sum((f["quantity"] for f in fills), Decimal(0))
            assert quantity == row["quantity"] == order["quantity"] == order["filled_quantity"]
            notional = sum((f["price"] * f["quantity"] for f in fills), Decimal(0))
            fees = sum((f["fee"] for f in fills), Decimal(0))
            assert all(f["fee_currency"] == "USDT" for f in fills)
            legs[side] = (quantity, notional, fees)
        entry_cost, exit_proceeds = legs["buy"][1], legs["sell"][1]
        fees = legs["buy"][2] + legs["sell"][2]
        assert row["fees_quote"] == fees
        assert row["pnl_quote"] == exit_proceeds - entry_cost - fees, row  # exact
        assert row["pnl_account"] == row["pnl_quote"] * RATE

    # No fill twice: unique in the table, each once in the executor, and a re-delivery (a venue
    # that reports it again, after a restart) changes nothing.
    counts = await rows(db_pool, "SELECT venue_trade_id, count(*) AS n FROM fills GROUP BY venue_trade_id")
    assert all(r["n"] == 1 for r in counts)
    assert len(counts) == executor.stats.fills == 2 * len(expected) + len(replay.book_positions)
    assert executor.stats.duplicate_fills == 0
    first_fill = await db_pool.fetchrow(
        "SELECT f.*, o.client_order_id, o.exchange_order_id FROM fills f JOIN orders o ON o.id = f.order_id "
        "ORDER BY f.id LIMIT 1"
    )
    assert first_fill is not None
    found = await executor.journal.order_by_client_id(first_fill["client_order_id"])
    assert found is not None
    again = Trade(
        id=first_fill["venue_trade_id"],
        order_id=first_fill["exchange_order_id"],
        symbol=BTC,
        side="buy",
        price=first_fill["price"],
        amount=first_fill["quantity"],
        cost=first_fill["price"] * first_fill["quantity"],
        fee=first_fill["fee"],
        fee_asset="USDT",
        taker_or_maker="taker",
        timestamp_ms=int(first_fill["filled_at"].timestamp() * 1000),
    )
    assert await executor.on_trade(found[0], again) is None
    assert executor.stats.duplicate_fills == 1
    assert await db_pool.fetchval("SELECT count(*) FROM fills") == len(counts)


# --- 3. a restart keeps the book ------------------------------------------------------------------


def position_view(position: Position) -> dict[str, Any]:
    return {
        "quantity": position.quantity,
        "average_entry_price": position.average_entry_price,
        "entry_fees_quote": position.entry_fees_quote,
        "base_fees": position.base_fees,
        "bought_quantity": position.bought_quantity,
        "bought_notional": position.bought_notional,
        "stop_price": position.stop_price,
        "take_profit_price": position.take_profit_price,
        "opened_ms": position.opened_ms,
        "db_id": position.db_id,
        "entry": position.entry,
        "exit_reason": position.exit_reason,
    }


async def test_restart_in_shadow_mode_rebuilds_the_position_book(db_pool: asyncpg.Pool) -> None:
    config = config_of(mode="shadow", symbols=(BTC, ETH), execution={"stop_loss_bps": 150.0})
    s = 8_000
    assert contiguous((BTC, ETH), s, s + 8)
    script: dict[int, list[OrderIntent]] = {
        s: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, s)],
        s + 2: [intent(AgentAction.EXIT_POSITION, BTC, s + 2)],
        # A second BTC position after a closed one (its fills must not count), and one in ETH.
        s + 3: [
            intent(AgentAction.ENTER_LONG_LARGE, BTC, s + 3),
            intent(AgentAction.ENTER_LONG_SMALL, ETH, s + 3),
        ],
    }
    before = Replay.build(config, db_pool, start=s)
    await before.start()
    for i in range(s, s + 6):
        await before.bar(i, lambda i: script.get(i, ()))
    assert len(before.service.executor.stats.trades) == 1
    old = {symbol: position_view(p) for symbol, p in before.book_positions.items()}
    assert set(old) == {BTC, ETH}

    after = Replay.build(config, db_pool, start=s + 6)
    await after.start()
    assert {symbol: position_view(p) for symbol, p in after.book_positions.items()} == old
    assert after.service.executor.orders == {}

    # The restored book trades on: the BTC exit closes the restored position in trade memory.
    await after.bar(s + 6, lambda i: [intent(AgentAction.EXIT_POSITION, BTC, i)])
    await after.bar(s + 7)
    assert set(after.book_positions) == {ETH}
    (trade,) = after.service.executor.stats.trades
    assert trade.position_id == old[BTC]["db_id"]
    assert trade.entry_time_ms == old[BTC]["opened_ms"]
    assert trade.quantity == old[BTC]["bought_quantity"]
    row = await db_pool.fetchrow("SELECT * FROM trade_memory WHERE position_id = $1", old[BTC]["db_id"])
    assert row is not None
    assert row["mode"] == "shadow"
    assert row["fees_quote"] == trade.fees_quote
    assert row["pnl_quote"] == trade.pnl_quote


# --- restarts (both were product bugs these tests found) ------------------------------------------


async def test_restart_with_an_exit_working_lets_the_position_exit_again(db_pool: asyncpg.Pool) -> None:
    """Shadow mode: the daemon stops after an exit was sent and before it filled. The simulated
    venue is gone after the restart, so reconciliation cancels the exit order; the position it
    was closing must then be free to exit again (stop-loss, take-profit, time exit, the agent).
    (It once kept the cancelled exit's reason on the position for good, so every later exit was
    denied as "exit_in_progress".)"""
    config = config_of(mode="shadow", execution={"stop_loss_bps": 150.0})
    s = 12_000
    assert contiguous((BTC,), s, s + 4)
    before = Replay.build(config, db_pool, start=s)
    await before.start()
    await before.bar(s, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)])
    await before.bar(s + 1, lambda i: [intent(AgentAction.EXIT_POSITION, BTC, i)])
    (exit_order,) = before.service.executor.orders.values()
    assert exit_order.side == "sell"

    after = Replay.build(config, db_pool, start=s + 2)
    await after.start()
    status = await db_pool.fetchval("SELECT status FROM orders WHERE id = $1", exit_order.db_id)
    assert status == "CANCELED"
    assert after.book_positions[BTC].exit_reason is None, "the canceled exit still blocks every exit"
    await after.bar(s + 2, lambda i: [intent(AgentAction.EXIT_POSITION, BTC, i)])
    await after.bar(s + 3)
    assert after.service.gate.stats.denied == {}
    assert after.book_positions == {}
    assert await db_pool.fetchval("SELECT exit_reason FROM trade_memory") == "signal"


async def test_restart_keeps_the_bars_a_position_has_been_held(db_pool: asyncpg.Pool) -> None:
    """Shadow mode: a position held 3 bars of max_hold_bars 5 when the daemon restarts must get
    its time exit 2 bars later, as it would have without the restart.
    (Once the restored position started again at 0 bars held.)"""
    config = config_of(mode="shadow", execution={"max_hold_bars": 5})
    s = 12_000
    assert contiguous((BTC,), s, s + 8)
    before = Replay.build(config, db_pool, start=s)
    await before.start()
    await before.bar(s, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)])
    for i in range(s + 1, s + 4):  # the entry fills on s+1; held 1, 2, 3 bars
        await before.bar(i)
    assert before.book_positions[BTC].hold_bars == 3

    after = Replay.build(config, db_pool, start=s + 4)
    await after.start()
    assert after.book_positions[BTC].hold_bars == 3
    for i in range(s + 4, s + 7):  # held 4, 5: the time exit is sent on s+5, fills on s+6
        await after.bar(i)
    assert after.book_positions == {}
    row = await db_pool.fetchrow("SELECT exit_reason, exit_time FROM trade_memory")
    assert row is not None
    assert row["exit_reason"] == "time_exit"
    assert int(row["exit_time"].timestamp() * 1000) == open_ms(BTC, s + 6)


def test_a_stop_at_or_beyond_the_whole_price_is_refused_by_the_config() -> None:
    """A stop 10,000 bps below the entry is a stop at 0, which no venue or journal can hold: the
    configuration refuses it rather than let the trading task fail on the first fill."""
    with pytest.raises(ValidationError, match="stop_loss_bps"):
        config_of(execution={"stop_loss_bps": 10_000.0})


async def test_a_restart_of_the_trading_task_in_the_process_does_not_count_anything_twice(
    db_pool: asyncpg.Pool,
) -> None:
    """The supervisor runs a crashed task again on the same object: the book is rebuilt from the
    journal, not folded onto the positions and PnL it still holds."""
    config = config_of(mode="shadow", execution={"stop_loss_bps": 150.0})
    s = 12_000
    replay = Replay.build(config, db_pool, start=s)
    await replay.start()
    await replay.bar(s, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)])
    await replay.bar(s + 1, lambda i: [intent(AgentAction.EXIT_POSITION, BTC, i)])
    await replay.bar(s + 2, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)])
    await replay.bar(s + 3)
    position = replay.book_positions[BTC]
    before = (position.quantity, position.average_entry_price, position.entry_fees_quote)
    since_reset = replay.service.gate.portfolio().pnl_since_reset
    assert replay.service.executor.stats.trades  # one round trip closed

    replay.ctx.stopping.set()  # run() restarts, reconciles, and returns at once
    await replay.service.run(replay.ctx)
    again = replay.book_positions[BTC]
    assert (again.quantity, again.average_entry_price, again.entry_fees_quote) == before
    assert replay.service.gate.portfolio().pnl_since_reset == since_reset


async def test_a_failed_journal_write_stops_every_later_write_and_every_new_order(
    db_pool: asyncpg.Pool,
) -> None:
    """After a write fails, nothing later may reach the journal (a FILLED order row over its
    lost fill could not be repaired) and no order may be sent: the task must restart and
    reconcile. Mocked: the failure itself (a database that refuses one write)."""
    config = config_of(execution={"stop_loss_bps": 150.0})
    s = 12_000
    replay = Replay.build(config, db_pool, start=s)
    await replay.start()
    executor = replay.service.executor
    writer = executor.writer
    real_record = writer.journal.record_fill

    async def refuse(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionResetError("the database went away")

    writer.journal.record_fill = refuse  # type: ignore[method-assign]
    await replay.bar(s, lambda i: [intent(AgentAction.ENTER_LONG_NORMAL, BTC, i)])  # placed, accepted
    with pytest.raises(JournalWriteFailed):
        await replay.bar(s + 1)  # filled at the open: its fill cannot be written
    writer.journal.record_fill = real_record  # type: ignore[method-assign]
    assert writer.failed is not None
    assert await db_pool.fetchval("SELECT count(*) FROM fills") == 0
    (order,) = await rows(db_pool, "SELECT status, filled_quantity FROM orders")
    # Not FILLED without its fill: the row stays as it was before the lost write.
    assert (order["status"], order["filled_quantity"]) == ("ACCEPTED", 0)
    with pytest.raises(JournalWriteFailed):
        await executor.flush()
    entry = ApprovedOrder(intent(AgentAction.ENTER_LONG_SMALL, ETH, s), Decimal(1), "market", "entry")
    with pytest.raises(JournalWriteFailed), gate_pass():
        await executor.place(entry)
    assert await db_pool.fetchval("SELECT count(*) FROM orders") == 1
