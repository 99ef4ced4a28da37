"""kernels.py's rules for one window at a time, compiled by numba for the live step
(live_step.py): sums in numpy's order, centring, guarded division, NaN-propagating extremes.

A window is (x, lo, n): x[lo : lo + n] of a 1-d array. Any NaN in it makes a sum, a mean or an
extreme NaN, as numpy's reductions do; that is what turns a window reaching before a symbol's
data start into a NaN feature.

These functions are compiled into live_step.py's entry points, whose machine code numba caches
keyed on live_step.py's text only: live_step.py records this file's hash (WINDOWS_SHA256) and
compiles without its cache when the hash differs. After editing this file, record the new hash
(tests/test_live_step.py prints it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

from numba import njit, types
from numba.extending import intrinsic
from numba.np.numpy_support import carray

from huracan.features.kernels import Array

F = TypeVar("F", bound=Callable[..., Any])
_BLOCK = 128  # numpy's PW_BLOCKSIZE: runs up to this long are summed with 8 running sums


def inner(fn: F) -> F:
    """njit with numpy's error model (x / 0 is inf or NaN, as in the numpy kernel, rather than
    an exception) and no fastmath (it would reorder the sums)."""
    return cast(F, njit(error_model="numpy")(fn))


def _address_as_pointer_typing(context: Any, address: Any) -> tuple[Any, Any]:
    signature = types.CPointer(types.float64)(types.uintp)  # type: ignore[no-untyped-call]

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return signature, codegen


# An address (uintp) as a float64 pointer, for carray; compiled code only.
_address_as_pointer: Any = intrinsic(_address_as_pointer_typing)


@inner
def unowned(a: Array) -> Array:
    """a's memory as an array with no owner. numba counts references to the owner of an array
    with atomic operations, for every view taken and every array an inner function is handed:
    thousands a push, a fifth of the step's time. Views of an array without an owner skip
    them. The memory must outlive the result: the entry points take it from their Python
    caller, which holds it for the call. C order only (carray lays the memory out so), and
    float64 only (the pointer's type; carray refuses another dtype when compiling)."""
    if not a.flags.c_contiguous:
        raise ValueError("live step: arrays must be C-contiguous")
    return carray(_address_as_pointer(a.ctypes.data), a.shape, a.dtype)


@inner
def block_sum(x: Array, lo: int, n: int) -> float:
    """numpy's pairwise sum of up to 128 values: 8 running sums, combined as a tree, then the
    rest one by one."""
    if n < 8:
        total = 0.0
        for i in range(lo, lo + n):
            total += x[i]
        return total
    r0, r1, r2, r3 = x[lo], x[lo + 1], x[lo + 2], x[lo + 3]
    r4, r5, r6, r7 = x[lo + 4], x[lo + 5], x[lo + 6], x[lo + 7]
    i = lo + 8
    end = lo + n - n % 8
    while i < end:
        r0, r1, r2, r3 = r0 + x[i], r1 + x[i + 1], r2 + x[i + 2], r3 + x[i + 3]
        r4, r5, r6, r7 = r4 + x[i + 4], r5 + x[i + 5], r6 + x[i + 6], r7 + x[i + 7]
        i += 8
    tree: float = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for j in range(end, lo + n):
        tree += x[j]
    return tree


@inner
def _first_part(n: int) -> int:
    half = n // 2
    return half - half % 8


@inner
def _part_sum(x: Array, lo: int, n: int) -> float:
    if n <= _BLOCK:
        return block_sum(x, lo, n)
    first = _first_part(n)
    if n - first > _BLOCK:
        raise ValueError("live_windows: a window too long for two levels of the pairwise sum")
    return block_sum(x, lo, first) + block_sum(x, lo + first, n - first)


@inner
def window_sum(x: Array, lo: int, n: int) -> float:
    """The window's sum in numpy's pairwise order, so that it equals np.add.reduce's to the
    bit. numpy splits a run longer than 128 in two (the first part a multiple of 8) until the
    parts fit a block and adds their sums; two levels of that are written out (288 -> 144 ->
    72) rather than recursed: numba crashes loading a cached function that calls a recursive
    one."""
    if n <= _BLOCK:
        return block_sum(x, lo, n)
    first = _first_part(n)
    return _part_sum(x, lo, first) + _part_sum(x, lo + first, n - first)


@inner
def window_mean(x: Array, lo: int, n: int) -> float:
    return window_sum(x, lo, n) / n


@inner
def centred(x: Array, lo: int, n: int, deviation: Array, squares: Array) -> float:
    """kernels.centred: deviation[:n] = the window minus its mean; returns the population
    variance, the mean of the squared deviations (two passes, for precision). squares is
    scratch."""
    mean = window_mean(x, lo, n)
    for i in range(n):
        d = x[lo + i] - mean
        deviation[i] = d
        squares[i] = d * d
    return window_mean(squares, 0, n)


@inner
def nan_max(a: float, b: float) -> float:
    """np.maximum: NaN if either is NaN."""
    return a if a >= b or math.isnan(a) else b


@inner
def nan_min(a: float, b: float) -> float:
    """np.minimum: NaN if either is NaN."""
    return a if a <= b or math.isnan(a) else b


@inner
def fmax(a: float, b: float) -> float:
    """np.fmax: a number wins over a NaN."""
    return a if a >= b or math.isnan(b) else b


@inner
def extend_extremes(
    high: Array, low: Array, lo: int, hi: int, state: tuple[float, float, bool, bool]
) -> tuple[float, float, bool, bool]:
    """Extends a running (max of high, min of low, NaN seen in high, in low) over positions
    lo .. hi - 1: nested windows ending at one bar share one pass. NaNs are only noted, so the
    loop is a few selects a value; a window's extreme is NaN where its flag is set, as
    np.maximum.reduce's (np.minimum.reduce's) would be."""
    top, bottom, high_gap, low_gap = state
    for q in range(lo, hi):
        a, b = high[q], low[q]
        top = a if a > top else top
        bottom = b if b < bottom else bottom
        high_gap = high_gap | math.isnan(a)
        low_gap = low_gap | math.isnan(b)
    return top, bottom, high_gap, low_gap


@inner
def settled(state: tuple[float, float, bool, bool]) -> tuple[float, float]:
    """(highest, lowest) of extend_extremes' windows so far: NaN where a NaN was seen."""
    top, bottom, high_gap, low_gap = state
    return (math.nan if high_gap else top), (math.nan if low_gap else bottom)


@inner
def divide(numerator: float, denominator: float, where_zero: float, eps: float) -> float:
    """kernels.divide, one element: where_zero when |denominator| < eps, even for a NaN
    numerator; a NaN denominator gives NaN (NaN < eps is false). Its fast path is a shortcut
    to the same values."""
    if abs(denominator) < eps:
        return where_zero
    return numerator / denominator


@inner
def zscore_last(deviation: Array, n: int, variance: float, eps: float) -> float:
    """kernels.window_zscore from centred's output."""
    return divide(deviation[n - 1], math.sqrt(variance), 0.0, eps)


@inner
def correlation(covariance: float, var_a: float, var_b: float, eps: float, divide_eps: float) -> float:
    """kernels.correlation: 0 when either variance is below eps and neither is NaN; the
    division itself uses divide's default eps (divide_eps), as there."""
    if (var_a < eps or var_b < eps) and not math.isnan(var_a) and not math.isnan(var_b):
        return 0.0
    return divide(covariance, math.sqrt(var_a * var_b), 0.0, divide_eps)


@inner
def sign(x: float) -> float:
    """np.sign: 0 for either zero; NaN stays NaN."""
    if x > 0.0:
        return 1.0
    if x < 0.0:
        return -1.0
    return 0.0 if x == 0.0 else x


@inner
def rank_share(history: Array, latest: float) -> float:
    """The share of history + [latest] at or below latest; NaN if any value is NaN (as a
    window mean of 0/1 flags with NaN masked in: the flags sum exactly, so a count is equal)."""
    count = 1.0  # latest against itself
    gap = math.isnan(latest)
    for x in history:
        count += 1.0 if x <= latest else 0.0
        gap = gap | math.isnan(x)
    return math.nan if gap else count / (history.shape[0] + 1)


@inner
def put(row: Array, k: int, value: float) -> int:
    """Writes column k and returns the next: the columns come in order, as market_kernel's
    list does."""
    row[k] = value
    return k + 1
