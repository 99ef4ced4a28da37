"""Performance metrics, pure: plain sequences of floats in, floats out.

Conventions, stated once because every metric library picks its own:
- Returns are simple returns, r_t = E_t / E_{t-1} - 1.
- Ratios are computed from *daily* returns and annualised for a market open every day of the
  year (crypto): x sqrt(365) for Sharpe, Sortino and the information ratio, compounding over
  365 days for the annual return. The risk-free rate is 0 unless given (as a daily rate).
- Standard deviations are sample ones (n - 1). Sortino's downside deviation is the root mean
  square of the shortfalls below the target over all days (Sortino and Price, 1994), not only
  the losing ones.
- A metric that is undefined for its input (a zero denominator, too few points, an annual
  figure too large to represent) is None,
  never 0 or infinity: a database column stores NULL for it, and no one reads a flat series as
  a Sharpe of 0.
- A trade counts as won when its PnL is above 0; a trade at exactly 0 is neither won nor lost.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

DAYS_PER_YEAR = 365


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def _sample_std(values: Sequence[float]) -> float | None:
    """None for fewer than two values or identical ones (whose computed deviation is rounding
    noise in the mean, not a spread: 0.1 three times has a std of 1e-18)."""
    if len(values) < 2 or max(values) == min(values):
        return None
    mean = _mean(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def returns_from_equity(equity: Sequence[float]) -> list[float]:
    """Simple returns between consecutive equity values; equity must be positive and finite."""
    for i, value in enumerate(equity):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"equity must be positive and finite, got {value!r} at position {i}")
    return [b / a - 1.0 for a, b in itertools.pairwise(equity)]


def equity_from_returns(returns: Sequence[float], start: float = 1.0) -> list[float]:
    """The equity curve that the returns compound to, beginning with `start`."""
    curve = [start]
    for r in returns:
        curve.append(curve[-1] * (1.0 + r))
    return curve


def sharpe_ratio(daily_returns: Sequence[float], risk_free_daily: float = 0.0) -> float | None:
    excess = [r - risk_free_daily for r in daily_returns]
    std = _sample_std(excess)
    if std is None or std == 0.0:
        return None
    return _mean(excess) / std * math.sqrt(DAYS_PER_YEAR)


def sortino_ratio(daily_returns: Sequence[float], target_daily: float = 0.0) -> float | None:
    if len(daily_returns) < 2:
        return None
    shortfall = [min(0.0, r - target_daily) ** 2 for r in daily_returns]
    downside = math.sqrt(math.fsum(shortfall) / len(daily_returns))
    if downside == 0.0:
        return None
    return (_mean(daily_returns) - target_daily) / downside * math.sqrt(DAYS_PER_YEAR)


def annual_return(daily_returns: Sequence[float]) -> float | None:
    """Compound annual growth rate of the daily returns."""
    if not daily_returns:
        return None
    growth = equity_from_returns(daily_returns)[-1]
    if growth <= 0:
        return -1.0  # everything lost: no compounding brings it back
    try:
        return float(growth ** (DAYS_PER_YEAR / len(daily_returns))) - 1.0
    except OverflowError:  # a few days of large gains compounded over a year: no meaningful figure
        return None


@dataclass(frozen=True, slots=True)
class Drawdown:
    max_fraction: float  # deepest fall from a running peak, as a fraction of that peak (>= 0)
    peak_index: int  # where that deepest fall began
    trough_index: int  # and where it bottomed
    max_duration: int  # longest peak-to-recovery span in periods (to the end if never recovered)


def drawdown(equity: Sequence[float]) -> Drawdown:
    """Maximum drawdown of an equity curve and the longest time it spent below a peak."""
    if not equity or not equity[0] > 0:
        raise ValueError("drawdown needs an equity curve that starts above 0")
    peak_value, peak_at, underwater = equity[0], 0, False
    deepest, deepest_peak, deepest_trough, longest = 0.0, 0, 0, 0
    for i, value in enumerate(equity):
        if value >= peak_value:  # a new high, or back at the old one: any drawdown is over
            if underwater:
                longest = max(longest, i - peak_at)
            peak_value, peak_at, underwater = value, i, False
            continue
        underwater = True
        fall = (peak_value - value) / peak_value
        if fall > deepest:
            deepest, deepest_peak, deepest_trough = fall, peak_at, i
    if underwater:
        longest = max(longest, len(equity) - 1 - peak_at)
    return Drawdown(deepest, deepest_peak, deepest_trough, longest)


def calmar_ratio(daily_returns: Sequence[float]) -> float | None:
    """Annual return over the maximum drawdown of the same days."""
    yearly = annual_return(daily_returns)
    deepest = drawdown(equity_from_returns(daily_returns)).max_fraction
    if yearly is None or deepest == 0.0:
        return None
    return yearly / deepest


def information_ratio(daily_returns: Sequence[float], benchmark_daily: Sequence[float]) -> float | None:
    """Annualised mean active return over its standard deviation (tracking error); the
    benchmark is buy-and-hold of the traded market over the same days."""
    if len(daily_returns) != len(benchmark_daily):
        raise ValueError(f"{len(daily_returns)} returns against {len(benchmark_daily)} benchmark returns")
    active = [r - b for r, b in zip(daily_returns, benchmark_daily, strict=True)]
    std = _sample_std(active)
    if std is None or std == 0.0:
        return None
    return _mean(active) / std * math.sqrt(DAYS_PER_YEAR)


def buy_and_hold_returns(closes: Sequence[float]) -> list[float]:
    """Daily returns of holding the market: its daily closes' simple returns."""
    return returns_from_equity(closes)


# --- per trade --------------------------------------------------------------------------------
def win_rate(pnls: Sequence[float]) -> float | None:
    return sum(1 for p in pnls if p > 0) / len(pnls) if pnls else None


def profit_factor(pnls: Sequence[float]) -> float | None:
    """Gross profit over gross loss; None without a losing trade."""
    gross_loss = -math.fsum(p for p in pnls if p < 0)
    if gross_loss == 0.0:
        return None
    return math.fsum(p for p in pnls if p > 0) / gross_loss


def expectancy(pnls: Sequence[float]) -> float | None:
    """What a trade makes on average: win rate x average win - loss rate x average loss,
    which is the mean PnL per trade."""
    return _mean(pnls) if pnls else None


def system_quality_number(pnls: Sequence[float]) -> float | None:
    """Van Tharp's SQN: sqrt(number of trades) x mean / standard deviation of the trades' PnL
    (in R multiples when the PnLs are; the ratio is scale-free either way)."""
    std = _sample_std(pnls)
    if std is None or std == 0.0:
        return None
    return math.sqrt(len(pnls)) * _mean(pnls) / std
