"""CandleStore against a real PostgreSQL: bulk writes, exact decimals, nothing stored overwritten."""

from __future__ import annotations

import csv
import dataclasses
import time
from decimal import Decimal
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import Candle, CandleSeries
from huracan.core.numbers import decimal_of
from huracan.market.candle_files import read_candle_file
from huracan.market.validation import find_gaps
from huracan.memory.candles import CandleConflict, CandleStore, WriteResult, ms_to_datetime

BUNDLED = BUNDLED_CANDLES_DIR
BTC_FILE = BUNDLED / "binance_BTC-USDT_5m.csv"
ETH_FILE = BUNDLED / "binance_ETH-USDT_5m.csv"
STEP = 300_000
FAR_FUTURE = 2**53


def candles_of(series: CandleSeries, start: int = 0, stop: int | None = None) -> list[Candle]:
    return [series.candle(i) for i in range(start, len(series) if stop is None else stop)]


def csv_rows(path: Path, count: int) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]
    return rows[:count]


@pytest.fixture(scope="module")
def btc() -> CandleSeries:
    return read_candle_file(BTC_FILE)


@pytest.fixture(scope="module")
def eth() -> CandleSeries:
    return read_candle_file(ETH_FILE)


def assert_series_equal(got: CandleSeries, want: CandleSeries) -> None:
    assert (got.exchange, got.symbol, got.timeframe) == (want.exchange, want.symbol, want.timeframe)
    assert got.open_time_ms.dtype == np.int64
    for column in ("open_time_ms", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(got, column), getattr(want, column), err_msg=column)


# --- pure helpers --------------------------------------------------------------------------------


def test_decimal_of_is_the_number_the_venue_sent() -> None:
    assert decimal_of(0.1) == Decimal("0.1")  # not 0.1000000000000000055511151231257827...
    assert decimal_of(29017.5) == Decimal("29017.5")
    assert decimal_of(0.0000558) == Decimal("0.0000558")
    assert decimal_of(0.1 + 0.2) == Decimal(
        "0.30000000000000004"
    )  # a float that is not a short decimal stays exact
    assert float(decimal_of(182.889878)) == 182.889878


def test_ms_to_datetime_is_exact() -> None:
    assert ms_to_datetime(1_609_459_200_123).isoformat() == "2021-01-01T00:00:00.123000+00:00"
    assert ms_to_datetime(0).isoformat() == "1970-01-01T00:00:00+00:00"


# --- the database --------------------------------------------------------------------------------


@pytest.mark.db
async def test_ten_thousand_real_bars_round_trip_exactly(
    db_pool: asyncpg.Pool, db_conn: asyncpg.Connection, btc: CandleSeries
) -> None:
    store = CandleStore(db_pool)
    bars = candles_of(btc, 0, 10_000)
    result = await store.write(bars)
    assert result == WriteResult(inserted=10_000, identical=0, conflicting=())

    end = bars[-1].open_time_ms + STEP
    got = await store.read_series("binance", "BTC/USDT", "5m", bars[0].open_time_ms, end)
    assert_series_equal(got, btc.between(bars[0].open_time_ms, end))

    # What is stored is the very decimal of the CSV text, not a float's binary expansion.
    stored = await db_conn.fetch(
        "SELECT (extract(epoch FROM open_time) * 1000)::bigint AS t, open, high, low, close, volume, "
        "concat_ws(',', open, high, low, close, volume) AS text "
        "FROM candles WHERE exchange = 'binance' AND symbol = 'BTC/USDT' AND timeframe = '5m' ORDER BY open_time"
    )
    rows = csv_rows(BTC_FILE, 10_000)
    assert len(stored) == len(rows) == 10_000
    for record, row in zip(stored, rows, strict=True):
        assert record["t"] == int(row[0])
        values = [record["open"], record["high"], record["low"], record["close"], record["volume"]]
        assert values == [Decimal(text) for text in row[1:]], row
        # Even the written form: psql shows what the venue sent ("40000", not "40000.0").
        assert record["text"] == ",".join(row[1:])


@pytest.mark.db
async def test_writing_the_same_bars_again_inserts_nothing(db_pool: asyncpg.Pool, btc: CandleSeries) -> None:
    store = CandleStore(db_pool)
    bars = candles_of(btc, 0, 2_000)
    assert (await store.write(bars[:1_500])).inserted == 1_500
    again = await store.write(bars)  # an overlapping fetch: 1,500 known, 500 new
    assert again == WriteResult(inserted=500, identical=1_500, conflicting=())
    assert again.total == 2_000
    assert await store.write(bars) == WriteResult(inserted=0, identical=2_000, conflicting=())
    assert await store.write([]) == WriteResult(0, 0, ())


@pytest.mark.db
async def test_a_conflicting_bar_is_reported_and_the_stored_one_kept(
    db_pool: asyncpg.Pool, btc: CandleSeries
) -> None:
    store = CandleStore(db_pool)
    bars = candles_of(btc, 0, 100)
    await store.write(bars[:50])
    original = bars[20]
    changed = dataclasses.replace(
        original, close=original.close + 0.01, high=max(original.high, original.close + 0.01)
    )
    result = await store.write([*bars[10:20], changed, *bars[21:60]])
    assert result.inserted == 10
    assert result.identical == 39
    assert result.conflicting == (CandleConflict(incoming=changed, stored=original),)

    got = await store.read_series(
        "binance", "BTC/USDT", "5m", original.open_time_ms, original.open_time_ms + STEP
    )
    assert got.candle(0) == original  # nothing stored is lost


@pytest.mark.db
async def test_one_key_twice_in_a_batch(db_pool: asyncpg.Pool, btc: CandleSeries) -> None:
    store = CandleStore(db_pool)
    bar = btc.candle(0)
    assert await store.write([bar, bar]) == WriteResult(inserted=1, identical=1, conflicting=())


@pytest.mark.db
async def test_a_bar_breaking_a_table_constraint_rolls_back_its_whole_batch(
    db_pool: asyncpg.Pool, btc: CandleSeries
) -> None:
    store = CandleStore(db_pool)
    bars = candles_of(btc, 0, 10)
    bad = dataclasses.replace(bars[5], low=-1.0)
    with pytest.raises(asyncpg.CheckViolationError):
        await store.write([*bars[:5], bad, *bars[6:]])
    assert len(await store.open_times("binance", "BTC/USDT", "5m", 0, FAR_FUTURE)) == 0
    assert (await store.write(bars)).inserted == 10  # and the connection is fine afterwards


@pytest.mark.db
async def test_read_series_is_the_half_open_window_of_one_stream(
    db_pool: asyncpg.Pool, btc: CandleSeries, eth: CandleSeries
) -> None:
    store = CandleStore(db_pool)
    await store.write([*candles_of(btc, 0, 200), *candles_of(eth, 0, 200)])
    start, end = int(btc.open_time_ms[50]), int(btc.open_time_ms[150])
    got = await store.read_series("binance", "BTC/USDT", "5m", start, end)
    assert_series_equal(got, btc.between(start, end))
    assert len(got) == 100
    empty = await store.read_series("binance", "BTC/USDT", "5m", end + 10**9, end + 2 * 10**9)
    assert len(empty) == 0
    assert empty.open_time_ms.dtype == np.int64
    assert empty.close.dtype == np.float64


@pytest.mark.db
async def test_open_times_and_find_gaps_find_a_cut_out_range(
    db_pool: asyncpg.Pool, btc: CandleSeries
) -> None:
    store = CandleStore(db_pool)
    bars = candles_of(btc, 0, 3_000)
    assert all(
        b.open_time_ms == bars[0].open_time_ms + i * STEP for i, b in enumerate(bars)
    )  # no gap of its own
    await store.write(bars[:1_000] + bars[1_100:2_999])  # cut out 1,000..1,099 and the last bar
    start, end = bars[0].open_time_ms, bars[-1].open_time_ms + STEP
    times = await store.open_times("binance", "BTC/USDT", "5m", start, end)
    assert times.dtype == np.int64
    assert len(times) == 2_899
    assert bool(np.all(np.diff(times) > 0))
    assert find_gaps(times, "5m", start, end) == [
        (bars[1_000].open_time_ms, bars[1_099].open_time_ms),
        (bars[2_999].open_time_ms, bars[2_999].open_time_ms),
    ]
    # Repairing the gap closes it.
    assert (await store.write(bars[990:1_110])).inserted == 100
    times = await store.open_times("binance", "BTC/USDT", "5m", start, end)
    assert find_gaps(times, "5m", start, end) == [(bars[2_999].open_time_ms, bars[2_999].open_time_ms)]


@pytest.mark.db
async def test_fifty_thousand_bars_write_in_bulk(
    db_pool: asyncpg.Pool, btc: CandleSeries, eth: CandleSeries, capsys: pytest.CaptureFixture[str]
) -> None:
    store = CandleStore(db_pool)
    bars = candles_of(btc) + candles_of(eth)
    started = time.perf_counter()
    result = await store.write(bars)
    write_s = time.perf_counter() - started
    assert result == WriteResult(inserted=len(bars), identical=0, conflicting=())

    started = time.perf_counter()
    again = await store.write(bars)
    rewrite_s = time.perf_counter() - started
    assert again == WriteResult(inserted=0, identical=len(bars), conflicting=())

    started = time.perf_counter()
    got = await store.read_series("binance", "BTC/USDT", "5m", 0, FAR_FUTURE)
    read_s = time.perf_counter() - started
    assert_series_equal(got, btc)
    # The real outages of the window are there to be found.
    times = await store.open_times("binance", "ETH/USDT", "5m", 0, FAR_FUTURE)
    assert [(b - a) // STEP + 1 for a, b in find_gaps(times, "5m", int(times[0]), int(times[-1]) + STEP)] == [
        15,
        18,
    ]
    with capsys.disabled():
        print(
            f"\ncandle store: wrote {len(bars)} bars in {write_s:.2f} s ({len(bars) / write_s:,.0f} bars/s), "
            f"rewrote them (all identical) in {rewrite_s:.2f} s, read {len(got)} back in {read_s:.2f} s"
        )
