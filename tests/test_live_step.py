"""The compiled live step against the numpy kernel it restates: real candles bar by bar, edge
cases (flat bars, zero volume, identical closes, missing bars, NaN history), random bars, and
the carried state after a push.

NaN positions must be identical and values agree to rtol 1e-9 (atol 1e-12). Sums follow
numpy's order and the log closes are numpy's, so most columns and the whole carried state are
equal to the bit; the volume logs, the range logs, Corwin-Schultz's exp and the skew's power come
from the C library in the step and from numpy's SIMD routines in the kernel, which may differ in
the last bit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import CandleSeries
from huracan.features.incremental import IncrementalFeatures
from huracan.features.kernels import Array
from huracan.features.live_step import WINDOWS_SHA256, live_step, windows_source_hash
from huracan.features.market import (
    MARKET_FEATURES,
    WARMUP_BARS,
    CostAssumptions,
    FeatureCarry,
    Ohlcv,
    compute_market_features,
    market_kernel,
)
from huracan.market.candle_files import find_candle_files, read_candle_file

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
COST = CostAssumptions(taker_fee_bps=7.5, half_spread_bps=1.5, slippage_bps=2.5)


@pytest.fixture(scope="module")
def full() -> dict[str, CandleSeries]:
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    return {s: read_candle_file(files[s]) for s in SYMBOLS}


def head(series: CandleSeries, bars: int) -> CandleSeries:
    return series.between(int(series.open_time_ms[0]), int(series.open_time_ms[bars]))


def assert_same(live: Array, batch: Array) -> None:
    """Identical NaN positions, values to rtol 1e-9 / atol 1e-12; names the features that differ."""
    nan_live, nan_batch = np.isnan(live), np.isnan(batch)
    moved = sorted({MARKET_FEATURES[f] for f in np.argwhere(nan_live != nan_batch)[:, -1]})
    assert moved == [], f"NaN in one and not the other: {moved}"
    np.testing.assert_allclose(live, batch, rtol=1e-9, atol=1e-12, equal_nan=True)


def pushed(series: Sequence[CandleSeries], cost: CostAssumptions = COST) -> Array:
    """Rows [S, T, 70] of the series (one length, one clock) pushed one bar at a time."""
    live = IncrementalFeatures([s.symbol for s in series], cost)
    rows = [
        live.push(int(series[0].open_time_ms[i]), {s.symbol: s.candle(i) for s in series})
        for i in range(len(series[0]))
    ]
    return np.stack(rows, axis=1)


def step(bars: Array, last: npt.NDArray[np.int64], carry: FeatureCarry, rows: Array) -> None:
    """live_step for every symbol of bars, with COST."""
    advance = np.ones(bars.shape[0], dtype=np.bool_)
    fee, half, slip = COST.taker_fee_bps, COST.half_spread_bps, COST.slippage_bps
    live_step(bars, last, advance, carry.emas, carry.macd_signal, carry.vol_history, fee, half, slip, rows)


def series_of(
    symbol: str, close: Array, open_: Array, high: Array, low: Array, volume: Array
) -> CandleSeries:
    t = np.arange(len(close), dtype=np.int64) * 300_000 + 1_700_000_000_000
    return CandleSeries("test", symbol, "5m", t, open_, high, low, close, volume)


def test_real_bars_pushed_from_the_data_start_equal_the_batch(full: dict[str, CandleSeries]) -> None:
    series = [head(full[s], 2_000) for s in SYMBOLS]
    live = pushed(series)
    batch = compute_market_features(Ohlcv.stack(series), COST)
    assert_same(live, batch)
    assert np.isfinite(live[:, WARMUP_BARS:]).all()
    assert np.isnan(live[:, : WARMUP_BARS - 50]).any(axis=2).all()  # the warm-up is NaN, not guessed


def test_the_buffer_entry_point_equals_the_kernel_and_the_ring(full: dict[str, CandleSeries]) -> None:
    """live_step on a time-ordered buffer (as market_kernel takes it): the same rows and carry
    as market_kernel, and bit for bit the same as the ring that push keeps."""
    series = [head(full[s], 700) for s in SYMBOLS]
    bars = Ohlcv.stack(series).bars()
    buffer = np.full((3, 6, WARMUP_BARS), np.nan)
    carry, kernel_carry = FeatureCarry.empty((3,)), FeatureCarry.empty((3,))
    rows = np.full((3, 70), np.nan)
    last = np.full(3, WARMUP_BARS - 1, dtype=np.int64)
    live = IncrementalFeatures(SYMBOLS, COST)
    for i in range(bars.shape[-1]):
        buffer = np.concatenate((buffer[..., 1:], bars[..., i : i + 1]), axis=-1)
        step(buffer, last, carry, rows)
        kernel_rows, kernel_carry = market_kernel(buffer, kernel_carry, 1, COST)
        pushed_rows = live.push(int(series[0].open_time_ms[i]), {s.symbol: s.candle(i) for s in series})
        assert_same(rows, kernel_rows[:, 0])
        np.testing.assert_array_equal(rows, pushed_rows)
    for name in ("emas", "macd_signal", "vol_history"):
        np.testing.assert_array_equal(getattr(carry, name), getattr(kernel_carry, name), err_msg=name)
    np.testing.assert_array_equal(live.buffer, buffer)


@pytest.mark.parametrize("pushes", [1, 40, 300, 600])
def test_the_carry_after_a_push_is_the_kernels(full: dict[str, CandleSeries], pushes: int) -> None:
    """From NaN (the first bars) to warm: push once more and compare the state with
    market_kernel's from the same buffer and state."""
    series = [head(full[s], pushes + 1) for s in SYMBOLS]
    live = IncrementalFeatures(SYMBOLS, COST)
    for i in range(pushes):
        live.push(int(series[0].open_time_ms[i]), {s.symbol: s.candle(i) for s in series})
    before = FeatureCarry(
        live.carry.emas.copy(), live.carry.macd_signal.copy(), live.carry.vol_history.copy()
    )
    rows = live.push(int(series[0].open_time_ms[pushes]), {s.symbol: s.candle(pushes) for s in series})
    kernel_rows, kernel_carry = market_kernel(live.buffer, before, 1, COST)
    assert_same(rows, kernel_rows[:, 0])
    # The same arithmetic on returns equal to the bit (numpy's log closes): the same state.
    for name in ("emas", "macd_signal", "vol_history"):
        np.testing.assert_array_equal(getattr(live.carry, name), getattr(kernel_carry, name), err_msg=name)
    assert (live.bars_seen == pushes + 1).all()


def test_flat_bars_zero_volume_and_identical_closes() -> None:
    n = WARMUP_BARS + 120
    rng = np.random.default_rng(3)
    walk = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.002, n)))
    walk[150:260] = walk[150]  # 110 identical closes: flat windows inside a moving series
    high, low = walk * (1 + np.abs(rng.normal(0, 0.001, n))), walk * (1 - np.abs(rng.normal(0, 0.001, n)))
    opened = np.concatenate(([walk[0]], walk[:-1]))
    volume = rng.lognormal(3.0, 1.0, n)
    volume[200:280] = 0.0
    flat = np.full(n, 42.5)
    series = [
        series_of("FLAT", flat, flat, flat, flat, np.zeros(n)),  # o = h = l = c, no volume, ever
        series_of("TINY", flat * 1e-6, flat * 1e-6, flat * 1e-6, flat * 1e-6, np.full(n, 7.0)),
        series_of("RANGE", flat, flat, flat * 1.001, flat * 0.999, np.zeros(n)),  # pure bounce
        series_of("MIXED", walk, opened, np.maximum(opened, high), np.minimum(opened, low), volume),
    ]
    live = pushed(series)
    assert_same(live, compute_market_features(Ohlcv.stack(series), COST))
    assert np.isfinite(live[:, WARMUP_BARS:]).all()


def test_symbols_missing_bars_do_not_advance(full: dict[str, CandleSeries]) -> None:
    bars = 1_000
    series = [head(full[s], bars) for s in SYMBOLS]
    missing = np.random.default_rng(5).random((3, bars)) < 0.04
    missing[:, 400:420] = [[True], [False], [True]]  # a longer gap, and two symbols out at once
    live = IncrementalFeatures(SYMBOLS, COST)
    kept: list[list[Array]] = [[], [], []]
    previous = live.rows.copy()
    for i in range(bars):
        present = {s.symbol: s.candle(i) for j, s in enumerate(series) if not missing[j, i]}
        rows = live.push(int(series[0].open_time_ms[i]), present)
        for j in range(3):
            if missing[j, i]:
                np.testing.assert_array_equal(rows[j], previous[j])  # kept as it was, not recomputed
            else:
                kept[j].append(rows[j])
        previous = rows
    for j, s in enumerate(series):
        keep = ~missing[j]
        fields = ("open_time_ms", "open", "high", "low", "close", "volume")
        gapped = CandleSeries(s.exchange, s.symbol, s.timeframe, *(getattr(s, f)[keep] for f in fields))
        assert_same(np.array(kept[j]), compute_market_features(Ohlcv.from_series(gapped), COST))
    assert (live.bars_seen == (~missing).sum(axis=1)).all()


def test_primed_on_a_short_history_then_pushed(full: dict[str, CandleSeries]) -> None:
    """Priming on fewer bars than the warm-up leaves NaN at the buffer's start: the per-bar
    series primed from it, and the rows pushed after, match the batch."""
    bars, primed = 800, 100
    series = [head(full[s], bars) for s in SYMBOLS]
    live = IncrementalFeatures(SYMBOLS, COST)
    live.prime({s.symbol: head(s, primed) for s in series})
    rows = [
        live.push(int(series[0].open_time_ms[i]), {s.symbol: s.candle(i) for s in series})
        for i in range(primed, bars)
    ]
    batch = compute_market_features(Ohlcv.stack(series), COST)
    assert_same(np.stack(rows, axis=1), batch[:, primed:])


def random_series(symbol: str, seed: int, flat: float, still: float, silent: float, n: int) -> CandleSeries:
    """A random walk where a bar is flat (o = h = l = c) with probability `flat`, keeps the
    previous close with probability `still`, has no volume with probability `silent`."""
    rng = np.random.default_rng(seed)
    moves = np.where(rng.random(n) < still, 0.0, rng.normal(0.0, 0.003, n))
    close = 50.0 * np.exp(np.cumsum(moves))
    opened = np.concatenate(([close[0]], close[:-1]))
    is_flat = rng.random(n) < flat
    opened[is_flat] = close[is_flat]
    wick = np.where(is_flat, 0.0, np.abs(rng.normal(0.0, 0.002, n)))
    high, low = np.maximum(opened, close) * (1 + wick), np.minimum(opened, close) * (1 - wick)
    volume = np.where(rng.random(n) < silent, 0.0, rng.lognormal(2.0, 1.5, n))
    return series_of(symbol, close, opened, high, low, volume)


@settings(max_examples=20, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
    st.floats(0.0, 1.0),
)
def test_random_bars_equal_the_batch(seed: int, flat: float, still: float, silent: float) -> None:
    n = WARMUP_BARS + 60
    series = [
        random_series("A", seed, flat, still, silent, n),
        random_series("B", seed + 1, flat / 2, still / 2, silent / 2, n),
    ]
    assert_same(pushed(series), compute_market_features(Ohlcv.stack(series), COST))


def test_the_buffer_entry_point_refuses_a_short_buffer_and_strided_arrays() -> None:
    rows, carry = np.full((1, 70), np.nan), FeatureCarry.empty((1,))
    with pytest.raises(ValueError, match="288 bars"):
        step(np.full((1, 6, 200), np.nan), np.array([199]), carry, rows)
    strided = np.full((1, 6, 2 * WARMUP_BARS), np.nan)[..., ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        step(strided, np.array([WARMUP_BARS - 1]), carry, rows)


def test_the_recorded_hash_of_live_windows_is_current() -> None:
    """numba's cache of the step is keyed on live_step.py alone; the recorded hash of
    live_windows.py, whose functions it compiles in, keeps a change there from loading stale
    machine code. After editing live_windows.py, record its new hash in live_step.py."""
    assert windows_source_hash() == WINDOWS_SHA256, f'WINDOWS_SHA256 = "{windows_source_hash()}"'


@pytest.mark.slow  # compiles the step from scratch: about 20 s
def test_no_writable_cache_directory_compiles_in_memory(tmp_path: Path) -> None:
    """numba raises when it finds nowhere to cache (a read-only install without a writable
    cache home); the step then compiles in memory. A locator list that fits no file stands in
    for that here."""
    script = (
        "from huracan.features.incremental import IncrementalFeatures\n"
        "from huracan.features.live_step import live_push\n"
        "assert live_push._cache is None or type(live_push._cache).__name__ == 'NullCache'\n"
        "IncrementalFeatures(['A'])\n"
        "print('ok')\n"
    )
    env = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "IPythonCacheLocator"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")
