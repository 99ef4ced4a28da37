"""Each model version's paper results per UTC day, added to `model_performance`.

Trades accumulate in memory and are flushed as increments (a flush adds to the day's row, it
never replaces it), so a restart or a second flush neither loses nor double-counts a trade.
Money: each symbol's paper account stands for `equity_quote` of the quote currency, and the
account currency is reached with the configured rate (risk.quote_to_account_rate). Gross profit
and gross loss are the sums of the winning and (as a positive number) the losing trades' PnL.

In the same transaction as the increments, every touched version's rows get their risk metrics
(sharpe, sortino, calmar, max_drawdown_pct, profit_factor) recomputed from the stored rows by
huracan.analysis.performance, over the version's paper equity: `equity_quote` x `symbols`, the
accounts of all the symbols it trades. Read from the table, not from memory, so they stay right
across restarts; one SELECT and one executemany UPDATE (of the rows whose figures changed),
whatever the number of days. Each day's figures come from its whole prefix, so the Python work
grows with the square of a version's days: about 30 ms for a year of them, 0.2 s for three.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from huracan.agent.paper import PaperTrade
from huracan.memory.trade_performance import refresh_metrics

# pg_advisory_xact_lock key, the bytes of "huracanP" as a big-endian bigint: flushes take turns,
# so a flush's metrics are never computed from rows that another flush is still adding to.
PERFORMANCE_LOCK_KEY = int.from_bytes(b"huracanP", "big")


@dataclass(slots=True)
class DayTally:
    trades: int = 0
    wins: int = 0
    losses: int = 0
    pnl: float = 0.0  # fractions of one symbol account's equity
    fees: float = 0.0
    profit_bps_sum: float = 0.0
    gross_profit: float = 0.0  # same unit, the winning trades' PnL
    gross_loss: float = 0.0  # same unit, the losing trades' PnL as a positive number

    def add(self, trade: PaperTrade) -> None:
        self.trades += 1
        self.wins += trade.won
        self.losses += not trade.won
        self.pnl += trade.pnl
        self.fees += trade.fees
        self.profit_bps_sum += trade.profit_bps
        self.gross_profit += max(trade.pnl, 0.0)
        self.gross_loss += max(-trade.pnl, 0.0)


UPSERT = """
INSERT INTO model_performance AS p
    (model_version, day, trades, wins, losses, win_rate, pnl_quote, pnl_account, fees_quote, avg_profit_bps,
     gross_profit_quote, gross_loss_quote)
VALUES ($1, $2, $3::integer, $4::integer, $5::integer, $4::integer::double precision / $3::integer,
        $6::numeric, $7::numeric, $8::numeric, $9::double precision / $3::integer, $10::numeric, $11::numeric)
ON CONFLICT (model_version, day, source) DO UPDATE SET
    trades = p.trades + EXCLUDED.trades,
    wins = p.wins + EXCLUDED.wins,
    losses = p.losses + EXCLUDED.losses,
    win_rate = (p.wins + EXCLUDED.wins)::double precision / (p.trades + EXCLUDED.trades),
    pnl_quote = p.pnl_quote + EXCLUDED.pnl_quote,
    pnl_account = p.pnl_account + EXCLUDED.pnl_account,
    fees_quote = p.fees_quote + EXCLUDED.fees_quote,
    avg_profit_bps = (coalesce(p.avg_profit_bps, 0) * p.trades + $9::double precision)
        / (p.trades + EXCLUDED.trades),
    gross_profit_quote = p.gross_profit_quote + EXCLUDED.gross_profit_quote,
    gross_loss_quote = p.gross_loss_quote + EXCLUDED.gross_loss_quote,
    updated_at = now()
"""


class PerformanceRecorder:
    def __init__(self, equity_quote: Decimal, quote_to_account: Decimal, symbols: int = 1) -> None:
        if symbols < 1:
            raise ValueError(f"a model version trades at least one symbol, got symbols={symbols}")
        self.equity_quote = equity_quote
        self.quote_to_account = quote_to_account
        self.symbols = symbols
        # A version that decides for a share of the symbols (an A/B challenger) has that many
        # paper accounts; set by the decision step, `symbols` otherwise.
        self.symbols_by_version: dict[str, int] = {}
        self.pending: dict[tuple[str, date], DayTally] = {}
        self.totals: dict[str, DayTally] = {}

    def record(self, trades: Iterable[PaperTrade]) -> None:
        for trade in trades:
            self.pending.setdefault((trade.model_version, trade.exit_day), DayTally()).add(trade)
            self.totals.setdefault(trade.model_version, DayTally()).add(trade)

    def quote(self, fraction: float) -> Decimal:
        # Rounded to 1e-8 of the quote currency: the float of a fraction carries no more.
        return (Decimal(repr(fraction)) * self.equity_quote).quantize(Decimal("1e-8"))

    async def flush(self, pool: asyncpg.Pool) -> int:
        """Add the pending tallies to their rows in one transaction; returns rows touched."""
        if not self.pending:
            return 0
        batch, self.pending = self.pending, {}
        rows = [
            (
                version,
                day,
                t.trades,
                t.wins,
                t.losses,
                self.quote(t.pnl),
                (self.quote(t.pnl) * self.quote_to_account).quantize(Decimal("1e-8")),
                self.quote(t.fees),
                t.profit_bps_sum,
                self.quote(t.gross_profit),
                self.quote(t.gross_loss),
            )
            for (version, day), t in batch.items()
        ]
        committed = False
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", PERFORMANCE_LOCK_KEY)
                    await conn.executemany(UPSERT, rows)
                    await self._set_metrics(conn, sorted({version for version, _ in batch}))
                committed = True
        except BaseException:
            if committed:  # failed after COMMIT (releasing the connection): written, not again
                raise
            # Not written: keep them for the next flush (merged with what came since).
            for key, tally in batch.items():
                merged = self.pending.setdefault(key, DayTally())
                for name in DayTally.__slots__:
                    setattr(merged, name, getattr(merged, name) + getattr(tally, name))
            raise
        return len(rows)

    async def _set_metrics(self, conn: asyncpg.Connection, versions: list[str]) -> None:
        """Recompute the metric columns of every paper row of `versions`."""
        await refresh_metrics(
            conn,
            "paper",
            {v: self.equity_quote * self.symbols_by_version.get(v, self.symbols) for v in versions},
        )

    def summary(self) -> str:
        parts = []
        for version, t in sorted(self.totals.items()):
            rate = f"{t.wins / t.trades:.0%}" if t.trades else "-"
            parts.append(
                f"{version}: {t.trades} paper trades, win rate {rate}, PnL {self.quote(t.pnl):.2f} quote"
            )
        return "; ".join(parts) or "no paper trades closed"
