"""The user's psql queries over a million trades: cold and warm milliseconds of each query in
README.md's "What the engine learned, in psql" (read from the README, so the figures are those
of the very text a user copies), with the plan each one gets. Goal: every query under 1 s warm.

A fresh database on a throwaway private cluster (default settings: 128 MB shared_buffers, as
on a small VPS), migrated with the real migrations, then filled in SQL (INSERT ... SELECT over
generate_series, seeded): `--trades` trade_memory rows (default 1,000,000) over two years of exit
times up to now, 12 symbols (BTC/USDT the most traded), ~45% wins, exit reasons that follow the
outcome (stops lose, take-profits win), four regimes, 80-number entry features and a 16-number
embedding; `--patterns` pattern_library rows (default 20,000) whose statistics are those of the
trades assigned to them (a few patterns are popular, each has its own edge); loss_analysis for
every losing trade, win_analysis for every winning one, post_exit_tracking at 1h, 4h and 24h for
a third of the trades, and model_performance per version and day from the trades. Then VACUUM
ANALYZE (what autovacuum does to a table at rest) and a server restart.

Cold: the first run of each query after the restart (empty shared buffers; the OS page cache
is not dropped), in README order. Warm: the median of 5 runs after that. Times are the client's
wall clock for the whole result. `--proposed-indexes` then creates PROPOSED_INDEXES and times
the queries again. Prints the tables, then one JSON line. Not part of the test suite.

    .venv/bin/python bench/memory_queries.py [--trades N] [--patterns P] [--proposed-indexes]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from huracan.logs import configure_logging
from huracan.memory.cluster import PrivateCluster
from huracan.memory.migrate import apply_migrations, default_migrations_dir

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "What the engine learned, in psql"
# Short names of the README's queries, in their order there.
NAMES = ("trades_per_mode", "winning_patterns", "loss_reasons", "post_exit", "models_30d")
GOAL_WARM_MS = 1000.0
WARM_RUNS = 5
BATCH = 100_000
SPAN_DAYS = 730
VERSIONS = 13  # a new champion about every 60 days; the next one is the shadow challenger
SYMBOLS = (
    "BTC/USDT", "ETH/USDT", "SOL/USDT", "BNB/USDT", "XRP/USDT", "ADA/USDT",
    "DOGE/USDT", "AVAX/USDT", "DOT/USDT", "LINK/USDT", "LTC/USDT", "TRX/USDT",
)  # fmt: skip
PRICES = (40_000.0, 2_500.0, 100.0, 350.0, 0.6, 0.5, 0.1, 30.0, 7.0, 15.0, 80.0, 0.1)
REGIMES = ("low_vol_ranging", "low_vol_trending", "high_vol_ranging", "high_vol_trending")
# (name, statement, the README queries it is for): proposed, not in the migrations. trade_memory
# rows are wide (80 + 16 reals of entry state), so a query that wants a few columns of every
# trade reads ~0.9 GB of heap per million trades; this index holds just those columns (~7% of
# the size) and turns the scans into index-only scans.
PROPOSED_INDEXES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "trade_memory_outcome_idx",
        "CREATE INDEX trade_memory_outcome_idx ON trade_memory (id)"
        " INCLUDE (mode, account_currency, exit_time, exit_reason, is_win, pnl_bps, pnl_account)",
        ("trades_per_mode", "loss_reasons", "post_exit"),
    ),
)


def readme_queries(path: Path = README) -> list[tuple[str, str, str]]:
    """(name, what it answers, SQL) of each query in the README section, in order."""
    text = path.read_text()
    start = text.index(SECTION)
    block = re.search(r"```sql\n(.*?)```", text[start:], re.DOTALL)
    if block is None:
        raise SystemExit(f"{path}: no sql block after {SECTION!r}")
    statements = [s.strip() for s in block.group(1).split(";\n") if s.strip()]
    if len(statements) != len(NAMES):
        raise SystemExit(f"{path}: {len(statements)} queries in {SECTION!r}, the bench names {len(NAMES)}")
    queries = []
    for name, statement in zip(NAMES, statements, strict=True):
        lines = statement.rstrip(";").splitlines()
        what = " ".join(line.removeprefix("--").strip() for line in lines if line.startswith("--"))
        sql = "\n".join(line for line in lines if not line.startswith("--"))
        queries.append((name, what, sql))
    return queries


# --- the load (SQL only: one INSERT ... SELECT per table, the trades in batches) -----------------
PATTERNS_SQL = """
INSERT INTO pattern_library (centroid, regime, embedding_version, first_seen_at, updated_at)
SELECT ARRAY(SELECT (random() * 2 - 1)::real FROM generate_series(1, 16 + 0 * g)),
       ($2::text[])[1 + g % 4], 'bench-e1', $3, $3
  FROM generate_series(1, $1::int) g
"""

# Each pattern has its own win probability, a hash of its index (independent of how popular it
# is): 0.45 +- 0.125. Pattern popularity is skewed (index = n * u^2): a few setups recur a lot.
# Exit times rise with g, as ids do in a real memory. The innermost subquery holds every random
# draw once per row (volatile, so PostgreSQL does not flatten it and each draw is used as one).
TRADES_SQL = """
INSERT INTO trade_memory (mode, exchange, symbol, direction, entry_time, exit_time, entry_price,
    exit_price, quantity, size_multiplier, pnl_quote, pnl_account, account_currency, pnl_bps,
    fees_quote, slippage_bps, entry_features, entry_embedding, exit_reason, entry_regime, exit_regime,
    win_quality, model_version, confidence, pattern_id, recorded_at)
SELECT t.mode, 'binance', ($3::text[])[t.sym], 'long', t.exit_time - t.hold, t.exit_time,
       round(t.entry_price::numeric, 6),
       round((t.entry_price * (1 + (t.pnl_bps + 15) / 1e4))::numeric, 6),
       round((t.notional / t.entry_price)::numeric, 8),
       t.size_multiplier,
       round((t.notional * t.pnl_bps / 1e4)::numeric, 8),
       round((t.notional * t.pnl_bps / 1e4 * 0.79)::numeric, 8),
       'GBP', t.pnl_bps, round((t.notional * 0.0015)::numeric, 8), t.slippage_bps,
       t.features, t.embedding,
       CASE WHEN t.win THEN CASE WHEN t.r_reason < 0.45 THEN 'take_profit' WHEN t.r_reason < 0.80 THEN 'signal'
                                 WHEN t.r_reason < 0.97 THEN 'time_exit' WHEN t.r_reason < 0.985 THEN 'manual'
                                 ELSE 'reconciliation' END
            ELSE CASE WHEN t.r_reason < 0.50 THEN 'stop_loss' WHEN t.r_reason < 0.75 THEN 'signal'
                      WHEN t.r_reason < 0.95 THEN 'time_exit' WHEN t.r_reason < 0.98 THEN 'circuit_breaker'
                      WHEN t.r_reason < 0.99 THEN 'manual' ELSE 'reconciliation' END END,
       ($4::text[])[t.entry_regime],
       CASE WHEN t.r_regime_change < 0.75 THEN ($4::text[])[t.entry_regime]
            ELSE ($4::text[])[1 + floor(4 * t.r_exit_regime)::int] END,
       CASE WHEN t.win THEN CASE WHEN t.r_quality < 0.30 THEN 'OPTIMAL' WHEN t.r_quality < 0.65 THEN 'EARLY_EXIT'
                                 WHEN t.r_quality < 0.80 THEN 'LUCKY' ELSE 'MARGINAL' END END,
       ($5::text[])[1 + floor({versions_less_one} * (t.g - 1)::float8 / {trades})::int + (t.mode = 'shadow')::int],
       t.confidence,
       CASE WHEN t.g <= {trades} * 0.998 THEN $2::bigint + t.pattern END,
       t.exit_time + interval '1 second'
  FROM (
    SELECT s.*,
           CASE WHEN s.r_mode < 0.70 THEN 'replay' WHEN s.r_mode < 0.90 THEN 'shadow' ELSE 'live' END AS mode,
           1 + floor({symbols} * power(s.r_symbol, 1.7))::int AS sym,
           ($6::float8[])[1 + floor({symbols} * power(s.r_symbol, 1.7))::int]
               * (1 + 0.3 * sin(s.g / 40000.0)) * (1 + 0.02 * (s.r_price - 0.5)) AS entry_price,
           3797.0 * s.size_multiplier AS notional,
           s.r_win < 0.45 + 0.25 * (((s.pattern * 2654435761) % 4294967296)::float8 / 4294967296 - 0.5) AS win,
           CASE WHEN s.r_win < 0.45 + 0.25 * (((s.pattern * 2654435761) % 4294967296)::float8 / 4294967296 - 0.5)
                THEN 5 + 80 * -ln(1 - s.r_size_of_move) ELSE -(3 + 60 * -ln(1 - s.r_size_of_move)) END AS pnl_bps,
           1 + floor(4 * s.r_entry_regime)::int AS entry_regime,
           $1::timestamptz + make_interval(secs => {span_s} * (s.g - s.r_time) / {trades}) AS exit_time,
           make_interval(mins => 5 * (1 + floor(-ln(1 - s.r_hold) * 24))::int) AS hold
      FROM (
        SELECT g, random() AS r_mode, random() AS r_symbol, random() AS r_price, random() AS r_win,
               random() AS r_size_of_move, random() AS r_reason, random() AS r_quality,
               random() AS r_entry_regime, random() AS r_regime_change, random() AS r_exit_regime,
               random() AS r_time, random() AS r_hold, (2 * random())::float8 AS slippage_bps,
               (0.3 + 0.6 * random())::real AS confidence,
               floor({patterns} * power(random(), 2))::bigint AS pattern,
               (ARRAY[0.5, 1.0, 1.0, 1.0, 1.5])[1 + floor(5 * random())::int]::numeric AS size_multiplier,
               ARRAY(SELECT (random() * 4 - 2)::real FROM generate_series(1, 80 + 0 * g)) AS features,
               ARRAY(SELECT (random() * 2 - 1)::real FROM generate_series(1, 16 + 0 * g)) AS embedding
          FROM generate_series({lo}, {hi}) g
      ) s
  ) t
"""

PATTERN_STATS_SQL = """
UPDATE pattern_library p
   SET occurrences = s.n, wins = s.wins, losses = s.losses, win_rate = s.wins::float8 / s.n,
       avg_profit_bps = s.avg_bps, avg_hold = s.avg_hold, optimal_hold = s.avg_hold / 2,
       profit_factor = s.gross_profit / nullif(s.gross_loss, 0),
       -- A stand-in for the library's own: trust grows with the sample.
       reliability = s.n / (s.n + 100.0), sample_adequate = s.n >= 30,
       optimal_size_multiplier = CASE WHEN s.wins::float8 / s.n > 0.55 THEN 1.5
                                      WHEN s.wins::float8 / s.n < 0.40 THEN 0.5 ELSE 1.0 END
  FROM (SELECT pattern_id, count(*) AS n, count(*) FILTER (WHERE is_win) AS wins,
               count(*) FILTER (WHERE pnl_quote < 0) AS losses, avg(pnl_bps) AS avg_bps,
               avg(hold_duration) AS avg_hold,
               coalesce(sum(pnl_quote) FILTER (WHERE pnl_quote > 0), 0) AS gross_profit,
               coalesce(-sum(pnl_quote) FILTER (WHERE pnl_quote < 0), 0) AS gross_loss
          FROM trade_memory WHERE pattern_id IS NOT NULL GROUP BY pattern_id) s
 WHERE p.pattern_id = s.pattern_id
"""

LOSSES_SQL = """
INSERT INTO loss_analysis (trade_id, primary_failure_reason, secondary_reasons, severity, preventable,
    corrective_action, misleading_features, confidence_penalty, regime_changed, entry_regime,
    exit_regime, stop_distance_bps, adverse_move_bps, analyzed_at)
SELECT id, reason,
       CASE WHEN r_secondary < 0.3 AND reason <> 'adverse_selection' THEN ARRAY['adverse_selection']
            ELSE '{}'::text[] END,
       CASE WHEN pnl_bps > -30 THEN 'minor' WHEN pnl_bps > -80 THEN 'moderate'
            WHEN pnl_bps > -200 THEN 'severe' ELSE 'critical' END,
       r_preventable < CASE reason WHEN 'stop_too_tight' THEN 0.7 WHEN 'costs_exceeded_move' THEN 0.6
                                   WHEN 'stop_too_wide' THEN 0.6 WHEN 'insufficient_confirmation' THEN 0.5
                                   WHEN 'adverse_selection' THEN 0.3 ELSE 0.25 END,
       'bench', ARRAY['rsi_14', 'ema_trend_50'], least(1.0, -pnl_bps / 500),
       entry_regime <> exit_regime, entry_regime, exit_regime, 50 + 100 * r_secondary,
       -pnl_bps + 10 * r_preventable, exit_time + interval '4 hours 5 minutes'
  FROM (SELECT tm.*, random() AS r_secondary, random() AS r_preventable,
               CASE WHEN tm.entry_regime <> tm.exit_regime AND r_primary < 0.7 THEN 'regime_change'
                    WHEN tm.pnl_bps > -20 AND r_primary < 0.8 THEN 'costs_exceeded_move'
                    WHEN tm.exit_reason = 'stop_loss' THEN
                         CASE WHEN r_which < 0.4 THEN 'stop_too_tight' WHEN r_which < 0.7 THEN 'adverse_selection'
                              ELSE 'insufficient_confirmation' END
                    WHEN tm.pnl_bps < -150 THEN 'stop_too_wide'
                    WHEN r_which < 0.5 THEN 'insufficient_confirmation' ELSE 'adverse_selection' END AS reason
          FROM (SELECT t.*, random() AS r_primary, random() AS r_which FROM trade_memory t
                 WHERE NOT t.is_win) tm) s
"""

WINS_SQL = """
INSERT INTO win_analysis (trade_id, win_quality, captured_move_ratio, missed_profit_bps, skill_score,
    regime_aligned, contributing_features, confidence_boost, lessons, analyzed_at, pattern_occurrences,
    pattern_win_rate, edge_p_value, entry_quality, exit_quality)
SELECT t.id, t.win_quality, 0.3 + 0.7 * random(), 60 * random(), random(), t.entry_regime = t.exit_regime,
       '{"ret_1": 0.31, "trend_ema_50": 0.22}'::jsonb, 0.2 * random(), NULL,
       t.exit_time + interval '4 hours 5 minutes', p.occurrences, p.win_rate, random(), random(), random()
  FROM trade_memory t LEFT JOIN pattern_library p USING (pattern_id)
 WHERE t.is_win
"""

# A third of the trades, three horizons each; holding on pays more often after a take-profit.
POST_EXIT_SQL = """
INSERT INTO post_exit_tracking (trade_id, horizon, horizon_time, price_at_horizon, best_price,
    best_price_at, worst_price, worst_price_at, missed_profit_bps, optimal_exit_time, should_have_held,
    should_have_exited_earlier, tracked_at)
SELECT id, horizon, exit_time + span, round(exit_price * (1 + (r_move - 0.5) * 0.02)::numeric, 6),
       round(exit_price * (1 + 0.01 * r_best)::numeric, 6), exit_time + span * r_best,
       round(exit_price * (1 - 0.01 * r_worst)::numeric, 6), exit_time + span * r_worst,
       100 * r_best, exit_time + span * r_best, held, NOT held AND r_earlier < 0.3, exit_time + span
  FROM (SELECT t.id, t.exit_time, t.exit_price, h.horizon, h.span, random() AS r_move,
               random() AS r_best, random() AS r_worst, random() AS r_earlier,
               random() < CASE t.exit_reason WHEN 'take_profit' THEN 0.45 WHEN 'time_exit' THEN 0.40
                                             WHEN 'signal' THEN 0.35 ELSE 0.30 END AS held
          FROM trade_memory t
         CROSS JOIN (VALUES ('1h', interval '1 hour'), ('4h', interval '4 hours'),
                            ('24h', interval '24 hours')) AS h (horizon, span)
         WHERE t.id % 3 = 0) s
"""

MODEL_PERFORMANCE_SQL = """
INSERT INTO model_performance (model_version, day, trades, wins, losses, win_rate, pnl_quote,
    pnl_account, fees_quote, avg_profit_bps, gross_profit_quote, gross_loss_quote, profit_factor)
SELECT model_version, (exit_time AT TIME ZONE 'UTC')::date, count(*), count(*) FILTER (WHERE is_win),
       count(*) FILTER (WHERE pnl_quote < 0), avg(is_win::int), sum(pnl_quote), sum(pnl_account),
       sum(fees_quote), avg(pnl_bps),
       coalesce(sum(pnl_quote) FILTER (WHERE pnl_quote > 0), 0),
       coalesce(-sum(pnl_quote) FILTER (WHERE pnl_quote < 0), 0),
       coalesce(sum(pnl_quote) FILTER (WHERE pnl_quote > 0), 0)
           / nullif(coalesce(-sum(pnl_quote) FILTER (WHERE pnl_quote < 0), 0), 0)
  FROM trade_memory GROUP BY 1, 2
"""


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def load(conn: asyncpg.Connection, trades: int, patterns: int) -> dict[str, float]:
    """Fill the memory; seconds per step."""
    seconds: dict[str, float] = {}
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=SPAN_DAYS)
    versions = [f"m{start + timedelta(days=60 * k):%Y%m%d}-030000-{k:06x}" for k in range(VERSIONS)]
    await conn.execute("SELECT setseed(0.42)")

    t0 = time.perf_counter()
    await conn.execute(PATTERNS_SQL, patterns, list(REGIMES), start)
    first_pattern = await conn.fetchval("SELECT min(pattern_id) FROM pattern_library")
    seconds["pattern_library"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    for lo in range(1, trades + 1, BATCH):
        hi = min(trades, lo + BATCH - 1)
        sql = TRADES_SQL.format(
            lo=lo,
            hi=hi,
            trades=trades,
            patterns=patterns,
            symbols=len(SYMBOLS),
            versions_less_one=VERSIONS - 1,
            span_s=SPAN_DAYS * 86_400,
        )
        await conn.execute(sql, start, first_pattern, list(SYMBOLS), list(REGIMES), versions, list(PRICES))
        say(f"  trade_memory {hi:>12,} / {trades:,}  {time.perf_counter() - t0:6.1f} s")
    seconds["trade_memory"] = time.perf_counter() - t0

    for table, statement in (
        ("pattern_stats", PATTERN_STATS_SQL),
        ("loss_analysis", LOSSES_SQL),
        ("win_analysis", WINS_SQL),
        ("post_exit_tracking", POST_EXIT_SQL),
        ("model_performance", MODEL_PERFORMANCE_SQL),
    ):
        t0 = time.perf_counter()
        await conn.execute(statement)
        seconds[table] = time.perf_counter() - t0
        say(f"  {table:<20} {seconds[table]:6.1f} s")
    t0 = time.perf_counter()
    await conn.execute("VACUUM ANALYZE")
    seconds["vacuum_analyze"] = time.perf_counter() - t0
    say(f"  {'vacuum analyze':<20} {seconds['vacuum_analyze']:6.1f} s")
    return seconds


# --- timing and plans ---------------------------------------------------------------------------
def plan_summary(plan: dict[str, Any]) -> str:
    """How each table is read: 'Seq Scan trade_memory, Index Only Scan loss_analysis_trade_id_key'."""
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node["Node Type"]
        if "Scan" in kind and "Relation Name" in node:
            target = node.get("Index Name") or node["Relation Name"]
            parallel = " (parallel)" if node.get("Parallel Aware") else ""
            scans.append(f"{kind} {target}{parallel}")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan)
    return ", ".join(dict.fromkeys(scans)) or plan["Node Type"]


async def explain(conn: asyncpg.Connection, sql: str) -> str:
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}")
    document = json.loads(raw) if isinstance(raw, str) else raw
    return plan_summary(document[0]["Plan"])


async def time_query(conn: asyncpg.Connection, sql: str) -> tuple[float, int]:
    started = time.perf_counter()
    rows = await conn.fetch(sql)
    return (time.perf_counter() - started) * 1e3, len(rows)


async def measure(dsn: str, queries: list[tuple[str, str, str]]) -> dict[str, dict[str, Any]]:
    """Cold (first run on this server start), then the median of WARM_RUNS, per query."""
    conn = await asyncpg.connect(dsn)
    try:
        figures: dict[str, dict[str, Any]] = {}
        for name, _, sql in queries:
            cold_ms, rows = await time_query(conn, sql)
            figures[name] = {"cold_ms": cold_ms, "rows": rows}
        for name, _, sql in queries:
            warm = [(await time_query(conn, sql))[0] for _ in range(WARM_RUNS)]
            figures[name]["warm_p50_ms"] = statistics.median(warm)
            figures[name]["plan"] = await explain(conn, sql)
        return figures
    finally:
        await conn.close()


def print_table(title: str, queries: list[tuple[str, str, str]], figures: dict[str, dict[str, Any]]) -> None:
    print(title)
    print(f"{'query':<18}{'rows':>6}{'cold ms':>10}{'warm p50 ms':>13}  {'goal':<6}plan")
    for name, _, _ in queries:
        f = figures[name]
        verdict = "pass" if f["warm_p50_ms"] < GOAL_WARM_MS else "MISS"
        print(
            f"{name:<18}{f['rows']:>6}{f['cold_ms']:>10.1f}{f['warm_p50_ms']:>13.1f}  {verdict:<6}{f['plan']}"
        )


async def table_sizes_mb(conn: asyncpg.Connection) -> dict[str, float]:
    rows = await conn.fetch(
        """SELECT relname, pg_total_relation_size(oid) AS bytes FROM pg_class
            WHERE relname IN ('trade_memory', 'pattern_library', 'loss_analysis', 'win_analysis',
                              'post_exit_tracking', 'model_performance')"""
    )
    return {r["relname"]: round(r["bytes"] / 2**20, 1) for r in sorted(rows, key=lambda r: -r["bytes"])}


async def run(cluster: PrivateCluster, args: argparse.Namespace) -> dict[str, Any]:
    queries = readme_queries()
    admin = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await admin.execute("CREATE DATABASE memory_bench")
    finally:
        await admin.close()
    dsn = cluster.dsn("memory_bench")
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn, default_migrations_dir())
        say(f"loading {args.trades:,} trades, {args.patterns:,} patterns")
        started = time.perf_counter()
        load_s = await load(conn, args.trades, args.patterns)
        load_wall_s = time.perf_counter() - started
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in (
                "trade_memory",
                "pattern_library",
                "loss_analysis",
                "win_analysis",
                "post_exit_tracking",
            )
        }
        counts["model_performance"] = await conn.fetchval("SELECT count(*) FROM model_performance")
        wins = await conn.fetchval("SELECT avg(is_win::int)::float8 FROM trade_memory")
        sizes = await table_sizes_mb(conn)
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    # Restart: the first runs then find empty shared buffers.
    await asyncio.to_thread(cluster.stop)
    await asyncio.to_thread(cluster.ensure_started)
    figures = await measure(dsn, queries)
    print(
        f"{counts['trade_memory']:,} trades ({wins:.1%} wins), {counts['pattern_library']:,} patterns, "
        f"{counts['loss_analysis']:,} loss and {counts['win_analysis']:,} win analyses, "
        f"{counts['post_exit_tracking']:,} post-exit rows, {counts['model_performance']:,} model-days; "
        f"loaded in {load_wall_s:.0f} s"
    )
    print("sizes, MB (with indexes): " + ", ".join(f"{k} {v:,.0f}" for k, v in sizes.items()))
    print_table(
        f"README queries, PostgreSQL {version}: cold = first run after a restart, warm = p50 of 5",
        queries,
        figures,
    )
    proposed: dict[str, dict[str, Any]] = {}
    if args.proposed_indexes and PROPOSED_INDEXES:
        conn = await asyncpg.connect(dsn)
        try:
            for name, statement, _ in PROPOSED_INDEXES:
                t0 = time.perf_counter()
                await conn.execute(statement)
                say(f"  index {name}: {time.perf_counter() - t0:.1f} s")
            await conn.execute("VACUUM ANALYZE")
            sizes_after = await table_sizes_mb(conn)
        finally:
            await conn.close()
        affected = {q for _, _, qs in PROPOSED_INDEXES for q in qs}
        subset = [q for q in queries if q[0] in affected]
        await asyncio.to_thread(cluster.stop)
        await asyncio.to_thread(cluster.ensure_started)
        proposed = await measure(dsn, subset)
        print_table(
            "with the proposed indexes: " + ", ".join(n for n, _, _ in PROPOSED_INDEXES), subset, proposed
        )
        print("sizes after, MB: " + ", ".join(f"{k} {v:,.0f}" for k, v in sizes_after.items()))
    slow = [name for name in NAMES if figures[name]["warm_p50_ms"] >= GOAL_WARM_MS]
    result: dict[str, Any] = {"bench": "memory_queries", **counts, "win_rate": round(wins, 4)}
    result["load_s"] = round(load_wall_s, 1)
    result |= {f"load_{k}_s": round(v, 1) for k, v in load_s.items()}
    for name in NAMES:
        result[f"{name}_cold_ms"] = round(figures[name]["cold_ms"], 1)
        result[f"{name}_warm_p50_ms"] = round(figures[name]["warm_p50_ms"], 1)
    for name, f in proposed.items():
        result[f"{name}_indexed_cold_ms"] = round(f["cold_ms"], 1)
        result[f"{name}_indexed_warm_p50_ms"] = round(f["warm_p50_ms"], 1)
    result |= {
        "goal_warm_ms": GOAL_WARM_MS,
        "goal_met": not slow,
        "slow": slow,
        "trade_memory_mb": sizes.get("trade_memory"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "asyncpg": asyncpg.__version__,
        "postgres": version,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trades", type=int, default=1_000_000)
    parser.add_argument("--patterns", type=int, default=20_000)
    parser.add_argument(
        "--proposed-indexes", action="store_true", help="then time them with PROPOSED_INDEXES"
    )
    args = parser.parse_args()
    configure_logging(fmt="json", level="warning")
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="huracan-bench-"))
    root.chmod(0o755)  # when we are root, the server runs as the postgres user
    cluster = PrivateCluster(root / "postgres")
    try:
        cluster.ensure_started()
        result = asyncio.run(run(cluster, args))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
