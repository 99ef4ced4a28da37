"""The risk metrics of one model version, day by day: what `model_performance` stores per row.

The series is the version's realised paper equity. It starts at `starting_equity` (every
symbol's paper account together, quote currency) and each UTC day adds that day's net PnL of
the trades that closed on it; an open position counts on the day it closes, so the curve is of
realised results, as the rows are. A calendar day between two rows had no closed trade: it is
a day with a return of 0, not a day left out, so a quiet week dilutes the ratios as it should.

Day d's return is its PnL over the equity at the end of the day before (simple returns, which
compound to the curve). Each row gets the metrics of the series from the version's first day up
to and including its own day, with the conventions of huracan.analysis.metrics (daily returns,
annualised for 365 days, sample standard deviation):
- sharpe, sortino, calmar: of those returns; None with fewer than two days, without spread
  (Sharpe), without a losing day (Sortino), without a drawdown (Calmar), or once the equity has
  fallen to 0 or below (a return on nothing has no meaning, and every later day inherits that).
- max_drawdown_pct: the deepest fall of the curve (from E0 on) below a running peak, in percent
  of that peak, >= 0; over 100 only if losses ever exceeded the equity (None only for sums
  too large for a float).
- profit_factor: the gross profit of every trade up to that day over their gross loss, both
  positive magnitudes; None while there has been no loss.
None is undefined, stored as NULL: never 0 or infinity, and any non-finite figure becomes None.
Day i's figures depend only on days up to i, so adding a day never changes an earlier row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from huracan.analysis.metrics import calmar_ratio, drawdown, profit_factor, sharpe_ratio, sortino_ratio

Money = Decimal | float


@dataclass(frozen=True, slots=True)
class DayMetrics:
    day: date
    sharpe: float | None
    sortino: float | None
    calmar: float | None
    max_drawdown_pct: float | None
    profit_factor: float | None

    def columns(self) -> tuple[float | None, ...]:
        """The values of the columns of the same names, in this order."""
        return (self.sharpe, self.sortino, self.calmar, self.max_drawdown_pct, self.profit_factor)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _ratio(metric: Callable[[Sequence[float]], float | None], returns: Sequence[float]) -> float | None:
    """The metric, or None where it is not a finite number: returns of a near-empty account
    (1e300 on an equity of 1e-300) overflow a square or a sum, which Python raises."""
    try:
        return _finite(metric(returns))
    except OverflowError:
        return None


def _money(value: Money, what: str, i: int, *, non_negative: bool = False) -> float:
    number = float(value)
    if not math.isfinite(number) or (non_negative and number < 0):
        bound = "finite and >= 0" if non_negative else "finite"
        raise ValueError(f"{what} must be {bound}, got {value!r} at day index {i}")
    return number


def daily_metrics(
    days: Sequence[date],
    pnl: Sequence[Money],
    gross_profit: Sequence[Money],
    gross_loss: Sequence[Money],
    starting_equity: Money,
) -> list[DayMetrics]:
    """Metrics for each of `days` (strictly increasing) from the day's net PnL and its gross
    profit and gross loss (positive magnitude), all in the unit of `starting_equity`."""
    if not len(days) == len(pnl) == len(gross_profit) == len(gross_loss):
        raise ValueError(
            f"{len(days)} days against {len(pnl)} PnL, {len(gross_profit)} gross profit and "
            f"{len(gross_loss)} gross loss figures"
        )
    start = float(starting_equity)
    if not (math.isfinite(start) and start > 0):
        raise ValueError(f"starting equity must be positive and finite, got {starting_equity!r}")
    for i in range(1, len(days)):
        if days[i] <= days[i - 1]:
            raise ValueError(
                f"days must be strictly increasing: {days[i]} follows {days[i - 1]} at index {i}"
            )
    if not days:
        return []

    # The calendar from the first day to the last, quiet days at 0, and its equity curve E_0..E_n.
    first = days[0]
    daily = [0.0] * ((days[-1] - first).days + 1)
    for i, (day, value) in enumerate(zip(days, pnl, strict=True)):
        daily[(day - first).days] = _money(value, "PnL", i)
    equity = [start]
    returns: list[float] = []
    ruined_at: int | None = None  # the first day whose opening equity was <= 0
    for t, value in enumerate(daily):
        opening = equity[-1]
        if opening <= 0 and ruined_at is None:
            ruined_at = t
        if ruined_at is None:
            returns.append(value / opening)
        equity.append(opening + value)

    result: list[DayMetrics] = []
    profit = loss = 0.0
    for i, day in enumerate(days):
        profit += _money(gross_profit[i], "gross profit", i, non_negative=True)
        loss += _money(gross_loss[i], "gross loss", i, non_negative=True)
        n = (day - first).days + 1  # days in the series up to and including this one
        defined = ruined_at is None or n <= ruined_at
        prefix = returns[:n]
        result.append(
            DayMetrics(
                day=day,
                sharpe=_ratio(sharpe_ratio, prefix) if defined else None,
                sortino=_ratio(sortino_ratio, prefix) if defined else None,
                calmar=_ratio(calmar_ratio, prefix) if defined else None,
                max_drawdown_pct=_finite(drawdown(equity[: n + 1]).max_fraction * 100.0),
                # The day's sums stand for the trades they add up: the factor is the same.
                profit_factor=_finite(profit_factor([profit, -loss])),
            )
        )
    return result
