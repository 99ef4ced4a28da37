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
