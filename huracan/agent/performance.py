"""Each model version's paper results per UTC day, added to `model_performance`.

Trades accumulate in memory and are flushed as increments (a flush adds to the day's row, it
never replaces it), so a restart or a second flush neither loses nor double-counts a trade.
Money: each symbol's paper account stands for `equity_quote` of the quote currency, and the
account currency is reached with the configured rate (risk.quote_to_account_rate).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from huracan.agent.paper import PaperTrade


@dataclass(slots=True)
class DayTally:
    trades: int = 0
    wins: int = 0
    losses: int = 0
    pnl: float = 0.0  # fractions of one symbol account's equity
    fees: float = 0.0
    profit_bps_sum: float = 0.0

    def add(self, trade: PaperTrade) -> None:
        self.trades += 1
        self.wins += trade.won
        self.losses += not trade.won
        self.pnl += trade.pnl
        self.fees += trade.fees
        self.profit_bps_sum += trade.profit_bps


UPSERT = """
INSERT INTO model_performance AS p
    (model_version, day, trades, wins, losses, win_rate, pnl_quote, pnl_account, fees_quote, avg_profit_bps)
VALUES ($1, $2, $3::integer, $4::integer, $5::integer, $4::integer::double precision / $3::integer,
        $6::numeric, $7::numeric, $8::numeric, $9::double precision / $3::integer)
ON CONFLICT (model_version, day) DO UPDATE SET
    trades = p.trades + EXCLUDED.trades,
    wins = p.wins + EXCLUDED.wins,
    losses = p.losses + EXCLUDED.losses,
    win_rate = (p.wins + EXCLUDED.wins)::double precision / (p.trades + EXCLUDED.trades),
    pnl_quote = p.pnl_quote + EXCLUDED.pnl_quote,
    pnl_account = p.pnl_account + EXCLUDED.pnl_account,
    fees_quote = p.fees_quote + EXCLUDED.fees_quote,
    avg_profit_bps = (coalesce(p.avg_profit_bps, 0) * p.trades + $9::double precision)
        / (p.trades + EXCLUDED.trades),
    updated_at = now()
"""


class PerformanceRecorder:
    def __init__(self, equity_quote: Decimal, quote_to_account: Decimal) -> None:
        self.equity_quote = equity_quote
        self.quote_to_account = quote_to_account
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
            )
            for (version, day), t in batch.items()
        ]
        committed = False
        try:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    await conn.executemany(UPSERT, rows)
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

    def summary(self) -> str:
        parts = []
        for version, t in sorted(self.totals.items()):
            rate = f"{t.wins / t.trades:.0%}" if t.trades else "-"
            parts.append(
                f"{version}: {t.trades} paper trades, win rate {rate}, PnL {self.quote(t.pnl):.2f} quote"
            )
        return "; ".join(parts) or "no paper trades closed"
