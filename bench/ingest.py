"""Candle ingest: rows per second that `CandleStore.write` puts into PostgreSQL (new bars, and
the same bars re-sent), against a plain asyncpg `copy_records_to_table` into the candles table
(no temporary table, no upsert, no conflict check: the fastest way in with asyncpg's
records), our COPY text straight into the table (the server's floor for the rows), and bars per second
through `validate_batch`. Uses the bundled real candles and a throwaway private cluster,
removed at the end even on error. Prints a table, then one JSON line with the figures. Not part
of the test suite.

    .venv/bin/python bench/ingest.py
"""

from __future__ import annotations

import asyncio
import io
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import orjson

from huracan.core.candle import Candle
from huracan.core.numbers import decimal_of
from huracan.logs import configure_logging
from huracan.market.candle_files import read_candle_file
from huracan.market.validation import validate_batch
from huracan.memory.candles import CandleStore, _copy_text, ms_to_datetime
from huracan.memory.cluster import PrivateCluster
from huracan.memory.migrate import apply_migrations, default_migrations_dir

CANDLES = Path(__file__).resolve().parent.parent / "data" / "candles"
GOAL_ROWS_PER_S = 100_000
REPEATS = 5
VALIDATE_REPEATS = 3
COLUMNS = ["exchange", "symbol", "timeframe", "open_time", "open", "high", "low", "close", "volume"]


def load_bars() -> list[Candle]:
    bars: list[Candle] = []
    for path in sorted(CANDLES.glob("*.csv")):
        series = read_candle_file(path)
        bars.extend(series.candle(i) for i in range(len(series)))
    return bars


def check(ok: bool, what: object) -> None:
    """The benchmark measures correct work only (not an assert: kept under python -O)."""
    if not ok:
        raise RuntimeError(f"unexpected result: {what}")


async def best_s(conn: asyncpg.Connection, run: Callable[[], Awaitable[object]], *, truncate: bool) -> float:
    """Best of REPEATS, in seconds: the least disturbed run is the closest to the code's cost.
    `truncate`: start each run from an empty table (not timed)."""
    best = float("inf")
    for _ in range(REPEATS):
        if truncate:
            await conn.execute("TRUNCATE candles")
        started = time.perf_counter()
        await run()
        best = min(best, time.perf_counter() - started)
    return best


async def measure(dsn: str, bars: list[Candle]) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)
    try:
        await apply_migrations(conn, default_migrations_dir())
        store = CandleStore(pool)

        async def reference() -> None:
            # What plain asyncpg takes, conversion included: the same exact values (Decimal of
            # the float's shortest repr, exact datetimes) in one COPY straight into the table.
            records = [
                (
                    c.exchange,
                    c.symbol,
                    c.timeframe,
                    ms_to_datetime(c.open_time_ms),
                    *(decimal_of(v) for v in (c.open, c.high, c.low, c.close, c.volume)),
                )
                for c in bars
            ]
            await conn.copy_records_to_table("candles", records=records, columns=COLUMNS)

        async def floor() -> None:
            # Our COPY text straight into the table: what the server takes for the rows alone.
            await conn.copy_to_table("candles", source=io.BytesIO(_copy_text(bars)), columns=COLUMNS)

        async def write() -> None:
            result = await store.write(bars)
            check(result.inserted == len(bars), result)

        async def rewrite() -> None:
            result = await store.write(bars)
            check(result.identical == len(bars) and not result.conflicting, result)

        reference_s = await best_s(conn, reference, truncate=True)
        floor_s = await best_s(conn, floor, truncate=True)
        write_s = await best_s(conn, write, truncate=True)
        rewrite_s = await best_s(conn, rewrite, truncate=False)  # the table holds them all now
        stored = await conn.fetchval("SELECT count(*) FROM candles")
        check(stored == len(bars), stored)
    finally:
        await pool.close()
        await conn.close()
    now_ms = max(b.open_time_ms for b in bars) + 10**9
    validate_s = float("inf")
    for _ in range(VALIDATE_REPEATS):
        started = time.perf_counter()
        verdict = validate_batch(bars, now_ms=now_ms, last_accepted=None)
        validate_s = min(validate_s, time.perf_counter() - started)
        check(len(verdict.accepted) == len(bars), verdict.rejected[:3])
    return {
        "reference": reference_s,
        "floor": floor_s,
        "write": write_s,
        "rewrite": rewrite_s,
        "validate": validate_s,
    }


def main() -> int:
    started = time.perf_counter()
    configure_logging(fmt="json", level="warning")  # no cluster chatter between the figures
    bars = load_bars()
    root = Path(tempfile.mkdtemp(prefix="huracan-bench-"))
    root.chmod(0o755)  # when we are root, the server runs as the postgres user
    cluster = PrivateCluster(root / "postgres")
    try:
        cluster.ensure_started()
        seconds = asyncio.run(measure(cluster.dsn("postgres"), bars))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    n = len(bars)
    rate = {name: n / s for name, s in seconds.items()}
    result = {
        "python": platform.python_version(),
        "asyncpg": asyncpg.__version__,
        "bars": n,
        "reference_copy_rows_per_s": round(rate["reference"]),
        "copy_text_floor_rows_per_s": round(rate["floor"]),
        "write_new_rows_per_s": round(rate["write"]),
        "write_new_ratio_over_reference": round(rate["write"] / rate["reference"], 2),
        "rewrite_identical_rows_per_s": round(rate["rewrite"]),
        "rewrite_identical_ratio_over_reference": round(rate["rewrite"] / rate["reference"], 2),
        "goal_rows_per_s": GOAL_ROWS_PER_S,
        "goal_met": rate["write"] >= GOAL_ROWS_PER_S and rate["rewrite"] >= GOAL_ROWS_PER_S,
        "validate_bars_per_s": round(rate["validate"]),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    print(f"{n:,} bars (3 streams of real 5m candles), best of {REPEATS}")
    print(f"{'':32}{'reference':>12}{'huracan':>12}{'ratio':>8}{'goal':>12}")
    for label, key in (("write new bars, rows/s", "write"), ("re-write same bars, rows/s", "rewrite")):
        verdict = "pass" if rate[key] >= GOAL_ROWS_PER_S else "MISS"
        print(
            f"{label:32}{rate['reference']:>12,.0f}{rate[key]:>12,.0f}"
            f"{rate[key] / rate['reference']:>8.2f}{GOAL_ROWS_PER_S:>8,} {verdict}"
        )
    print(f"{'COPY text, no upsert, rows/s':32}{'':>12}{rate['floor']:>12,.0f}  (floor: the rows alone)")
    print(f"{'validate_batch, bars/s':32}{'':>12}{rate['validate']:>12,.0f}")
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
