"""What the RiskManager sees: the portfolio as a frozen snapshot, the limits, and its verdict.

Money on this path is Decimal. Limits are in the account currency (GBP by default); prices and
quantities are in the market's quote and base currencies; `quote_to_account` converts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

from huracan.exchange.models import MarketRules


class TradingState(StrEnum):
    """ACTIVE: trade normally. REDUCING: only orders that reduce exposure (exits); resting
    entries are cancelled. HALTED: no new opens, exits and cancels only; every open order of our
    symbols on the venue is cancelled. HALTED stays until an operator resumes."""

    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class Holding:
    """An open long position as the risk rules need it."""

    symbol: str
    quantity: Decimal  # base currency, > 0
    average_price: Decimal  # quote per base
    stop_price: Decimal | None  # where the stop-loss sells; None: the default stop distance applies
    exit_working: bool = False  # an exit order for it is already working


@dataclass(frozen=True, slots=True)
class Portfolio:
    now_ms: int
    state: TradingState
    capital: Decimal  # account currency: the equity the limits are measured against
    quote_to_account: Decimal  # account currency per unit of quote currency
    holdings: Mapping[str, Holding]
    last_prices: Mapping[str, Decimal]  # quote, the latest known price per symbol
    markets: Mapping[str, MarketRules]  # precision and minimums per symbol
    pnl_today: Decimal = Decimal(0)  # account currency, realised + unrealised since the day began
    pnl_since_reset: Decimal = Decimal(0)  # account currency, since the breaker was last reset
    working_entries: frozenset[str] = frozenset()  # symbols with an entry order working
    # Account currency: what each working entry still buys (remaining quantity at its limit or
    # the last price). Heat counts it: an entry on its way is risk to the stops once it fills,
    # and a taker fill can land before the next intent is assessed.
    entry_notional: Mapping[str, Decimal] = field(default_factory=dict)
    unresolved: frozenset[str] = frozenset()  # symbols with an order in UNKNOWN
    recent_orders_ms: tuple[int, ...] = ()  # submission times of recent orders (rate limit)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    position_cap: Decimal  # account currency, per symbol
    normal_position: Decimal  # account currency, the 1x entry
    daily_loss_limit: Decimal  # account currency
    max_heat_pct: Decimal  # capital at risk to the stops, percent of capital
    circuit_breaker_loss: Decimal  # account currency, cumulative since the last reset
    daily_profit_target: Decimal | None  # account currency; None: no target
    max_open_positions: int
    max_orders_per_minute: int
    price_collar_bps: Decimal
    stop_loss_bps: Decimal  # default stop distance, for the heat of a new entry
    scale_down: bool = True  # shrink an entry to fit a limit instead of denying it


@dataclass(frozen=True, slots=True)
class RiskAssessment:
    """The verdict on one intent. `quantity` is in base currency, already at the market's lot
    step (0 when denied). `reason` is a snake_case code: "approved" or "scaled_<limit>" when
    allowed, the limit's code when denied."""

    allowed: bool
    reason: str
    risk_score: float  # 0..1: how close the order takes the portfolio to its tightest limit
    quantity: Decimal
    detail: str = ""
    scaled_by: tuple[str, ...] = field(default=())  # the limits that shrank it

    @property
    def scaled(self) -> bool:
        return bool(self.scaled_by)
