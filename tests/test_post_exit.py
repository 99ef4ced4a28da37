"""The post-exit tracker on hand-built hourly bars (the arithmetic is in the comments), its
None-until-covered behaviour, shorts, and properties over random bars and trades."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.analysis.post_exit import (
    PostExit,
    favourable_bps,
    hold_window,
    horizon_covered,
    track_post_exit,
)
from huracan.analysis.trades import HORIZONS, TradeFacts
from huracan.core.candle import CandleSeries

HOUR = 3_600_000
T0 = 1_609_545_600_000  # 2021-01-02 00:00 UTC, a bar open for any timeframe up to a day

# Hourly bars (open, high, low, close); a long enters at bar 0's open and exits at bar 2's open.
BARS = [
    (100.0, 102.0, 99.0, 101.0),  # 0: entry bar
    (101.0, 104.0, 100.0, 103.0),  # 1: best of the hold window, 104
    (103.0, 105.0, 102.0, 104.0),  # 2: exit at its open, 103; the 4h window is bars 2..5
    (104.0, 106.0, 103.0, 105.0),  # 3: best after the exit, 106
    (105.0, 105.5, 101.0, 102.0),  # 4: worst after the exit, 101
    (102.0, 103.0, 101.5, 102.5),  # 5: closes at the horizon, 102.5
]


def series(
    bars: list[tuple[float, float, float, float]], start_ms: int = T0, step_ms: int = HOUR
) -> CandleSeries:
    columns = np.array(bars, dtype=np.float64).reshape(-1, 4).T
    return CandleSeries(
        "binance",
        "BTC/USDT",
        "1h",
        start_ms + step_ms * np.arange(len(bars), dtype=np.int64),
        columns[0].copy(),
        columns[1].copy(),
        columns[2].copy(),
        columns[3].copy(),
        np.ones(len(bars)),
    )


def trade(**changes: object) -> TradeFacts:
    facts: dict[str, object] = {
        "trade_id": 1,
        "symbol": "BTC/USDT",
        "direction": "long",
        "entry_time_ms": T0,
        "exit_time_ms": T0 + 2 * HOUR,
        "entry_price": 100.0,
        "exit_price": 103.0,
        "pnl_bps": 280.0,
        "fees_bps": 20.0,
        "slippage_bps": 0.0,
        "exit_reason": "signal",
        "entry_regime": "low_vol_trending",
        "exit_regime": "low_vol_trending",
        "confidence": 0.8,
        "size_multiplier": 1.0,
        "model_version": "v1",
        "entry_features": np.zeros(80),
        "stop_loss_price": None,
        "take_profit_price": None,
    }
    facts.update(changes)
    return TradeFacts(**facts)  # type: ignore[arg-type]


def test_a_long_by_hand() -> None:
    post = track_post_exit(trade(), series(BARS), "4h", HOUR)
    assert post is not None
    assert post.horizon == "4h"
    assert post.horizon_time_ms == T0 + 6 * HOUR  # exit at T0 + 2h, plus 4h
    assert post.price_at_horizon == 102.5  # bar 5's close
    assert (post.best_price, post.best_price_at_ms) == (106.0, T0 + 3 * HOUR)
    assert (post.worst_price, post.worst_price_at_ms) == (101.0, T0 + 4 * HOUR)
    # from the exit at 103 to 106: (106 / 103 - 1) x 10000 = 291.262 bps
    assert post.missed_profit_bps == pytest.approx(291.2621, abs=1e-4)
    # 106 after the exit beats the hold window's 104
    assert post.optimal_exit_time_ms == T0 + 3 * HOUR
    assert post.optimal_exit_price == 106.0
    # at the horizon 102.5 against the exit 103: -48.5 bps, below the exit cost of 20 / 2 = 10
    assert post.should_have_held is False
    # the hold window's 104 against 103: +97.1 bps, above 10
    assert post.should_have_exited_earlier is True


def test_a_short_by_hand() -> None:
    # A short from 100 (bar 0's open) to 103: its best prices are the lows.
    short = trade(direction="short", pnl_bps=-320.0)
    post = track_post_exit(short, series(BARS), "4h", HOUR)
    assert post is not None
    assert (post.best_price, post.best_price_at_ms) == (101.0, T0 + 4 * HOUR)  # lowest low after exit
    assert (post.worst_price, post.worst_price_at_ms) == (106.0, T0 + 3 * HOUR)  # highest high
    # covering at 101 instead of 103: -(101 / 103 - 1) x 10000 = 194.175 bps
    assert post.missed_profit_bps == pytest.approx(194.1748, abs=1e-4)
    # the hold window's low of 99 (bar 0) beats the 101 after the exit
    assert post.optimal_exit_time_ms == T0
    assert post.optimal_exit_price == 99.0
    # at the horizon 102.5: -(102.5 / 103 - 1) x 10000 = +48.5 bps for a short, above 10
    assert post.should_have_held is True
    # 99 in the hold window: -(99 / 103 - 1) x 10000 = +388 bps
    assert post.should_have_exited_earlier is True


def test_small_differences_within_the_exit_cost_are_no_mistake() -> None:
    # Exit at 103.9 with 40 bps of fees (exit cost 20 bps): the hold window's 104 is only
    # (104 / 103.9 - 1) x 10000 = 9.6 bps better, and the price at the horizon is below the exit.
    post = track_post_exit(trade(exit_price=103.9, fees_bps=40.0), series(BARS), "4h", HOUR)
    assert post is not None
    assert post.should_have_exited_earlier is False
    assert post.should_have_held is False
    # the 106 after the exit is still missed: (106 / 103.9 - 1) x 10000 = 202.117 bps
    assert post.missed_profit_bps == pytest.approx(202.1174, abs=1e-4)


def test_no_missed_profit_when_the_price_only_fell() -> None:
    falling = [*BARS[:2], (103.0, 103.0, 101.0, 101.5), (101.5, 102.0, 100.0, 100.5)]
    post = track_post_exit(trade(), series(falling), "1h", HOUR)
    assert post is not None
    # the 1h window is bar 2 alone: its best, 103, equals the exit: nothing missed
    assert post.best_price == 103.0
    assert post.missed_profit_bps == 0.0
    assert post.price_at_horizon == 101.5


def test_none_until_the_candles_cover_the_horizon() -> None:
    facts = trade()
    # bars 0..4: the last closes at T0 + 5h, before the 4h horizon at T0 + 6h
    assert track_post_exit(facts, series(BARS[:5]), "4h", HOUR) is None
    assert not horizon_covered(facts, series(BARS[:5]), "4h", HOUR)
    assert track_post_exit(facts, series(BARS), "4h", HOUR) is not None
    # the 1h horizon (T0 + 3h) is covered by bar 2 already
    assert track_post_exit(facts, series(BARS[:3]), "1h", HOUR) is not None
    assert track_post_exit(facts, series(BARS[:2]), "1h", HOUR) is None
    assert track_post_exit(facts, series([]), "1h", HOUR) is None


def test_an_outage_over_the_whole_window_stays_none_and_says_so() -> None:
    # bars 0, 1, then nothing until T0 + 8h: past the horizon, but no bar after the exit within it
    gapped = series(BARS[:2])
    late = series([BARS[5]], start_ms=T0 + 8 * HOUR)
    candles = CandleSeries(
        "binance",
        "BTC/USDT",
        "1h",
        np.concatenate([gapped.open_time_ms, late.open_time_ms]),
        *(
            np.concatenate([getattr(gapped, c), getattr(late, c)])
            for c in ("open", "high", "low", "close", "volume")
        ),
    )
    assert horizon_covered(trade(), candles, "4h", HOUR)
    assert track_post_exit(trade(), candles, "4h", HOUR) is None


def test_a_trade_closed_inside_its_entry_bar_still_has_a_hold_window() -> None:
    # entry at 00:10, exit at 00:40: the hold window is the entry bar (opened 00:00)
    inside = trade(entry_time_ms=T0 + 600_000, exit_time_ms=T0 + 2_400_000, exit_price=101.5)
    window = hold_window(inside, series(BARS), HOUR)
    assert window.open_time_ms.tolist() == [T0]
    # post-exit window [00:40, 01:40): bar 1 (opened 01:00) alone; its close 103 at the horizon
    post = track_post_exit(inside, series(BARS), "1h", HOUR)
    assert post is not None
    assert post.price_at_horizon == 103.0
    assert post.best_price == 104.0
    # the entry bar's 102 against the exit at 101.5: +49.3 bps > 10
    assert post.should_have_exited_earlier is True


def test_bad_horizon_and_timeframe_are_named() -> None:
    with pytest.raises(ValueError, match="'2h'"):
        track_post_exit(trade(), series(BARS), "2h", HOUR)
    with pytest.raises(ValueError, match="timeframe_ms"):
        track_post_exit(trade(), series(BARS), "1h", 0)


# --- properties -----------------------------------------------------------------------------------
@st.composite
def bars_and_trade(draw: st.DrawFn) -> tuple[CandleSeries, TradeFacts, str]:
    """Random 15-minute bars (the 1h horizon is 4 bars, 4h 16) and a trade inside them."""
    step = 900_000
    count = draw(st.integers(2, 40))
    closes = [100.0]
    for _ in range(count):
        closes.append(closes[-1] * (1.0 + draw(st.floats(-0.05, 0.05))))
    rows = []
    for previous, close in itertools.pairwise(closes):
        high = max(previous, close) * (1.0 + draw(st.floats(0.0, 0.02)))
        low = min(previous, close) * (1.0 - draw(st.floats(0.0, 0.02)))
        rows.append((previous, high, low, close))
    candles = series(rows, step_ms=step)
    entry_index = draw(st.integers(0, count - 1))
    exit_index = draw(st.integers(entry_index, count - 1))
    entry_offset = draw(st.integers(0, step - 1))
    exit_ms = T0 + exit_index * step + draw(st.integers(0, step - 1))
    entry_ms = min(T0 + entry_index * step + entry_offset, exit_ms)
    facts = trade(
        direction=draw(st.sampled_from(["long", "short"])),
        entry_time_ms=entry_ms,
        exit_time_ms=exit_ms,
        entry_price=rows[entry_index][0] * (1.0 + draw(st.floats(-0.01, 0.01))),
        exit_price=rows[exit_index][3] * (1.0 + draw(st.floats(-0.01, 0.01))),
        fees_bps=draw(st.floats(0.0, 50.0)),
    )
    return candles, facts, draw(st.sampled_from(sorted(HORIZONS)))


@settings(max_examples=300, deadline=None)
@given(bars_and_trade())
def test_every_row_respects_the_table(case: tuple[CandleSeries, TradeFacts, str]) -> None:
    candles, facts, horizon = case
    post = track_post_exit(facts, candles, horizon, 900_000)
    if post is None:
        return
    check_row(post, facts, horizon)


def check_row(post: PostExit, facts: TradeFacts, horizon: str) -> None:
    assert post.horizon in HORIZONS
    assert post.horizon_time_ms == facts.exit_time_ms + HORIZONS[horizon]
    assert post.price_at_horizon > 0
    assert post.best_price > 0
    assert post.worst_price > 0
    assert post.missed_profit_bps >= 0.0
    # best never worse than worst for the direction
    assert facts.sign * (post.best_price - post.worst_price) >= 0.0
    assert facts.exit_time_ms <= post.best_price_at_ms < post.horizon_time_ms
    assert facts.exit_time_ms <= post.worst_price_at_ms < post.horizon_time_ms
    assert post.optimal_exit_time_ms is not None
    assert post.optimal_exit_time_ms < post.horizon_time_ms
    # the optimal exit is at least as good as the best after the exit, so never later than it
    assert post.optimal_exit_time_ms <= post.best_price_at_ms
    assert post.missed_profit_bps == pytest.approx(
        max(0.0, favourable_bps(facts.sign, facts.exit_price, post.best_price))
    )
