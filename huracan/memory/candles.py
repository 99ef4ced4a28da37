"""The `candles` table: bulk writes that never overwrite what is stored, and reads for replay,
features and gap repair.

Bars are validated before they get here (`huracan.market.validation`); the table's CHECK
constraints are the backstop, and a batch that breaks one is rolled back whole.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt

from huracan.core.candle import Candle, CandleSeries

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VALUES = ("open", "high", "low", "close", "volume")
_COLUMNS = ["exchange", "symbol", "timeframe", "open_time", *_VALUES]

# Static SQL (no formatting at run time). Open times go out as epoch milliseconds: extract()
# gives exact numeric.
_CREATE_INCOMING = """
    CREATE TEMPORARY TABLE candles_incoming (LIKE candles INCLUDING DEFAULTS) ON COMMIT DROP
"""
# NOT EXISTS drops the bars stored already before the insert (one anti-join instead of a
# speculative insertion per bar: a re-sent batch costs a third as much); ON CONFLICT still
# covers one key twice in the batch and a concurrent writer.
_INSERT_NEW = """
    INSERT INTO candles (exchange, symbol, timeframe, open_time, open, high, low, close, volume)
    SELECT i.exchange, i.symbol, i.timeframe, i.open_time, i.open, i.high, i.low, i.close, i.volume
    FROM candles_incoming i
    WHERE NOT EXISTS (
        SELECT FROM candles c
        WHERE (c.exchange, c.symbol, c.timeframe, c.open_time) = (i.exchange, i.symbol, i.timeframe, i.open_time)
    )
    ON CONFLICT (exchange, symbol, timeframe, open_time) DO NOTHING
"""
_SELECT_CONFLICTS = """
    SELECT i.exchange, i.symbol, i.timeframe,
           (extract(epoch FROM i.open_time) * 1000)::bigint AS open_time_ms,
           i.open::float8 AS open, i.high::float8 AS high, i.low::float8 AS low,
           i.close::float8 AS close, i.volume::float8 AS volume,
           c.open::float8 AS stored_open, c.high::float8 AS stored_high, c.low::float8 AS stored_low,
           c.close::float8 AS stored_close, c.volume::float8 AS stored_volume
    FROM candles_incoming i
    JOIN candles c USING (exchange, symbol, timeframe, open_time)
    WHERE (i.open, i.high, i.low, i.close, i.volume) IS DISTINCT FROM (c.open, c.high, c.low, c.close, c.volume)
    ORDER BY i.exchange, i.symbol, i.timeframe, i.open_time
"""
_SELECT_SERIES = """
    SELECT (extract(epoch FROM open_time) * 1000)::bigint,
           open::float8, high::float8, low::float8, close::float8, volume::float8
    FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = $3
                   AND open_time >= $4 AND open_time < $5
    ORDER BY open_time
"""
_SELECT_OPEN_TIMES = """
    SELECT (extract(epoch FROM open_time) * 1000)::bigint
    FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = $3
                   AND open_time >= $4 AND open_time < $5
    ORDER BY open_time
"""


def ms_to_datetime(time_ms: int) -> datetime:
    # timedelta arithmetic is exact; datetime.fromtimestamp(ms / 1000) goes through a float.
    return EPOCH + timedelta(milliseconds=time_ms)


_FIRST_MS = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
_LAST_MS = (datetime(9999, 12, 31, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


def _window_bound(time_ms: int) -> datetime:
    """A query bound: times beyond what datetime holds (e.g. 2**62 for "no end") are clamped."""
    return ms_to_datetime(min(max(time_ms, _FIRST_MS), _LAST_MS))


# COPY text format: the table's own number and time parsers read what we send.
_NUMERIC_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_MAX_MS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _numeric_text(value: float) -> str:
    """`decimal_of(value)` as numeric input text: the same digits, so the same stored numeric
    (scale included: 29000, not 29000.0), without building a Decimal."""
    text = repr(value if type(value) is float else float(value))
    if text.endswith(".0"):
        return text[:-2]
    return _NUMERIC_SPECIALS.get(text, text)


def _copy_text(candles: Sequence[Candle]) -> bytes:
    """The bars as COPY text-format rows (columns as `_COLUMNS`). About five times faster than
    Decimal and datetime records through asyncpg's binary COPY, most of it on the client."""
    times_ms = np.fromiter((c.open_time_ms for c in candles), dtype=np.int64, count=len(candles))
    if int(times_ms.min()) < _FIRST_MS or int(times_ms.max()) > _MAX_MS:
        raise OverflowError("date value out of range")  # what ms_to_datetime raises
    # Exact: integer milliseconds, printed in UTC ("2021-01-01T00:00:00.000Z").
    times = np.datetime_as_string(times_ms.astype("datetime64[ms]"), unit="ms").tolist()
    streams: dict[tuple[str, str, str], str] = {}
    lines: list[str] = []
    num = _numeric_text
    for c, time in zip(candles, times, strict=True):
        key = (c.exchange, c.symbol, c.timeframe)
        prefix = streams.get(key)
        if prefix is None:
            prefix = streams[key] = "".join(f"{part.translate(_COPY_ESCAPES)}\t" for part in key)
        lines.append(
            f"{prefix}{time}Z\t{num(c.open)}\t{num(c.high)}\t{num(c.low)}\t{num(c.close)}\t{num(c.volume)}\n"
        )
    return "".join(lines).encode()


@dataclass(frozen=True, slots=True)
class CandleConflict:
    """A bar that came in with the key of a stored bar but other values; the stored one stays."""

    incoming: Candle
    stored: Candle


@dataclass(frozen=True, slots=True)
class WriteResult:
    inserted: int  # new bars, now stored
    identical: int  # already stored with the same values (overlapping fetches): nothing to do
    conflicting: tuple[CandleConflict, ...]  # already stored with other values: kept as stored

    @property
    def total(self) -> int:
        return self.inserted + self.identical + len(self.conflicting)


def _candle(row: Any, prefix: str = "") -> Candle:
    return Candle(
        row["exchange"],
        row["symbol"],
        row["timeframe"],
        int(row["open_time_ms"]),
        *(float(row[prefix + name]) for name in _VALUES),
    )


class CandleStore:
    """Candles over an asyncpg pool. Times are epoch milliseconds (bar open), as in `Candle`."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def write(self, candles: Sequence[Candle]) -> WriteResult:
        """Store new bars in one transaction: COPY into a temporary table, then one INSERT ...
        ON CONFLICT DO NOTHING. A bar whose key is stored already is counted as identical or
        returned as conflicting; stored values are never changed. Several bars with one key in
        the batch: one is inserted, the others count as identical or conflicting against it."""
        if not candles:
            return WriteResult(0, 0, ())
        data = _copy_text(candles)
        async with self.pool.acquire() as conn, conn.transaction():
            # Candles are the one table the venue can always give back: a crash that loses the
            # last commits costs a refetch at start-up (backfill and gap repair), never data.
            # So no waiting for the WAL flush here; every other table keeps synchronous commits.
            await conn.execute("SET LOCAL synchronous_commit = off")
            # LIKE copies the columns and NOT NULLs, not the CHECKs: those are met on the INSERT.
            await conn.execute(_CREATE_INCOMING)
            await conn.copy_to_table(
                "candles_incoming", source=io.BytesIO(data), columns=_COLUMNS, format="text"
            )
            status = await conn.execute(_INSERT_NEW)
            inserted = int(status.rsplit(" ", 1)[1])  # "INSERT 0 <rows>"
            # After the insert every incoming key is stored; those stored with other values
            # conflict. When every bar was inserted, each is its own stored row: none can.
            rows = await conn.fetch(_SELECT_CONFLICTS) if inserted < len(candles) else []
        conflicting = tuple(CandleConflict(_candle(r), _candle(r, "stored_")) for r in rows)
        return WriteResult(inserted, len(candles) - inserted - len(conflicting), conflicting)

    async def read_series(
        self, exchange: str, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> CandleSeries:
        """Stored bars whose open time is in [start_ms, end_ms), oldest first, as float columns
        (numeric -> float8 gives back the float each value was written from)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                _SELECT_SERIES,
                exchange,
                symbol,
                timeframe,
                _window_bound(start_ms),
                _window_bound(end_ms),
            )
        values = np.array([(r[1], r[2], r[3], r[4], r[5]) for r in rows], dtype=np.float64).reshape(
            len(rows), 5
        )
        return CandleSeries(
            exchange,
            symbol,
            timeframe,
            np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            *(np.ascontiguousarray(values[:, i]) for i in range(5)),
        )

    async def open_times(
        self, exchange: str, symbol: str, timeframe: str, start_ms: int, end_ms: int
    ) -> npt.NDArray[np.int64]:
        """Open times of the stored bars in [start_ms, end_ms), ascending (for `find_gaps`)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                _SELECT_OPEN_TIMES,
                exchange,
                symbol,
                timeframe,
                _window_bound(start_ms),
                _window_bound(end_ms),
            )
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
