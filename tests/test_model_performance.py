"""model_performance's risk metrics: the pure per-day series against hand-worked values and
properties, and the recorder storing exactly that series (with gross profit and loss) per row."""

from __future__ import annotations

import math
from datetime import date, timedelta
from decimal import Decimal

import asyncpg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.agent.paper import PaperTrade
from huracan.agent.performance import PerformanceRecorder
from huracan.analysis.performance import DayMetrics, daily_metrics

SQRT_365 = 19.1049731745428  # sqrt(365)
MAR = [date(2021, 3, d) for d in range(1, 32)]  # MAR[0] is 1 March


# --- the pure series ---------------------------------------------------------------------------
def test_the_series_by_hand_with_a_quiet_day() -> None:
    # Equity 1000. 1 Mar +10 (gross +10 / -0), 2 Mar -20 (+5 / -25), 3 Mar no row, 4 Mar +30.
    # Curve E0..E4 = 1000, 1010, 990, 990, 1020; returns 0.01, -20/1010 = -0.0198020, 0 (the
    # quiet day), 30/990 = 0.0303030.
    first, second, fourth = daily_metrics(
        [MAR[0], MAR[1], MAR[3]], [10, -20, 30], [10, 5, 30], [0, 25, 0], Decimal("1000")
    )
    # One day: no spread, no downside, no drawdown (so no Calmar), no loss (so no profit factor).
    assert first == DayMetrics(MAR[0], None, None, None, 0.0, None)

    # Two days: mean (0.01 - 0.0198020) / 2 = -0.0049010; deviations ±0.0149010, sample std
    # 0.0149010 x sqrt(2) = 0.0210730; Sharpe -0.0049010 / 0.0210730 x sqrt(365) = -4.44324.
    assert second.sharpe == pytest.approx(-4.44324, abs=1e-5)
    # Downside: sqrt(0.0198020² / 2) = 0.0140021; -0.0049010 / 0.0140021 x sqrt(365) = -6.68708.
    assert second.sortino == pytest.approx(-6.68708, abs=1e-5)
    # Drawdown 1010 -> 990: 20 / 1010 = 1.980198 %. Annual: 0.99^(365/2) - 1 = 0.159743 - 1
    # = -0.840257; Calmar -0.840257 / 0.0198020 = -42.43296.
    assert second.max_drawdown_pct == pytest.approx(1.980198, abs=1e-6)
    assert second.calmar == pytest.approx(-42.43296, abs=1e-5)
    assert second.profit_factor == pytest.approx(15 / 25)  # (10 + 5) / (0 + 25)

    # Four days, the quiet one included: mean 0.0205011 / 4 = 0.0051253; sample variance
    # (0.0048747² + 0.0249272² + 0.0051253² + 0.0251778²) / 3 = 0.00043511, std 0.0208592;
    # Sharpe 0.0051253 / 0.0208592 x sqrt(365) = 4.69424.
    assert fourth.sharpe == pytest.approx(4.69424, abs=1e-5)
    # Downside sqrt(0.0198020² / 4) = 0.0099010; 0.0051253 / 0.0099010 x sqrt(365) = 9.88972.
    assert fourth.sortino == pytest.approx(9.88972, abs=1e-5)
    # Growth 1020 / 1000 over 4 days: 1.02^(365/4) - 1 = 5.09208; / 0.0198020 = 257.1501.
    assert fourth.calmar == pytest.approx(257.1501, abs=1e-4)
    assert fourth.max_drawdown_pct == second.max_drawdown_pct  # 1020 is a new high
    assert fourth.profit_factor == pytest.approx(45 / 25)  # (10 + 5 + 30) / 25


def test_a_missing_day_is_a_zero_return_day_not_a_skipped_one() -> None:
    gappy = daily_metrics([MAR[0], MAR[1], MAR[3]], [10, -20, 30], [10, 5, 30], [0, 25, 0], 1000)
    explicit = daily_metrics(MAR[:4], [10, -20, 0, 30], [10, 5, 0, 30], [0, 25, 0, 0], 1000)
    assert gappy == [explicit[0], explicit[1], explicit[3]]
    # Had the quiet day been dropped, the last day would be the third return of three.
    squeezed = daily_metrics(MAR[:3], [10, -20, 30], [10, 5, 30], [0, 25, 0], 1000)
    assert squeezed[2].sharpe != gappy[2].sharpe


def test_decimal_and_float_money_give_the_same_figures() -> None:
    as_decimal = daily_metrics(
        MAR[:3],
        [Decimal("12.5"), Decimal("-7.25"), Decimal("3")],
        [Decimal("12.5"), 0, 3],
        [0, Decimal("7.25"), 0],
        500,
    )
    assert as_decimal == daily_metrics(MAR[:3], [12.5, -7.25, 3.0], [12.5, 0.0, 3.0], [0.0, 7.25, 0.0], 500.0)


def test_losses_beyond_the_equity_leave_the_ratios_undefined_from_then_on() -> None:
    # Equity 100; 1 Mar -150 (a 1.5x position can lose more than the account): curve 100 -> -50,
    # return -1.5. 2 Mar +10: a return on -50 means nothing, so every ratio from here is None.
    ruin, after = daily_metrics(MAR[:2], [-150, 10], [0, 10], [150, 0], 100)
    # Annual return of an account wiped out is -1; its drawdown 150 / 100: Calmar -1 / 1.5.
    assert ruin.calmar == pytest.approx(-1 / 1.5)
    assert ruin.max_drawdown_pct == pytest.approx(150.0)
    assert (after.sharpe, after.sortino, after.calmar) == (None, None, None)
    assert after.max_drawdown_pct == pytest.approx(150.0)  # -40 is still above the -50 trough
    assert after.profit_factor == pytest.approx(10 / 150)


def test_figures_too_large_for_a_float_are_none() -> None:
    # Equity 1e-300 makes +1 a return of 1e300: its deviation squared overflows inside the std,
    # and 0.5e300 ** 182.5 the annual return. Sortino's downside is the -0.5 alone: finite.
    # Losses of 5e-324 make the profit factor 1 / 5e-324, infinite.
    tiny = daily_metrics(MAR[:2], [1, -0.5], [1, 0], [0, 0.5], 1e-300)[1]
    assert (tiny.sharpe, tiny.calmar) == (None, None)
    assert tiny.sortino is not None
    assert math.isfinite(tiny.sortino)
    assert daily_metrics(MAR[:1], [1], [1], [5e-324], 100)[0].profit_factor is None


def test_a_profit_factor_of_zero_is_a_fact_and_one_without_losses_is_undefined() -> None:
    only_losses = daily_metrics(MAR[:1], [-5], [0], [5], 100)[0]
    assert only_losses.profit_factor == 0.0
    only_wins = daily_metrics(MAR[:2], [5, 6], [5, 6], [0, 0], 100)
    assert [m.profit_factor for m in only_wins] == [None, None]
    assert only_wins[1].sortino is None  # no losing day: no downside deviation
    assert only_wins[1].max_drawdown_pct == 0.0


@pytest.mark.parametrize(
    ("days", "pnl", "gross_profit", "gross_loss", "equity", "message"),
    [
        ([MAR[1], MAR[0]], [1, 1], [1, 1], [0, 0], 100, "strictly increasing"),
        ([MAR[0], MAR[0]], [1, 1], [1, 1], [0, 0], 100, "strictly increasing"),
        ([MAR[0]], [1, 2], [1], [0], 100, "1 days against 2 PnL"),
        ([MAR[0]], [1], [1], [0], 0, "starting equity"),
        ([MAR[0]], [1], [1], [-1], 100, "gross loss must be finite and >= 0"),
        ([MAR[0]], [math.nan], [1], [0], 100, "PnL must be finite"),
    ],
)
def test_bad_input_is_named(
    days: list[date],
    pnl: list[float],
    gross_profit: list[float],
    gross_loss: list[float],
    equity: float,
    message: str,
) -> None:
    with pytest.raises(ValueError, match=message):
        daily_metrics(days, pnl, gross_profit, gross_loss, equity)


def test_no_days_no_metrics() -> None:
    assert daily_metrics([], [], [], [], 100) == []


@st.composite
def versions(draw: st.DrawFn) -> tuple[list[date], list[float], list[float], list[float], float]:
    """A version's rows: gaps of 1 to 4 days, gross figures whose difference is the day's PnL,
    losses now and then larger than the whole equity."""
    n = draw(st.integers(1, 30))
    gaps = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    day = date(2021, 1, 1)
    days = []
    for gap in gaps:
        day += timedelta(days=gap)
        days.append(day)
    money = st.floats(0, 500, allow_nan=False, allow_infinity=False)
    profit = draw(st.lists(money, min_size=n, max_size=n))
    loss = draw(st.lists(money, min_size=n, max_size=n))
    equity = draw(st.floats(1.0, 1e6))
    return days, [p - q for p, q in zip(profit, loss, strict=True)], profit, loss, equity


@settings(max_examples=150, deadline=None)
@given(versions())
def test_figures_are_finite_or_none_drawdown_non_negative_and_each_day_sees_only_its_past(
    version: tuple[list[date], list[float], list[float], list[float], float],
) -> None:
    days, pnl, profit, loss, equity = version
    series = daily_metrics(days, pnl, profit, loss, equity)
    assert [m.day for m in series] == days
    for i, m in enumerate(series):
        assert all(v is None or math.isfinite(v) for v in m.columns())
        assert m.max_drawdown_pct is not None
        assert m.max_drawdown_pct >= 0
        profit_so_far, loss_so_far = sum(profit[: i + 1]), sum(loss[: i + 1])
        if loss_so_far == 0 or not math.isfinite(profit_so_far / loss_so_far):
            assert m.profit_factor is None
        else:
            assert m.profit_factor == pytest.approx(profit_so_far / loss_so_far)
    for k in range(1, len(days) + 1):
        assert daily_metrics(days[:k], pnl[:k], profit[:k], loss[:k], equity) == series[:k]


# --- what the recorder stores -------------------------------------------------------------------
def trade(version: str, day: date, pnl: float) -> PaperTrade:
    exit_ms = int(np.datetime64(day.isoformat(), "ms").astype(np.int64)) + 3_600_000
    return PaperTrade(
        version, "ETH/USDT", exit_ms - 600_000, exit_ms, 1.0, 100.0, 101.0, pnl, 0.001, pnl * 1e4
    )


async def stored(pool: asyncpg.Pool, version: str) -> list[asyncpg.Record]:
    return list(
        await pool.fetch("SELECT * FROM model_performance WHERE model_version = $1 ORDER BY day", version)
    )


def recomputed(rows: list[asyncpg.Record], equity: Decimal) -> list[DayMetrics]:
    return daily_metrics(
        [r["day"] for r in rows],
        [r["pnl_quote"] for r in rows],
        [r["gross_profit_quote"] for r in rows],
        [r["gross_loss_quote"] for r in rows],
        equity,
    )


def columns(row: asyncpg.Record) -> tuple[float | None, ...]:
    return (row["sharpe"], row["sortino"], row["calmar"], row["max_drawdown_pct"], row["profit_factor"])


@pytest.mark.db
async def test_two_flushes_across_days_store_the_series_of_the_whole_version(db_pool: asyncpg.Pool) -> None:
    # Three symbols of 1000 quote each: the version's equity is 3000.
    recorder = PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"), symbols=3)
    recorder.record([trade("m-a", MAR[0], 0.01), trade("m-a", MAR[0], -0.005), trade("m-b", MAR[0], 0.002)])
    assert await recorder.flush(db_pool) == 2
    (monday,) = await stored(db_pool, "m-a")
    # Gross +10, -5 quote (0.01 and 0.005 of 1000); one day: only the profit factor 10 / 5.
    assert (monday["gross_profit_quote"], monday["gross_loss_quote"]) == (
        Decimal("10.00000000"),
        Decimal("5.00000000"),
    )
    assert columns(monday) == (None, None, None, 0.0, 2.0)

    # 1 Mar again, then 3 Mar (2 Mar has no row: a zero-return day) and 4 Mar.
    recorder.record(
        [
            trade("m-a", MAR[0], 0.004),
            trade("m-a", MAR[2], -0.02),
            trade("m-a", MAR[3], 0.015),
            trade("m-a", MAR[3], 0.001),
        ]
    )
    assert await recorder.flush(db_pool) == 3
    rows = await stored(db_pool, "m-a")
    assert [r["day"] for r in rows] == [MAR[0], MAR[2], MAR[3]]
    assert [r["gross_profit_quote"] for r in rows] == [
        Decimal("14.00000000"),
        Decimal("0E-8"),
        Decimal("16.00000000"),
    ]
    assert [r["gross_loss_quote"] for r in rows] == [
        Decimal("5.00000000"),
        Decimal("20.00000000"),
        Decimal("0E-8"),
    ]
    expected = recomputed(rows, Decimal("3000"))
    assert [columns(r) for r in rows] == [m.columns() for m in expected]
    # Worked check of one figure: 3 Mar's curve 3000 -> 3009 -> 3009 -> 2989, drawdown 20 / 3009.
    assert rows[1]["max_drawdown_pct"] == pytest.approx(20 / 3009 * 100)
    assert rows[2]["profit_factor"] == pytest.approx((14 + 0 + 16) / (5 + 20 + 0))
    assert rows[2]["sharpe"] is not None
    # The version's equity, not one symbol's: on 1000 alone the drawdown would be 20 / 1009.
    assert rows[1]["max_drawdown_pct"] != pytest.approx(20 / 1009 * 100)
    (other,) = await stored(db_pool, "m-b")
    assert columns(other) == (None, None, None, 0.0, None)  # only a win: no loss, no factor


@pytest.mark.db
async def test_a_later_day_leaves_the_earlier_rows_unwritten(db_pool: asyncpg.Pool) -> None:
    recorder = PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"))
    recorder.record([trade("m-a", MAR[0], 0.01), trade("m-a", MAR[1], -0.004)])
    await recorder.flush(db_pool)
    before = {r["day"]: r["updated_at"] for r in await stored(db_pool, "m-a")}
    recorder.record([trade("m-a", MAR[4], 0.002)])
    await recorder.flush(db_pool)
    after = {r["day"]: r["updated_at"] for r in await stored(db_pool, "m-a")}
    # A day's figures depend only on the days up to it: nothing to rewrite before 5 Mar.
    assert after[MAR[0]] == before[MAR[0]]
    assert after[MAR[1]] == before[MAR[1]]
    assert after[MAR[4]] > before[MAR[1]]


@pytest.mark.db
async def test_a_failed_flush_keeps_gross_figures_and_metrics_follow_on_the_next(
    db_pool: asyncpg.Pool, db_dsn: str
) -> None:
    recorder = PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"))
    recorder.record([trade("m-a", MAR[0], 0.01), trade("m-a", MAR[1], -0.004)])
    closed = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    await closed.close()
    with pytest.raises(asyncpg.InterfaceError):
        await recorder.flush(closed)
    recorder.record([trade("m-a", MAR[1], -0.002)])
    assert await recorder.flush(db_pool) == 2
    rows = await stored(db_pool, "m-a")
    assert [(r["gross_profit_quote"], r["gross_loss_quote"]) for r in rows] == [
        (Decimal("10.00000000"), Decimal("0E-8")),
        (Decimal("0E-8"), Decimal("6.00000000")),  # 0.004 + 0.002 of 1000, once each
    ]
    assert [columns(r) for r in rows] == [m.columns() for m in recomputed(rows, Decimal("1000"))]
    assert rows[1]["profit_factor"] == pytest.approx(10 / 6)


@pytest.mark.db
async def test_without_a_losing_trade_the_profit_factor_is_null(db_pool: asyncpg.Pool) -> None:
    recorder = PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"))
    recorder.record([trade("m-a", MAR[0], 0.01), trade("m-a", MAR[1], 0.003), trade("m-a", MAR[2], 0.02)])
    await recorder.flush(db_pool)
    nulls = await db_pool.fetchval(
        "SELECT count(*) FROM model_performance WHERE profit_factor IS NULL AND sortino IS NULL"
        " AND gross_loss_quote = 0 AND max_drawdown_pct = 0"
    )
    assert nulls == 3
    assert await db_pool.fetchval("SELECT count(*) FROM model_performance WHERE sharpe IS NOT NULL") == 2


def test_a_version_trades_at_least_one_symbol() -> None:
    with pytest.raises(ValueError, match="symbols=0"):
        PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"), symbols=0)
