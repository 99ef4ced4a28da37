"""Performance metrics against hand-worked examples (the arithmetic is in the comments), the
undefined cases, and a few properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from huracan.analysis.metrics import (
    annual_return,
    buy_and_hold_returns,
    calmar_ratio,
    drawdown,
    equity_from_returns,
    expectancy,
    information_ratio,
    profit_factor,
    returns_from_equity,
    sharpe_ratio,
    sortino_ratio,
    system_quality_number,
    win_rate,
)

DAYS = [0.01, -0.02, 0.03, 0.00]
SQRT_365 = 19.1049731745428  # sqrt(365)


def test_returns_from_equity_and_back() -> None:
    assert returns_from_equity([100.0, 110.0, 99.0]) == pytest.approx([0.10, -0.10])
    assert equity_from_returns([0.10, -0.10], start=100.0) == pytest.approx([100.0, 110.0, 99.0])
    assert buy_and_hold_returns([200.0, 150.0]) == pytest.approx([-0.25])


def test_sharpe_by_hand() -> None:
    # mean 0.02 / 4 = 0.005; squared deviations 0.005², 0.025², 0.025², 0.005² sum to 0.0013;
    # sample variance 0.0013 / 3, std 0.0208167; 0.005 / 0.0208167 x sqrt(365) = 4.58887
    assert sharpe_ratio(DAYS) == pytest.approx(4.58887, abs=1e-5)
    # against a daily risk-free 0.001: mean excess 0.004, same std: 0.004 / 0.0208167 x sqrt(365)
    assert sharpe_ratio(DAYS, risk_free_daily=0.001) == pytest.approx(3.67109, abs=1e-5)


def test_sortino_by_hand() -> None:
    # shortfalls below 0: only -0.02; mean square over all 4 days 0.0004 / 4 = 0.0001, root 0.01;
    # 0.005 / 0.01 x sqrt(365) = 9.55249
    assert sortino_ratio(DAYS) == pytest.approx(0.5 * SQRT_365)
    assert sortino_ratio(DAYS) == pytest.approx(9.55249, abs=1e-5)


def test_annual_return_drawdown_and_calmar_by_hand() -> None:
    # equity 1, 1.01, 0.9898, 1.019494, 1.019494; growth 1.019494 over 4 days
    # compounds to 1.019494 ^ (365 / 4) - 1 = exp(91.25 x 0.0193064) - 1 = 4.82239 a year
    assert annual_return(DAYS) == pytest.approx(1.019494 ** (365 / 4) - 1)
    assert annual_return(DAYS) == pytest.approx(4.82239, abs=1e-4)
    # the one fall: from 1.01 to 0.9898, 0.0202 / 1.01 = 2%; under water from day 1 to day 3
    dd = drawdown(equity_from_returns(DAYS))
    assert (dd.max_fraction, dd.peak_index, dd.trough_index, dd.max_duration) == pytest.approx(
        (0.02, 1, 2, 2)
    )
    # Calmar 4.82239 / 0.02
    assert calmar_ratio(DAYS) == pytest.approx(241.120, abs=1e-2)


def test_drawdown_takes_the_deepest_fall_and_the_longest_time_under_water() -> None:
    # peaks 100 (index 0) and 100 again (index 3); falls 10% then 20%; under water 0 -> 3 (3
    # periods, recovered) and 3 -> 5 (2 periods, not recovered by the end)
    dd = drawdown([100.0, 90.0, 95.0, 100.0, 80.0, 85.0])
    assert (dd.max_fraction, dd.peak_index, dd.trough_index, dd.max_duration) == pytest.approx((0.2, 3, 4, 3))
    # never recovered: the span runs to the end
    assert drawdown([100.0, 99.0, 98.0, 97.0, 99.0]).max_duration == 4
    # only new highs: no drawdown, no time under water
    assert (drawdown([1.0, 2.0, 3.0]).max_fraction, drawdown([1.0, 2.0, 3.0]).max_duration) == (0.0, 0)


def test_information_ratio_against_buy_and_hold_by_hand() -> None:
    benchmark = [0.005, -0.025, 0.01, 0.0]
    # active 0.005, 0.005, 0.02, 0.0: mean 0.0075; squared deviations sum 0.000225, / 3 =
    # 0.000075, std 0.00866025; 0.0075 / 0.00866025 = 0.866025 x sqrt(365) = 16.54538
    assert information_ratio(DAYS, benchmark) == pytest.approx(16.54538, abs=1e-4)
    with pytest.raises(ValueError, match="4 returns against 3"):
        information_ratio(DAYS, benchmark[:3])


def test_trade_metrics_by_hand() -> None:
    pnls = [100.0, -50.0, 30.0, -20.0, 0.0]
    assert win_rate(pnls) == 0.4  # 2 of 5; the flat trade is not a win
    assert profit_factor(pnls) == pytest.approx(130 / 70)  # 1.857
    assert expectancy(pnls) == 12.0  # 60 / 5
    # deviations from 12: 88, -62, 18, -32, -12; squares sum 13080, / 4 = 3270, std 57.1839;
    # sqrt(5) x 12 / 57.1839 = 0.469237
    assert system_quality_number(pnls) == pytest.approx(0.469237, abs=1e-6)


def test_undefined_metrics_are_none_not_zero_or_infinity() -> None:
    assert sharpe_ratio([0.01, 0.01, 0.01]) is None  # no variance
    assert sharpe_ratio([0.01]) is None
    assert sortino_ratio([0.01, 0.02]) is None  # never below the target
    assert calmar_ratio([0.01, 0.02]) is None  # no drawdown
    assert annual_return([]) is None
    assert profit_factor([10.0, 5.0]) is None  # no losing trade
    assert win_rate([]) is None
    assert expectancy([]) is None
    assert system_quality_number([5.0]) is None
    # identical values whose mean rounds: still no variance (not a Sharpe of 1e17)
    assert sharpe_ratio([0.1] * 3) is None
    assert information_ratio([0.1] * 3, [0.0] * 3) is None
    assert system_quality_number([0.1] * 3) is None
    assert annual_return([9.0]) is None  # 10x in a day, compounded over a year, overflows
    assert information_ratio([0.01, 0.02], [0.01, 0.02]) is None  # no active risk


def test_bad_equity_says_what_and_where() -> None:
    with pytest.raises(ValueError, match="position 2"):
        returns_from_equity([100.0, 90.0, 0.0])
    with pytest.raises(ValueError, match="position 1"):
        returns_from_equity([100.0, math.nan])
    with pytest.raises(ValueError, match="starts above 0"):
        drawdown([])


def test_losing_everything_is_minus_one_a_year() -> None:
    assert annual_return([0.5, -1.0]) == -1.0


returns = st.lists(st.floats(-0.5, 0.5, allow_nan=False), min_size=2, max_size=200)


@given(returns, st.floats(0.1, 10.0))
def test_sharpe_does_not_depend_on_the_scale_of_returns(days: list[float], k: float) -> None:
    plain, scaled = sharpe_ratio(days), sharpe_ratio([k * r for r in days])
    if len(set(days)) == 1:
        assert plain is None  # identical returns: no variance to scale
    if plain is None or scaled is None:
        return
    assert scaled == pytest.approx(plain, rel=1e-6, abs=1e-6)


@given(returns)
def test_drawdown_is_a_fraction_and_its_trough_follows_its_peak(days: list[float]) -> None:
    dd = drawdown(equity_from_returns(days))
    assert 0.0 <= dd.max_fraction < 1.0
    assert dd.peak_index <= dd.trough_index
    assert 0 <= dd.max_duration <= len(days)
    if all(r >= 0 for r in days):
        assert dd.max_fraction == 0.0
        assert dd.max_duration == 0
    if any(r < -1e-9 for r in days):
        assert dd.max_fraction > 0.0
