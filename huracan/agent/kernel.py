"""The decision step's arithmetic compiled: the context block, the normalisation, the actor's
forward pass, the mask, the softmax and the choice, for a batch of symbols.

Why: a bar wakes a process whose caches were just flushed by the database driver, the executor
and the fill model. Done with numpy the step took ~40 calls (and as many temporary arrays),
each several times dearer cold than in a benchmark loop; here it is three calls per model
(`eligible_rows`, `context_rows`, `decide_rows`), the last ~20 us for 20 symbols.

It restates, rather than calls, rules kept elsewhere (numba compiles only what it is given, and
its cache notices changes to this file alone, so nothing here calls into another file):
- the context block, huracan/features/context.py's `context_features`, in the same float32
  steps: each operation on float32 values is done in float64 and rounded back, which for one
  +, -, x or / gives float32 arithmetic's result to the bit (53 >= 2 x 24 + 2 bits);
- `RunningNormaliser.normalise`: (x - mean) / scale, clipped to +-CLIP, NaN to 0, as float32,
  to the bit (the scale is the normaliser's own `scale`);
- `regime_names`' rule (huracan/features/market.py): a row's regime is its largest one-hot
  code, "unknown" unless every code is finite and one is positive;
- ActorForward.probabilities and forward.sample (huracan/agent/forward.py).
tests/test_decide_kernel.py holds the first three equal to their originals.

The forward pass sums in float64 (in any order: `_dense`) and rounds each activation and
probability to float32; numpy and torch sum in float32 in their own orders. Probabilities differ
from theirs by float rounding (tests/test_agent_forward.py), and tests/test_decide_equivalence.py
checks that every decision over the bundled data, greedy and sampled, is the numpy pass's.
tanh is computed here (`tanh`: the C library's is a call per number, five times dearer).

Sampling is forward.sample's inverse CDF on uniforms the caller draws with `rng.random(n)`, the
call the numpy step made, so the generator's stream and the sampled actions stay as they were.

Output rows (`decide_rows`' `out`, one per acting symbol, in symbol order): the state the model
decided on (the raw market row, then the context block), then the columns below. Floats hold
the integers exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt
from numba import njit

from huracan.logs import get_logger

F = TypeVar("F", bound=Callable[..., Any])
log = get_logger("huracan.agent.kernel")

# The columns of an output row after the state, as offsets from the state's width.
SYMBOL_COLUMN, ACTION_COLUMN, CONFIDENCE_COLUMN, REGIME_COLUMN = range(4)
OUTPUT_EXTRA = 4
UNKNOWN_REGIME = -1  # REGIME_COLUMN when the row has no regime yet

# Must equal huracan/features/normaliser.CLIP (checked by the tests): spelled out because numba
# freezes it into the cached machine code, which is keyed on this file's text only.
CLIP = 5.0


def _compiled(fn: F) -> F:
    """njit with numpy's error model (x / 0 is inf or NaN as in the numpy path), its machine code
    cached on disk; where numba finds no writable cache directory it raises at decoration, and
    the function compiles in memory at its first call instead."""
    try:
        return cast(F, njit(cache=True, error_model="numpy")(fn))
    except RuntimeError:  # "cannot cache function ...: no locator available"
        log.info("no writable numba cache directory: the decision kernel compiles in memory")
        return cast(F, njit(error_model="numpy")(fn))


@_compiled
def eligible_rows(
    rows: npt.NDArray[np.float64],  # [S, M] market rows, NaN until warm
    present: npt.NDArray[np.bool_],  # [S] the symbol has a bar in this batch
    member: npt.NDArray[np.bool_],  # [S] the model decides for the symbol
    chosen: npt.NDArray[np.int64],  # [S] out: the deciding symbols' indices, first n
) -> tuple[int, int]:
    """(n, cold): the present member symbols whose row is warm (every feature finite) are
    chosen; `cold` counts the present members that are not."""
    n = 0
    cold = 0
    for i in range(rows.shape[0]):
        if not (present[i] and member[i]):
            continue
        warm = True
        for c in range(rows.shape[1]):
            if not math.isfinite(rows[i, c]):
                warm = False
                break
        if warm:
            chosen[n] = i
            n += 1
        else:
            cold += 1
    return n, cold


def _inline(fn: F) -> F:
    """A helper compiled into the entry points that call it (same file: cached with them)."""
    return cast(F, njit(inline="always", error_model="numpy")(fn))


@_inline
def _f32(x: float) -> float:
    """x rounded to float32 (and held as float64)."""
    return np.float32(x)  # type: ignore[return-value]  # numba widens it where a float is needed


@_compiled
def context_rows(
    pattern_memory: npt.NDArray[np.float64],  # [S, 3] win rate, average profit bps, reliability
    has_position: npt.NDArray[np.bool_],  # [S]
    size_multiplier: npt.NDArray[np.float64],  # [S]
    unrealised_pnl_bps: npt.NDArray[np.float64],  # [S]
    hold_bars: npt.NDArray[np.float64],  # [S]
    bars_per_day: float,
    drawdown: npt.NDArray[np.float64],  # [S]
    trades_today: npt.NDArray[np.float64],  # [S]
    wins_today: npt.NDArray[np.float64],  # [S]
    out: npt.NDArray[np.float32],  # [S, CONTEXT_WIDTH]
) -> None:
    """context_features(pattern_memory=pattern_memory.astype(float32), ...) into `out`, to the
    bit. A product with the 0/1 position flag stays a product, not a branch: NaN x 0 is NaN."""
    per_day = _f32(bars_per_day)  # a Python float meets a float32 array as float32 (NEP 50)
    for i in range(out.shape[0]):
        held = 1.0 if has_position[i] else 0.0
        trades = _f32(trades_today[i])
        out[i, 0] = pattern_memory[i, 0]
        out[i, 1] = _f32(pattern_memory[i, 1]) / 100.0
        out[i, 2] = pattern_memory[i, 2]
        out[i, 3] = held
        out[i, 4] = _f32(size_multiplier[i]) * held
        out[i, 5] = _clip(_f32(_f32(unrealised_pnl_bps[i]) / 100.0), -10.0, 10.0) * held
        out[i, 6] = _clip(_f32(_f32(hold_bars[i]) / per_day), 0.0, 4.0) * held
        out[i, 7] = _clip(_f32(_f32(drawdown[i]) * 10.0), 0.0, 1.0)
        out[i, 8] = _clip(_f32(trades / 10.0), 0.0, 2.0)
        out[i, 9] = _f32(wins_today[i]) / (trades if trades != trades or trades > 1.0 else 1.0)


@_inline
def _clip(x: float, low: float, high: float) -> float:
    """np.clip's rule: NaN stays NaN, and a value equal to a bound stays itself (-0.0 clipped
    at 0.0 is -0.0)."""
    return low if x < low else high if x > high else x


@_inline
def normalise_into(
    rows: npt.NDArray[np.float64],
    i: int,
    mean: npt.NDArray[np.float64],
    scale: npt.NDArray[np.float64],
    x: npt.NDArray[np.float64],
) -> None:
    """RunningNormaliser.normalise of row i into x[:M] (float32 values): (x - mean) / scale,
    clipped to +-CLIP, NaN to 0."""
    for c in range(rows.shape[1]):
        v = _clip((rows[i, c] - mean[c]) / scale[c], -CLIP, CLIP)
        x[c] = 0.0 if v != v else _f32(v)


@_compiled
def decide_rows(
    rows: npt.NDArray[np.float64],  # [S, M] raw market rows
    context: npt.NDArray[np.float32],  # [S, C] context_rows' block
    has_position: npt.NDArray[np.bool_],  # [S]
    chosen: npt.NDArray[np.int64],  # the deciding rows, first n
    n: int,
    mean: npt.NDArray[np.float64],  # [M] the normaliser's
    scale: npt.NDArray[np.float64],  # [M]
    weights: npt.NDArray[np.float32],  # every layer's [out, in] weight, C order, one after another
    biases: npt.NDArray[np.float32],  # every layer's bias, one after another
    widths: npt.NDArray[np.int64],  # [M + C, hidden..., actions]
    masks: npt.NDArray[np.bool_],  # [2, actions]: row 0 flat, row 1 long
    greedy: bool,
    uniforms: npt.NDArray[np.float64],  # [n] rng.random(n) when sampling, else unused
    min_confidence: float,
    acting_actions: npt.NDArray[np.bool_],  # [actions] the actions that make an intent
    regime_columns: npt.NDArray[np.int64],  # the market columns of the regime's one-hot code
    out: npt.NDArray[np.float64],  # [S, M + C + OUTPUT_EXTRA]
    actions_out: npt.NDArray[np.int64],  # [S] out: row r's action, first n
    confidence_out: npt.NDArray[np.float64],  # [S] out: its probability
) -> int:
    """Decide the chosen rows; each acting one (an acting action chosen with at least
    min_confidence) also gets an output row (module doc). Returns their count."""
    market = rows.shape[1]
    width = market + context.shape[1]
    actions = widths[widths.size - 1]
    largest = 0
    for w in widths:
        largest = max(largest, w)
    x = np.empty(largest)  # the observation, then each layer's input
    y = np.empty(largest)  # each layer's output, then the probabilities
    acting = 0
    for r in range(n):
        i = chosen[r]
        # The observation: the normalised market row, then the context, as float32 values.
        normalise_into(rows, i, mean, scale, x)
        for c in range(market, width):
            x[c] = context[i, c - market]
        mask = masks[1 if has_position[i] else 0]
        probabilities_into(x, weights, biases, widths, mask, y)
        if greedy:  # the first largest, as argmax
            action = 0
            for a in range(1, actions):
                if y[a] > y[action]:
                    action = a
        else:  # forward.sample: the count of cumulative sums <= u x the row's total
            cumulative = 0.0
            for a in range(actions):
                cumulative += y[a]
                x[a] = cumulative
            u = uniforms[r] * cumulative
            action = 0
            for a in range(actions):
                if x[a] <= u:
                    action += 1
        confidence = y[action]
        actions_out[r] = action
        confidence_out[r] = confidence
        if not (acting_actions[action] and confidence >= min_confidence):
            continue
        o = out[acting]
        for c in range(market):
            o[c] = rows[i, c]
        for c in range(market, width):
            o[c] = context[i, c - market]
        o[width + SYMBOL_COLUMN] = i
        o[width + ACTION_COLUMN] = action
        o[width + CONFIDENCE_COLUMN] = confidence
        o[width + REGIME_COLUMN] = regime_of(rows, i, regime_columns)
        acting += 1
    return acting


@_inline
def probabilities_into(
    x: npt.NDArray[np.float64],  # the observation (float32 values) in x[:widths[0]]; overwritten
    weights: npt.NDArray[np.float32],
    biases: npt.NDArray[np.float32],
    widths: npt.NDArray[np.int64],
    mask: npt.NDArray[np.bool_],  # [actions] the valid actions
    y: npt.NDArray[np.float64],  # out: y[:actions] the probabilities (float32 values)
) -> None:
    """ActorForward.probabilities for one observation: hidden layers with tanh (activations
    rounded to float32, as the network holds them), the policy head, then the softmax from the
    largest valid logit; a masked action's probability is exactly 0."""
    layers = widths.size - 1
    w_at = 0
    b_at = 0
    for layer in range(layers):
        fan_in = widths[layer]
        fan_out = widths[layer + 1]
        _dense(x, weights[w_at : w_at + fan_in * fan_out], biases[b_at : b_at + fan_out], y)
        w_at += fan_in * fan_out
        b_at += fan_out
        if layer < layers - 1:
            for j in range(fan_out):
                x[j] = _f32(tanh(y[j]))
    actions = widths[layers]
    top = -math.inf
    for a in range(actions):
        if mask[a] and y[a] > top:
            top = y[a]
    total = 0.0
    for a in range(actions):
        if mask[a]:
            y[a] = math.exp(y[a] - top)
            total += y[a]
        else:
            y[a] = 0.0
    for a in range(actions):
        y[a] = _f32(y[a] / total)


@_inline
def regime_of(rows: npt.NDArray[np.float64], i: int, columns: npt.NDArray[np.int64]) -> int:
    """regime_names' rule for row i: the index of its largest code (the first of equals), or
    UNKNOWN_REGIME unless every code is finite and one is positive."""
    best = 0
    known = False
    for r in range(columns.size):
        code = rows[i, columns[r]]
        if not math.isfinite(code):
            return UNKNOWN_REGIME
        known = known or code > 0.0
        if code > rows[i, columns[best]]:
            best = r
    return best if known else UNKNOWN_REGIME


@njit(error_model="numpy", fastmath={"reassoc", "contract"})
def _dense(
    x: npt.NDArray[np.float64],  # [>= in]
    weight: npt.NDArray[np.float32],  # [out * in]: row j holds output j's weights
    bias: npt.NDArray[np.float32],  # [out]
    y: npt.NDArray[np.float64],  # [>= out] out: x . weight[j] + bias[j]
) -> None:
    """One linear layer in float64. Each output is a dot product whose terms LLVM may add in
    any order ("reassoc": it then keeps several partial sums in vector registers, about twice
    the speed of a fixed order) and fuse into multiply-adds ("contract"): rounding only, as
    BLAS's blocking differs from torch's. Its own function, so the flags reach nothing else."""
    fan_out = bias.size
    fan_in = weight.size // fan_out
    for j in range(fan_out):
        row = weight[j * fan_in : (j + 1) * fan_in]
        total = 0.0
        for k in range(fan_in):
            total += x[k] * row[k]
        y[j] = total + bias[j]


# ln 2 in two parts (Cody and Waite): n x LN2_HI is exact for the n here, so r keeps its bits.
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
# Cephes' tanh for |x| < 0.625: x + x^3 P(x^2) / Q(x^2).
_P0, _P1, _P2 = -9.64399179425052238628e-1, -9.92877231001918586564e1, -1.61468768441708447952e3
_Q1, _Q2, _Q3 = 1.12811678491632931402e2, 2.23548839060100448583e3, 4.84406305325125486048e3
# 1 / k!, the Taylor coefficients of e^r, highest order first.
_EXP_TAYLOR = tuple(1.0 / math.factorial(k) for k in range(12, -1, -1))


@_inline
def tanh(x: float) -> float:
    """tanh in float64 to ~4e-16 relative, in plain arithmetic that LLVM vectorises (the C
    library's tanh is a call per number, five times slower here). Near 0 Cephes' rational
    function; elsewhere 1 - 2 / (e^2|x| + 1) with e^y = 2^n e^r, |r| <= ln2 / 2, e^r by its
    Taylor series to r^12 (error < 2e-16). |x| is capped at 10, where tanh rounds to 1 in
    float32 (it is 1 - 4e-9), so 2^n stays within 2^29 and is built exactly from n's bits."""
    if x != x:  # NaN stays NaN (as numpy's), rather than meeting the cap
        return x
    a = min(abs(x), 10.0)
    z = a * a
    near_zero = a + a * z * (((_P0 * z + _P1) * z + _P2) / (((z + _Q1) * z + _Q2) * z + _Q3))
    y = 2.0 * a
    n = math.floor(y * _INV_LN2 + 0.5)
    r = (y - n * _LN2_HI) - n * _LN2_LO
    e = 0.0
    for coefficient in _EXP_TAYLOR:  # Horner; a constant tuple: LLVM unrolls it
        e = e * r + coefficient
    bits = int(n)
    e *= 2.0 if bits & 1 else 1.0
    e *= 4.0 if bits & 2 else 1.0
    e *= 16.0 if bits & 4 else 1.0
    e *= 256.0 if bits & 8 else 1.0
    e *= 65536.0 if bits & 16 else 1.0
    away = 1.0 - 2.0 / (e + 1.0)
    return math.copysign(near_zero if a < 0.625 else away, x)
