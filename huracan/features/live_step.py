"""The live feature step compiled: market_kernel's arithmetic for one new bar per symbol.

market_kernel (market.py) for n=1 runs about a thousand numpy operations on arrays of a few
hundred numbers; its cost is their per-call overhead, not arithmetic. This module does the same
arithmetic in loops compiled by numba, symbol after symbol, in tens of microseconds.

It restates market_kernel's rules rather than sharing its code: a window holding a NaN gives
NaN, `divide`'s guard, `centred`'s two passes, the filters' NaN restarts (live_windows.py).
Sums follow numpy's pairwise order and the log closes are numpy's (below), so the carried state
and most columns equal the numpy kernel's to the bit; the other logs, the exponentials and the
powers come from the C library here and from numpy's SIMD routines there, which can differ in
the last bit (tests/test_live_step.py bounds the effect).

Most of the time would go to the logarithms of 289 closes and 288 volumes. Those, and the other
per-bar series (`derived`, _derive_*), depend on one bar and the one before only, so the ring
path (live_push) computes them once, when the bar arrives, and keeps them beside the bars; the
buffer path (live_step) computes them for the positions its windows read.

The log closes are taken by the caller with numpy, the batch kernel's routine, so the returns
equal the kernel's to the bit: they feed ranks and sign tests (vol_percentile_288 and the
regime, the Roll spread), where a last-bit difference can flip a tie, and a series that often
repeats its close makes many ties (equal 48-bar volatilities).

The first call in a process compiles (seconds) or loads the machine code numba cached in
__pycache__, or $XDG_CACHE_HOME/numba where that is not writable (a fraction of a second).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from huracan.features import kernels, live_windows, market
from huracan.features.kernels import Array
from huracan.features.live_windows import (
    centred,
    correlation,
    divide,
    extend_extremes,
    fmax,
    inner,
    nan_max,
    nan_min,
    put,
    rank_share,
    settled,
    sign,
    unowned,
    window_mean,
    window_sum,
    zscore_last,
)
from huracan.logs import get_logger

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Cost = tuple[float, float, float]  # taker fee, half spread, slippage (bps)

# Constants the compiled code freezes in. numba keys its cache on this file's text, so they are
# spelled out here (a change in market.py alone would leave stale code) and checked against it.
_HORIZONS = (1, 3, 6, 12, 24, 48, 96, 288)
_SPANS = (8, 12, 21, 26, 55, 144)
_PERCENTILE = 288  # VOL_PERCENTILE_WINDOW
_DAY_MS = 86_400_000.0
_HIGH_VOL, _TRENDING = 0.5, 0.3
_EPS = 1e-30
# The deepest a window reaches: the 288-bar return and the 288 returns of realised_vol_288 both
# need the close 288 bars before the newest.
REACH = 288
_ALPHAS = np.array([2.0 / (span + 1.0) for span in _SPANS] + [1 / 14, 1 / 48, 1 / 14, 1 / 48, 1 / 14])
_ALPHA_SIGNAL = 2.0 / 10.0
_CS_K = 3.0 - 2.0 * math.sqrt(2.0)
_LN2 = math.log(2.0)
_GK_CLOSE = 2.0 * _LN2 - 1.0  # the Garman-Klass weight of the open-to-close term
_TWO_PI = 2.0 * math.pi
_FROZEN = (_HORIZONS, _SPANS, _PERCENTILE, _DAY_MS, _HIGH_VOL, _TRENDING, _EPS)
_MATCHES_MARKET = (
    (
        market.RETURN_HORIZONS,
        market.EMA_SPANS,
        market.VOL_PERCENTILE_WINDOW,
        float(market.DAY_MS),
        market.HIGH_VOL_PERCENTILE,
        market.TRENDING_STRENGTH,
        kernels.EPS,
    )
    == _FROZEN
    and np.array_equal(_ALPHAS, market._ALPHAS_1)
    and market.WARMUP_BARS > REACH
    and market.MARKET_WIDTH == 70
)
if not _MATCHES_MARKET:
    raise RuntimeError("live_step.py's constants no longer match market.py: update both")

# The per-bar series, rows of `derived` [8, positions] (position i: bar i of the buffer).
_LOG_CLOSE, _RETURN, _LOG_VOLUME, _HL2, _GK, _QUOTE, _LOG_QUOTE, _CS = range(8)
DERIVED_ROWS = 8
WORK_ROWS = 7  # scratch: three windows' deviations, the path, three temporaries

# live_windows.py's functions are compiled into this file's entry points, but numba's cache
# only notices changes to this file: its hash is recorded here (tests/test_live_step.py checks
# it), and where it differs the entry points compile in memory rather than load stale code.
WINDOWS_SHA256 = "98d0a7bc4281db957ce60deea415aade79cbc07af58bf567064ff5afdde82d7f"

F = TypeVar("F", bound=Callable[..., Any])
log = get_logger("huracan.features.live_step")


def windows_source_hash() -> str:
    """ "" where the source cannot be read (an install without .py files): no cache then."""
    try:
        return hashlib.sha256(Path(live_windows.__file__).read_bytes()).hexdigest()
    except OSError:
        return ""


_cache_usable = windows_source_hash() == WINDOWS_SHA256
if not _cache_usable:
    log.warning("live_windows.py changed since live_step.py recorded its hash: compiling without cache")


def _entry(fn: F) -> F:
    """An entry point: `inner`, cached on disk where numba finds a writable directory. Where it
    finds none it raises at decoration; then, as when live_windows.py changed, compile in
    memory."""
    global _cache_usable
    if _cache_usable:
        try:
            return cast(F, njit(cache=True, error_model="numpy")(fn))
        except RuntimeError:  # "cannot cache function ...: no locator available"
            log.info("no writable numba cache directory: the live step compiles in memory")
            _cache_usable = False
    return inner(fn)


# --- per-bar series ------------------------------------------------------------------------------


@inner
def _corwin_schultz(h: Array, low: Array, q: int, single: float) -> float:
    """market._corwin_schultz for the bars q - 1 and q (single: bar q's squared log range),
    floored at 0 by np.maximum, which keeps NaN."""
    x = np.log(h[q - 1] / low[q - 1])
    beta = single + x * x
    y = np.log(nan_max(h[q], h[q - 1]) / nan_min(low[q], low[q - 1]))
    alpha = (math.sqrt(2.0 * beta) - math.sqrt(beta)) / _CS_K - math.sqrt(y * y / _CS_K)
    growth = np.exp(alpha)
    return nan_max(2.0 * (growth - 1.0) / (1.0 + growth), 0.0)


@inner
def _derive_long(bars: Array, derived: Array, lo: int, hi: int) -> None:
    """The series of the 288-bar windows at positions lo..hi: log return to the bar before
    (NaN at position 0), from the log closes the caller put in derived (numpy's: see the module
    doc), and log(1 + volume)."""
    for q in range(lo, hi + 1):
        before = derived[_LOG_CLOSE, q - 1] if q > 0 else math.nan
        derived[_RETURN, q] = derived[_LOG_CLOSE, q] - before
        derived[_LOG_VOLUME, q] = np.log1p(bars[4, q])


@inner
def _derive_short(bars: Array, derived: Array, lo: int, hi: int) -> None:
    """The series of the 48-bar windows at positions lo..hi: squared log range, Garman-Klass
    term, quote volume and its log1p, Corwin-Schultz spread (NaN at position 0)."""
    o, h, low, c, v = bars[0], bars[1], bars[2], bars[3], bars[4]
    for q in range(lo, hi + 1):
        x, y = np.log(h[q] / low[q]), np.log(c[q] / o[q])
        single = x * x
        derived[_HL2, q] = single
        derived[_GK, q] = 0.5 * single - _GK_CLOSE * (y * y)
        derived[_QUOTE, q] = v[q] * c[q]
        derived[_LOG_QUOTE, q] = np.log1p(derived[_QUOTE, q])
        derived[_CS, q] = _corwin_schultz(h, low, q, single) if q > 0 else math.nan


# --- one symbol ----------------------------------------------------------------------------------


@inner
def _symbol_step(
    bars: Array,
    derived: Array,
    p: int,
    emas: Array,
    signal: Array,
    vol_history: Array,
    cost: Cost,
    row: Array,
    work: Array,
) -> None:
    """market_kernel for n=1 on one symbol whose newest bar is bars[:, p], its per-bar series
    in derived (same positions); advances the carry (emas, signal, vol_history) in place and
    writes the 70 columns to row, in MARKET_FEATURES order."""
    o, h, low, c, v, t = bars[0], bars[1], bars[2], bars[3], bars[4], bars[5]
    log_c, r, log_v = derived[_LOG_CLOSE], derived[_RETURN], derived[_LOG_VOLUME]
    # Scratch: deviations of three windows the features share, the path, temporaries.
    r48, previous, log_v48, path = work[0], work[1], work[2], work[3]
    tmp1, tmp2, tmp3 = work[4], work[5], work[6]
    k = 0
    for horizon in _HORIZONS:
        k = put(row, k, log_c[p] - log_c[p - horizon])

    # Recursive filters: one step from the carried state (NaN: start on the value).
    close, previous_close, high, low_p, open_p = c[p], c[p - 1], h[p], low[p], o[p]
    move = close - previous_close
    true_range = fmax(high - low_p, fmax(abs(high - previous_close), abs(low_p - previous_close))) / close
    gain, loss = nan_max(move, 0.0), nan_max(-move, 0.0)
    before_8, before_21, before_55, before_144 = emas[0], emas[2], emas[4], emas[5]
    for j in range(_ALPHAS.shape[0]):  # EMAs 8..144 of close, Wilder gain 14, 48, loss 14, 48, TR 14
        value = close if j < 6 else (gain if j < 8 else (loss if j < 10 else true_range))
        state = emas[j]
        emas[j] = value if math.isnan(state) else state + _ALPHAS[j] * (value - state)
    ema_8, ema_12, ema_21, ema_26, ema_55, ema_144 = emas[0], emas[1], emas[2], emas[3], emas[4], emas[5]
    macd = (ema_12 - ema_26) / close * 1e4
    state = signal[0]
    signal[0] = macd if math.isnan(state) else state + _ALPHA_SIGNAL * (macd - state)

    # volatility
    var_48 = centred(r, p - 47, 48, r48, tmp1)  # the 48 returns feed six features: centred once
    realised_12 = math.sqrt(centred(r, p - 11, 12, tmp1, tmp2))
    realised_48 = math.sqrt(var_48)
    realised_288 = math.sqrt(centred(r, p - 287, 288, tmp1, tmp2))
    k = put(row, k, realised_12)
    k = put(row, k, realised_48)
    k = put(row, k, realised_288)
    for w in (12, 48):
        k = put(row, k, math.sqrt(window_mean(derived[_HL2], p - w + 1, w) / (4.0 * _LN2)))
    for w in (12, 48):
        k = put(row, k, math.sqrt(nan_max(window_mean(derived[_GK], p - w + 1, w), 0.0)))
    k = put(row, k, divide(realised_12, realised_288, 0.0, _EPS))

    # trend
    k = put(row, k, (ema_8 / before_8 - 1.0) * 1e4)
    k = put(row, k, (ema_21 / before_21 - 1.0) * 1e4)
    k = put(row, k, (ema_55 / before_55 - 1.0) * 1e4)
    k = put(row, k, (ema_144 / before_144 - 1.0) * 1e4)
    k = put(row, k, (close / ema_21 - 1.0) * 1e4)
    k = put(row, k, (close / ema_55 - 1.0) * 1e4)
    k = put(row, k, (close / ema_144 - 1.0) * 1e4)
    k = put(row, k, (ema_8 / ema_21 - 1.0) * 1e4)
    k = put(row, k, (ema_21 / ema_55 - 1.0) * 1e4)
    for i in range(96):  # |bar moves| of the last 96 bars: the efficiency ratios' path
        path[i] = abs(c[p - 95 + i] - c[p - 96 + i])
    k = put(row, k, divide(close - c[p - 48], window_sum(path, 48, 48), 0.0, _EPS))

    # momentum
    k = put(row, k, divide(emas[6] - emas[8], emas[6] + emas[8], 0.0, _EPS))  # (RSI - 50) / 50
    k = put(row, k, divide(emas[7] - emas[9], emas[7] + emas[9], 0.0, _EPS))
    k = put(row, k, macd)
    k = put(row, k, macd - signal[0])
    extremes = extend_extremes(h, low, p - 13, p + 1, (-math.inf, math.inf, False, False))
    highest_14, lowest_14 = settled(extremes)
    extremes = extend_extremes(h, low, p - 47, p - 13, extremes)
    highest_48, lowest_48 = settled(extremes)
    highest_288, lowest_288 = settled(extend_extremes(h, low, p - 287, p - 47, extremes))
    k = put(row, k, divide(close - lowest_14, highest_14 - lowest_14, 0.5, _EPS))
    k = put(row, k, divide(close - lowest_48, highest_48 - lowest_48, 0.5, _EPS))
    for w in (12, 48):
        k = put(row, k, divide(log_c[p] - log_c[p - w], realised_48 * math.sqrt(w), 0.0, _EPS))
    k = put(row, k, divide(r[p], realised_48, 0.0, _EPS))
    for i in range(24):  # 1 for a bar that closed above its open; NaN before the data
        q = p - 23 + i
        tmp1[i] = math.nan if math.isnan(c[q]) or math.isnan(o[q]) else (1.0 if c[q] > o[q] else 0.0)
    k = put(row, k, window_mean(tmp1, 0, 24))

    # volume
    var_log_v48 = centred(log_v, p - 47, 48, log_v48, tmp1)
    k = put(row, k, zscore_last(log_v48, 48, var_log_v48, 1e-9))
    k = put(row, k, zscore_last(tmp1, 288, centred(log_v, p - 287, 288, tmp1, tmp2), 1e-9))
    k = put(row, k, np.log((window_mean(v, p - 11, 12) + 1e-12) / (window_mean(v, p - 47, 48) + 1e-12)))
    for i in range(48):
        tmp1[i] = sign(r[p - 47 + i]) * v[p - 47 + i]
    k = put(row, k, divide(window_sum(tmp1, 0, 48), window_sum(v, p - 47, 48), 0.0, _EPS))
    k = put(row, k, zscore_last(tmp1, 48, centred(derived[_LOG_QUOTE], p - 47, 48, tmp1, tmp2), 1e-9))
    for i in range(48):
        tmp1[i] = r48[i] * log_v48[i]
    k = put(row, k, correlation(window_mean(tmp1, 0, 48), var_48, var_log_v48, 1e-24, _EPS))

    # microstructure
    cs_48 = window_mean(derived[_CS], p - 47, 48) * 1e4
    k = put(row, k, cs_48)
    var_previous = centred(r, p - 48, 48, previous, tmp1)
    for i in range(48):
        tmp1[i] = r48[i] * previous[i]
    serial_cov = window_mean(tmp1, 0, 48)
    # NaN < 0 is false: the Roll spread is 0, not NaN, while its window is incomplete (np.where).
    k = put(row, k, (2.0 * math.sqrt(abs(serial_cov)) if serial_cov < 0 else 0.0) * 1e4)
    for i in range(48):
        q = p - 47 + i
        tmp1[i] = abs(r[q]) / nan_max(derived[_QUOTE, q], 1.0)
    k = put(row, k, np.log(window_mean(tmp1, 0, 48) + 1e-15))
    for i in range(12):
        q = p - 11 + i
        tmp1[i] = divide((c[q] - low[q]) - (h[q] - c[q]), h[q] - low[q], 0.0, _EPS)
    k = put(row, k, tmp1[11])
    k = put(row, k, window_mean(tmp1, 0, 12))
    bar_range = high - low_p
    k = put(row, k, (high / low_p - 1.0) * 1e4)
    k = put(row, k, divide(abs(close - open_p), bar_range, 0.0, _EPS))
    wicks = (high - nan_max(open_p, close)) - (nan_min(open_p, close) - low_p)
    k = put(row, k, divide(wicks, bar_range, 0.0, _EPS))

    # regime
    vol_percentile = rank_share(vol_history, realised_48)
    for i in range(vol_history.shape[0] - 1):  # the carried history moves on by one
        vol_history[i] = vol_history[i + 1]
    vol_history[-1] = realised_48
    strength = abs(divide(close - c[p - 96], window_sum(path, 0, 96), 0.0, _EPS))
    unknown = math.isnan(vol_percentile) or math.isnan(strength)
    code = 2 * int(vol_percentile > _HIGH_VOL) + int(strength > _TRENDING)
    for regime in range(4):
        k = put(row, k, math.nan if unknown else (1.0 if code == regime else 0.0))
    vol_sure = nan_min(1.0, abs(vol_percentile - _HIGH_VOL) / 0.25)
    trend_sure = nan_min(1.0, abs(strength - _TRENDING) / 0.15)
    k = put(row, k, nan_min(vol_sure, trend_sure))
    k = put(row, k, vol_percentile)
    k = put(row, k, strength)

    # shape and extremes
    for i in range(48):
        squared = r48[i] * r48[i]
        tmp1[i] = squared * r48[i]
        tmp2[i] = squared * squared
    k = put(row, k, divide(window_mean(tmp1, 0, 48), var_48**1.5, 0.0, _EPS))
    kurtosis = divide(window_mean(tmp2, 0, 48), var_48 * var_48, 3.0, _EPS) - 3.0
    k = put(row, k, math.nan if math.isnan(var_48) else kurtosis)
    k = put(row, k, close / highest_48 - 1.0)
    k = put(row, k, close / highest_288 - 1.0)
    k = put(row, k, close / lowest_288 - 1.0)
    k = put(row, k, divide(close - lowest_288, highest_288 - lowest_288, 0.5, _EPS))
    for i in range(20):
        tmp1[i] = c[p - 19 + i] / close
    mid = window_mean(tmp1, 0, 20)
    band = math.sqrt(centred(tmp1, 0, 20, tmp2, tmp3))
    k = put(row, k, divide(1.0 - (mid - 2.0 * band), 4.0 * band, 0.5, 1e-12))
    k = put(row, k, 4.0 * band / mid)
    k = put(row, k, emas[10])
    k = put(row, k, correlation(serial_cov, var_48, var_previous, _EPS, _EPS))

    # time of day and costs
    angle = _TWO_PI * (t[p] % _DAY_MS) / _DAY_MS
    k = put(row, k, math.sin(angle))
    k = put(row, k, math.cos(angle))
    taker_fee_bps, half_spread_bps, slippage_bps = cost
    put(row, k, 2.0 * (taker_fee_bps + slippage_bps + nan_max(half_spread_bps, cs_48 / 2.0)))


# --- entry points --------------------------------------------------------------------------------


def live_step(
    bars: Array,
    last: IntArray,
    advance: BoolArray,
    emas: Array,
    macd_signal: Array,
    vol_history: Array,
    taker_fee_bps: float,
    half_spread_bps: float,
    slippage_bps: float,
    rows: Array,
) -> None:
    """market_kernel(bars, carry, 1, cost) for the symbols s with advance[s]: their rows [S, 70]
    and carry (FeatureCarry's emas [S, 11], macd_signal [S, 1], vol_history [S, 287]) are
    replaced in place; other symbols' are left as they are. All arrays C-contiguous.

    bars [S, 6, W] as Ohlcv.bars (NaN before a symbol's data start), symbol s's newest bar at
    bars[s, :, last[s]]; its windows reach 288 bars back, so last[s] >= 288. A buffer of
    WARMUP_BARS bars (last = WARMUP_BARS - 1) gives market_kernel's windows exactly."""
    # The compiled code does not check bounds: shapes are checked here, once.
    n, fields, _ = bars.shape
    expected = {"emas": (n, 11), "macd_signal": (n, 1), "vol_history": (n, 287), "rows": (n, 70)}
    given = {"emas": emas.shape, "macd_signal": macd_signal.shape, "vol_history": vol_history.shape}
    given["rows"] = rows.shape
    if fields != 6 or last.shape != (n,) or advance.shape != (n,) or given != expected:
        raise ValueError(f"live_step: bars {bars.shape}, last {last.shape}, advance {advance.shape}, {given}")
    cost = (float(taker_fee_bps), float(half_spread_bps), float(slippage_bps))
    log_close = np.log(bars[:, 3, :])
    derived = np.empty((DERIVED_ROWS, bars.shape[2]))
    work = np.empty((WORK_ROWS, REACH))
    _step_buffer(bars, log_close, last, advance, emas, macd_signal, vol_history, cost, rows, derived, work)


@_entry
def _step_buffer(
    bars: Array,
    log_close: Array,
    last: IntArray,
    advance: BoolArray,
    emas: Array,
    macd_signal: Array,
    vol_history: Array,
    cost: Cost,
    rows: Array,
    derived: Array,
    work: Array,
) -> None:
    """live_step, compiled; log_close [S, W] is np.log of the closes, derived and work scratch."""
    bars, emas, macd_signal = unowned(bars), unowned(emas), unowned(macd_signal)
    vol_history, rows, derived = unowned(vol_history), unowned(rows), unowned(derived)
    work, log_close = unowned(work), unowned(log_close)
    for s in range(bars.shape[0]):
        if not advance[s]:
            continue
        p = last[s]
        if p < REACH or p >= bars.shape[2]:
            raise ValueError("live_step: a symbol's newest bar needs 288 bars before it")
        derived[_LOG_CLOSE] = log_close[s]
        _derive_long(bars[s], derived, p - REACH + 1, p)
        _derive_short(bars[s], derived, p - 47, p)
        _symbol_step(bars[s], derived, p, emas[s], macd_signal[s], vol_history[s], cost, rows[s], work)


@inner
def _touch(bars: Array, derived: Array, p: int, history: Array) -> float:
    """One number per cache line of the windows a symbol's step reads: when the bar wakes the
    daemon they are cold, and these loads overlap where the step's would stall one by one."""
    total = 0.0
    for q in range(p - REACH, p, 8):
        total += (
            bars[1, q] + bars[2, q] + derived[_LOG_CLOSE, q] + derived[_RETURN, q] + derived[_LOG_VOLUME, q]
        )
    for q in range(p - 96, p, 8):
        total += bars[3, q]
    for q in range(p - 48, p, 8):
        total += bars[0, q] + bars[4, q] + derived[_HL2, q] + derived[_GK, q] + derived[_QUOTE, q]
        total += derived[_LOG_QUOTE, q] + derived[_CS, q]
    for q in range(0, history.shape[0], 8):
        total += history[q]
    return total


@_entry
def live_push(
    ring: Array,
    derived: Array,
    slots: IntArray,
    new: Array,
    log_close: Array,
    present: BoolArray,
    emas: Array,
    macd_signal: Array,
    vol_history: Array,
    cost: Cost,
    rows: Array,
    bars_seen: IntArray,
    work: Array,
) -> float:
    """IncrementalFeatures.push in one call: new[s] (open, high, low, close, volume, open time)
    enters the ring of each present symbol, which then steps as in live_step. log_close [S]:
    np.log of new's closes, taken with numpy by the caller (see the module doc).

    ring [S, 6, 2L] holds a symbol's last L bars twice, slot j at j and j + L, so the L bars
    ending at the newest (slot slots[s]) lie at slots[s] + 1 .. slots[s] + L, in order: a push
    writes one bar rather than shifting L. derived [S, 8, 2L] holds the per-bar series the
    same way, computed once per bar. work [WORK_ROWS, 288] is scratch."""
    ring, derived, new, work = unowned(ring), unowned(derived), unowned(new), unowned(work)
    log_close, emas, macd_signal = unowned(log_close), unowned(emas), unowned(macd_signal)
    vol_history, rows = unowned(vol_history), unowned(rows)
    length = ring.shape[2] // 2
    touched = 0.0  # returned, so that the loads are not optimised away
    for s in range(ring.shape[0]):
        if present[s]:
            touched += _touch(ring[s], derived[s], (slots[s] + 1) % length + length, vol_history[s])
    for s in range(ring.shape[0]):
        if not present[s]:
            continue
        slot = (slots[s] + 1) % length
        slots[s] = slot
        bars_seen[s] += 1
        p = slot + length
        ring[s, :, slot] = new[s]
        ring[s, :, p] = new[s]
        derived[s, _LOG_CLOSE, p] = log_close[s]
        _derive_long(ring[s], derived[s], p, p)
        _derive_short(ring[s], derived[s], p, p)
        derived[s, :, slot] = derived[s, :, p]
        _symbol_step(ring[s], derived[s], p, emas[s], macd_signal[s], vol_history[s], cost, rows[s], work)
    return touched


@_entry
def derive_all(bars: Array, log_close: Array, derived: Array) -> None:
    """The per-bar series of every position of bars [6, W] into derived [8, W] (priming);
    log_close [W]: np.log of the closes."""
    last = bars.shape[1] - 1
    derived[_LOG_CLOSE] = log_close
    _derive_long(bars, derived, 0, last)
    _derive_short(bars, derived, 0, last)
