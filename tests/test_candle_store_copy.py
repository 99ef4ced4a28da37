"""CandleStore's COPY text rows: what is stored is exactly `decimal_of` of each value, whatever
the float's repr looks like, and odd characters in names survive the text format."""

from __future__ import annotations

import asyncpg
import pytest

from huracan.core.candle import Candle
from huracan.core.numbers import decimal_of
from huracan.memory.candles import CandleStore, WriteResult

T0 = 1_609_459_200_000


@pytest.mark.db
async def test_stored_values_are_the_decimals_of_every_kind_of_repr(
    db_pool: asyncpg.Pool, db_conn: asyncpg.Connection
) -> None:
    bars = [
        Candle("binance", "BTC/USDT", "5m", T0, 29000.0, 1e16, 5e-324, 0.1 + 0.2, 0.0),
        Candle(
            "binance", "BTC/USDT", "5m", T0 + 300_000, 1e-05, 1.5e22, 1e-05, 123456789012345.0, 182.889878
        ),
        Candle("tab\there", "back\\slash/NEW\nLINE\r", "1h", T0 + 3_600_000, 2.0, 3.0, 1.0, 2.5, 7.0),
    ]
    assert await CandleStore(db_pool).write(bars) == WriteResult(inserted=3, identical=0, conflicting=())
    rows = await db_conn.fetch(
        "SELECT exchange, symbol, timeframe, (extract(epoch FROM open_time) * 1000)::bigint AS t, "
        "open::text, high::text, low::text, close::text, volume::text FROM candles ORDER BY open_time"
    )
    for bar, row in zip(bars, rows, strict=True):
        assert (row["exchange"], row["symbol"], row["timeframe"], row["t"]) == (
            bar.exchange,
            bar.symbol,
            bar.timeframe,
            bar.open_time_ms,
        )
        values = (bar.open, bar.high, bar.low, bar.close, bar.volume)
        assert [row[n] for n in ("open", "high", "low", "close", "volume")] == [
            format(decimal_of(v), "f") for v in values
        ]


@pytest.mark.db
@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
async def test_non_finite_values_meet_the_table_checks(db_pool: asyncpg.Pool, bad: float) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await CandleStore(db_pool).write([Candle("binance", "BTC/USDT", "5m", T0, 1.0, bad, 1.0, 1.0, 1.0)])


async def test_an_open_time_beyond_datetime_is_refused_before_the_database() -> None:
    store = CandleStore(None)  # never reached: refused before a connection is taken
    with pytest.raises(OverflowError):
        await store.write([Candle("binance", "BTC/USDT", "5m", 2**60, 1.0, 1.0, 1.0, 1.0, 1.0)])
