"""Reconciliation and the venue-wide cancels, against the emulator over the real ccxt client.

- Open venue orders we did not place are cancelled, or adopted as EXTERNAL, as configured.
- An order of ours whose answer was lost is UNKNOWN and blocks new risk on its symbol until a
  look-up by client order id resolves it.
- Halting cancels every open order of our symbols on the venue, ours or not.
- A fill the journal missed (the process died between the venue's fill and our write) is
  recorded by the next start's reconciliation, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import ccxt.async_support as ccxt
import pytest
from venue_stack import SteppedClock, build, config_for, entry, instant

from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.urls import point_at
from huracan.risk.portfolio import TradingState
from huracan.testing.emulator import (
    SPOT_ONLY_OPTIONS,
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    RunningEmulator,
    start_emulator,
)

pytestmark = pytest.mark.db

ROWS = 1300


@pytest.fixture
async def emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    from huracan.testing.chaos import chaos_data_dir

    running = await start_emulator(
        EmulatorConfig(data_dir=chaos_data_dir(tmp_path, ROWS), balances={"USDT": Decimal(100_000)})
    )
    yield running
    await running.close()


async def foreign_order(emulator: RunningEmulator, price: Decimal) -> str:
    """An order placed on the account by someone else (by hand, another program)."""
    client: Any = ccxt.binance(
        {
            "apiKey": "emulator-key",
            "secret": "emulator-secret",
            "enableRateLimit": False,
            "options": dict(SPOT_ONLY_OPTIONS),
        }
    )
    point_at(client, emulator.url)
    try:
        order = await client.create_order(
            "BTC/USDT", "limit", "buy", 0.001, float(price), {"clientOrderId": "byhand-1"}
        )
        return str(order["id"])
    finally:
        await client.close()


async def stack(
    emulator: RunningEmulator, pool: asyncpg.Pool, clock: SteppedClock, **execution: Any
) -> tuple[Any, ExchangeAdapter]:
    config = config_for(emulator, 1, maker=False)
    if execution:
        config = config.model_copy(update={"execution": config.execution.model_copy(update=execution)})
    adapter = ExchangeAdapter(
        config.exchange, recv_window_ms=300, lost_order_lookups=2, sleep=instant, enable_ccxt_rate_limit=False
    )
    markets = {s: m for s, m in (await adapter.load_markets()).items() if s in ("BTC/USDT", "ETH/USDT")}
    return build(config, pool, adapter, clock, markets, "emu"), adapter


async def start_trading(service: Any, adapter: ExchangeAdapter, symbol: str = "BTC/USDT") -> Decimal:
    """Start as the trading task does (state, reconciliation), and mark `symbol` at its last price."""
    await service.gate.start()
    await service.reconciler.reconcile_at_start()
    service.gate.reconciled = True
    price: Decimal = (await adapter.fetch_ticker(symbol)).last
    service.executor.book.last_prices[symbol] = price
    return price


async def test_unknown_venue_orders_are_cancelled_by_default(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    await foreign_order(emulator, Decimal(20_000))
    service, adapter = await stack(emulator, db_pool, SteppedClock(0))
    async with adapter:
        await service.gate.start()
        report = await service.reconciler.reconcile_at_start()
    assert report.canceled_unknown == 1
    assert emulator.engine.open_orders() == []


async def test_unknown_venue_orders_can_be_adopted_as_external(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    await foreign_order(emulator, Decimal(20_000))
    service, adapter = await stack(emulator, db_pool, SteppedClock(0), unknown_venue_orders="adopt")
    async with adapter:
        await service.gate.start()
        report = await service.reconciler.reconcile_at_start()
    assert report.adopted == 1
    assert [o.client_order_id for o in emulator.engine.open_orders()] == ["byhand-1"]
    row = await db_pool.fetchrow("SELECT reason, status FROM orders WHERE client_order_id = 'byhand-1'")
    assert row is not None
    assert (row["reason"], row["status"]) == ("external", "ACCEPTED")
    assert "byhand-1" in service.executor.orders


async def test_a_lost_answer_blocks_new_risk_on_the_symbol_until_resolved(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    clock = SteppedClock(0)
    service, adapter = await stack(emulator, db_pool, clock)
    async with adapter:
        gate = service.gate
        price = await start_trading(service, adapter)
        # The order is placed, its answer lost, and the look-ups fail too: the outcome is unknown.
        emulator.faults = FaultSchedule(
            seed=1,
            rules=[
                FaultRule(
                    FaultKind.TIMEOUT_AFTER_ACCEPT, path="/api/v3/order", method="POST", nth=(1,), hang_s=2.0
                ),
                FaultRule(FaultKind.HTTP_5XX, path="/api/v3/order", method="GET", probability=1.0),
            ],
        )
        await gate.handle(entry("BTC/USDT", price))
        await service.executor.flush()
        (order,) = service.executor.orders.values()
        assert order.status.value == "UNKNOWN"
        assert await db_pool.fetchval("SELECT status FROM orders") == "UNKNOWN"
        denied = await gate.handle(entry("BTC/USDT", price))
        assert denied is not None
        assert denied.reason == "unknown_order"
        # The venue answers again: the order is found by its client order id, filled.
        emulator.faults = FaultSchedule(seed=1)
        await service.executor.sync()
        assert order.status.value == "FILLED"
        assert "BTC/USDT" in service.executor.book.positions
        assert len(emulator.engine.orders) == 1  # never sent twice


async def test_halting_cancels_every_open_order_of_our_symbols_on_the_venue(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    service, adapter = await stack(
        emulator, db_pool, SteppedClock(0), unknown_venue_orders="adopt", maker_entries=True
    )
    async with adapter:
        gate = service.gate
        price = await start_trading(service, adapter)
        gate.maker_entries = True
        await gate.handle(entry("BTC/USDT", price))  # a resting post-only entry of ours
        await foreign_order(emulator, price * Decimal("0.9"))  # and one that is not ours
        assert len(emulator.engine.open_orders()) == 2
        await gate.change_state(TradingState.HALTED, reason="operator", by="test")
        assert emulator.engine.open_orders() == []
        assert (
            await db_pool.fetchval(
                "SELECT value->>'state' FROM daemon_state WHERE key = 'trading_state:live'"
            )
            == "HALTED"
        )
        denied = await gate.handle(entry("ETH/USDT", price))
        assert denied is not None
        assert denied.reason == "halted"


async def test_a_fill_the_journal_missed_is_recorded_at_the_next_start(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    clock = SteppedClock(0)
    service, adapter = await stack(emulator, db_pool, clock)
    async with adapter:
        gate = service.gate
        price = await start_trading(service, adapter)
        await gate.handle(entry("BTC/USDT", price))
        await service.executor.flush()
    # As if the process had died between the venue's fill and our write of it.
    await db_pool.execute("DELETE FROM fills")
    await db_pool.execute("DELETE FROM positions")
    await db_pool.execute(
        "UPDATE orders SET status = 'CANCELED', filled_quantity = 0, average_fill_price = NULL"
    )
    restarted, adapter = await stack(emulator, db_pool, clock)
    async with adapter:
        await restarted.gate.start()
        report = await restarted.reconciler.reconcile_at_start()
    assert report.untracked_fills == 1
    assert await db_pool.fetchval("SELECT count(*) FROM fills") == 1
    trade = emulator.engine.trades[0]
    assert await db_pool.fetchval("SELECT venue_trade_id FROM fills") == str(trade.trade_id)
    assert await db_pool.fetchval("SELECT status FROM orders") == "FILLED"
    assert "BTC/USDT" in restarted.executor.book.positions
    assert report.balance_mismatches == 0


async def test_a_position_opened_by_a_restored_maker_entrys_replacement_survives_the_next_restart(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    # Found by make chaos: a maker entry restored after a crash, then taken as a taker fallback,
    # opened its position under the first (unfilled) order's id; the next start could not find
    # the position's fills, forgot it, and the next entry broke the one-open-position rule.
    rest_under_the_bid = {"maker_offset_bps": 60.0, "max_reprices": 0, "signal_ttl_s": 1e9}
    clock = SteppedClock(emulator.now_ms)
    service, adapter = await stack(emulator, db_pool, clock, maker_entries=True, **rest_under_the_bid)
    async with adapter:
        price = await start_trading(service, adapter)
        await service.gate.handle(entry("BTC/USDT", price))
        await service.executor.flush()
    assert len(emulator.engine.open_orders()) == 1  # the process dies here: the entry rests

    service, adapter = await stack(emulator, db_pool, clock, maker_entries=True, **rest_under_the_bid)
    async with adapter:
        await start_trading(service, adapter)
        for _ in range(400):  # the bid walks away: the entry is cancelled and taken instead
            emulator.advance(1)
            clock.now += 300_000
            await service.executor.sync()
            await service.gate.maintain_makers()
            await service.executor.flush()
            if "BTC/USDT" in service.executor.book.positions:
                break
        held = service.executor.book.positions["BTC/USDT"].quantity
    filled = await db_pool.fetchrow("SELECT order_id FROM fills WHERE symbol = 'BTC/USDT'")
    position = await db_pool.fetchrow("SELECT entry_order_id FROM positions WHERE status = 'open'")
    assert position["entry_order_id"] == filled["order_id"]  # the order whose fill opened it

    # A row an earlier build wrote names the replaced order: restored from the first buy fill.
    await db_pool.execute("UPDATE positions SET entry_order_id = 1 WHERE status = 'open'")
    service, adapter = await stack(emulator, db_pool, clock, maker_entries=False)
    async with adapter:
        price = await start_trading(service, adapter)
        assert service.executor.book.positions["BTC/USDT"].quantity == held
        assessment = await service.gate.handle(entry("BTC/USDT", price))
        await service.executor.flush()  # raised JournalWriteFailed (a second open position)
    assert assessment is not None
    assert not assessment.allowed


async def test_the_balance_check_skips_symbols_whose_orders_are_still_working(
    emulator: RunningEmulator, db_pool: asyncpg.Pool
) -> None:
    # Found by make chaos: a periodic check read the venue's balance after a fill the journal
    # had not synced yet, and reported a difference that was only lag.
    clock = SteppedClock(emulator.now_ms)
    service, adapter = await stack(emulator, db_pool, clock)
    report = service.reconciler.report
    async with adapter:
        price = await start_trading(service, adapter)
        await service.gate.handle(entry("BTC/USDT", price))  # filled on the venue at once ...
        assert await db_pool.fetchval("SELECT count(*) FROM fills") == 0  # ... not yet synced
        await service.reconciler.check_balances()
        after_lag = report.balance_mismatches
        emulator.engine.balance("ETH").free += Decimal("0.5")  # coins someone else put there
        service.gate.maker_entries = True  # an ETH entry rests below the market: still working
        await service.gate.handle(entry("ETH/USDT", (await adapter.fetch_ticker("ETH/USDT")).last))
        await service.reconciler.check_balances()
        while_working = report.balance_mismatches
        (resting,) = list(service.executor.orders.values())
        await service.executor.cancel(resting, "test")
        await service.reconciler.check_balances()
        at_rest = report.balance_mismatches
    assert after_lag == 0  # the unsynced order is still working: no false alarm
    assert while_working == 0  # ETH has a working order: not compared yet
    assert at_rest == 1  # and once it rests, the foreign coins are reported
