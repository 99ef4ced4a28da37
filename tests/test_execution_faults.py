"""200 seeded fault schedules: the real executor, journal and risk gate, the real ccxt client over
HTTP to the loopback emulator, a real PostgreSQL.

Each schedule: a fresh emulator whose seeded faults hit order placement, order and trade
look-ups, cancels and open-order listings (timeouts before and after the venue accepted,
connection resets, 5xx, 429, garbled and replayed answers, latency); a random run of entries
(market and post-only), exits, bars passing and order syncs through the risk gate; then the
daemon "restarts" (a new executor on the same database) and reconciles with faults off.

After reconciliation, for every schedule:
- no duplicate orders: each client order id is at most one venue order;
- no orphan orders: every venue order is in the journal, every open one is tracked as working;
- no untracked and no double-counted fills: the journal holds each venue trade exactly once,
  and each order's fills add up to what the venue executed;
- positions equal the venue's: the book's quantity per symbol is the venue's base balance.
Mocked: nothing but time (the adapter's waits are instant, the executor's clock is stepped).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from venue_stack import SYMBOLS, SteppedClock, build, config_for, entry, exit_of, instant

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.errors import ExchangeError
from huracan.execution.service import TradingService
from huracan.testing.emulator import (
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    RunningEmulator,
    start_emulator,
)

pytestmark = pytest.mark.db

FIVE_MIN = 300_000
ROWS = 1300
START_BAR = 1200
SCHEDULES = 200
CHUNKS = 10  # one database per chunk of schedules

FAULT_KINDS = (
    FaultKind.TIMEOUT_BEFORE_ACCEPT,
    FaultKind.TIMEOUT_AFTER_ACCEPT,
    FaultKind.CONNECTION_RESET,
    FaultKind.HTTP_5XX,
    FaultKind.HTTP_429,
    FaultKind.MALFORMED_JSON,
    FaultKind.DUPLICATE_RESPONSE,
    FaultKind.LATENCY,
)
TARGETS = (
    ("/api/v3/order", "POST"),
    ("/api/v3/order", "GET"),
    ("/api/v3/order", "DELETE"),
    ("/api/v3/myTrades", "GET"),
    ("/api/v3/openOrders", "GET"),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("fault-candles")
    for symbol in SYMBOLS:
        name = f"binance_{symbol.replace('/', '-')}_5m.csv"
        lines = (BUNDLED_CANDLES_DIR / name).read_text().splitlines()[: ROWS + 1]
        (target / name).write_text("\n".join(lines) + "\n")
    return target


def schedule_for(seed: int) -> FaultSchedule:
    rng = random.Random(seed)
    rules = []
    for _ in range(rng.randint(2, 5)):
        kind = rng.choice(FAULT_KINDS)
        path, method = rng.choice(TARGETS)
        if kind in (FaultKind.TIMEOUT_BEFORE_ACCEPT, FaultKind.TIMEOUT_AFTER_ACCEPT) and method == "GET":
            method = "POST"  # hangs on reads cost time and teach nothing new: reads are retried
        rules.append(
            FaultRule(
                kind,
                path=path,
                method=method,
                nth=tuple(sorted(rng.sample(range(1, 5), rng.randint(1, 2)))),
                probability=rng.choice((0.0, 0.1, 0.2)),
                max_times=3,
                latency_ms=rng.randint(1, 30),
                hang_s=2.0,
                retry_after_s=0,
            )
        )
    return FaultSchedule(seed=seed, rules=rules)


async def one_step(
    roll: float,
    symbol: str,
    price: Decimal,
    service: TradingService,
    emulator: RunningEmulator,
    clock: SteppedClock,
) -> None:
    gate, executor = service.gate, service.executor
    if roll < 0.45:
        await gate.handle(entry(symbol, price))
    elif roll < 0.7:
        await gate.handle(exit_of(symbol, price))
    else:
        emulator.advance(1)
    clock.now += 10_000
    await executor.sync()
    await gate.maintain_makers()
    await executor.flush()  # as the daemon's poll does; a crash before it leaves writes unwritten


async def run_schedule(seed: int, data_dir: Path, pool: asyncpg.Pool) -> dict[str, int]:
    rng = random.Random(seed * 7919)
    emulator = await start_emulator(EmulatorConfig(data_dir=data_dir, balances={"USDT": Decimal(100_000)}))
    exchange = f"emu{seed}"
    clock = SteppedClock(1_000_000)
    maker = rng.random() < 0.5
    crashed = 0
    config = config_for(emulator, seed, maker=maker)
    try:
        async with ExchangeAdapter(
            config.exchange,
            recv_window_ms=300,
            lost_order_lookups=2,
            sleep=instant,
            enable_ccxt_rate_limit=False,
        ) as adapter:
            markets = {s: m for s, m in (await adapter.load_markets()).items() if s in SYMBOLS}
            service = build(config, pool, adapter, clock, markets, exchange)
            gate, executor = service.gate, service.executor
            await gate.start()
            await service.reconciler.reconcile_at_start()
            gate.reconciled = True
            emulator.faults = schedule_for(seed)
            steps = rng.randint(6, 12)
            # Half the schedules die abruptly in the middle of a step (the task is cancelled
            # at a random point, as a crash would stop it: uncommitted writes are lost).
            crash_at = rng.randrange(steps) if rng.random() < 0.5 else None
            for step in range(steps):
                symbol = rng.choice(SYMBOLS)
                price = (await adapter.fetch_ticker(symbol)).last
                executor.book.last_prices[symbol] = price
                work = asyncio.ensure_future(one_step(rng.random(), symbol, price, service, emulator, clock))
                if step == crash_at:
                    await asyncio.sleep(rng.uniform(0.0, 0.03))
                    work.cancel()
                    crashed += 1
                try:
                    await work
                except ExchangeError:
                    pass  # a fault may break a step (a read that kept failing); the journal must still be right
                except asyncio.CancelledError:
                    break
            injected = len(emulator.faults.injected)
            unknown = executor.stats.unknown
        # Restart: faults off, a new executor on the same journal, reconciliation.
        emulator.faults = FaultSchedule(seed=seed)
        clock.now += 60_000
        async with ExchangeAdapter(
            config.exchange, recv_window_ms=300, sleep=instant, enable_ccxt_rate_limit=False
        ) as adapter:
            markets = {s: m for s, m in (await adapter.load_markets()).items() if s in SYMBOLS}
            restarted = build(config, pool, adapter, clock, markets, exchange)
            await restarted.gate.start()
            await restarted.reconciler.reconcile_at_start()
            await check_agreement(emulator, pool, restarted, exchange, markets)
            report = restarted.reconciler.report
        return {
            "faults": injected,
            "orders": len(emulator.engine.orders),
            "trades": len(emulator.engine.trades),
            "unknown": unknown,
            "untracked_fills_recovered": report.untracked_fills,
            "crashed": crashed,
            "taken_back": report.taken_back,
        }
    finally:
        await emulator.close()


async def check_agreement(
    emulator: RunningEmulator, pool: asyncpg.Pool, service: TradingService, exchange: str, markets: Any
) -> None:
    engine = emulator.engine
    rows = await pool.fetch(
        "SELECT client_order_id, exchange_order_id, status FROM orders WHERE exchange = $1", exchange
    )
    journal = {r["client_order_id"]: r for r in rows}
    by_cid: dict[str, int] = {}
    for order in engine.orders.values():
        by_cid[order.client_order_id] = by_cid.get(order.client_order_id, 0) + 1
    duplicates = {cid: n for cid, n in by_cid.items() if n > 1}
    assert not duplicates, f"duplicate venue orders: {duplicates}"
    orphans = [cid for cid in by_cid if cid not in journal]
    assert not orphans, f"venue orders missing from the journal: {orphans}"
    working = set(service.executor.orders)
    open_untracked = [o.client_order_id for o in engine.open_orders() if o.client_order_id not in working]
    assert not open_untracked, f"open venue orders not tracked as working: {open_untracked}"
    fills = await pool.fetch(
        "SELECT f.venue_trade_id, f.quantity, o.client_order_id FROM fills f JOIN orders o ON o.id = f.order_id WHERE f.exchange = $1",
        exchange,
    )
    recorded = {r["venue_trade_id"]: r for r in fills}
    assert len(recorded) == len(fills)  # the unique constraint, seen from here
    for trade in engine.trades:
        row = recorded.get(str(trade.trade_id))
        assert row is not None, f"untracked venue fill {trade.trade_id} of order {trade.order_id}"
        assert row["quantity"] == trade.qty
    executed = {o.client_order_id: o.executed_qty for o in engine.orders.values()}
    summed: dict[str, Decimal] = {}
    for r in fills:
        summed[r["client_order_id"]] = summed.get(r["client_order_id"], Decimal(0)) + r["quantity"]
    for cid, quantity in summed.items():
        assert quantity == executed[cid], (
            f"{cid}: fills add up to {quantity}, the venue executed {executed[cid]}"
        )
    ledger = await service.executor.journal.net_base_by_symbol({s: r.base for s, r in markets.items()})
    for symbol, rules in markets.items():
        balance = engine.balances.get(rules.base)
        venue_qty = (balance.free + balance.locked) if balance is not None else Decimal(0)
        assert venue_qty == ledger.get(symbol, Decimal(0)), (
            f"{symbol}: venue holds {venue_qty}, the journal {ledger.get(symbol)}"
        )
        position = service.executor.book.positions.get(symbol)
        ours = position.quantity if position is not None else Decimal(0)
        # Each closed position may leave dust (less than a lot step) that the book writes off.
        closed = await pool.fetchval(
            "SELECT count(*) FROM positions WHERE exchange = $1 AND symbol = $2 AND status = 'closed'",
            exchange,
            symbol,
        )
        assert Decimal(0) <= venue_qty - ours < rules.amount_step * (closed + 1), (
            f"{symbol}: venue holds {venue_qty}, the book {ours} after {closed} closed positions"
        )
    assert service.reconciler.report.balance_mismatches == 0


def chunks() -> Iterator[range]:
    size = SCHEDULES // CHUNKS
    for start in range(0, SCHEDULES, size):
        yield range(start, start + size)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seeds", list(chunks()), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
async def test_fault_schedules_leave_no_duplicate_orphan_or_untracked_fill(
    seeds: range, data_dir: Path, db_pool: asyncpg.Pool
) -> None:
    totals = dict.fromkeys(
        ("faults", "orders", "trades", "unknown", "untracked_fills_recovered", "crashed", "taken_back"), 0
    )
    for seed in seeds:
        result = await run_schedule(seed, data_dir, db_pool)
        for key, value in result.items():
            totals[key] += value
    # The schedules must really have hit something, and orders really have traded.
    assert totals["faults"] >= len(seeds)  # on average at least one fault per schedule
    assert totals["orders"] >= len(seeds)
    assert totals["trades"] > 0
    print(f"{seeds}: {totals}")
