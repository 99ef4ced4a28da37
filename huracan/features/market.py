"""The 70 market features of a symbol at a bar, from that bar and the bars before it only.

One kernel computes them for the last n positions of a buffer of bars, continuing recursive
filters (EMAs, Wilder averages) from a carried state. Training runs it over whole histories in
chunks; live runs it for one new bar (huracan/features/incremental.py). Both see the same
windows and do the same arithmetic, which is why a test finds them equal.

Every feature is scale-free (log returns, ratios, basis points, z-scores, shares): a model
trained on BTC can read SOL. Rows before a symbol has WARMUP_BARS bars hold NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from huracan.core.candle import CandleSeries
from huracan.features.kernels import (
    Array,
    centred,
    correlation,
    divide,
    ema_scan,
    lag_tail,
    tail,
    tail_windows,
    window_mean,
    window_moments,
    window_std,
    window_zscore,
)

RETURN_HORIZONS = (1, 3, 6, 12, 24, 48, 96, 288)
EMA_SPANS = (8, 12, 21, 26, 55, 144)
VOL_PERCENTILE_WINDOW = 288
# Bars of history a row needs: a 48-bar volatility ranked within 288 bars reaches 48 + 287
# returns back, so the first complete row is bar 335. The live buffer holds this many bars;
# 289 would do for its windows (the percentile's history is carried), the rest is margin.
WARMUP_BARS = 340
DAY_MS = 86_400_000

MARKET_FEATURES: tuple[str, ...] = (
    # returns: log return over h bars
    *(f"return_{h}" for h in RETURN_HORIZONS),
    # volatility
    "realised_vol_12",  # std of 1-bar log returns
    "realised_vol_48",
    "realised_vol_288",
    "parkinson_vol_12",  # from the high-low range
    "parkinson_vol_48",
    "garman_klass_vol_12",  # from open, high, low, close
    "garman_klass_vol_48",
    "vol_ratio_12_288",  # realised 12 over realised 288: expanding or calming
    # trend
    "ema_slope_8",  # bar-on-bar change of the EMA, bps
    "ema_slope_21",
    "ema_slope_55",
    "ema_slope_144",
    "close_vs_ema_21",  # close against the EMA, bps
    "close_vs_ema_55",
    "close_vs_ema_144",
    "ema_cross_8_21",  # faster EMA against slower, bps
    "ema_cross_21_55",
    "efficiency_ratio_48",  # net move / path length over 48 bars, signed, -1..1
    # momentum
    "rsi_14",  # Wilder RSI, rescaled to -1..1 ((RSI - 50) / 50)
    "rsi_48",
    "macd",  # EMA12 - EMA26, bps of the close
    "macd_histogram",  # MACD minus its 9-bar EMA, bps
    "stochastic_14",  # close within the 14-bar low..high, 0..1
    "stochastic_48",
    "momentum_risk_adjusted_12",  # 12-bar return over its expected spread (vol x sqrt 12)
    "momentum_risk_adjusted_48",
    "bar_shock",  # the last bar's return over the 48-bar realised volatility
    "up_bar_share_24",  # share of the last 24 bars that closed above their open
    # volume
    "volume_z_48",  # log volume z-score
    "volume_z_288",
    "volume_ratio_12_48",  # log of mean volume 12 over mean volume 48
    "obv_slope_48",  # signed volume over total volume, 48 bars, -1..1
    "dollar_volume_z_48",  # log quote volume z-score
    "return_volume_corr_48",  # correlation of returns and log volume
    # microstructure (from OHLCV)
    "corwin_schultz_spread_48",  # high-low spread estimate, mean over 48 bars, bps
    "roll_spread_48",  # from the serial covariance of returns, bps (0 if covariance >= 0)
    "amihud_illiquidity_48",  # log of mean |return| per unit of quote volume
    "close_location",  # where the close sits in the bar's range, -1..1
    "close_location_mean_12",
    "range_bps",  # high over low, bps
    "body_share",  # |close - open| over the range, 0..1
    "wick_balance",  # upper minus lower wick over the range, -1..1
    # regime: low/high volatility x ranging/trending
    "regime_low_vol_ranging",  # one-hot code
    "regime_low_vol_trending",
    "regime_high_vol_ranging",
    "regime_high_vol_trending",
    "regime_confidence",  # 0..1, distance from the thresholds
    "vol_percentile_288",  # rank of realised_vol_48 within the last 288 bars, 0..1
    "trend_strength_96",  # |efficiency ratio| over 96 bars, 0..1
    # shape and extremes
    "return_skew_48",
    "return_kurtosis_48",  # excess
    "drawdown_48",  # close against the 48-bar high, fraction (<= 0)
    "drawdown_288",
    "above_low_288",  # close against the 288-bar low, fraction (>= 0)
    "range_position_288",  # close within the 288-bar low..high, 0..1
    "bollinger_b_20",  # close within the 20-bar, 2-sigma bands
    "bollinger_width_20",  # band width over the mean
    "atr_14",  # Wilder average true range over the close
    "return_autocorr_48",  # lag-1 autocorrelation of returns
    # time of day (UTC), the bar's open
    "hour_sin",
    "hour_cos",
    # costs
    "round_trip_cost_bps",  # 2 x (taker fee + slippage + max(half spread, estimated half spread))
)
MARKET_WIDTH = len(MARKET_FEATURES)
assert MARKET_WIDTH == 70, MARKET_WIDTH

# Regime thresholds: volatility is "high" above the median of the last day of 5m bars;
# a market "trends" when at least 30% of its 96-bar path is net move.
HIGH_VOL_PERCENTILE = 0.5
TRENDING_STRENGTH = 0.3
_CS_K = 3.0 - 2.0 * math.sqrt(2.0)
_LN2 = math.log(2.0)
_ALPHAS_1 = np.array(
    [2.0 / (span + 1.0) for span in EMA_SPANS] + [1 / 14, 1 / 48, 1 / 14, 1 / 48, 1 / 14], dtype=np.float64
)
_ALPHA_SIGNAL = np.array([2.0 / 10.0])


@dataclass(frozen=True, slots=True)
class CostAssumptions:
    """What a trade is assumed to cost, for the cost feature (the execution config's values)."""

    taker_fee_bps: float = 10.0
    half_spread_bps: float = 1.0
    slippage_bps: float = 2.0


DEFAULT_COST = CostAssumptions()


@dataclass(frozen=True, slots=True)
class Ohlcv:
    """Bars as float64 arrays [..., T]; open_time_ms as int64 [..., T] or [T]."""

    open: Array
    high: Array
    low: Array
    close: Array
    volume: Array
    open_time_ms: npt.NDArray[np.int64]

    @classmethod
    def from_series(cls, series: CandleSeries) -> Ohlcv:
        return cls(series.open, series.high, series.low, series.close, series.volume, series.open_time_ms)

    @classmethod
    def stack(cls, series: Sequence[CandleSeries]) -> Ohlcv:
        lengths = {len(s) for s in series}
        if len(lengths) != 1:
            raise ValueError(f"series to stack must have one length, got {sorted(lengths)}")

        def column(name: str) -> Array:
            return np.stack([getattr(s, name) for s in series])

        return cls(
            column("open"),
            column("high"),
            column("low"),
            column("close"),
            column("volume"),
            np.stack([s.open_time_ms for s in series]),
        )

    def bars(self) -> Array:
        """[..., 6, T]: open, high, low, close, volume, open time (ms as float64, exact)."""
        times = np.broadcast_to(self.open_time_ms, self.close.shape).astype(np.float64)
        return np.stack((self.open, self.high, self.low, self.close, self.volume, times), axis=-2)


@dataclass(frozen=True, slots=True)
class FeatureCarry:
    """Recursive filter values after the last computed position, per symbol; NaN: none yet."""

    emas: Array  # [..., 11]: EMA 8, 12, 21, 26, 55, 144 of close; Wilder gain 14, 48, loss 14, 48, TR 14
    macd_signal: Array  # [..., 1]
    # realised_vol_48 of the positions before, for its percentile: kept rather than recomputed
    # from 335 returns, the one window that would dominate the live call's cost.
    vol_history: Array  # [..., VOL_PERCENTILE_WINDOW - 1]

    @classmethod
    def empty(cls, batch_shape: tuple[int, ...]) -> FeatureCarry:
        return cls(
            np.full((*batch_shape, len(_ALPHAS_1)), np.nan),
            np.full((*batch_shape, 1), np.nan),
            np.full((*batch_shape, VOL_PERCENTILE_WINDOW - 1), np.nan),
        )


def market_kernel(
    bars: Array, carry: FeatureCarry, n: int, cost: CostAssumptions
) -> tuple[Array, FeatureCarry]:
    """Features [..., n, 70] of the last n positions of `bars` [..., 6, L] (see Ohlcv.bars);
    the buffer must hold the WARMUP_BARS - 1 bars before them, or start at the data start.

    Each intermediate series is computed over just the positions its windows reach (`tail`),
    which is what keeps the one-bar live call cheap."""
    o, h, low, c, v, t = (bars[..., i, :] for i in range(6))
    c_n = tail(c, n)
    # Log returns over the deepest reach: the 288-bar windows (and the 288-bar return).
    log_c = np.log(tail(c, n + 290))
    r = log_c[..., 1:] - log_c[..., :-1]
    log_c_n = log_c[..., -n:]
    columns: list[Array] = [log_c_n - lag_tail(log_c, k, n) for k in RETURN_HORIZONS]

    # Recursive filters, stepped over the n output positions only, from the carried state.
    prev_c = lag_tail(c, 1, n)
    move = c_n - prev_c
    h_n, low_n, o_n = tail(h, n), tail(low, n), tail(o, n)
    true_range = np.fmax(h_n - low_n, np.fmax(np.abs(h_n - prev_c), np.abs(low_n - prev_c))) / c_n
    gain, loss = np.maximum(move, 0.0), np.maximum(-move, 0.0)
    inputs = np.stack([c_n] * len(EMA_SPANS) + [gain, gain, loss, loss, true_range], axis=-2)
    smoothed, emas_after = ema_scan(inputs, _ALPHAS_1, carry.emas)
    before = np.concatenate((carry.emas[..., None], smoothed[..., :-1]), axis=-1)
    ema = {span: smoothed[..., i, :] for i, span in enumerate(EMA_SPANS)}
    ema_before = {span: before[..., i, :] for i, span in enumerate(EMA_SPANS)}
    macd_line = (ema[12] - ema[26]) / c_n * 1e4
    signal, signal_after = ema_scan(macd_line[..., None, :], _ALPHA_SIGNAL, carry.macd_signal)

    windows = {w: tail_windows(r, w, n) for w in (12, 48, 288)}
    # The 48 returns feed volatility, spreads, moments and correlations: centred once.
    r48, var_r48 = centred(windows[48])
    realised = {12: window_std(windows[12]), 48: np.sqrt(var_r48), 288: window_std(windows[288])}
    hl2 = np.log(tail(h, n + 47) / tail(low, n + 47)) ** 2
    co2 = np.log(tail(c, n + 47) / tail(o, n + 47)) ** 2
    columns += [realised[12], realised[48], realised[288]]
    for w in (12, 48):
        columns.append(np.sqrt(window_mean(tail_windows(hl2, w, n)) / (4.0 * _LN2)))
    for w in (12, 48):
        gk = window_mean(tail_windows(0.5 * hl2 - (2.0 * _LN2 - 1.0) * co2, w, n))
        columns.append(np.sqrt(np.maximum(gk, 0.0)))
    columns.append(divide(realised[12], realised[288]))

    # trend
    for span in (8, 21, 55, 144):
        columns.append((ema[span] / ema_before[span] - 1.0) * 1e4)
    for span in (21, 55, 144):
        columns.append((c_n / ema[span] - 1.0) * 1e4)
    columns.append((ema[8] / ema[21] - 1.0) * 1e4)
    columns.append((ema[21] / ema[55] - 1.0) * 1e4)
    path = np.abs(tail(c, n + 95) - lag_tail(c, 1, n + 95))
    columns.append(_efficiency(c, path, 48, n))

    # momentum
    for i in (0, 1):  # Wilder 14, 48: (RSI - 50) / 50 = (gain - loss) / (gain + loss)
        g, lo = smoothed[..., 6 + i, :], smoothed[..., 8 + i, :]
        columns.append(divide(g - lo, g + lo))
    columns.append(macd_line)
    columns.append(macd_line - signal[..., 0, :])
    # Rolling extremes, shared by the stochastics, drawdowns and range position.
    highest: dict[int, Array] = {w: np.maximum.reduce(tail_windows(h, w, n), axis=-1) for w in (14, 48, 288)}
    lowest: dict[int, Array] = {w: np.minimum.reduce(tail_windows(low, w, n), axis=-1) for w in (14, 48, 288)}
    for w in (14, 48):
        columns.append(divide(c_n - lowest[w], highest[w] - lowest[w], where_zero=0.5))
    for w in (12, 48):
        columns.append(divide(log_c_n - lag_tail(log_c, w, n), realised[48] * math.sqrt(w)))
    columns.append(divide(tail(r, n), realised[48]))
    c24, o24 = tail(c, n + 23), tail(o, n + 23)
    up = np.where(np.isnan(c24) | np.isnan(o24), np.nan, (c24 > o24).astype(np.float64))
    columns.append(window_mean(tail_windows(up, 24, n)))

    # volume
    log_v = np.log1p(tail(v, n + 287))
    v48 = tail_windows(v, 48, n)
    log_v48, var_log_v48 = centred(tail_windows(log_v, 48, n))
    columns.append(divide(log_v48[..., -1], np.sqrt(var_log_v48), eps=1e-9))
    columns.append(window_zscore(tail_windows(log_v, 288, n), eps=1e-9))
    columns.append(np.log((window_mean(tail_windows(v, 12, n)) + 1e-12) / (window_mean(v48) + 1e-12)))
    columns.append(divide(np.add.reduce(np.sign(windows[48]) * v48, axis=-1), np.add.reduce(v48, axis=-1)))
    quote_volume = tail(v, n + 47) * tail(c, n + 47)
    columns.append(window_zscore(tail_windows(np.log1p(quote_volume), 48, n), eps=1e-9))
    columns.append(correlation(window_mean(r48 * log_v48), var_r48, var_log_v48, eps=1e-24))

    # microstructure
    cs_48 = window_mean(tail_windows(_corwin_schultz(tail(h, n + 48), tail(low, n + 48)), 48, n)) * 1e4
    columns.append(cs_48)
    previous_returns, var_previous = centred(tail_windows(r[..., :-1], 48, n))
    serial_cov = window_mean(r48 * previous_returns)
    columns.append(np.where(serial_cov < 0, 2.0 * np.sqrt(np.abs(serial_cov)), 0.0) * 1e4)
    illiquidity = np.abs(tail(r, n + 47)) / np.maximum(quote_volume, 1.0)
    columns.append(np.log(window_mean(tail_windows(illiquidity, 48, n)) + 1e-15))
    h12, low12, c12 = tail(h, n + 11), tail(low, n + 11), tail(c, n + 11)
    location = divide((c12 - low12) - (h12 - c12), h12 - low12)
    columns.append(tail(location, n))
    columns.append(window_mean(tail_windows(location, 12, n)))
    bar_range = h_n - low_n
    columns.append((h_n / low_n - 1.0) * 1e4)
    columns.append(divide(np.abs(c_n - o_n), bar_range))
    columns.append(divide((h_n - np.maximum(o_n, c_n)) - (np.minimum(o_n, c_n) - low_n), bar_range))

    # regime
    vol_series = np.concatenate((carry.vol_history, realised[48]), axis=-1)
    ranked = tail_windows(vol_series, VOL_PERCENTILE_WINDOW, n)
    vol_percentile = window_mean((ranked <= ranked[..., -1:]).astype(np.float64))
    vol_percentile = np.where(np.isnan(ranked).any(axis=-1), np.nan, vol_percentile)
    strength = np.abs(_efficiency(c, path, 96, n))
    unknown = np.isnan(vol_percentile) | np.isnan(strength)
    code = 2 * (vol_percentile > HIGH_VOL_PERCENTILE) + (strength > TRENDING_STRENGTH)
    for k in range(4):
        columns.append(np.where(unknown, np.nan, (code == k).astype(np.float64)))
    vol_sure = np.minimum(1.0, np.abs(vol_percentile - HIGH_VOL_PERCENTILE) / 0.25)
    trend_sure = np.minimum(1.0, np.abs(strength - TRENDING_STRENGTH) / 0.15)
    columns += [np.minimum(vol_sure, trend_sure), vol_percentile, strength]

    # shape and extremes
    skew, kurt = window_moments(r48, var_r48)
    columns += [skew, kurt]
    for w in (48, 288):
        columns.append(c_n / highest[w] - 1.0)
    columns.append(c_n / lowest[288] - 1.0)
    columns.append(divide(c_n - lowest[288], highest[288] - lowest[288], where_zero=0.5))
    relative = tail_windows(c, 20, n) / c_n[..., None]
    mid, spread = window_mean(relative), window_std(relative)
    columns.append(divide(1.0 - (mid - 2.0 * spread), 4.0 * spread, where_zero=0.5, eps=1e-12))
    columns.append(4.0 * spread / mid)
    columns.append(smoothed[..., 10, :])
    columns.append(correlation(serial_cov, var_r48, var_previous))

    # time of day and costs
    angle = 2.0 * math.pi * np.mod(tail(t, n), DAY_MS) / DAY_MS
    columns += [np.sin(angle), np.cos(angle)]
    half_spread = np.maximum(cost.half_spread_bps, cs_48 / 2.0)
    columns.append(2.0 * (cost.taker_fee_bps + cost.slippage_bps + half_spread))

    # np.array then a transposed view: a third of np.stack's cost on the live path's 70 columns.
    stacked = np.array(columns)
    rows = stacked.transpose((*range(1, stacked.ndim), 0))
    vol_after = vol_series[..., vol_series.shape[-1] - (VOL_PERCENTILE_WINDOW - 1) :]
    return rows, FeatureCarry(emas_after, signal_after, vol_after)


def _efficiency(c: Array, path: Array, w: int, n: int) -> Array:
    """Net move over w bars / sum of absolute bar moves: -1..1, 0 for a flat window."""
    net = tail(c, n) - lag_tail(c, w, n)
    return divide(net, tail_windows(path, w, n).sum(axis=-1))


def _corwin_schultz(h: Array, low: Array) -> Array:
    """Corwin-Schultz (2012) spread estimate of each pair of consecutive bars, [..., L - 1] from
    highs and lows [..., L], floored at 0 (negative estimates mean volatility, not spread, moved
    the range). NaN stays NaN (np.maximum propagates it)."""
    single = np.log(h / low) ** 2
    beta = single[..., 1:] + single[..., :-1]
    gamma = np.log(np.maximum(h[..., 1:], h[..., :-1]) / np.minimum(low[..., 1:], low[..., :-1])) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
    growth = np.exp(alpha)
    spread: Array = np.maximum(2.0 * (growth - 1.0) / (1.0 + growth), 0.0)
    return spread


def run_kernel(
    bars: Array, cost: CostAssumptions, carry: FeatureCarry | None = None, chunk: int = 2048
) -> tuple[Array, FeatureCarry]:
    """Features of every position of `bars` [..., 6, T] continuing from `carry`, computed in
    chunks so the window views stay small whatever T is."""
    total = bars.shape[-1]
    state = carry if carry is not None else FeatureCarry.empty(bars.shape[:-2])
    out = np.empty((*bars.shape[:-2], total, MARKET_WIDTH))
    for start in range(0, total, chunk):
        end = min(total, start + chunk)
        buffer = bars[..., max(0, start - WARMUP_BARS + 1) : end]
        rows, state = market_kernel(buffer, state, end - start, cost)
        out[..., start:end, :] = rows
    return out, state


def compute_market_features(ohlcv: Ohlcv, cost: CostAssumptions = DEFAULT_COST) -> Array:
    """[..., T, 70] for whole histories (training, replay); NaN while a row's windows reach
    before the first bar."""
    rows, _ = run_kernel(ohlcv.bars(), cost)
    return rows


REGIMES = ("low_vol_ranging", "low_vol_trending", "high_vol_ranging", "high_vol_trending")
_REGIME_COLUMNS = [MARKET_FEATURES.index(f"regime_{name}") for name in REGIMES]


def regime_names(rows: Array) -> list[str]:
    """The regime each market feature row [N, 70] is in (its one-hot code); "unknown" before
    warm-up. One pass over the batch: the decision step names the regime of every intent."""
    codes = rows[:, _REGIME_COLUMNS]
    known = np.isfinite(codes).all(axis=1) & (np.nan_to_num(codes).max(axis=1) > 0)
    best = np.nan_to_num(codes, nan=-1.0).argmax(axis=1)
    return [REGIMES[b] if k else "unknown" for b, k in zip(best.tolist(), known.tolist(), strict=True)]
