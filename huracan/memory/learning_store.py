"""The learning loop's reads and writes: closed trades as `TradeFacts`, the work still pending
(trades not yet in a pattern, horizons not yet tracked, trades not yet analysed), and the rows
the loop writes back (embedding and pattern of a trade, pattern statistics, post-exit tracking,
win and loss analyses).

Pending work is always read from the tables, never kept only in memory, so a restart loses
none of it. The queues are bounded by an id watermark (trade ids only grow) so that a pass
reads the recent trades, not a million rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson

from huracan.analysis.losses import LossAnalysis
from huracan.analysis.post_exit import PostExit, best_move_from_entry
from huracan.analysis.trades import ANALYSIS_HORIZON, TradeFacts
from huracan.analysis.wins import WinAnalysis
from huracan.features.schema import MARKET_WIDTH
from huracan.memory.candles import ms_to_datetime
from huracan.memory.patterns import PatternStats

_MS = "(extract(epoch FROM {0}) * 1000)::bigint"
_FACTS = f"""
    SELECT t.id, t.symbol, t.direction, {_MS.format("t.entry_time")}, {_MS.format("t.exit_time")},
           t.entry_price::float8, t.exit_price::float8, t.pnl_bps,
           (t.fees_quote / (t.entry_price * t.quantity) * 10000)::float8, t.slippage_bps, t.exit_reason,
           t.entry_regime, t.exit_regime, t.confidence::float8, t.size_multiplier::float8,
           t.model_version, t.entry_features, p.stop_loss_price::float8, p.take_profit_price::float8
    FROM trade_memory t LEFT JOIN positions p ON p.id = t.position_id
"""  # noqa: S608 (constant fragments only, as every query built from it below)

_UNANALYSED = f"""
    {_FACTS.replace("SELECT t.id,", "SELECT t.pattern_id, t.id,")}
    WHERE t.exchange = $1 AND t.id >= $2 AND t.pnl_quote <> 0
      AND (t.pattern_id IS NOT NULL OR cardinality(t.entry_features) < $4)
      AND EXISTS (SELECT 1 FROM post_exit_tracking e WHERE e.trade_id = t.id AND e.horizon = $3)
      AND NOT EXISTS (SELECT 1 FROM win_analysis w WHERE w.trade_id = t.id)
      AND NOT EXISTS (SELECT 1 FROM loss_analysis l WHERE l.trade_id = t.id)
    ORDER BY t.id
"""  # noqa: S608
_LATEST_BAR = f"""
    SELECT {_MS.format("max(open_time)")} FROM candles WHERE exchange = $1 AND symbol = $2 AND timeframe = $3
"""  # noqa: S608


def trade_facts(row: Any) -> TradeFacts:
    return TradeFacts(
        trade_id=row[0],
        symbol=row[1],
        direction=row[2],
        entry_time_ms=row[3],
        exit_time_ms=row[4],
        entry_price=row[5],
        exit_price=row[6],
        pnl_bps=row[7],
        fees_bps=row[8],
        slippage_bps=row[9],
        exit_reason=row[10],
        entry_regime=row[11],
        exit_regime=row[12],
        confidence=row[13],
        size_multiplier=row[14],
        model_version=row[15],
        entry_features=np.asarray(row[16], dtype=np.float64),
        stop_loss_price=row[17],
        take_profit_price=row[18],
    )


@dataclass(frozen=True, slots=True)
class LearnedTrade:
    """A trade already in the library, as the start-up rebuild reads it."""

    trade_id: int
    pattern_id: int
    embedding: npt.NDArray[np.float32]
    pnl_bps: float
    hold_ms: int
    exit_time_ms: int
    # The loss analysis' penalty, None when not analysed (or a win).
    penalty: float | None
    # From the analysis horizon's tracking: best favourable move from entry (bps) and when.
    best_move_bps: float | None
    best_after_entry_ms: int | None
    mode: str


@dataclass(frozen=True, slots=True)
class Learned:
    """What learning one trade writes back to its trade_memory row."""

    trade_id: int
    embedding: npt.NDArray[np.float32]
    exit_regime: str | None
    pattern_id: int


def _interval(ms: int | None) -> timedelta | None:
    return None if ms is None else timedelta(milliseconds=ms)


def _numeric(value: float | None) -> Decimal | None:
    return None if value is None else Decimal(repr(value))


class LearningStore:
    def __init__(self, pool: asyncpg.Pool, *, exchange: str) -> None:
        self.pool = pool
        self.exchange = exchange
        # Set when the pgvector columns exist (memory/vectors.py): writes fill them too.
        self.pgvector = False

    # --- the queues ----------------------------------------------------------------------------
    async def unlearned(self, limit: int) -> list[TradeFacts]:
        """Closed trades not yet in a pattern, oldest exit first (pattern statistics are kept in
        exit order). A trade without the entry state (a position of an adopted order: the
        journal stores [0]) has nothing to embed: it is analysed, never put in a pattern."""
        rows = await self.pool.fetch(
            _FACTS + " WHERE t.exchange = $1 AND t.pattern_id IS NULL AND cardinality(t.entry_features) >= $3"
            " ORDER BY t.exit_time, t.id LIMIT $2",
            self.exchange,
            limit,
            MARKET_WIDTH,
        )
        return [trade_facts(r) for r in rows]

    async def untracked(
        self, from_id: int, horizons: Sequence[str], limit: int
    ) -> list[tuple[TradeFacts, list[str]]]:
        """Trades from id `from_id` on with horizons still missing, each with the missing ones."""
        rows = await self.pool.fetch(
            f"""
            SELECT * FROM (
                SELECT f.*, ARRAY(SELECT h FROM unnest($3::text[]) h
                                  WHERE NOT EXISTS (SELECT 1 FROM post_exit_tracking e
                                                    WHERE e.trade_id = f.id AND e.horizon = h)) AS missing
                FROM ({_FACTS} WHERE t.exchange = $1 AND t.id >= $2) f
            ) m WHERE cardinality(missing) > 0 ORDER BY id LIMIT $4
            """,  # noqa: S608
            self.exchange,
            from_id,
            list(horizons),
            limit,
        )
        return [(trade_facts(r), list(r["missing"])) for r in rows]

    async def unanalysed(self, from_id: int) -> list[tuple[TradeFacts, int | None]]:
        """Learned trades from id `from_id` on whose analysis horizon is tracked and that have no
        analysis yet. Breakeven trades are neither wins nor losses and are never analysed."""
        rows = await self.pool.fetch(
            _UNANALYSED,
            self.exchange,
            from_id,
            ANALYSIS_HORIZON,
            MARKET_WIDTH,
        )
        return [(trade_facts(tuple(r)[1:]), r[0]) for r in rows]

    async def max_trade_id(self) -> int:
        # Every exchange's: a valid bound for the watermarks, and one step down the primary key.
        value = await self.pool.fetchval("SELECT coalesce(max(id), 0) FROM trade_memory")
        return int(value)

    async def latest_bar_ms(self, symbol: str, timeframe: str) -> int | None:
        value = await self.pool.fetchval(
            _LATEST_BAR,
            self.exchange,
            symbol,
            timeframe,
        )
        return None if value is None else int(value)

    async def outcomes(
        self, trade_ids: Sequence[int], before_ms: int
    ) -> list[tuple[bool, float, list[float]]]:
        """Win, pnl_bps and entry features of those of `trade_ids` that had exited before
        `before_ms`, in the order of `trade_ids` (nearest first)."""
        rows = await self.pool.fetch(
            "SELECT id, is_win, pnl_bps, entry_features FROM trade_memory "
            "WHERE id = ANY($1::bigint[]) AND exit_time < $2",
            list(trade_ids),
            ms_to_datetime(before_ms),
        )
        found = {r[0]: (bool(r[1]), float(r[2]), list(r[3])) for r in rows}
        return [found[i] for i in trade_ids if i in found]

    # --- the library ---------------------------------------------------------------------------
    async def patterns(self, embedding_version: str) -> list[tuple[int, npt.NDArray[np.float32]]]:
        rows = await self.pool.fetch(
            "SELECT pattern_id, centroid FROM pattern_library WHERE embedding_version = $1 ORDER BY pattern_id",
            embedding_version,
        )
        return [(r[0], np.asarray(r[1], dtype=np.float32)) for r in rows]

    async def forget_other_embeddings(self, embedding_version: str) -> int:
        """Trades in patterns of another embedding basis go back to the queue: their pattern's
        centroid means nothing in this basis. The old patterns stay, as history."""
        async with self.pool.acquire() as conn, conn.transaction():
            status = await conn.execute(
                """
                UPDATE trade_memory SET pattern_id = NULL, entry_embedding = NULL
                WHERE pattern_id IN (SELECT pattern_id FROM pattern_library WHERE embedding_version <> $1)
                """,
                embedding_version,
            )
            # Their statistics described trades they no longer hold.
            await conn.execute(
                """
                UPDATE pattern_library SET occurrences = 0, wins = 0, losses = 0, win_rate = 0,
                       reliability = 0, sample_adequate = false, updated_at = now()
                WHERE embedding_version <> $1 AND occurrences > 0
                """,
                embedding_version,
            )
        return int(status.split()[-1])

    async def learned(self, embedding_version: str) -> list[LearnedTrade]:
        rows = await self.pool.fetch(
            f"""
            SELECT t.id, t.pattern_id, t.entry_embedding, t.pnl_bps,
                   (extract(epoch FROM t.hold_duration) * 1000)::bigint, {_MS.format("t.exit_time")},
                   l.confidence_penalty, t.mode, t.direction, t.entry_price::float8, t.exit_price::float8,
                   {_MS.format("t.entry_time")}, e.optimal_exit_price::float8,
                   {_MS.format("coalesce(e.optimal_exit_time, e.best_price_at)")}
            FROM trade_memory t
            JOIN pattern_library p ON p.pattern_id = t.pattern_id AND p.embedding_version = $1
            LEFT JOIN loss_analysis l ON l.trade_id = t.id
            LEFT JOIN post_exit_tracking e ON e.trade_id = t.id AND e.horizon = $2
            WHERE t.entry_embedding IS NOT NULL
            ORDER BY t.exit_time, t.id
            """,  # noqa: S608
            embedding_version,
            ANALYSIS_HORIZON,
        )
        learned = []
        for r in rows:
            best_move: tuple[float | None, int | None] = (None, None)
            if r[13] is not None:  # the analysis horizon is tracked
                best_move = best_move_from_entry(
                    1.0 if r[8] == "long" else -1.0, r[9], r[10], r[11], r[12], r[13]
                )
            learned.append(
                LearnedTrade(
                    trade_id=r[0],
                    pattern_id=r[1],
                    embedding=np.asarray(r[2], dtype=np.float32),
                    pnl_bps=r[3],
                    hold_ms=r[4],
                    exit_time_ms=r[5],
                    penalty=r[6],
                    best_move_bps=best_move[0],
                    best_after_entry_ms=best_move[1],
                    mode=r[7],
                )
            )
        return learned

    async def new_pattern(
        self, centroid: npt.NDArray[np.float32], embedding_version: str, regime: str
    ) -> int:
        vec = (
            ", centroid_vec) VALUES ($1, $2, $3, $1::real[]::vector)"
            if self.pgvector
            else ") VALUES ($1, $2, $3)"
        )
        value = await self.pool.fetchval(
            f"INSERT INTO pattern_library (centroid, regime, embedding_version{vec} RETURNING pattern_id",
            centroid.tolist(),
            regime,
            embedding_version,
        )
        return int(value)

    async def save_learned(self, learned: Sequence[Learned], stats: Iterable[PatternStats]) -> None:
        """The trades' embeddings, exit regimes and patterns and their patterns' statistics, in
        one transaction (statistics are derived from the trades: a crash between passes loses
        nothing that the start-up rebuild does not recompute)."""
        async with self.pool.acquire() as conn, conn.transaction():
            vec = ", entry_embedding_vec = $2::real[]::vector" if self.pgvector else ""
            await conn.executemany(
                f"UPDATE trade_memory SET entry_embedding = $2, exit_regime = coalesce($3, exit_regime), pattern_id = $4{vec} WHERE id = $1",  # noqa: S608 (one of two literals)
                [(x.trade_id, x.embedding.tolist(), x.exit_regime, x.pattern_id) for x in learned],
            )
            await self._save_stats(conn, stats)

    async def save_stats(self, stats: Iterable[PatternStats]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await self._save_stats(conn, stats)

    async def _save_stats(self, conn: asyncpg.Connection, stats: Iterable[PatternStats]) -> None:
        vec = "centroid_vec = $2::real[]::vector, " if self.pgvector else ""
        await conn.executemany(
            f"""
            UPDATE pattern_library SET {vec}centroid = $2, occurrences = $3, wins = $4, losses = $5, win_rate = $6,
                   avg_profit_bps = $7, avg_hold = $8, sharpe = $9, max_drawdown_bps = $10, profit_factor = $11,
                   reliability = $12, sample_adequate = $13, optimal_size_multiplier = $14,
                   optimal_exit_threshold = $15, confidence_penalty = $16, optimal_hold = $17, updated_at = now()
            WHERE pattern_id = $1
            """,  # noqa: S608 (one of two literals)
            [
                (
                    s.pattern_id,
                    s.centroid.tolist(),
                    s.occurrences,
                    s.wins,
                    s.losses,
                    s.win_rate,
                    s.avg_profit_bps,
                    _interval(s.avg_hold_ms),
                    s.sharpe,
                    s.max_drawdown_bps,
                    s.profit_factor,
                    s.reliability,
                    s.sample_adequate,
                    _numeric(s.optimal_size_multiplier),
                    s.optimal_exit_threshold,
                    s.confidence_penalty,
                    _interval(s.optimal_hold_ms),
                )
                for s in stats
            ],
        )

    # --- tracking and analyses -----------------------------------------------------------------
    async def save_post_exit(self, rows: Sequence[tuple[int, PostExit]]) -> None:
        await self.pool.executemany(
            """
            INSERT INTO post_exit_tracking (trade_id, horizon, horizon_time, price_at_horizon, best_price,
                best_price_at, worst_price, worst_price_at, missed_profit_bps, optimal_exit_time,
                should_have_held, should_have_exited_earlier, optimal_exit_price)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (trade_id, horizon) DO NOTHING
            """,
            [
                (
                    trade_id,
                    p.horizon,
                    ms_to_datetime(p.horizon_time_ms),
                    Decimal(repr(p.price_at_horizon)),
                    Decimal(repr(p.best_price)),
                    ms_to_datetime(p.best_price_at_ms),
                    Decimal(repr(p.worst_price)),
                    ms_to_datetime(p.worst_price_at_ms),
                    p.missed_profit_bps,
                    None if p.optimal_exit_time_ms is None else ms_to_datetime(p.optimal_exit_time_ms),
                    p.should_have_held,
                    p.should_have_exited_earlier,
                    Decimal(repr(p.optimal_exit_price)),
                )
                for trade_id, p in rows
            ],
        )

    async def save_win(self, trade_id: int, win: WinAnalysis) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                """
                INSERT INTO win_analysis (trade_id, win_quality, captured_move_ratio, missed_profit_bps, skill_score,
                    regime_aligned, contributing_features, confidence_boost, lessons, pattern_occurrences,
                    pattern_win_rate, edge_p_value, entry_quality, exit_quality)
                VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10, $11, $12, $13, $14)
                ON CONFLICT (trade_id) DO NOTHING
                """,
                trade_id,
                win.win_quality,
                win.captured_move_ratio,
                win.missed_profit_bps,
                win.skill_score,
                win.regime_aligned,
                orjson.dumps(win.contributing_features).decode(),
                win.confidence_boost,
                win.lessons,
                win.pattern_occurrences,
                win.pattern_win_rate,
                win.edge_p_value,
                win.entry_quality,
                win.exit_quality,
            )
            await conn.execute(
                "UPDATE trade_memory SET win_quality = $2 WHERE id = $1", trade_id, win.win_quality
            )

    async def save_loss(self, trade: TradeFacts, loss: LossAnalysis) -> None:
        await self.pool.execute(
            """
            INSERT INTO loss_analysis (trade_id, primary_failure_reason, secondary_reasons, severity, preventable,
                corrective_action, misleading_features, confidence_penalty, regime_changed, entry_regime,
                exit_regime, stop_distance_bps, adverse_move_bps, detail)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb)
            ON CONFLICT (trade_id) DO NOTHING
            """,
            trade.trade_id,
            loss.primary_failure_reason,
            list(loss.secondary_reasons),
            loss.severity,
            loss.preventable,
            loss.corrective_action,
            list(loss.misleading_features),
            loss.confidence_penalty,
            loss.regime_changed,
            trade.entry_regime,
            trade.exit_regime,
            loss.stop_distance_bps,
            loss.adverse_move_bps,
            orjson.dumps(loss.detail).decode(),
        )
