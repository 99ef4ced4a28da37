"""Array primitives of the feature pipeline: windows ending at the last n positions, recursive
filters with carried state, and guarded divisions.

Every feature is computed by the same code for any number of output positions: training asks
for thousands at once, live for one. Positions before the data start are NaN, so a window that
reaches before the first bar is NaN and a filter starts on its first real value; that is how
the batch and the incremental path stay identical.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

Array = npt.NDArray[np.float64]

# Below this a denominator counts as zero. Only exact zeros (a flat bar, a window of identical
# log returns) need catching in quantities of their natural scale; where rounding noise can
# stand in for a zero (the spread of identical prices), callers pass a larger, relative eps.
EPS = 1e-30


def tail_windows(x: Array, width: int, n: int) -> Array:
    """[..., n, width]: the windows of `width` values ending at each of the last n positions
    of x [..., L]. Where a window reaches before the start of x it holds NaN."""
    length = x.shape[-1]
    if n == 1 and length >= width:  # the live case: one window, a plain slice (same values)
        return x[..., None, length - width :]
    need = n + width - 1
    if length < need:
        pad = np.full((*x.shape[:-1], need - length), np.nan)
        x = np.concatenate((pad, x), axis=-1)
    return sliding_window_view(x, width, axis=-1)[..., -n:, :]


def tail(x: Array, n: int) -> Array:
    """The last n positions of x [..., L], NaN-padded at the front."""
    length = x.shape[-1]
    if length >= n:
        return x[..., length - n :]
    return np.concatenate((np.full((*x.shape[:-1], n - length), np.nan), x), axis=-1)


def lag_tail(x: Array, k: int, n: int) -> Array:
    """x[t - k] for each of the last n positions t of x [..., L] (NaN before the start)."""
    length = x.shape[-1]
    stop = length - k
    if stop - n >= 0:
        return x[..., stop - n : stop]
    return tail(x[..., : max(stop, 0)], n)


def ema_scan(x: Array, alpha: Array, previous: Array) -> tuple[Array, Array]:
    """Exponential smoothing of x [..., K, n] along the last axis, each of the K rows with its
    own alpha [K], continuing from `previous` [..., K] (the value before the first position;
    NaN: start on the first value). A NaN input restarts the filter on the next value.

    One Python step per position, vectorised over everything else: the single-step update live
    and the long scan in training do exactly the same arithmetic."""
    out = np.empty_like(x)
    state = previous.copy()
    for i in range(x.shape[-1]):
        value = x[..., i]
        state = np.where(np.isnan(state), value, state + alpha * (value - state))
        out[..., i] = state
    return out, state


def divide(numerator: Array, denominator: Array, where_zero: float = 0.0, eps: float = EPS) -> Array:
    """numerator / denominator, `where_zero` where |denominator| < eps (NaN stays NaN)."""
    magnitude = np.abs(denominator)
    # The usual case: no small denominator, a plain division. A ufunc reduce rather than
    # ndarray.any: the live path's arrays are tiny and Python overhead is their cost. A NaN
    # makes the minimum NaN and takes the general path, which keeps it NaN.
    if np.minimum.reduce(magnitude, axis=None, initial=np.inf) >= eps:
        return numerator / denominator
    small = magnitude < eps
    result = numerator / np.where(small, 1.0, denominator)
    return np.where(small, where_zero, result)


def window_mean(w: Array, keepdims: bool = False) -> Array:
    # np.add.reduce, not np.mean: the same sum without mean's Python-level overhead, which
    # dominates on the live path's small arrays.
    if keepdims:
        total: Array = np.add.reduce(w, axis=-1, keepdims=True)
    else:
        total = np.asarray(np.add.reduce(w, axis=-1))
    mean: Array = total / w.shape[-1]
    return mean


def centred(w: Array) -> tuple[Array, Array]:
    """(w minus its window mean, population variance) over the window axis, two-pass for
    precision. Several features share one window (the 48 returns feed six of them), so they
    share its centring too: the live call's cost is its count of array operations."""
    deviation = w - window_mean(w, keepdims=True)
    return deviation, window_mean(deviation * deviation)


def window_std(w: Array) -> Array:
    """Population standard deviation over the window axis."""
    return np.sqrt(centred(w)[1])


def window_zscore(w: Array, eps: float) -> Array:
    """The last value of each window against the window's mean and standard deviation; 0 when
    the standard deviation is below eps (a flat window's is rounding noise, not zero)."""
    deviation, variance = centred(w)
    return divide(deviation[..., -1], np.sqrt(variance), eps=eps)


def correlation(covariance: Array, var_a: Array, var_b: Array, eps: float = EPS) -> Array:
    """Pearson correlation from a window's covariance and variances; 0 when either variance is
    below eps (a flat series correlates with nothing)."""
    flat = (var_a < eps) | (var_b < eps)
    corr = divide(covariance, np.sqrt(var_a * var_b))
    return np.where(flat & ~np.isnan(var_a) & ~np.isnan(var_b), 0.0, corr)


def window_moments(deviation: Array, variance: Array) -> tuple[Array, Array]:
    """(skewness, excess kurtosis) over the window axis from `centred`'s output; 0 for a flat
    window."""
    squared = deviation * deviation
    m3 = window_mean(squared * deviation)
    m4 = window_mean(squared * squared)
    skew = divide(m3, variance**1.5)
    kurt = np.where(np.isnan(variance), np.nan, divide(m4, variance * variance, where_zero=3.0) - 3.0)
    return skew, kurt
