"""Issue 6's Must-show: after `huracan run --until-end` on the default configuration (a few days
of the bundled candles, a champion that trades), the six memory tables all hold rows that agree
with each other.

The champion is huracan.testing.champion's biased untrained model: what matters here is that the
daemon trades, and every closed trade is then learned, tracked and explained."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from huracan.config import ConfigSources, load_config
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.memory.database import create_pool
from huracan.testing.champion import register_biased_champion

pytestmark = pytest.mark.db

DAYS = 4  # one of backfill, three traded: trades of the first day get their 24 h tracked


def _environ(db_dsn: str, tmp_path: Path, data: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HURACAN_DATABASE__DSN": db_dsn,
        "HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state"),
        "HURACAN_UNIVERSE__REPLAY_DATA_DIR": str(data),
        "HURACAN_UNIVERSE__BACKFILL_DAYS": "1",
        "HURACAN_AGENT__GREEDY": "false",
        "HURACAN_LOGGING__FORMAT": "json",
        **({"XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"]} if "XDG_CACHE_HOME" in os.environ else {}),
    }


async def _register(
    db_dsn: str, environ: dict[str, str], data: Path, *, pattern_memory: bool = False
) -> None:
    config = load_config(ConfigSources(environ=environ))
    series = {s: read_candle_file(p) for s, p in find_candle_files(data, "5m").items()}
    pool = await create_pool(db_dsn, min_size=1, max_size=2, command_timeout=30)
    try:
        await register_biased_champion(pool, config, series, pattern_memory=pattern_memory)
    finally:
        await pool.close()


def _run_until_end(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "huracan.cli", "run", "--until-end"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environ,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_until_end_leaves_six_memory_tables_that_agree(
    db_dsn: str, tmp_path: Path, bundled_slice: Callable[[int], Path]
) -> None:
    data = bundled_slice(DAYS)
    environ = _environ(db_dsn, tmp_path, data)
    asyncio.run(_register(db_dsn, environ, data))
    result = _run_until_end(environ)
    assert "learning:" in result.stdout, result.stdout[-3000:]
    assert '"level":"error"' not in result.stderr, result.stderr[-3000:]
    asyncio.run(_check_memory(db_dsn))


async def _check_memory(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        trades = await conn.fetchval("SELECT count(*) FROM trade_memory")
        assert trades >= 20, f"only {trades} trades: the champion should trade on every day"
        # Every trade is learned: embedded, in a pattern, its exit regime named.
        unlearned = await conn.fetchval(
            "SELECT count(*) FROM trade_memory WHERE pattern_id IS NULL OR entry_embedding IS NULL"
        )
        assert unlearned == 0
        assert await conn.fetchval("SELECT count(*) FROM trade_memory WHERE exit_regime IS NULL") == 0

        # The library's statistics are those of its trades.
        disagreeing = await conn.fetch(
            """
            SELECT p.pattern_id, p.occurrences, p.wins, p.losses, count(t.id) AS n,
                   count(t.id) FILTER (WHERE t.pnl_quote > 0) AS w, count(t.id) FILTER (WHERE t.pnl_quote < 0) AS l
            FROM pattern_library p LEFT JOIN trade_memory t ON t.pattern_id = p.pattern_id
            GROUP BY p.pattern_id
            HAVING p.occurrences <> count(t.id)
                OR p.wins <> count(t.id) FILTER (WHERE t.pnl_quote > 0)
                OR p.losses <> count(t.id) FILTER (WHERE t.pnl_quote < 0)
            """
        )
        assert disagreeing == []
        assert await conn.fetchval("SELECT count(*) FROM pattern_library") >= 1

        # Post-exit rows: at their horizon's time, and every horizon covered by stored bars is tracked.
        wrong_time = await conn.fetchval(
            """
            SELECT count(*) FROM post_exit_tracking e JOIN trade_memory t ON t.id = e.trade_id
            WHERE e.horizon_time <> t.exit_time + CASE e.horizon WHEN '1h' THEN interval '1 hour'
                                                  WHEN '4h' THEN interval '4 hours' ELSE interval '24 hours' END
            """
        )
        assert wrong_time == 0
        untracked = await conn.fetchval(
            """
            SELECT count(*) FROM trade_memory t CROSS JOIN (VALUES ('1h', interval '1 hour'),
                 ('4h', interval '4 hours'), ('24h', interval '24 hours')) AS h(name, span)
            WHERE t.exit_time + h.span + interval '5 minutes'
                  <= (SELECT max(open_time) + interval '5 minutes' FROM candles c WHERE c.symbol = t.symbol)
              AND NOT EXISTS (SELECT 1 FROM post_exit_tracking e WHERE e.trade_id = t.id AND e.horizon = h.name)
            """
        )
        assert untracked == 0
        assert await conn.fetchval("SELECT count(*) FROM post_exit_tracking WHERE horizon = '24h'") > 0

        # Analyses: one per trade whose 4 h are tracked, on the side of its sign, never both.
        wins = await conn.fetchval("SELECT count(*) FROM win_analysis")
        losses = await conn.fetchval("SELECT count(*) FROM loss_analysis")
        assert wins > 0
        assert losses > 0
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM win_analysis w JOIN trade_memory t ON t.id = w.trade_id WHERE NOT t.is_win"
            )
            == 0
        )
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM loss_analysis l JOIN trade_memory t ON t.id = l.trade_id WHERE t.pnl_quote >= 0"
            )
            == 0
        )
        unexplained = await conn.fetchval(
            """
            SELECT count(*) FROM trade_memory t JOIN post_exit_tracking e ON e.trade_id = t.id AND e.horizon = '4h'
            WHERE t.pnl_quote <> 0
              AND (SELECT count(*) FROM win_analysis w WHERE w.trade_id = t.id)
                + (SELECT count(*) FROM loss_analysis l WHERE l.trade_id = t.id) <> 1
            """
        )
        assert unexplained == 0
        assert (
            await conn.fetchval(
                """
            SELECT count(*) FROM trade_memory t JOIN win_analysis w ON w.trade_id = t.id
            WHERE t.win_quality IS DISTINCT FROM w.win_quality
            """
            )
            == 0
        )

        # model_performance: the version's own trades per UTC day (source = the mode), the same
        # numbers as trade_memory's, with the metrics of the days so far.
        disagreeing_days = await conn.fetch(
            """
            WITH d AS (
                SELECT model_version, (exit_time AT TIME ZONE 'UTC')::date AS day, count(*) AS trades,
                       count(*) FILTER (WHERE pnl_quote > 0) AS wins, sum(pnl_quote) AS pnl
                FROM trade_memory GROUP BY 1, 2)
            SELECT d.* FROM d LEFT JOIN model_performance p
              ON p.model_version = d.model_version AND p.day = d.day AND p.source = 'replay'
            WHERE p.trades IS DISTINCT FROM d.trades OR p.wins IS DISTINCT FROM d.wins
               OR p.pnl_quote IS DISTINCT FROM d.pnl
            """
        )
        assert disagreeing_days == []
        days = await conn.fetch(
            "SELECT day, sharpe, max_drawdown_pct FROM model_performance WHERE source = 'replay' ORDER BY day"
        )
        assert len(days) >= 2
        assert all(d["max_drawdown_pct"] is not None for d in days)
        assert days[-1]["sharpe"] is not None
    finally:
        await conn.close()


def test_the_agent_reads_the_pattern_memory_of_the_trades_before(
    db_dsn: str, tmp_path: Path, bundled_slice: Callable[[int], Path]
) -> None:
    # A champion declared trained on the pattern memory is fed the real figures: the entry
    # states stored with its trades show them, from the trades closed before each entry.
    data = bundled_slice(3)
    environ = _environ(db_dsn, tmp_path, data)
    asyncio.run(_register(db_dsn, environ, data, pattern_memory=True))
    _run_until_end(environ)
    trades = asyncio.run(_trades(db_dsn))
    assert len(trades) >= 20
    assert asyncio.run(_memory_was_read(db_dsn)) > len(trades) // 2
    # No entry's state counts a trade that had not closed by then.
    assert asyncio.run(_first_entry_saw_nothing(db_dsn))


async def _first_entry_saw_nothing(dsn: str) -> bool:
    """Every entry made before the first exit saw an empty memory: zeros."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT entry_features[71:73] AS memory FROM trade_memory
            WHERE entry_time <= (SELECT min(exit_time) FROM trade_memory)
            """
        )
    finally:
        await conn.close()
    return len(rows) > 0 and all(list(r["memory"]) == [0.0, 0.0, 0.0] for r in rows)


async def _trades(dsn: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT symbol, entry_time, exit_time, entry_price, exit_price, exit_reason FROM trade_memory ORDER BY id"
        )
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


async def _memory_was_read(dsn: str) -> int:
    """Trades whose entry state (the model saw it) had a non-zero pattern-memory reliability."""
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM trade_memory WHERE entry_features[73] > 0")
    finally:
        await conn.close()
    return count


def test_two_replays_of_the_same_data_trade_alike(
    db_dsn: str, empty_db_dsn: str, tmp_path: Path, bundled_slice: Callable[[int], Path]
) -> None:
    # A replay is a backtest: the same data, model and configuration give the same trades, with
    # a champion that reads the pattern memory (so neither the learning task's timing nor the
    # replay clock running ahead of the bar being traded may show). Each run on a database of
    # its own (the second one migrated first, as `make migrate` does).
    data = bundled_slice(3)
    runs = []
    for dsn, name in ((db_dsn, "a"), (empty_db_dsn, "b")):
        environ = _environ(dsn, tmp_path / name, data)
        migrated = subprocess.run(
            [sys.executable, "-m", "huracan.cli", "migrate"],
            capture_output=True,
            text=True,
            timeout=60,
            env=environ,
        )
        assert migrated.returncode == 0, migrated.stderr[-2000:]
        asyncio.run(_register(dsn, environ, data, pattern_memory=True))
        result = _run_until_end(environ)
        assert "loss analyses late" not in result.stdout + result.stderr  # no bar decided early
        runs.append(asyncio.run(_trades(dsn)))
    assert len(runs[0]) >= 20
    assert runs[1] == runs[0]
