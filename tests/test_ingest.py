"""Candle ingestion over the replay venue and the bundled real candles, into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import asyncpg
import pytest

from huracan.config import ConfigSources, load_config
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import Candle
from huracan.core.events import CandleClosed
from huracan.daemon.service import Liveness, RunningConfig
from huracan.daemon.supervisor import Supervisor
from huracan.exchange.replay import ReplayDataError, ReplayVenue
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.memory.candles import CandleStore

pytestmark = pytest.mark.db

DATA = BUNDLED_CANDLES_DIR
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
STEP = 300_000
DAY_BARS = 288


def make(db_pool: asyncpg.Pool, backfill_days: int = 2, venue: ReplayVenue | None = None) -> CandleIngest:
    venue = venue or ReplayVenue.from_directory(DATA, SYMBOLS, "5m", backfill_days=backfill_days)
    plan = IngestPlan(SYMBOLS, "5m", backfill_days, close_delay_ms=0, straggler_wait_ms=3_000)
    return CandleIngest(plan, venue, CandleStore(db_pool), venue.clock)


async def test_backfill_stores_the_window_of_every_symbol(db_pool: asyncpg.Pool) -> None:
    ingest = make(db_pool)
    await ingest.backfill()
    for symbol in SYMBOLS:
        rows = await db_pool.fetchval(
            "SELECT count(*) FROM candles WHERE symbol = $1 AND timeframe = '5m'", symbol
        )
        assert rows == 2 * DAY_BARS  # 2021-01-01 and 02 are complete in the data
    assert ingest.stats.stored == 3 * 2 * DAY_BARS
    assert sum(ingest.stats.rejected.values()) == 0
    # A restart resumes from what is stored: nothing is fetched twice into the table.
    again = make(db_pool)
    await again.backfill()
    assert again.stats.stored == 0


async def test_each_closed_bar_is_stored_and_published_once_for_all_symbols(db_pool: asyncpg.Pool) -> None:
    ingest = make(db_pool)
    received = ingest.topic.subscribe("test", maxsize=100)
    await ingest.backfill()
    start = ingest.clock.now_ms()
    await ingest.clock.sleep_until(start + 3 * STEP)
    events = await ingest.ingest_closed_bars()
    assert [e.open_time_ms for e in events] == [start, start + STEP, start + 2 * STEP]
    assert all(set(e.candles) == set(SYMBOLS) and e.missing == () for e in events)
    times = [e.open_time_ms for e in events]
    assert times == sorted(times)
    assert all(t + STEP <= ingest.clock.now_ms() for t in times), "only closed bars"
    published: list[CandleClosed] = [received.get_nowait() for _ in range(len(events))]
    assert published == events
    assert await ingest.ingest_closed_bars() == []  # nothing new: nothing published


class CorruptingVenue:
    """Fault injection: the replay venue, with one bar of one symbol made impossible (high < low),
    as a misbehaving exchange might send it. Everything else is the real venue's answer."""

    def __init__(self, venue: ReplayVenue, symbol: str, open_time_ms: int) -> None:
        self.venue, self.symbol, self.open_time_ms = venue, symbol, open_time_ms
        self.exchange_id = venue.exchange_id
        self.clock = venue.clock

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list[Candle]:
        bars = await self.venue.fetch_ohlcv(symbol, timeframe, since_ms, until_ms)
        return [
            dataclasses.replace(b, high=b.low / 2)
            if (symbol, b.open_time_ms) == (self.symbol, self.open_time_ms)
            else b
            for b in bars
        ]

    def opening_price(self, symbol: str, timeframe: str, open_time_ms: int) -> float | None:
        return self.venue.opening_price(symbol, timeframe, open_time_ms)


async def test_a_bad_bar_is_counted_not_stored_and_does_not_stop_ingestion(db_pool: asyncpg.Pool) -> None:
    venue = ReplayVenue.from_directory(DATA, SYMBOLS, "5m", backfill_days=1)
    bad_time = venue.clock.now_ms()  # the first bar to close after the backfill
    corrupting = CorruptingVenue(venue, "ETH/USDT", bad_time)
    plan = IngestPlan(SYMBOLS, "5m", 1, close_delay_ms=0, straggler_wait_ms=2_000)
    ingest = CandleIngest(plan, corrupting, CandleStore(db_pool), venue.clock)
    await ingest.backfill()
    await venue.clock.sleep_until(bad_time + 2 * STEP)
    events = await ingest.ingest_closed_bars()
    assert ingest.stats.rejected == {"inconsistent_range": 1}
    stored = await db_pool.fetchval(
        "SELECT count(*) FROM candles WHERE symbol = 'ETH/USDT' AND open_time = to_timestamp($1 / 1000.0)",
        bad_time,
    )
    assert stored == 0
    by_time = {e.open_time_ms: e for e in events}
    assert by_time[bad_time].missing == ("ETH/USDT",)
    assert set(by_time[bad_time + STEP].candles) == set(SYMBOLS)


async def test_gaps_are_repaired_and_venue_outages_remembered(db_pool: asyncpg.Pool) -> None:
    # Replay starts after the real maintenance gap of 2021-02-11 03:45-04:55 (15 bars).
    ingest = make(db_pool, backfill_days=45)
    await ingest.backfill()
    assert len(ingest._unfillable) == 3  # that gap, once per symbol; the venue has no such bars
    deleted = await db_pool.execute(
        "DELETE FROM candles WHERE symbol = 'BTC/USDT' AND open_time >= '2021-01-20' AND open_time < '2021-01-20 01:00'"
    )
    assert deleted == "DELETE 12"
    now = ingest.clock.now_ms()
    await ingest.repair_gaps("BTC/USDT", now - 45 * DAY_BARS * STEP, now)
    assert ingest.stats.gaps_repaired == 1
    restored = await db_pool.fetchval(
        "SELECT count(*) FROM candles WHERE symbol = 'BTC/USDT' AND open_time >= '2021-01-20' AND open_time < '2021-01-20 01:00'"
    )
    assert restored == 12


async def test_ingestion_runs_as_a_supervised_service_until_stopped(db_pool: asyncpg.Pool) -> None:
    ingest = make(db_pool, backfill_days=1)
    received = ingest.topic.subscribe("decide", maxsize=4)
    supervisor = Supervisor([ingest], RunningConfig(load_config(ConfigSources(environ={}))), Liveness())
    serving = asyncio.create_task(supervisor.serve())
    bars = [await asyncio.wait_for(received.get(), timeout=10) for _ in range(20)]
    supervisor.request_stop()
    await asyncio.wait_for(serving, timeout=10)
    times = [b.open_time_ms for b in bars]
    assert times == list(range(times[0], times[0] + 20 * STEP, STEP)), "every bar, in order, none skipped"


def test_replay_data_errors_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ReplayDataError, match="no 5m candle file for DOGE/USDT"):
        ReplayVenue.from_directory(DATA, ("BTC/USDT", "DOGE/USDT"), "5m", backfill_days=1)
    with pytest.raises(ReplayDataError, match=r"lower universe\.backfill_days"):
        ReplayVenue.from_directory(DATA, ("BTC/USDT",), "5m", backfill_days=365)


async def test_a_second_replay_over_stored_data_replays_every_bar(db_pool: asyncpg.Pool) -> None:
    first = make(db_pool, backfill_days=1)
    await first.backfill()
    await first.clock.sleep_until(first.clock.now_ms() + 10 * STEP)
    assert len(await first.ingest_closed_bars()) == 10
    # The same replay again: the bars are in the table already, but still in the new clock's future.
    second = make(db_pool, backfill_days=1)
    await second.backfill()
    await second.clock.sleep_until(second.clock.now_ms() + 10 * STEP)
    events = await second.ingest_closed_bars()
    assert len(events) == 10
    assert second.stats.stored == 0
    assert second.stats.duplicates == 3 * 10  # the backfill window was stored: nothing fetched twice
