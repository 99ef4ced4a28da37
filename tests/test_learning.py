"""The learning task against a real PostgreSQL: closed trades at real BTC bars are embedded and
put into patterns, tracked 1 h, 4 h and 24 h after their exits once the bars are stored, and
explained; a new process rebuilds the same memory from the tables and resumes the pending work.
The `btc` and `btc_features` fixtures are conftest.py's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

import asyncpg
import numpy as np
import pytest

from huracan.analysis import learning as learning_module
from huracan.analysis.learning import LearningService
from huracan.config import HuracanConfig
from huracan.config.sections import MemorySettings
from huracan.core.candle import CandleSeries
from huracan.daemon.service import Liveness, RunningConfig, ServiceContext
from huracan.execution.positions import ClosedTrade, EntryContext
from huracan.features.market import regime_names
from huracan.memory.candles import CandleStore, ms_to_datetime
from huracan.memory.embedding import EntryEmbedder
from huracan.memory.learning_store import LearningStore
from huracan.memory.setups import NearestSetups

pytestmark = pytest.mark.db

STEP = 300_000
BTC = "BTC/USDT"
FEE = 0.001  # per side
AFTER_ALL = 2**62  # a time after every exit: the whole memory is visible


def service(pool: asyncpg.Pool) -> LearningService:
    embedder = EntryEmbedder.default()
    return LearningService(
        LearningStore(pool, exchange="binance"),
        CandleStore(pool),
        NearestSetups(embedder, k=20),
        timeframe="5m",
        embedder=embedder,
        batch=40,  # smaller than the trades: the queue is drained over several steps
    )


async def store_bars(pool: asyncpg.Pool, btc: CandleSeries, start: int, stop: int) -> None:
    await CandleStore(pool).write([btc.candle(i) for i in range(start, stop)])


async def insert_trades(
    pool: asyncpg.Pool, btc: CandleSeries, features: np.ndarray, entries: Sequence[tuple[int, int]]
) -> list[int]:
    """Long trades entered at the close of bar `i` and left at the close of bar `j`."""
    ids = []
    for i, j in entries:
        entry, exit_ = float(btc.close[i]), float(btc.close[j])
        quantity = 0.01
        fees = FEE * quantity * (entry + exit_)
        pnl = quantity * (exit_ - entry) - fees
        ids.append(
            await pool.fetchval(
                """
                INSERT INTO trade_memory (mode, exchange, symbol, entry_time, exit_time, entry_price, exit_price,
                    quantity, size_multiplier, pnl_quote, pnl_account, pnl_bps, fees_quote, slippage_bps,
                    entry_features, exit_reason, entry_regime, model_version, confidence)
                VALUES ('replay', 'binance', $1, $2, $3, $4, $5, $6, 1, $7, $7 * 0.79, $8, $9, 1.5, $10, $11, $12,
                        'test-model', 0.6)
                RETURNING id
                """,
                BTC,
                ms_to_datetime(int(btc.open_time_ms[i]) + STEP),
                ms_to_datetime(int(btc.open_time_ms[j]) + STEP),
                Decimal(repr(entry)),
                Decimal(repr(exit_)),
                Decimal(repr(quantity)),
                Decimal(repr(round(pnl, 8))),
                pnl / (quantity * entry) * 10_000,
                Decimal(repr(round(fees, 8))),
                [*features[i].tolist(), *([0.0] * 10)],
                "stop_loss" if exit_ < entry else "take_profit",
                regime_names(features[i : i + 1])[0],
            )
        )
    return ids


def entries(first: int, last: int, every: int) -> list[tuple[int, int]]:
    return [(i, i + 3 + (i // every) % 17) for i in range(first, last, every)]


async def counts(pool: asyncpg.Pool) -> dict[str, int]:
    tables = ("pattern_library", "post_exit_tracking", "win_analysis", "loss_analysis")
    return {t: await pool.fetchval(f"SELECT count(*) FROM {t}") for t in tables}


async def test_a_pass_learns_tracks_and_explains_every_closed_trade(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray
) -> None:
    await store_bars(db_pool, btc, 0, 1400)
    ids = await insert_trades(db_pool, btc, btc_features, entries(400, 1000, 7))
    learning = service(db_pool)
    await learning.rebuild()
    await learning.learn_pass()
    await learning.learn_pass()  # the 40-trade batches: the rest of the queue

    assert (
        await db_pool.fetchval(
            "SELECT count(*) FROM trade_memory WHERE pattern_id IS NULL OR entry_embedding IS NULL OR exit_regime IS NULL"
        )
        == 0
    )
    assert len(learning.setups) == len(ids)
    # Pattern statistics agree with their trades.
    assert (
        await db_pool.fetchval(
            """
        SELECT count(*) FROM pattern_library p
        WHERE occurrences <> (SELECT count(*) FROM trade_memory t WHERE t.pattern_id = p.pattern_id)
           OR wins <> (SELECT count(*) FROM trade_memory t WHERE t.pattern_id = p.pattern_id AND t.is_win)
        """
        )
        == 0
    )
    # Bars run to 1399: a trade left at bar j has its 24 h (288 bars) once j + 288 <= 1399.
    full = await db_pool.fetchval(
        "SELECT count(*) FROM trade_memory t WHERE (SELECT count(*) FROM post_exit_tracking e "
        "WHERE e.trade_id = t.id) = 3"
    )
    assert full == sum(1 for _, j in entries(400, 1000, 7) if j + 288 <= 1399)
    explained = await db_pool.fetchval(
        "SELECT (SELECT count(*) FROM win_analysis) + (SELECT count(*) FROM loss_analysis)"
    )
    with_4h = await db_pool.fetchval(
        "SELECT count(*) FROM trade_memory t JOIN post_exit_tracking e ON e.trade_id = t.id AND e.horizon = '4h'"
    )
    assert explained == with_4h > 0
    assert learning.stats.failed == 0
    # A win's pattern evidence: its pattern's trades that had exited by its entry, itself excluded.
    wrong = await db_pool.fetchval(
        """
        SELECT count(*) FROM win_analysis w JOIN trade_memory t ON t.id = w.trade_id
        WHERE w.pattern_occurrences <> (SELECT count(*) FROM trade_memory o WHERE o.pattern_id = t.pattern_id
                                        AND o.exit_time < t.entry_time AND o.id <> t.id)
        """
    )
    assert wrong == 0

    # Nothing more to do: a third pass writes nothing.
    before = await counts(db_pool)
    await learning.learn_pass()
    assert await counts(db_pool) == before


async def test_a_new_process_rebuilds_the_same_memory(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray
) -> None:
    await store_bars(db_pool, btc, 0, 1400)
    await insert_trades(db_pool, btc, btc_features, entries(400, 1000, 5))
    first = service(db_pool)
    await first.rebuild()
    for _ in range(4):
        await first.learn_pass()
    stored = await db_pool.fetch("SELECT * FROM pattern_library ORDER BY pattern_id")

    second = service(db_pool)
    await second.rebuild()
    assert sorted(second.library.pattern_ids()) == sorted(first.library.pattern_ids())
    for pattern_id in first.library.pattern_ids():
        a, b = first.library.stats(pattern_id), second.library.stats(pattern_id)
        assert (a.occurrences, a.wins, a.losses) == (b.occurrences, b.wins, b.losses)
        assert a.avg_profit_bps == pytest.approx(b.avg_profit_bps)
        assert a.reliability == pytest.approx(b.reliability)
        assert a.confidence_penalty == pytest.approx(b.confidence_penalty)
    # The rebuild rewrote the derived statistics to the same values.
    again = await db_pool.fetch("SELECT * FROM pattern_library ORDER BY pattern_id")
    assert [(r["occurrences"], r["wins"]) for r in again] == [(r["occurrences"], r["wins"]) for r in stored]
    assert [r["reliability"] for r in again] == pytest.approx([r["reliability"] for r in stored])
    rows = btc_features[1100:1120]
    symbols = [BTC] * len(rows)
    np.testing.assert_allclose(
        second.setups.nearest_setups(symbols, rows, AFTER_ALL),
        first.setups.nearest_setups(symbols, rows, AFTER_ALL),
        rtol=1e-6,
    )
    assert np.abs(second.setups.nearest_setups(symbols, rows, AFTER_ALL)).sum() > 0


async def test_horizons_wait_for_their_bars_and_survive_a_restart(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray
) -> None:
    # One trade left at bar 600; bars stored up to 2 h after it: only the 1 h horizon is covered.
    await store_bars(db_pool, btc, 0, 600 + 24)
    (trade_id,) = await insert_trades(db_pool, btc, btc_features, [(590, 600)])
    first = service(db_pool)
    await first.rebuild()
    await first.learn_pass()
    horizons = "SELECT array_agg(horizon ORDER BY horizon_time) FROM post_exit_tracking WHERE trade_id = $1"
    assert await db_pool.fetchval(horizons, trade_id) == ["1h"]
    analysed = "SELECT (SELECT count(*) FROM win_analysis) + (SELECT count(*) FROM loss_analysis)"
    assert await db_pool.fetchval(analysed) == 0

    # The bars arrive; a new process (nothing kept in memory) finishes the work.
    await store_bars(db_pool, btc, 600 + 24, 600 + 300)
    second = service(db_pool)
    await second.rebuild()
    await second.learn_pass()
    assert await db_pool.fetchval(horizons, trade_id) == ["1h", "4h", "24h"]
    assert await db_pool.fetchval(analysed) == 1
    row = await db_pool.fetchrow(
        "SELECT e.horizon_time, t.exit_time FROM post_exit_tracking e JOIN trade_memory t ON t.id = e.trade_id "
        "WHERE e.trade_id = $1 AND e.horizon = '4h'",
        trade_id,
    )
    assert (row["horizon_time"] - row["exit_time"]).total_seconds() == 4 * 3600


async def test_a_restart_of_the_task_rebuilds_into_fresh_state(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray
) -> None:
    # The supervisor runs the same object again after a crash: the rebuild must not find its
    # own earlier patterns and trades in memory.
    await store_bars(db_pool, btc, 0, 1100)
    ids = await insert_trades(db_pool, btc, btc_features, entries(400, 700, 9))
    learning = service(db_pool)
    await learning.rebuild()
    await learning.learn_pass()
    patterns = sorted(learning.library.pattern_ids())
    await learning.rebuild()
    assert sorted(learning.library.pattern_ids()) == patterns
    assert len(learning.setups) == len(ids)
    await learning.learn_pass()  # and it goes on
    assert learning.stats.failed == 0


async def test_a_trade_without_its_entry_state_is_explained_but_in_no_pattern(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray
) -> None:
    await store_bars(db_pool, btc, 0, 1100)
    ids = await insert_trades(db_pool, btc, btc_features, entries(400, 600, 10))
    # An adopted order's position: the journal stores [0] for the state nobody decided on.
    (orphan,) = await insert_trades(db_pool, btc, btc_features, [(450, 460)])
    await db_pool.execute("UPDATE trade_memory SET entry_features = '{0}' WHERE id = $1", orphan)
    learning = service(db_pool)
    await learning.rebuild()
    await learning.learn_pass()
    assert await db_pool.fetchval("SELECT pattern_id FROM trade_memory WHERE id = $1", orphan) is None
    assert await db_pool.fetchval("SELECT count(*) FROM trade_memory WHERE pattern_id IS NOT NULL") == len(
        ids
    )
    assert (
        await db_pool.fetchval(
            "SELECT (SELECT count(*) FROM win_analysis WHERE trade_id = $1)"
            " + (SELECT count(*) FROM loss_analysis WHERE trade_id = $1)",
            orphan,
        )
        == 1
    )
    assert learning.stats.failed == 0


def closed_trade(btc: CandleSeries, btc_features: np.ndarray, i: int, j: int) -> ClosedTrade:
    """A long closed as insert_trades writes it: entered at bar i's close, left at bar j's."""
    entry, exit_ = Decimal(repr(float(btc.close[i]))), Decimal(repr(float(btc.close[j])))
    quantity = Decimal("0.01")
    fees = Decimal(repr(FEE)) * quantity * (entry + exit_)
    pnl = quantity * (exit_ - entry) - fees
    return ClosedTrade(
        symbol=BTC,
        entry=EntryContext(
            model_version="test-model",
            confidence=0.6,
            size_multiplier=1.0,
            reference_price=entry,
            features=(*btc_features[i].tolist(), *([0.0] * 10)),
        ),
        entry_time_ms=int(btc.open_time_ms[i]) + STEP,
        exit_time_ms=int(btc.open_time_ms[j]) + STEP,
        entry_price=entry,
        exit_price=exit_,
        quantity=quantity,
        pnl_quote=pnl,
        fees_quote=fees,
        pnl_bps=float(pnl / (quantity * entry) * 10_000),
        slippage_bps=1.5,
        exit_reason="signal",
        position_id=None,
        exit_order_id=None,
    )


async def test_a_trade_handed_over_at_its_close_is_seen_at_once_and_keeps_its_place(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray
) -> None:
    await store_bars(db_pool, btc, 0, 700)
    learning = service(db_pool)
    await learning.rebuild()
    closed = closed_trade(btc, btc_features, 500, 510)
    exit_ms = closed.exit_time_ms
    learning.note_closed(closed)
    row = btc_features[520:521]
    assert len(learning.setups) == 0  # only noted on the fill path
    # The decision step's view puts it in first: visible to a bar closing after the exit, not at it.
    assert learning.view.nearest_setups([BTC], row, exit_ms + STEP)[0, 2] > 0
    assert learning.view.nearest_setups([BTC], row, exit_ms)[0, 2] == 0
    # Its row (same times) is learned later: the same entry, now under its id.
    (trade_id,) = await insert_trades(db_pool, btc, btc_features, [(500, 510)])
    await learning.learn_pass()
    assert len(learning.setups) == 1
    ids, _ = learning.setups.similar(learning.embedder.embed(btc_features[500:501])[0], 1)
    assert ids.tolist() == [trade_id]


async def test_a_replay_bar_waits_for_the_loss_penalties_it_would_know(
    db_pool: asyncpg.Pool, btc: CandleSeries, btc_features: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    i = next(i for i in range(450, 600) if btc.close[i + 10] < btc.close[i] * 0.995)  # a clear loss
    await store_bars(db_pool, btc, 0, i + 10 + 60)  # 5 h of bars after the exit
    learning = service(db_pool)
    # The timeout path (decide without the penalties) must not pass for the wait working.
    monkeypatch.setattr(learning_module, "READY_WAIT_S", 60.0)
    # A 60 s interval: only the waiting bar's call can bring the pass in time.
    config = HuracanConfig(memory=MemorySettings(learning_interval_s=60.0))
    ctx = ServiceContext("learning", RunningConfig(config), asyncio.Event(), Liveness())
    running = asyncio.create_task(learning.run(ctx))
    try:
        async with learning._passed:  # the rebuild and the first pass, then the 60 s wait
            await asyncio.wait_for(learning._passed.wait(), 10)
        closed = closed_trade(btc, btc_features, i, i + 10)
        learning.note_closed(closed)
        await insert_trades(db_pool, btc, btc_features, [(i, i + 10)])
        known = closed.exit_time_ms + 4 * 3_600_000
        row = btc_features[i + 60 : i + 61]
        unpenalised = learning.view.nearest_setups([BTC], row, known)
        assert learning.handover.due_before(known + 1)
        await asyncio.wait_for(learning.ready_for(known + 1), 10)
        assert not learning.handover.due_before(known + 1)
        assert await db_pool.fetchval("SELECT count(*) FROM loss_analysis") == 1
        # From then on the view weighs the trade by 1 - its penalty: less reliable than before.
        assert learning.setups.nearest_setups([BTC], row, known + 1)[0, 2] < unpenalised[0, 2]
    finally:
        ctx.stopping.set()
        await asyncio.wait_for(running, 10)
