"""`huracan run --until-end`: the embedded default replays real candles into the database and
stops by itself with a summary."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.db

BARS_PER_DAY = 288


def test_until_end_replays_everything_and_prints_a_summary(
    db_dsn: str, tmp_path: Path, bundled_slice: Callable[[int], Path]
) -> None:
    data = bundled_slice(3)
    result = subprocess.run(
        [sys.executable, "-m", "huracan.cli", "run", "--until-end"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HURACAN_DATABASE__DSN": db_dsn,
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state"),
            "HURACAN_UNIVERSE__REPLAY_DATA_DIR": str(data),
            "HURACAN_UNIVERSE__BACKFILL_DAYS": "1",
            "HURACAN_LOGGING__FORMAT": "json",
        },
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = result.stdout.strip().splitlines()[-1]
    # Day one is backfill; days two and three arrive bar by bar.
    assert summary == (
        "replay summary: 3 symbols at 5m; 2592 bars stored, 576 bar times published, 0 duplicates, "
        "0 conflicts, rejected: none; gaps repaired 0"
    )
    assert asyncio.run(stored_per_symbol(db_dsn)) == [
        ("BTC/USDT", 3 * BARS_PER_DAY),
        ("ETH/USDT", 3 * BARS_PER_DAY),
        ("SOL/USDT", 3 * BARS_PER_DAY),
    ]


async def stored_per_symbol(dsn: str) -> list[tuple[str, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT symbol, count(*) AS n FROM candles GROUP BY symbol ORDER BY symbol")
    finally:
        await conn.close()
    return [(r["symbol"], r["n"]) for r in rows]


def test_until_end_is_for_replay_only(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "huracan.cli", "run", "--until-end"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "HURACAN_EXCHANGE__MODE": "shadow",
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 64
    assert "--until-end is for replay mode" in result.stderr
