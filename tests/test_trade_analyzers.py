"""The win and loss analyzers and the evidence they share, on hand-built hourly bars (the
arithmetic is in the comments), properties over random trades, and a handful of trades on the
bundled BTC bars."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_post_exit import HOUR, T0, check_row, series, trade  # the same builders and row checks

from huracan.analysis.attribution import SimilarSetups, attribute_features, edge_p_value
from huracan.analysis.losses import (
    LOSS_REASONS,
    LossAnalysis,
    analyze_loss,
    day_average_true_range_bps,
    loss_severity,
)
from huracan.analysis.post_exit import PostExit, track_post_exit
from huracan.analysis.trades import ANALYSIS_HORIZON, TradeFacts
from huracan.analysis.wins import WIN_QUALITIES, WinAnalysis, analyze_win
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import CandleSeries
from huracan.features.market import MARKET_FEATURES, Ohlcv, compute_market_features
from huracan.market.candle_files import find_candle_files, read_candle_file

CALM_DAY = [(100.0, 100.1, 99.9, 100.0)] * 24  # true range 0.2 / 100 = 20 bps a bar
Bar = tuple[float, float, float, float]

# A long from 100 at bar 0's open, out at 103 at bar 2's open; the 4h window is bars 2..5.
WIN_BARS: list[Bar] = [
    (100.0, 101.0, 99.5, 100.5),  # 0: entry bar
    (100.5, 103.5, 100.0, 103.0),  # 1: hold window: highest high 103.5, lowest low 99.5 (bar 0)
    (103.0, 104.0, 102.5, 103.5),  # 2: best after the exit, 104
    (103.5, 103.8, 102.0, 102.5),
    (102.5, 103.0, 101.0, 101.5),  # 4: worst after the exit, 101
    (101.5, 102.0, 101.0, 101.8),
]


def with_day_before(bars: list[Bar]) -> CandleSeries:
    return series(CALM_DAY + bars, start_ms=T0 - 24 * HOUR)


def setups(wins: int, losses: int) -> SimilarSetups:
    won = np.array([True] * wins + [False] * losses)
    return SimilarSetups(won, np.where(won, 50.0, -30.0), np.zeros((wins + losses, 70)))


STRONG = setups(16, 4)  # P(X >= 16 | 20, 0.5) = (4845 + 1140 + 190 + 20 + 1) / 2^20 = 6196 / 1048576
STRONG_P = 6196 / 1_048_576  # 0.005909


def tracked(facts: TradeFacts, candles: CandleSeries) -> PostExit:
    post = track_post_exit(facts, candles, ANALYSIS_HORIZON, HOUR)
    assert post is not None
    return post


def judged_win(bars: list[Bar], similar: SimilarSetups = STRONG, **changes: object) -> WinAnalysis:
    """A long of WIN_BARS' trade, changed, judged with its 4h post-exit row."""
    facts, candles = trade(**changes), series(bars)
    return analyze_win(facts, candles, tracked(facts, candles), similar, 0.5, HOUR)


# --- shared evidence ---------------------------------------------------------------------------
def test_edge_p_value_by_hand_and_against_a_direct_sum() -> None:
    assert edge_p_value(16, 20, 0.5) == pytest.approx(STRONG_P)
    assert edge_p_value(3, 3, 0.5) == pytest.approx(0.125)  # 0.5^3
    assert edge_p_value(0, 5, 0.3) == 1.0
    assert edge_p_value(1, 5, 0.0) == 0.0
    assert edge_p_value(5, 5, 1.0) == 1.0
    assert edge_p_value(0, 0, 0.5) is None
    direct = sum(math.comb(30, i) * 0.4**i * 0.6 ** (30 - i) for i in range(20, 31))
    assert edge_p_value(20, 30, 0.4) == pytest.approx(direct, rel=1e-12)
    p = edge_p_value(700, 1000, 0.6)  # far beyond math.comb's float range, exact in log space
    assert p is not None
    assert 0.0 < p < 1e-10
    with pytest.raises(ValueError, match="base_win_rate"):
        edge_p_value(1, 2, 1.5)


@given(st.integers(0, 60), st.integers(0, 60), st.floats(0.0, 1.0))
def test_edge_p_value_is_a_probability_falling_with_wins(wins: int, extra: int, base: float) -> None:
    n = wins + extra
    p = edge_p_value(wins, n, base)
    assert (p is None) == (n == 0)
    assert p is None or 0.0 <= p <= 1.0
    if wins < n:
        more = edge_p_value(wins + 1, n, base)
        assert p is not None
        assert more is not None
        assert more <= p + 1e-12


def test_features_that_pointed_to_a_win_by_contrast() -> None:
    # feature 0: winners 1, 2, 3; losers -1, -2, -3. Mean 0, squares sum 28, sample std sqrt(28 / 5)
    # = 2.36643; d = (2 - -2) / 2.36643 = 1.69031. The trade at 2.36643 is z = 1: score 1.69031.
    # feature 1: the same everywhere: no spread, score 0.
    # feature 2: winners 1, 1, 1; losers 1, 1, 4. Mean 1.5, squares 5 x 0.25 + 6.25 = 7.5, std
    # sqrt(1.5); d = (1 - 2) / sqrt(1.5); the trade at 0 is z = -1.5 / sqrt(1.5): d x z = 1.5 / 1.5 = 1.
    rows = np.array([[1, 5, 1], [2, 5, 1], [3, 5, 1], [-1, 5, 1], [-2, 5, 1], [-3, 5, 4]], dtype=np.float64)
    similar = SimilarSetups(np.array([True] * 3 + [False] * 3), np.zeros(6), rows)
    attribution = attribute_features(np.array([math.sqrt(5.6), 5.0, 0.0, 9.0]), similar)
    assert attribution.method == "contrast"
    assert attribution.scores == pytest.approx([1.690309, 0.0, 1.0], abs=1e-6)
    assert attribution.leading() == pytest.approx({"feature_0": 1.690309, "feature_2": 1.0}, abs=1e-6)
    assert list(attribution.leading()) == ["feature_0", "feature_2"]  # strongest first


def test_too_few_to_contrast_falls_back_to_deviations_and_skips_nan() -> None:
    # two winners only: feature 0 at 1 and 3 (mean 2, std sqrt 2); the trade at 5 is z = 3 / 1.41421
    # = 2.12132. Feature 1 has a NaN (warm-up): one finite value, no std, left out. Feature 2: the
    # trade at 2.5 is z = 0.35355, under a whole deviation.
    rows = np.array([[1.0, np.nan, 1.0], [3.0, 4.0, 3.0]])
    similar = SimilarSetups(np.array([True, True]), np.array([10.0, 20.0]), rows)
    attribution = attribute_features(np.array([5.0, 1.0, 2.5]), similar)
    assert attribution.method == "deviation"
    assert attribution.leading() == pytest.approx({"feature_0": 2.1213203})
    assert attribute_features(np.zeros(70), SimilarSetups.empty()).leading() == {}


def test_similar_setups_check_their_shapes() -> None:
    with pytest.raises(ValueError, match="similar setups"):
        SimilarSetups(np.array([True]), np.zeros(2), np.zeros((1, 70)))
    assert (len(SimilarSetups.empty()), SimilarSetups.empty().win_rate) == (0, None)


# --- wins ----------------------------------------------------------------------------------------
def test_an_optimal_win_by_hand() -> None:
    win = judged_win(WIN_BARS)
    assert win.win_quality == "OPTIMAL"
    # the best after the exit, 104, is 400 bps from the entry; the trade took 300: 0.75
    assert win.captured_move_ratio == pytest.approx(0.75)
    assert win.missed_profit_bps == pytest.approx(97.0874, abs=1e-4)  # (104 / 103 - 1) x 10000
    assert (win.pattern_occurrences, win.pattern_win_rate, win.regime_aligned) == (20, 0.8, True)
    assert win.edge_p_value == pytest.approx(STRONG_P)
    # entry: (103.5 - 100) / (103.5 - 99.5) = 0.875; exit over hold and post: (103 - 99.5) / (104 - 99.5)
    assert win.entry_quality == pytest.approx(0.875)
    assert win.exit_quality == pytest.approx(3.5 / 4.5)
    # 0.5 x (1 - 0.005909) + 0.25 x 0.8 + 0.25 x 1 = 0.947045; an optimal win boosts by all of it
    assert win.skill_score == pytest.approx(0.5 * (1 - STRONG_P) + 0.2 + 0.25)
    assert win.confidence_boost == pytest.approx(win.skill_score)
    assert win.contributing_features == {}  # every setup has the same features: nothing stands out
    assert all(text in win.lessons for text in ("OPTIMAL", "20 similar setups", "Captured 75%"))


RUN_AFTER_EXIT = [*WIN_BARS[:3], (103.5, 110.0, 103.0, 109.0), *WIN_BARS[4:]]


def test_an_early_exit() -> None:
    # after the exit the price ran to 110: 1000 bps from the entry, of which the trade took 300 (0.3),
    # and (110 / 103 - 1) x 10000 = 679.6 bps were missed, far above the exit cost of 10 bps
    win = judged_win(RUN_AFTER_EXIT)
    assert win.win_quality == "EARLY_EXIT"
    assert win.captured_move_ratio == pytest.approx(0.3)
    assert win.missed_profit_bps == pytest.approx(679.6117, abs=1e-4)
    assert win.confidence_boost == pytest.approx(0.5 * win.skill_score)


@pytest.mark.parametrize(
    ("bars", "similar", "changes"),
    [
        (WIN_BARS, setups(10, 10), {}),  # P(X >= 10 | 20, 0.5) = 0.588: no edge
        (WIN_BARS, SimilarSetups.empty(), {}),  # no setups: the edge is unproven
        (WIN_BARS, STRONG, {"confidence": 0.3}),  # below 0.4
        (WIN_BARS, STRONG, {"exit_regime": "high_vol_ranging"}),  # the regime changed under the trade
        (RUN_AFTER_EXIT, STRONG, {"confidence": 0.3}),  # luck comes before the early exit
    ],
)
def test_lucky_wins(bars: list[Bar], similar: SimilarSetups, changes: dict[str, object]) -> None:
    win = judged_win(bars, similar, **changes)
    assert win.win_quality == "LUCKY"
    assert "Lucky: " in win.lessons
    assert win.confidence_boost == 0.0


MARGINAL_NET = {"exit_price": 100.35, "pnl_bps": 15.0, "fees_bps": 20.0}  # 35 gross - 20: below the fees
TINY_NET = {"exit_price": 100.07, "pnl_bps": 4.0, "fees_bps": 3.0}  # 7 gross - 3: under 5 bps


@pytest.mark.parametrize("changes", [MARGINAL_NET, TINY_NET])
def test_marginal_wins_come_first(changes: dict[str, float]) -> None:
    # Both also lack an edge (no setups) and missed most of the move: MARGINAL still comes first.
    win = judged_win(WIN_BARS, SimilarSetups.empty(), **changes)
    assert win.win_quality == "MARGINAL"
    assert win.confidence_boost == 0.0


def test_a_win_without_post_exit_prices() -> None:
    candles = series(WIN_BARS[:2])
    win = analyze_win(trade(), candles, None, STRONG, 0.5, HOUR)
    assert win.win_quality == "OPTIMAL"  # nothing says the exit was early
    assert (win.captured_move_ratio, win.missed_profit_bps) == (None, None)
    # the exit at 103 within the hold window's 99.5..103.5: 3.5 / 4
    assert win.exit_quality == pytest.approx(0.875)


def test_a_short_win_mirrors_the_prices() -> None:
    # a short from 103.5 (bar 2's open) to 101.5 (bar 5's open): gross -(101.5 / 103.5 - 1) x 10000
    # = 193.2 bps. Hold window bars 2..4: lows down to 101 (best to cover), highs up to 104 (worst).
    bars = [*WIN_BARS, (101.8, 102.0, 100.0, 100.2), (100.2, 100.5, 99.0, 99.5), (99.5, 100.0, 99.2, 99.8)]
    bars[2] = (103.5, 104.0, 102.5, 103.5)
    prices = {"direction": "short", "entry_price": 103.5, "exit_price": 101.5, "pnl_bps": 173.2}
    facts = trade(entry_time_ms=T0 + 2 * HOUR, exit_time_ms=T0 + 5 * HOUR, **prices)
    candles = series(bars)
    post = tracked(facts, candles)
    assert post.best_price == 99.0  # lowest low of bars 5..8
    win = analyze_win(facts, candles, post, STRONG, 0.5, HOUR)
    # entry for a short: (103.5 - 101) / (104 - 101) = 0.8333; exit: (104 - 101.5) / (104 - 99) = 0.5
    assert win.entry_quality == pytest.approx(2.5 / 3.0)
    assert win.exit_quality == pytest.approx(0.5)
    # the move to 99: -(99 / 103.5 - 1) x 10000 = 434.8 bps; captured 193.24 / 434.78 = 0.4444;
    # missed -(99 / 101.5 - 1) x 10000 = 246.3 bps: an early exit
    assert win.captured_move_ratio == pytest.approx(2.0 / 4.5)
    assert win.win_quality == "EARLY_EXIT"


# --- losses --------------------------------------------------------------------------------------
CONFIRMED = setups(12, 8)  # expectancy (12 x 50 - 8 x 30) / 20 = 18 bps > 0, and 20 >= 5 setups
QUIET_ENTRY: Bar = (100.0, 100.5, 99.6, 100.2)  # typical 100.1: a long's fill at 100 is better than it


def loss(bars: list[Bar], **changes: object) -> tuple[TradeFacts, CandleSeries]:
    """A long from 100 out at 99.5 (-50 gross, -70 net) unless changed, after a calm day."""
    facts = trade(**{"exit_price": 99.5, "pnl_bps": -70.0, **changes})
    return facts, with_day_before(bars)


def judged_loss(bars: list[Bar], similar: SimilarSetups = CONFIRMED, **changes: object) -> LossAnalysis:
    facts, candles = loss(bars, **changes)
    return analyze_loss(facts, candles, tracked(facts, candles), similar, HOUR)


STOPPED: dict[str, object] = {"exit_reason": "stop_loss"}
DRIFT_DOWN: list[Bar] = [QUIET_ENTRY, (100.2, 100.3, 99.4, 99.5), *[(99.5, 99.6, 99.3, 99.4)] * 4]


def test_costs_exceeded_the_move() -> None:
    # gross (100.05 / 100 - 1) x 10000 = +5 bps, 20 of fees: -15 net
    result = judged_loss(DRIFT_DOWN, exit_price=100.05, pnl_bps=-15.0)
    # the only reason; 15 bps < 25 with no stop: minor, preventable, penalty 0.1
    assert (result.primary_failure_reason, result.secondary_reasons) == ("costs_exceeded_move", ())
    assert (result.severity, result.preventable, result.confidence_penalty) == ("minor", True, 0.1)
    assert result.detail["score_costs_exceeded_move"] == 1.0


def test_a_stop_too_tight() -> None:
    # stop at 99 (100 bps), taken at 99; after the exit the price recovered to 101: (101 / 100 - 1)
    # x 10000 - 20 of fees = 80 bps past the entry: strength 80 / 100 = 0.8, score 0.9 x 0.9 = 0.81
    bars = [QUIET_ENTRY, (100.2, 100.3, 99.0, 99.1), (99.0, 100.0, 98.9, 99.8), (99.8, 101.0, 99.7, 100.8)]
    bars += [(100.8, 100.9, 100.5, 100.6)] * 2
    facts, candles = loss(bars, exit_price=99.0, pnl_bps=-120.0, stop_loss_price=99.0, **STOPPED)
    result = analyze_loss(facts, candles, tracked(facts, candles), CONFIRMED, HOUR)
    assert result.primary_failure_reason == "stop_too_tight"
    assert result.detail["recovery_past_entry_bps"] == pytest.approx(80.0)
    assert result.detail["score_stop_too_tight"] == pytest.approx(0.81)
    # 120 bps is severe (75..200) and 1.2 stop distances too (0.75..1.25): severe, penalty 0.5
    assert (result.severity, result.confidence_penalty) == ("severe", 0.5)
    assert result.stop_distance_bps == pytest.approx(100.0)
    # the deepest excursion: bar 1's low of 99.0, 100 bps under the entry
    assert result.adverse_move_bps == pytest.approx(100.0)
    # without the post-exit prices no recovery can be seen
    blind = analyze_loss(facts, candles, None, CONFIRMED, HOUR)
    assert blind.primary_failure_reason == "insufficient_confirmation"


def test_a_stop_too_wide() -> None:
    # the calm day before entry: 24 bars of true range 20 bps. A stop 200 bps away is 10 of them,
    # beyond 6: strength 10 / 6 - 1 = 0.6667, score 0.7 x (0.5 + 0.3333) = 0.5833
    bars = [QUIET_ENTRY, (100.2, 100.3, 97.9, 98.0), *[(98.0, 98.1, 97.5, 97.6)] * 4]
    facts, candles = loss(bars, exit_price=98.0, pnl_bps=-220.0, stop_loss_price=98.0, **STOPPED)
    assert day_average_true_range_bps(candles, T0) == pytest.approx(20.0)
    result = analyze_loss(facts, candles, tracked(facts, candles), CONFIRMED, HOUR)
    assert result.primary_failure_reason == "stop_too_wide"
    assert result.detail["stop_atr_multiple"] == pytest.approx(10.0)
    assert result.detail["score_stop_too_wide"] == pytest.approx(0.7 * (0.5 + 0.5 * (10 / 6 - 1)))
    # 220 bps is critical (>= 200) though only 1.1 stop distances (severe): the worse, critical
    assert (result.severity, result.confidence_penalty) == ("critical", 0.8)


def test_adverse_selection_by_the_entry_bar_and_by_slippage() -> None:
    # entry bar 100 / 100.2 / 98.8 / 99: typical (100.2 + 98.8 + 99) / 3 = 99.3333, range 1.4; the fill
    # at 100 is (100 - 99.3333) / 1.4 = 0.4762 of the range worse, past 0.4: strength (0.4762 - 0.4)
    # / 0.6 = 0.12698, score 0.8 x (0.5 + 0.06349) = 0.45079
    bars = [(100.0, 100.2, 98.8, 99.0), *DRIFT_DOWN[1:]]
    result = judged_loss(bars)
    assert result.primary_failure_reason == "adverse_selection"
    assert result.detail["entry_worse_than_typical_range_share"] == pytest.approx(0.476190, abs=1e-6)
    assert result.detail["score_adverse_selection"] == pytest.approx(0.450794, abs=1e-6)
    assert result.severity == "moderate"  # 70 bps
    # slippage of 30 bps against a limit of 3 x 4 = 12: strength 30 / 12 - 1 > 1 -> 1, score 0.8
    result = judged_loss(DRIFT_DOWN, slippage_bps=30.0)
    assert result.primary_failure_reason == "adverse_selection"
    assert result.detail["score_adverse_selection"] == pytest.approx(0.8)


def test_a_regime_change_is_not_preventable() -> None:
    result = judged_loss(DRIFT_DOWN, exit_regime="high_vol_trending")
    assert (result.primary_failure_reason, result.regime_changed) == ("regime_change", True)
    assert result.preventable is False
    assert result.confidence_penalty == pytest.approx(0.25 * 0.5)  # moderate, halved
    assert result.secondary_reasons == ()


def test_scores_rank_several_reasons() -> None:
    # a regime change (0.6) beats the faint adverse entry of the bar above (0.45) ...
    bars = [(100.0, 100.2, 98.8, 99.0), *DRIFT_DOWN[1:]]
    result = judged_loss(bars, exit_regime="high_vol_trending", confidence=0.2)
    assert result.primary_failure_reason == "regime_change"
    # ... then adverse selection 0.4508, then confidence 0.2 under 0.4: strength 0.5, score 0.375
    assert result.secondary_reasons == ("adverse_selection", "insufficient_confirmation")
    assert result.detail["score_insufficient_confirmation"] == pytest.approx(0.375)
    # ... but heavy slippage makes adverse selection clear (0.8) and it takes over
    result = judged_loss(bars, exit_regime="high_vol_trending", slippage_bps=30.0)
    assert result.primary_failure_reason == "adverse_selection"
    assert result.secondary_reasons == ("regime_change",)
    assert result.preventable is True


def test_insufficient_confirmation_matched_or_by_default() -> None:
    facts, candles = loss(DRIFT_DOWN)
    post = tracked(facts, candles)
    clean = analyze_loss(facts, candles, post, CONFIRMED, HOUR)
    assert (clean.primary_failure_reason, clean.secondary_reasons) == ("insufficient_confirmation", ())
    assert "score_insufficient_confirmation" not in clean.detail  # no rule matched
    for similar in (SimilarSetups.empty(), setups(3, 17), setups(2, 2)):  # none, expectancy < 0, too few
        result = analyze_loss(facts, candles, post, similar, HOUR)
        assert result.primary_failure_reason == "insufficient_confirmation"
        assert result.detail["score_insufficient_confirmation"] == pytest.approx(0.5)


def test_misleading_features_are_those_that_pointed_to_a_win() -> None:
    # rsi_14 was high in the winners (1) and low in the losers (-1); the trade entered at 1
    rsi = MARKET_FEATURES.index("rsi_14")
    rows = np.zeros((8, 70))
    rows[:4, rsi], rows[4:, rsi] = 1.0, -1.0
    similar = SimilarSetups(np.array([True] * 4 + [False] * 4), np.array([40.0] * 4 + [-20.0] * 4), rows)
    features = np.zeros(80)
    features[rsi] = 1.0
    assert judged_loss(DRIFT_DOWN, similar, entry_features=features).misleading_features == ("rsi_14",)


def test_severity_by_bps_and_by_stop_distance() -> None:
    assert loss_severity(10.0, None) == "minor"
    assert loss_severity(10.0, 20.0) == "moderate"  # half the stop distance
    assert loss_severity(74.0, None) == "moderate"
    assert loss_severity(150.0, 150.0) == "severe"
    assert loss_severity(100.0, 50.0) == "critical"  # two stop distances: the stop did not hold
    assert loss_severity(250.0, 500.0) == "critical"


def test_each_analyzer_refuses_the_other_outcome() -> None:
    with pytest.raises(ValueError, match="won"):
        analyze_loss(trade(), series(WIN_BARS), None, CONFIRMED, HOUR)
    with pytest.raises(ValueError, match="did not win"):
        analyze_win(trade(pnl_bps=0.0), series(WIN_BARS), None, STRONG, 0.5, HOUR)  # breakeven is no win


# --- properties ----------------------------------------------------------------------------------
@st.composite
def cases(draw: st.DrawFn) -> tuple[TradeFacts, CandleSeries, SimilarSetups]:
    count = draw(st.integers(1, 12))
    closes = [100.0]
    for _ in range(count):
        closes.append(closes[-1] * (1.0 + draw(st.floats(-0.05, 0.05))))
    rows = [
        (a, max(a, b) * (1.0 + draw(st.floats(0.0, 0.02))), min(a, b) * (1.0 - draw(st.floats(0.0, 0.02))), b)
        for a, b in itertools.pairwise(closes)
    ]
    entry_index = draw(st.integers(0, count - 1))
    exit_index = draw(st.integers(entry_index, count - 1))
    direction = draw(st.sampled_from(["long", "short"]))
    entry_price = rows[entry_index][0] * (1.0 + draw(st.floats(-0.01, 0.01)))
    exit_price = rows[exit_index][3] * (1.0 + draw(st.floats(-0.01, 0.01)))
    fees = draw(st.floats(0.0, 40.0))
    sign = 1.0 if direction == "long" else -1.0
    stop = draw(st.none() | st.floats(0.001, 0.1)) if draw(st.booleans()) else None
    facts = trade(
        direction=direction,
        entry_time_ms=T0 + entry_index * HOUR,
        exit_time_ms=T0 + exit_index * HOUR + draw(st.integers(0, HOUR - 1)),
        entry_price=entry_price,
        exit_price=exit_price,
        pnl_bps=sign * (exit_price / entry_price - 1.0) * 10_000.0 - fees,
        fees_bps=fees,
        slippage_bps=draw(st.floats(-5.0, 40.0)),
        exit_reason=draw(st.sampled_from(["stop_loss", "signal", "take_profit", "time_exit"])),
        exit_regime=draw(st.sampled_from([None, "unknown", "low_vol_trending", "high_vol_ranging"])),
        confidence=draw(st.none() | st.floats(0.0, 1.0)),
        entry_features=np.array(draw(st.lists(st.floats(-3, 3), min_size=80, max_size=80))),
        stop_loss_price=None if stop is None else entry_price * (1.0 - sign * stop),
    )
    n = draw(st.integers(0, 12))
    won = np.array(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_)
    features = np.array(draw(st.lists(st.floats(-3, 3), min_size=n * 70, max_size=n * 70))).reshape(n, 70)
    similar = SimilarSetups(won, np.where(won, 30.0, -30.0), features)
    return facts, with_day_before(rows), similar


def check_win(win: WinAnalysis, similar: SimilarSetups) -> None:
    assert win.win_quality in WIN_QUALITIES
    for value in (win.captured_move_ratio, win.missed_profit_bps):
        assert value is None or value >= 0.0
    units = (win.skill_score, win.confidence_boost, win.pattern_win_rate, win.edge_p_value, win.entry_quality)
    for unit in (*units, win.exit_quality, win.captured_move_ratio):
        assert unit is None or 0.0 <= unit <= 1.0
    assert win.pattern_occurrences == len(similar)
    assert set(win.contributing_features) <= set(MARKET_FEATURES)
    assert all(math.isfinite(v) for v in win.contributing_features.values())


def check_loss(result: LossAnalysis) -> None:
    assert result.primary_failure_reason in LOSS_REASONS
    assert set(result.secondary_reasons) <= set(LOSS_REASONS)
    assert result.primary_failure_reason not in result.secondary_reasons
    assert len(set(result.secondary_reasons)) == len(result.secondary_reasons)
    assert result.severity in ("minor", "moderate", "severe", "critical")
    assert 0.0 <= result.confidence_penalty <= 1.0
    assert result.stop_distance_bps is None or result.stop_distance_bps >= 0.0
    assert result.adverse_move_bps is not None
    assert result.adverse_move_bps >= 0.0
    assert set(result.misleading_features) <= set(MARKET_FEATURES)
    json.dumps(result.detail, allow_nan=False)  # jsonb takes it


@settings(max_examples=150, deadline=None)
@given(cases(), st.floats(0.0, 1.0))
def test_every_analysis_respects_its_table(
    case: tuple[TradeFacts, CandleSeries, SimilarSetups], base: float
) -> None:
    facts, candles, similar = case
    post = track_post_exit(facts, candles, ANALYSIS_HORIZON, HOUR)
    if post is not None:
        check_row(post, facts, ANALYSIS_HORIZON)
    if facts.won:
        check_win(analyze_win(facts, candles, post, similar, base, HOUR), similar)
    else:
        check_loss(analyze_loss(facts, candles, post, similar, HOUR))


# --- real bars -----------------------------------------------------------------------------------
def test_synthetic_trades_on_the_bundled_btc_bars() -> None:
    """Trades of 12 five-minute bars at real bars, long and short, judged against the setups that
    closed before them (their features computed from the bars); all finite and in range."""
    step = 300_000
    full = read_candle_file(find_candle_files(BUNDLED_CANDLES_DIR, "5m")["BTC/USDT"])
    candles = full.between(int(full.open_time_ms[0]), int(full.open_time_ms[3_000]))
    rows = compute_market_features(Ohlcv.from_series(candles))
    trades: list[TradeFacts] = []
    for k, entry in enumerate(range(400, 2_800, 60)):
        sign = 1.0 if k % 2 == 0 else -1.0
        entry_price, exit_price = float(candles.open[entry]), float(candles.open[entry + 12])
        trades.append(
            trade(
                trade_id=k,
                direction="long" if sign > 0 else "short",
                entry_time_ms=int(candles.open_time_ms[entry]),
                exit_time_ms=int(candles.open_time_ms[entry + 12]),
                entry_price=entry_price,
                exit_price=exit_price,
                pnl_bps=sign * (exit_price / entry_price - 1.0) * 10_000.0 - 20.0,
                entry_features=np.concatenate([rows[entry - 1], np.zeros(10)]),
                stop_loss_price=entry_price * (1.0 - sign * 0.015),
            )
        )
    qualities, reasons = set(), set()
    for k, facts in enumerate(trades):
        before = trades[max(0, k - 20) : k]
        similar = SimilarSetups(
            np.array([t.won for t in before], dtype=np.bool_),
            np.array([t.pnl_bps for t in before]),
            np.array([t.entry_features[:70] for t in before]).reshape(len(before), 70),
        )
        post = track_post_exit(facts, candles, ANALYSIS_HORIZON, step)
        assert post is not None
        check_row(post, facts, ANALYSIS_HORIZON)
        if facts.won:
            win = analyze_win(facts, candles, post, similar, 0.5, step)
            check_win(win, similar)
            assert win.captured_move_ratio is not None
            qualities.add(win.win_quality)
        else:
            result = analyze_loss(facts, candles, post, similar, step)
            check_loss(result)
            assert result.detail["atr_day_before_bps"] is not None  # a whole day of real bars before it
            reasons.add(result.primary_failure_reason)
    assert qualities
    assert reasons
