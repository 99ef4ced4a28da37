"""The pattern library: clustering by radius, the statistics worked by hand, the Kelly sizing,
reliability, and a rebuild that reproduces what live recording gave."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.analysis.trades import TradeFacts
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder, bundled_market_rows
from huracan.memory.patterns import (
    DEFAULT_RADIUS,
    MIN_ADEQUATE_SAMPLE,
    PatternLibrary,
    TradeOutcome,
    kelly_fraction,
    kelly_size_multiplier,
)

T0 = 1_700_000_000_000


def at(*head: float) -> np.ndarray:
    """An embedding: the given leading numbers, zeros after."""
    vector = np.zeros(EMBEDDING_DIM)
    vector[: len(head)] = head
    return vector


def outcome(
    trade_id: int, pnl_bps: float, *, hold_ms: int = 60_000, exit_ms: int | None = None
) -> TradeOutcome:
    return TradeOutcome(
        trade_id, pnl_bps, hold_ms, T0 + trade_id * 1000 if exit_ms is None else exit_ms, pnl_bps > 0
    )


def test_a_trade_joins_within_the_radius_and_starts_a_pattern_beyond_it() -> None:
    library = PatternLibrary(radius=1.0)
    assert library.nearest_pattern(at(0.0)) is None
    assert library.needs_new_pattern(at(0.0))
    library.add_pattern(10, at(0.0))
    assert library.nearest_pattern(at(0.6, 0.8)) == (10, 1.0)  # 3-4-5: on the edge, exactly
    assert not library.needs_new_pattern(at(0.6, 0.8))  # within means <= radius
    assert library.needs_new_pattern(at(1.1))
    library.add_pattern(11, at(2.0))
    nearest = library.nearest_pattern(at(1.1))
    assert nearest is not None
    assert nearest[0] == 11
    assert nearest[1] == pytest.approx(0.9)
    # The centroid is the running mean of its members. Created with none, the first one moves
    # it all the way, c + (0.9 - c) / 1 = 0.9; the second halves the gap, 0.9 + (0.3 - 0.9) / 2.
    library.record(10, outcome(1, 5.0), at(0.9))
    np.testing.assert_allclose(library.centroid(10), at(0.9), atol=1e-7)
    library.record(10, outcome(2, 5.0), at(0.3))
    np.testing.assert_allclose(library.centroid(10), at(0.6), atol=1e-7)
    assert library.stats(10).centroid.dtype == np.float32
    assert len(library) == 2
    assert library.pattern_ids() == [10, 11]


def test_statistics_of_a_small_pattern_worked_by_hand() -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    # Exit order 1..5: pnl +30, -10, 0, +20, -20 bps; recorded out of order on purpose.
    trades = {
        1: outcome(1, 30.0, hold_ms=60_000),
        2: outcome(2, -10.0, hold_ms=120_000),
        3: outcome(3, 0.0, hold_ms=300_000),
        4: outcome(4, 20.0, hold_ms=60_000),
        5: outcome(5, -20.0, hold_ms=90_000),
    }
    for trade_id in (4, 1, 5, 3, 2):
        library.record(1, trades[trade_id], at(0.0))
    stats = library.stats(1)
    assert (stats.occurrences, stats.wins, stats.losses) == (5, 2, 2)  # the 0 is neither
    assert stats.win_rate == pytest.approx(0.4)  # 2 / 5
    assert stats.avg_profit_bps == pytest.approx(4.0)  # 20 / 5
    assert stats.avg_hold_ms == 126_000  # 630,000 / 5
    # Deviations from 4: 26, -14, -4, 16, -24; squares sum to 1720; / 4 = 430 -> std 20.7364.
    assert stats.sharpe == pytest.approx(4.0 / math.sqrt(430.0))
    # Cumulative in exit order: 0, 30, 20, 20, 40, 20: the falls are 10 (30 -> 20) and 20 (40 -> 20).
    assert stats.max_drawdown_bps == pytest.approx(20.0)
    assert stats.profit_factor == pytest.approx(50.0 / 30.0)
    assert stats.reliability == pytest.approx(5 / 15)  # n / (n + 10), no penalty yet
    assert not stats.sample_adequate
    assert stats.optimal_size_multiplier is None
    assert stats.optimal_exit_threshold is None
    assert stats.optimal_hold_ms is None
    assert stats.confidence_penalty == 0.0

    library.record_penalty(1, 2, 0.5)
    library.record_penalty(1, 5, 0.3)
    stats = library.stats(1)
    assert stats.confidence_penalty == pytest.approx(0.4)  # mean over the two analysed losses
    # 1/3 x (1 - (0.5 + 0.3) / 5) = 1/3 x 0.84 = 0.28
    assert stats.reliability == pytest.approx(0.28)
    # Best moves after entry: 50 bps at 10 min, 10 at 1 min, 25 at 5 min: medians 25 bps, 5 min.
    library.record_post_exit(1, 1, 50.0, 600_000)
    library.record_post_exit(1, 2, 10.0, 60_000)
    library.record_post_exit(1, 4, 25.0, 300_000)
    stats = library.stats(1)
    assert stats.optimal_exit_threshold == pytest.approx(25.0)
    assert stats.optimal_hold_ms == 300_000


def test_undefined_figures_are_none_and_an_empty_pattern_has_the_column_defaults() -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    empty = library.stats(1)
    assert (empty.occurrences, empty.win_rate, empty.avg_profit_bps, empty.reliability) == (0, 0.0, 0.0, 0.0)
    assert empty.avg_hold_ms is None
    assert empty.sharpe is None
    assert empty.max_drawdown_bps is None
    library.record(1, outcome(1, 15.0), at(0.0))
    one = library.stats(1)
    assert one.sharpe is None  # one trade: no standard deviation
    assert one.profit_factor is None  # no loss
    assert one.max_drawdown_bps == 0.0  # 0 -> 15: never below a peak
    library.record(1, outcome(2, 15.0), at(0.0))
    assert library.stats(1).sharpe is None  # identical results: no spread to divide by


@pytest.mark.parametrize(
    ("wins", "losses", "avg_win", "avg_loss", "kelly", "size"),
    [
        (55, 45, 10.0, 10.0, 0.10, 1.0),  # p .55, b 1: f = .55 - .45 = .1, half .05 -> 0.5 + .05 / .1
        (50, 50, 10.0, 10.0, 0.0, 0.5),  # no edge -> the smallest size
        (60, 40, 10.0, 10.0, 0.20, 1.5),  # half Kelly .1 = the cap
        (40, 60, 20.0, 10.0, 0.10, 1.0),  # p .4, b 2: .4 - .6 / 2 = .1
        (50, 50, 20.0, 10.0, 0.25, 1.5),  # .5 - .5 / 2 = .25, half .125 capped at .1
        (45, 55, 10.0, 10.0, -0.10, 0.5),  # negative edge: still the smallest size, never 0
        (30, 0, 10.0, 0.0, 1.0, 1.5),  # never lost
        (0, 30, 0.0, 10.0, -1.0, 0.5),  # never won
        (52, 48, 12.0, 10.0, 0.12, 1.1),  # .52 - .48 / 1.2 = .12, half .06 -> 0.5 + 0.6
    ],
)
def test_kelly_sizing(
    wins: int, losses: int, avg_win: float, avg_loss: float, kelly: float, size: float
) -> None:
    assert kelly_fraction(wins, losses, avg_win, avg_loss) == pytest.approx(kelly)
    assert kelly_size_multiplier(wins, losses, avg_win, avg_loss) == pytest.approx(size)


def test_the_size_multiplier_appears_with_an_adequate_sample_and_ignores_breakevens() -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    # 11 wins of +10, 9 losses of -10, 10 breakevens: p over decisive trades = 11 / 20 = .55.
    pnls = [10.0] * 11 + [-10.0] * 9 + [0.0] * (MIN_ADEQUATE_SAMPLE - 21)
    for i, pnl in enumerate(pnls):
        library.record(1, outcome(i, pnl), at(0.0))
        assert library.stats(1).optimal_size_multiplier is None
    library.record(1, outcome(99, 0.0), at(0.0))
    stats = library.stats(1)
    assert stats.occurrences == MIN_ADEQUATE_SAMPLE
    assert stats.sample_adequate
    assert stats.optimal_size_multiplier == pytest.approx(1.0)  # as (55, 45, 10, 10) above


def test_reliability_grows_with_trades_and_falls_with_penalties() -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    seen = []
    for i in range(100):
        library.record(1, outcome(i, 10.0 if i % 3 else -10.0), at(0.0))
        seen.append(library.stats(1).reliability)
    assert all(b > a for a, b in itertools.pairwise(seen))
    assert seen[-1] < 1.0
    before = library.stats(1).reliability
    library.record_penalty(1, 0, 0.2)
    penalised = library.stats(1).reliability
    library.record_penalty(1, 0, 0.9)  # a new analysis replaces the old one
    assert before > penalised > library.stats(1).reliability


def test_a_rebuild_gives_the_stats_and_centroids_of_live_recording() -> None:
    rng = np.random.default_rng(7)
    live = PatternLibrary(radius=2.0)
    stored: list[tuple[int, TradeOutcome]] = []
    next_id = 100
    centres = rng.normal(0, 3, (8, EMBEDDING_DIM))
    for trade_id in range(400):
        e = centres[rng.integers(8)] + rng.normal(0, 0.3, EMBEDDING_DIM)
        if live.needs_new_pattern(e):
            live.add_pattern(next_id, e)
            next_id += 1
        nearest = live.nearest_pattern(e)
        assert nearest is not None
        pnl = float(rng.choice([-1.0, 0.0, 1.0, 2.0]) * rng.integers(1, 50))
        # Trades close out of id order: recording order is not exit order.
        done = TradeOutcome(
            trade_id, pnl, int(rng.integers(0, 10**7)), T0 + int(rng.integers(0, 10**8)), pnl > 0
        )
        live.record(nearest[0], done, e)
        stored.append((nearest[0], done))
        if pnl < 0 and rng.random() < 0.7:
            live.record_penalty(nearest[0], trade_id, float(rng.random()))
        if rng.random() < 0.5:
            live.record_post_exit(
                nearest[0], trade_id, float(rng.normal(20, 30)), int(rng.integers(0, 10**7))
            )
    assert 3 < len(live) < 400

    rebuilt = PatternLibrary(radius=2.0)
    for pattern_id in live.pattern_ids():
        rebuilt.add_pattern(pattern_id, live.stats(pattern_id).centroid)
    for pattern_id, done in sorted(stored, key=lambda s: (s[1].exit_time_ms, s[1].trade_id)):
        rebuilt.record(pattern_id, done, None, move_centroid=False)
        # The penalty and post-exit record as the database holds them (the last of each).
        pattern = live._patterns[pattern_id]
        if done.trade_id in pattern.penalties:
            rebuilt.record_penalty(pattern_id, done.trade_id, pattern.penalties[done.trade_id])
        if done.trade_id in pattern.post_exit:
            rebuilt.record_post_exit(pattern_id, done.trade_id, *pattern.post_exit[done.trade_id])
    for pattern_id in live.pattern_ids():
        assert rebuilt.stats(pattern_id) == live.stats(pattern_id)
        np.testing.assert_array_equal(rebuilt.stats(pattern_id).centroid, live.stats(pattern_id).centroid)
    # And the next live trade moves both alike: the rebuilt one counts the restored members.
    first = live.pattern_ids()[0]
    for library in (live, rebuilt):
        library.record(first, outcome(10_000, 5.0), at(3.0))
    np.testing.assert_array_equal(rebuilt.centroid(first), live.centroid(first))


def test_the_default_radius_makes_a_few_hundred_patterns_of_a_few_thousand_real_setups() -> None:
    rows = bundled_market_rows()
    rows = rows[np.isfinite(rows).all(axis=1)]
    rng = np.random.default_rng(0)
    embedded = EntryEmbedder.default().embed(rows[np.sort(rng.choice(len(rows), 3000, replace=False))])
    library = PatternLibrary()
    for trade_id, e in enumerate(embedded):
        if library.needs_new_pattern(e):
            library.add_pattern(len(library) + 1, e)
        nearest = library.nearest_pattern(e)
        assert nearest is not None
        assert nearest[1] <= DEFAULT_RADIUS
        library.record(nearest[0], outcome(trade_id, 1.0), e)
    assert 200 <= len(library) <= 500
    sizes = [library.stats(p).occurrences for p in library.pattern_ids()]
    assert sum(s for s in sizes if s >= MIN_ADEQUATE_SAMPLE) >= 1000  # most trades in usable patterns


def test_bad_input_is_refused_naming_what() -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    library.record(1, outcome(1, 5.0), at(0.0))
    with pytest.raises(ValueError, match="exists already"):
        library.add_pattern(1, at(1.0))
    with pytest.raises(ValueError, match="recorded already"):
        library.record(1, outcome(1, 5.0), at(0.0))
    with pytest.raises(KeyError, match="no pattern 2"):
        library.record(2, outcome(2, 5.0), at(0.0))
    with pytest.raises(ValueError, match="needs its embedding"):
        library.record(1, outcome(3, 5.0), None)
    with pytest.raises(ValueError, match="16 finite numbers"):
        library.record(1, outcome(4, 5.0), np.full(EMBEDDING_DIM, np.nan))
    with pytest.raises(KeyError, match="trade 9 is not recorded"):
        library.record_penalty(1, 9, 0.5)
    with pytest.raises(ValueError, match=r"not in 0\.\.1"):
        library.record_penalty(1, 1, 1.5)
    with pytest.raises(ValueError, match="won=True"):
        TradeOutcome(5, 0.0, 10, T0, True)
    with pytest.raises(ValueError, match="pnl nan"):
        TradeOutcome(5, math.nan, 10, T0, False)


def test_an_outcome_from_the_trade_facts() -> None:
    facts = TradeFacts(
        trade_id=3, symbol="BTC/USDT", direction="long", entry_time_ms=T0, exit_time_ms=T0 + 900_000,
        entry_price=100.0, exit_price=101.0, pnl_bps=80.0, fees_bps=20.0, slippage_bps=0.0,
        exit_reason="signal", entry_regime="low_vol_ranging", exit_regime=None, confidence=0.6,
        size_multiplier=1.0, model_version="m1", entry_features=np.zeros(80), stop_loss_price=None,
        take_profit_price=None,
    )  # fmt: skip
    assert TradeOutcome.of(facts) == TradeOutcome(3, 80.0, 900_000, T0 + 900_000, True)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(-500, 500, allow_nan=False).map(lambda p: round(p, 1)),
            st.integers(0, 10**8),
            st.integers(0, 10**9),
            st.one_of(st.none(), st.floats(0, 1)),
            st.one_of(st.none(), st.tuples(st.floats(-300, 300), st.integers(0, 10**8))),
        ),
        min_size=0,
        max_size=60,
    )
)
def test_statistics_respect_the_pattern_library_checks(
    trades: list[tuple[float, int, int, float | None, tuple[float, int] | None]],
) -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    for trade_id, (pnl, hold, exit_ms, penalty, post) in enumerate(trades):
        library.record(1, TradeOutcome(trade_id, pnl, hold, exit_ms, pnl > 0), at(0.0))
        if penalty is not None:
            library.record_penalty(1, trade_id, penalty)
        if post is not None:
            library.record_post_exit(1, trade_id, *post)
    s = library.stats(1)
    assert 0.0 <= s.win_rate <= 1.0
    assert 0.0 <= s.reliability <= 1.0
    assert 0.0 <= s.confidence_penalty <= 1.0
    assert s.wins >= 0
    assert s.losses >= 0
    assert s.wins + s.losses <= s.occurrences == len(trades)
    assert s.max_drawdown_bps is None or s.max_drawdown_bps >= 0.0
    assert s.profit_factor is None or s.profit_factor >= 0.0
    assert s.optimal_size_multiplier is None or 0.5 <= s.optimal_size_multiplier <= 1.5
    assert s.sample_adequate == (len(trades) >= MIN_ADEQUATE_SAMPLE)
    assert (s.optimal_size_multiplier is not None) == s.sample_adequate
    for figure in (s.avg_profit_bps, s.sharpe, s.optimal_exit_threshold):
        assert figure is None or math.isfinite(figure)


def test_history_counts_the_trades_known_at_a_time() -> None:
    library = PatternLibrary()
    library.add_pattern(1, at(0.0))
    # exits at T0 + 1000 x id: trade 1 wins, 2 loses, 3 wins, 4 wins
    for trade_id, pnl in ((1, 50.0), (2, -30.0), (3, 10.0), (4, 20.0)):
        library.record(1, outcome(trade_id, pnl), at(0.0))
    assert library.history(1, T0 + 3_000) == (2, 1)  # trades 1 and 2; 3 exits at that very time
    assert library.history(1, T0 + 3_001) == (3, 2)
    assert library.history(1, T0 + 9_000, exclude=4) == (3, 2)
    assert library.history(1, T0 + 1_000) == (0, 0)
