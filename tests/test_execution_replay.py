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
today; their docstrings say what is wrong and where.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any, Literal

import asyncpg
import pytest
from pydantic import ValidationError

from huracan.config import HuracanConfig
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.bus import Topic
from huracan.core.candle import CandleSeries
from huracan.core.events import CandleClosed
from huracan.core.intents import (
    ENTRY_ACTIONS,
    FLAT_ACTIONS,
    LONG_ACTIONS,
    AgentAction,
    BarDecided,
    OrderIntent,
)
from huracan.core.numbers import decimal_of
from huracan.daemon.service import Liveness, RunningConfig, ServiceContext
from huracan.daemon.services import build_trading
from huracan.exchange.models import Trade
from huracan.execution.fill_model import FillCosts
from huracan.execution.positions import Position
from huracan.execution.service import TradingService
from huracan.execution.sim_venue import SimulatedVenue, replay_market_rules
from huracan.market.candle_files import read_candle_file
from huracan.risk.portfolio import TradingState
from huracan.risk.state_store import load_state, set_state
from huracan.rl.env import EnvConfig
from huracan.rl.reference import Fill, simulate

pytestmark = pytest.mark.db

BTC, ETH = "BTC/USDT", "ETH/USDT"
EXCHANGE = "binance"
STEP = 300_000
BPS = Decimal(10_000)
RATE = Decimal("0.79")  # risk.quote_to_account_rate's default
BAR_TIMEOUT_S = 20.0

Decide = Callable[[int], Sequence[OrderIntent]]


# --- data and configuration -----------------------------------------------------------------


@functools.cache
def series_of(symbol: str) -> CandleSeries:
    return read_candle_file(BUNDLED_CANDLES_DIR / f"binance_{symbol.replace('/', '-')}_5m.csv")


def open_ms(symbol: str, index: int) -> int:
    return int(series_of(symbol).open_time_ms[index])


def price(symbol: str, index: int, field: Literal["open", "high", "low", "close", "volume"]) -> Decimal:
    column = getattr(series_of(symbol), field)
    return decimal_of(float(column[index]))


def contiguous(symbols: Sequence[str], first: int, last: int) -> bool:
    """Bars first..last of every symbol are one bar apart and at the same times."""
    times = [open_ms(symbols[0], i) for i in range(first, last + 1)]
    if any(b - a != STEP for a, b in itertools.pairwise(times)):
        return False
    return all(open_ms(s, i) == times[i - first] for s in symbols for i in range(first, last + 1))


def config_of(
    *,
    mode: Literal["replay", "shadow"] = "replay",
    symbols: Sequence[str] = (BTC,),
    risk: dict[str, Any] | None = None,
    execution: dict[str, Any] | None = None,
) -> HuracanConfig:
    """Generous limits, taker entries and exits that never fire unless a test asks for them."""
    return HuracanConfig.model_validate(
        {
            "exchange": {"mode": mode},
            "universe": {"symbols": list(symbols)},
            "risk": {
                "max_heat_pct": 100.0,
                "daily_loss_limit": "1000000000",
                "circuit_breaker_loss": "1000000000",
                "daily_profit_target": None,
                "max_orders_per_minute": 1000,
                "max_open_positions": 3,
                **(risk or {}),
            },
            "execution": {
                "maker_entries": False,
                # Far below any price these bars reach, yet a positive stop price (10_000 would be a
                # stop at 0, which the config refuses).
                "stop_loss_bps": 9_999.0,
                "take_profit_bps": 10_000.0,  # twice the entry price: not within these bars
                "max_hold_bars": 1_000_000_000,
                **(execution or {}),
            },
        }
    )


def intent(action: AgentAction, symbol: str, index: int) -> OrderIntent:
    """What the decision step sends for `action` decided on bar `index`'s close."""
    return OrderIntent.from_action(
        action,
        symbol=symbol,
        bar_open_time_ms=open_ms(symbol, index),
        reference_price=price(symbol, index, "close"),
        model_version="replay-test",
        confidence=0.8,
        state=(0.25, -0.5, 1.0),
        regime="trend",
    )


def nothing(_index: int) -> Sequence[OrderIntent]:
    return ()


# --- the harness -----------------------------------------------------------------------------


class Clock:
    """Replay time, set by the harness to the close of the bar being handled."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass(slots=True)
class Replay:
    config: HuracanConfig
    pool: asyncpg.Pool
    symbols: tuple[str, ...]
    clock: Clock
    venue: SimulatedVenue
    service: TradingService
    ctx: ServiceContext

    @classmethod
    def build(cls, config: HuracanConfig, pool: asyncpg.Pool, *, start: int) -> Replay:
        """A trading service over a fresh simulated venue; the clock at bar `start`'s open (the
        close of the bar before it)."""
        symbols = tuple(config.universe.symbols)
        markets = replay_market_rules({s: series_of(s) for s in symbols})
        execution = config.execution
        costs = FillCosts.from_settings(execution, max_volume_share=Decimal(str(execution.max_volume_share)))
        clock = Clock(open_ms(symbols[0], start))
        venue = SimulatedVenue(EXCHANGE, markets, costs, clock)
        intents: asyncio.Queue[OrderIntent | BarDecided] = asyncio.Queue()
        service = build_trading(
            config,
            pool,
            venue=venue,
            simulated=venue,
            markets=markets,
            now_ms=clock,
            exchange_id=EXCHANGE,
            symbols=symbols,
            timeframe="5m",
            candles=Topic[CandleClosed]("candles"),
            intents=intents,
        )
        ctx = ServiceContext("trade", RunningConfig(config), asyncio.Event(), Liveness())
        return cls(config, pool, symbols, clock, venue, service, ctx)

    async def start(self) -> None:
        """As TradingService.run starts (replay's earlier-session clean-up aside)."""
        service = self.service
        await service.gate.start(fresh_session=service.fresh_session)
        await service.reconciler.reconcile_at_start()
        service.gate.reconciled = True

    async def bar(self, index: int, decide: Decide = nothing) -> None:
        """Bar `index` of every symbol closes. `decide` runs once the book has taken the bar (as
        the decision step waits for positions_ready) and returns the bar's intents."""
        opened = open_ms(self.symbols[0], index)
        assert all(open_ms(s, index) == opened for s in self.symbols)
        self.clock.now = opened + STEP
        event = CandleClosed("5m", opened, {s: series_of(s).candle(index) for s in self.symbols})
        handling = asyncio.create_task(self.service.on_bar(event, self.ctx))
        ready = asyncio.create_task(self.service.positions_ready(opened))
        done, _ = await asyncio.wait({handling, ready}, timeout=BAR_TIMEOUT_S, return_when="FIRST_COMPLETED")
        if handling in done:
            ready.cancel()
            handling.result()  # raises what on_bar raised before the book took the bar
            raise AssertionError("on_bar returned before the decision step's marker")
        assert ready in done, "the book never took the bar"
        for item in decide(index):
            await self.service.intents.put(item)
        await self.service.intents.put(BarDecided(opened))
        await asyncio.wait_for(handling, BAR_TIMEOUT_S)

    @property
    def book_positions(self) -> dict[str, Position]:
        return self.service.executor.book.positions


def trading_state(replay: Replay) -> TradingState:
    return replay.service.gate.state


async def rows(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    return list(await pool.fetch(query, *args))


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


@pytest.mark.parametrize("seed", [7, 2024])
async def test_taker_path_fills_and_trade_returns_equal_the_training_reference(
    db_pool: asyncpg.Pool, seed: int
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

    replay = Replay.build(config, db_pool, start=start)
    await replay.start()
    for step in range(count + 1):
        index = start + step

        def decide(i: int, step: int = step) -> Sequence[OrderIntent]:
            if step == count or actions[step] not in (*ENTRY_ACTIONS, AgentAction.EXIT_POSITION):
                return ()
            return (intent(actions[step], BTC, i),)

        await replay.bar(index, decide)
        # After bar start+k the book holds what the env holds after step k.
        assert (BTC in replay.book_positions) == reference.bars[step].has_position, f"bar {index}"

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
