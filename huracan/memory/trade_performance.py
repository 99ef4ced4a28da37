"""Each model version's own trades per UTC day in `model_performance` (source = the mode), and
the metric columns of any source's rows (refresh_metrics: the paper rows' writer uses it too).

The paper rows (source 'paper', huracan/agent/performance.py) compare versions on equal terms;
these are what a version's orders actually did, through the risk gate and the fills: the same
numbers as its `trade_memory` rows, so the two tables always agree. A day's row is recomputed
from its trades (idempotent: a restart or a second pass writes the same row), then the metric
columns of the version's days (those that changed). A replay starts history over, so its rows are
its own session's trades (ids from `first_id` on): the latest replay of a day replaces the last.
Equity: the account's capital in quote currency, plus what the version's trades made before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal

import asyncpg

from huracan.analysis.performance import daily_metrics

_DAYS = """
INSERT INTO model_performance AS p
    (model_version, day, source, trades, wins, losses, win_rate, pnl_quote, pnl_account, fees_quote,
     avg_profit_bps, gross_profit_quote, gross_loss_quote, updated_at)
SELECT t.model_version, (t.exit_time AT TIME ZONE 'UTC')::date, t.mode, count(*),
       count(*) FILTER (WHERE t.pnl_quote > 0), count(*) FILTER (WHERE t.pnl_quote < 0),
       avg((t.pnl_quote > 0)::int)::double precision, sum(t.pnl_quote), sum(t.pnl_account), sum(t.fees_quote),
       avg(t.pnl_bps), coalesce(sum(t.pnl_quote) FILTER (WHERE t.pnl_quote > 0), 0),
       coalesce(-sum(t.pnl_quote) FILTER (WHERE t.pnl_quote < 0), 0), now()
FROM trade_memory t
JOIN unnest($3::text[], $4::date[]) AS d(version, day)
  ON t.model_version = d.version
 AND t.exit_time >= d.day::timestamp AT TIME ZONE 'UTC'
 AND t.exit_time < (d.day + 1)::timestamp AT TIME ZONE 'UTC'
WHERE t.exchange = $1 AND t.mode = $2 AND t.id >= $5
GROUP BY 1, 2, 3
ON CONFLICT (model_version, day, source) DO UPDATE SET
    trades = EXCLUDED.trades, wins = EXCLUDED.wins, losses = EXCLUDED.losses, win_rate = EXCLUDED.win_rate,
    pnl_quote = EXCLUDED.pnl_quote, pnl_account = EXCLUDED.pnl_account, fees_quote = EXCLUDED.fees_quote,
    avg_profit_bps = EXCLUDED.avg_profit_bps, gross_profit_quote = EXCLUDED.gross_profit_quote,
    gross_loss_quote = EXCLUDED.gross_loss_quote, updated_at = now()
"""
_SERIES = """
SELECT model_version, day, pnl_quote, gross_profit_quote, gross_loss_quote,
       sharpe, sortino, calmar, max_drawdown_pct, profit_factor
FROM model_performance WHERE model_version = ANY($1::text[]) AND source = $2 ORDER BY model_version, day
"""
_METRICS = """
UPDATE model_performance SET sharpe = $4, sortino = $5, calmar = $6, max_drawdown_pct = $7, profit_factor = $8,
    updated_at = now()
WHERE model_version = $1 AND day = $2 AND source = $3
"""
METRIC_COLUMNS = ("sharpe", "sortino", "calmar", "max_drawdown_pct", "profit_factor")


async def refresh_metrics(conn: asyncpg.Connection, source: str, equity_quote: Mapping[str, Decimal]) -> None:
    """Recompute the metric columns of every `source` row of the versions in `equity_quote`
    (each with its starting equity, quote currency) from their daily results; write only the
    rows whose values changed."""
    by_version: dict[str, list[asyncpg.Record]] = {}
    for row in await conn.fetch(_SERIES, list(equity_quote), source):
        by_version.setdefault(row["model_version"], []).append(row)
    updates = []
    for version, rows in by_version.items():
        metrics = daily_metrics(
            [r["day"] for r in rows],
            [r["pnl_quote"] for r in rows],
            [r["gross_profit_quote"] for r in rows],
            [r["gross_loss_quote"] for r in rows],
            equity_quote[version],
        )
        for row, m in zip(rows, metrics, strict=True):
            # Exact comparison: the same stored inputs give the same floats, so an unchanged
            # row is left alone (no write, no new row version) and a changed one is rewritten.
            if tuple(row[c] for c in METRIC_COLUMNS) != m.columns():
                updates.append((version, m.day, source, *m.columns()))
    if updates:
        await conn.executemany(_METRICS, updates)


async def record_trade_days(
    pool: asyncpg.Pool,
    *,
    exchange: str,
    mode: str,
    days: Iterable[tuple[str, date]],
    first_id: int,
    equity_quote: Decimal,
) -> None:
    """Recompute the rows of (model version, UTC day) `days` from their trades, then the metrics
    of those versions' days, in one transaction."""
    pairs = sorted(set(days))
    if not pairs:
        return
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_DAYS, exchange, mode, [v for v, _ in pairs], [d for _, d in pairs], first_id)
        await refresh_metrics(conn, mode, {v: equity_quote for v, _ in pairs})
