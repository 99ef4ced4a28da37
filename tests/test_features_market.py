"""The market features: one kernel for whole histories and for one bar at a time, proven equal
on real candles; no lookahead; finite after the warm-up; hand-checked values."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import CandleSeries
from huracan.features.incremental import IncrementalFeatures
from huracan.features.kernels import Array
from huracan.features.lookahead import find_lookahead
from huracan.features.market import (
    MARKET_FEATURES,
    MARKET_WIDTH,
    WARMUP_BARS,
    CostAssumptions,
    Ohlcv,
    compute_market_features,
    run_kernel,
)
from huracan.market.candle_files import find_candle_files, read_candle_file

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
COLUMN = {name: i for i, name in enumerate(MARKET_FEATURES)}


@pytest.fixture(scope="module")
def full() -> dict[str, CandleSeries]:
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    return {s: read_candle_file(files[s]) for s in SYMBOLS}


def head(series: CandleSeries, bars: int) -> CandleSeries:
    return series.between(int(series.open_time_ms[0]), int(series.open_time_ms[bars]))


def same(a: Array, b: Array, tolerance: float = 1e-6) -> bool:
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return bool((nan_a == nan_b).all() and np.abs(a[~nan_a] - b[~nan_b]).max(initial=0.0) <= tolerance)


def test_one_bar_at_a_time_equals_the_whole_history_on_real_bars(full: dict[str, CandleSeries]) -> None:
    bars = 3_000
    series = [head(full[s], bars) for s in SYMBOLS]
    batch = compute_market_features(Ohlcv.stack(series))
    live = IncrementalFeatures(SYMBOLS)
    rows = np.stack(
        [
            live.push(int(series[0].open_time_ms[i]), {s.symbol: s.candle(i) for s in series})
            for i in range(bars)
        ],
        axis=1,
    )
    assert rows.shape == batch.shape == (3, bars, MARKET_WIDTH)
    assert same(rows, batch)
    assert np.isfinite(rows[:, WARMUP_BARS:]).all()
    assert live.warm_mask.all()


def test_a_symbol_without_a_bar_does_not_advance(full: dict[str, CandleSeries]) -> None:
    bars, skipped = 900, 500
    series = [head(full[s], bars) for s in SYMBOLS]
    live = IncrementalFeatures(SYMBOLS)
    for i in range(bars):
        present = {s.symbol: s.candle(i) for s in series if not (s.symbol == "ETH/USDT" and i == skipped)}
        rows = live.push(int(series[0].open_time_ms[i]), present)
        if i == skipped:
            eth_after_gap = rows[1].copy()
        if i == skipped - 1:
            eth_before_gap = rows[1].copy()
    assert same(eth_after_gap, eth_before_gap, 0.0)  # kept, not recomputed
    # ETH's features are those of its series without the missing bar.
    eth = series[1]
    keep = np.arange(bars) != skipped
    gapped = CandleSeries(
        eth.exchange,
        eth.symbol,
        eth.timeframe,
        *(getattr(eth, f)[keep] for f in ("open_time_ms", "open", "high", "low", "close", "volume")),
    )
    assert same(rows[1], compute_market_features(Ohlcv.from_series(gapped))[-1])
    assert same(rows[0], compute_market_features(Ohlcv.from_series(series[0]))[-1])


def test_primed_from_history_then_pushed_equals_the_whole_history(full: dict[str, CandleSeries]) -> None:
    bars, primed = 1_200, 700
    series = [head(full[s], bars) for s in SYMBOLS]
    live = IncrementalFeatures(SYMBOLS)
    live.prime({s.symbol: head(s, primed) for s in series})
    for i in range(primed, bars):
        rows = live.push(int(series[0].open_time_ms[i]), {s.symbol: s.candle(i) for s in series})
    assert same(rows, compute_market_features(Ohlcv.stack(series))[:, -1])


def test_chunking_of_the_batch_changes_nothing(full: dict[str, CandleSeries]) -> None:
    ohlcv = Ohlcv.from_series(head(full["SOL/USDT"], 2_500))
    big, _ = run_kernel(ohlcv.bars(), CostAssumptions(), chunk=4096)
    small, _ = run_kernel(ohlcv.bars(), CostAssumptions(), chunk=97)
    assert same(big, small, 0.0)


def test_no_feature_reads_the_future(full: dict[str, CandleSeries]) -> None:
    ohlcv = Ohlcv.stack([head(full[s], 1_500) for s in SYMBOLS])
    leaks = find_lookahead(compute_market_features, ohlcv, [350, 777, 1_200, 1_498], np.random.default_rng(7))
    assert leaks == []


def test_a_leaky_feature_is_caught(full: dict[str, CandleSeries]) -> None:
    def with_tomorrows_return(ohlcv: Ohlcv) -> Array:
        rows = compute_market_features(ohlcv)
        rows[..., :-1, COLUMN["bar_shock"]] = np.log(ohlcv.close[..., 1:] / ohlcv.close[..., :-1])
        return rows

    ohlcv = Ohlcv.from_series(head(full["BTC/USDT"], 1_000))
    leaks = find_lookahead(with_tomorrows_return, ohlcv, [500, 900], np.random.default_rng(3))
    assert {leak.feature for leak in leaks} == {"bar_shock"}
    assert all(leak.bar == leak.cut for leak in leaks)  # the bar just before the change reads it


def test_a_centred_window_is_caught_too(full: dict[str, CandleSeries]) -> None:
    def centred_mean(ohlcv: Ohlcv) -> Array:
        rows = compute_market_features(ohlcv)
        c = ohlcv.close
        padded = np.concatenate((c, np.full(5, c[-1])))
        rows[:, COLUMN["range_bps"]] = np.convolve(padded, np.ones(11) / 11, mode="same")[: len(c)] / c
        return rows

    ohlcv = Ohlcv.from_series(head(full["ETH/USDT"], 800))
    leaks = find_lookahead(centred_mean, ohlcv, [600], np.random.default_rng(5))
    assert [leak.feature for leak in leaks] == ["range_bps"]
    assert 600 - 5 <= leaks[0].bar < 600  # an 11-bar centred window reads up to 5 bars ahead


def test_every_feature_is_finite_after_the_warm_up_on_all_bundled_data(full: dict[str, CandleSeries]) -> None:
    rows = compute_market_features(Ohlcv.stack([full[s] for s in SYMBOLS]))
    first = int(np.flatnonzero(np.isfinite(rows).all(axis=(0, 2)))[0])
    assert first < WARMUP_BARS
    bad = [MARKET_FEATURES[f] for f in np.flatnonzero(~np.isfinite(rows[:, first:]).all(axis=(0, 1)))]
    assert bad == []
    assert np.isnan(rows[:, : first - 1]).any(axis=2).all()  # warm-up rows are marked, not guessed


def synthetic(close: Array, volume: Array, spread: float = 0.0) -> Ohlcv:
    t = np.arange(len(close), dtype=np.int64) * 300_000
    return Ohlcv(close.copy(), close * (1 + spread), close * (1 - spread), close.copy(), volume, t)


def test_flat_prices_and_zero_volume_stay_finite() -> None:
    n = WARMUP_BARS + 50
    for ohlcv, spread_bps in (
        (synthetic(np.full(n, 100.0), np.zeros(n)), 0.0),
        (synthetic(np.full(n, 0.00012345), np.full(n, 5.0)), 0.0),
        (synthetic(np.full(n, 20_000.0), np.zeros(n), spread=0.001), 20.0),
    ):
        rows = compute_market_features(ohlcv)[WARMUP_BARS:]
        assert np.isfinite(rows).all(), [
            MARKET_FEATURES[f] for f in np.flatnonzero(~np.isfinite(rows).all(axis=0))
        ]
        # Nothing moves, so nothing trends: returns, slopes and momentum are exactly 0.
        for name in ("return_1", "return_288", "ema_slope_8", "macd", "efficiency_ratio_48"):
            assert (rows[:, COLUMN[name]] == 0).all(), name
        # A range that is pure bid-ask bounce is read as that spread (h/l - 1 = 20 bps here).
        assert rows[:, COLUMN["corwin_schultz_spread_48"]] == pytest.approx(spread_bps, abs=0.5)


def test_hand_computed_values() -> None:
    n = WARMUP_BARS + 10
    close = 100.0 * np.exp(np.arange(n) * 0.001)  # steady rise, 10 bps a bar
    ohlcv = synthetic(close, np.full(n, 3.0))
    rows = compute_market_features(ohlcv)
    last = rows[-1]
    assert last[COLUMN["return_1"]] == pytest.approx(0.001)
    assert last[COLUMN["return_12"]] == pytest.approx(0.012)
    assert last[COLUMN["rsi_14"]] == pytest.approx(1.0)  # RSI 100: only gains
    assert last[COLUMN["efficiency_ratio_48"]] == pytest.approx(1.0)
    assert last[COLUMN["close_location"]] == 0.0  # high == low == close: a flat bar
    assert last[COLUMN["realised_vol_48"]] == pytest.approx(0.0, abs=1e-12)
    assert last[COLUMN["round_trip_cost_bps"]] == pytest.approx(2 * (10 + 2 + 1))
    # Close at the high of a bar with a range: location 1, no upper wick.
    at_high = replace(ohlcv, high=close * 1.0, low=close * 0.99, open=close * 0.995)
    bar = compute_market_features(at_high)[-1]
    assert bar[COLUMN["close_location"]] == pytest.approx(1.0)
    assert bar[COLUMN["range_bps"]] == pytest.approx((1 / 0.99 - 1) * 1e4)
    assert bar[COLUMN["body_share"]] == pytest.approx(0.5)
    # 06:00 UTC: a quarter of the day.
    six = replace(
        ohlcv, open_time_ms=ohlcv.open_time_ms + (6 * 3_600_000 - int(ohlcv.open_time_ms[-1]) % 86_400_000)
    )
    assert compute_market_features(six)[-1, COLUMN["hour_sin"]] == pytest.approx(1.0)


def test_corwin_schultz_separates_spread_from_volatility() -> None:
    # The same 10 bps ranges, once on a flat price (all spread) and once on a moving one: the
    # two-bar estimator credits the move to volatility, so the spread estimate falls.
    n = WARMUP_BARS + 10
    flat = synthetic(np.full(n, 1_000.0), np.full(n, 1.0), spread=0.0005)
    moving = synthetic(
        1_000.0 * np.exp(np.cumsum(np.random.default_rng(0).normal(0, 0.002, n))), np.full(n, 1.0), 0.0005
    )
    still = compute_market_features(flat)[-1, COLUMN["corwin_schultz_spread_48"]]
    moved = compute_market_features(moving)[-1, COLUMN["corwin_schultz_spread_48"]]
    assert 9.0 < still < 11.0
    assert 0.0 <= moved < still
    assert math.isfinite(moved)
