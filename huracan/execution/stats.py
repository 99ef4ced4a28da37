"""What the executor counts as it works: orders, fills, fees, the maker share, closed trades."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from huracan.execution.positions import ClosedTrade


@dataclass(slots=True)
class ExecutionStats:
    placed: int = 0
    rejected: int = 0
    unknown: int = 0
    fills: int = 0
    duplicate_fills: int = 0
    maker_notional: Decimal = Decimal(0)
    taker_notional: Decimal = Decimal(0)
    fees_quote: Decimal = Decimal(0)
    maker_saved_quote: Decimal = Decimal(0)  # fee, half spread and slippage a taker fill would have paid
    reprices: int = 0
    fallbacks: int = 0
    abandoned: int = 0
    trades: list[ClosedTrade] = field(default_factory=list)
    # (exit time, PnL in account currency at the rate of its close) per closed trade
    closed_account: list[tuple[int, Decimal]] = field(default_factory=list)
    realised_account: Decimal = Decimal(0)  # their sum, kept as it grows

    @property
    def maker_share(self) -> float:
        total = self.maker_notional + self.taker_notional
        return float(self.maker_notional / total) if total else 0.0

    def count_fill(self, notional: Decimal, fee_quote: Decimal, maker: bool, saved_bps: Decimal) -> None:
        """A new fill (quote currency); saved_bps: what a taker fill would have cost beyond the
        maker fee (fee, half spread, slippage), counted for maker fills."""
        self.fills += 1
        self.fees_quote += fee_quote
        if maker:
            self.maker_notional += notional
            self.maker_saved_quote += notional * saved_bps / 10_000
        else:
            self.taker_notional += notional

    def count_closed(self, trade: ClosedTrade, quote_to_account: Decimal) -> None:
        self.trades.append(trade)
        pnl_account = trade.pnl_quote * quote_to_account
        self.closed_account.append((trade.exit_time_ms, pnl_account))
        self.realised_account += pnl_account
