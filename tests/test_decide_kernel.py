"""The compiled decision step's restated rules against their originals (huracan/agent/kernel.py):
the context block and the normalisation to the bit, the regime to the name, tanh to float64's
precision; and the step's row selection."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numba import njit

from huracan.agent import kernel
from huracan.agent.runner import REGIME_COLUMNS
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.features.context import CONTEXT_WIDTH, context_features
from huracan.features.market import REGIMES, CostAssumptions, regime_names
from huracan.features.normaliser import CLIP, RunningNormaliser
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.trainer import Features

# Anything a float64 can hold, NaN and infinities included: the rules must agree on all of it.
ANY = st.floats(allow_nan=True, allow_infinity=True, width=64)
MODEST = st.floats(-1e4, 1e4)


def same_bits(got: npt.NDArray[np.floating], expected: npt.NDArray[np.floating]) -> None:
    """Equal to the bit, -0.0 apart from 0.0; NaN where NaN (its payload is the hardware's)."""
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    nan = np.isnan(expected)
    assert (np.isnan(got) == nan).all()
    unsigned = np.uint32 if got.dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(got[~nan].view(unsigned), expected[~nan].view(unsigned))


def test_the_kernel_clips_where_the_normaliser_does() -> None:
    assert kernel.CLIP == CLIP


@settings(max_examples=150, deadline=None)
@given(
    data=st.data(),
    n=st.integers(1, 12),
    bars_per_day=st.sampled_from([288.0, 24.0, 1440.0, 96.0, 1.0, 1 / 3]),
)
def test_context_rows_equal_context_features_to_the_bit(
    data: st.DataObject, n: int, bars_per_day: float
) -> None:
    values = st.one_of(ANY, MODEST, st.sampled_from([0.0, -0.0, 1.0, 10.0, -1000.0, 99.99]))
    column = hnp.arrays(np.float64, n, elements=values)
    arrays = {
        "pattern_memory": data.draw(hnp.arrays(np.float64, (n, 3), elements=values)),
        "has_position": data.draw(hnp.arrays(np.bool_, n)),
        "size_multiplier": data.draw(column),
        "unrealised_pnl_bps": data.draw(column),
        "hold_bars": data.draw(column),
        "drawdown": data.draw(column),
        "trades_today": data.draw(column),
        "wins_today": data.draw(column),
    }
    with np.errstate(all="ignore"):
        expected = context_features(
            bars_per_day=bars_per_day,
            **{**arrays, "pattern_memory": arrays["pattern_memory"].astype(np.float32)},
        )
    got = np.empty((n, CONTEXT_WIDTH), dtype=np.float32)
    kernel.context_rows(
        arrays["pattern_memory"],
        arrays["has_position"],
        arrays["size_multiplier"],
        arrays["unrealised_pnl_bps"],
        arrays["hold_bars"],
        bars_per_day,
        arrays["drawdown"],
        arrays["trades_today"],
        arrays["wins_today"],
        got,
    )
    same_bits(got, expected)


def test_context_rows_hand_worked() -> None:
    # Long 0.5x, +250 bps, 144 bars of 288 a day, 6.25 % drawdown, 4 trades of which 3 won;
    # pattern memory: 60 % wins averaging 35 bps, reliability 0.8.
    got = np.empty((1, CONTEXT_WIDTH), dtype=np.float32)
    one = np.ones(1)
    kernel.context_rows(
        np.array([[0.6, 35.0, 0.8]]), np.ones(1, bool), 0.5 * one, 250.0 * one, 144.0 * one, 288.0,
        0.0625 * one, 4.0 * one, 3.0 * one, got,
    )  # fmt: skip
    # 35 / 100 = 0.35; 250 / 100 = 2.5; 144 / 288 = 0.5 days; 0.0625 x 10 = 0.625; 4 / 10 = 0.4;
    # 3 wins / 4 trades = 0.75 (each in float32, as the training environment computes it).
    expected = np.array([[0.6, 0.35, 0.8, 1.0, 0.5, 2.5, 0.5, 0.625, 0.4, 0.75]], dtype=np.float32)
    np.testing.assert_array_equal(got, expected)


@njit
def _normalise_all(rows: np.ndarray, mean: np.ndarray, scale: np.ndarray, out: np.ndarray) -> None:
    for i in range(rows.shape[0]):
        kernel.normalise_into(rows, i, mean, scale, out[i])


@settings(max_examples=100, deadline=None)
@given(
    fit=hnp.arrays(np.float64, (30, 5), elements=st.floats(-1e6, 1e6)),
    rows=hnp.arrays(np.float64, (8, 5), elements=st.one_of(ANY, st.floats(-1e7, 1e7))),
)
def test_normalise_into_equals_the_normaliser_to_the_bit(fit: np.ndarray, rows: np.ndarray) -> None:
    normaliser = RunningNormaliser(5)
    fit[:, 0] = 7.0  # a constant column: the variance floor divides it
    normaliser.update(fit)
    with np.errstate(all="ignore"):
        expected = normaliser.normalise(rows)
    out = np.empty(rows.shape)
    _normalise_all(rows, normaliser.mean, normaliser.scale, out)
    got = out.astype(np.float32)  # it holds float32 values in float64
    assert (got.astype(np.float64) == out).all()
    same_bits(got, expected)


@njit
def _tanh_all(x: np.ndarray, out: np.ndarray) -> None:
    for j in range(x.size):
        out[j] = kernel.tanh(x[j])


def test_tanh_has_float64_precision_and_rounds_to_float32_as_the_library() -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate(
        [
            rng.normal(0.0, 3.0, 100_000),
            np.linspace(-12.0, 12.0, 100_001),
            rng.normal(0.0, 1e-6, 10_000),
            np.linspace(0.62, 0.63, 10_001),  # where the two formulas meet
            [0.0, -0.0, 0.625, -0.625, 1e-300, 9.99, 10.0, 30.0, -30.0, 1e300],
        ]
    )
    got = np.empty_like(x)
    _tanh_all(x, got)
    library = np.array([math.tanh(v) for v in x])
    inside = np.abs(x) < 9.9  # beyond, the cap at 10 leaves 1 - 4e-9: 1.0 in float32
    np.testing.assert_allclose(got[inside], library[inside], rtol=1e-15, atol=0.0)
    np.testing.assert_array_equal(got.astype(np.float32), library.astype(np.float32))
    assert math.copysign(1.0, kernel.tanh(-0.0)) == -1.0  # odd, to the sign of zero
    assert math.isnan(kernel.tanh(math.nan))
    assert float(np.float32(kernel.tanh(math.inf))) == 1.0  # capped at 10: 1 - 4e-9
    assert float(np.float32(kernel.tanh(-math.inf))) == -1.0


@njit
def _regimes(rows: np.ndarray, columns: np.ndarray, out: np.ndarray) -> None:
    for i in range(rows.shape[0]):
        out[i] = kernel.regime_of(rows, i, columns)


def names(codes: np.ndarray) -> list[str]:
    return [REGIMES[c] if c != kernel.UNKNOWN_REGIME else "unknown" for c in codes.tolist()]


def test_regime_of_names_every_bundled_row_as_regime_names() -> None:
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    series = {s: read_candle_file(f) for s, f in files.items()}
    rows = Features.of(series, CostAssumptions()).market.reshape(-1, 70)  # warm-up rows included
    codes = np.empty(len(rows), dtype=np.int64)
    _regimes(rows, REGIME_COLUMNS, codes)
    assert names(codes) == regime_names(rows)
    assert len(set(codes.tolist())) == len(REGIMES) + 1  # every regime, and "unknown" (warm-up)


def test_regime_of_ties_zeros_and_gaps() -> None:
    rows = np.zeros((5, 70))
    columns = REGIME_COLUMNS
    rows[0, columns] = [0.0, 1.0, 1.0, 0.0]  # a tie: the first
    rows[1, columns] = [0.0, 0.0, 0.0, 0.0]  # nothing positive: unknown
    rows[2, columns] = [np.nan, 1.0, 0.0, 0.0]  # a gap: unknown
    rows[3, columns] = [-1.0, -0.5, -2.0, 0.0]  # nothing positive
    rows[4, columns] = [0.2, 0.1, 0.9, np.inf]  # not finite: unknown
    codes = np.empty(5, dtype=np.int64)
    _regimes(rows, columns, codes)
    assert names(codes) == regime_names(rows) == [REGIMES[1], "unknown", "unknown", "unknown", "unknown"]


def test_eligible_rows_takes_present_member_warm_symbols_in_order() -> None:
    rows = np.zeros((5, 70))
    rows[1, 3] = np.nan  # symbol 1 is not warm
    rows[4, 69] = np.inf
    present = np.array([True, True, False, True, True])
    member = np.array([True, True, True, False, True])
    chosen = np.full(5, -1, dtype=np.int64)
    n, cold = kernel.eligible_rows(rows, present, member, chosen)
    # 0: chosen; 1: cold; 2: no bar; 3: not the model's; 4: cold.
    assert (n, cold) == (1, 2)
    assert chosen[:n].tolist() == [0]


@pytest.mark.parametrize("greedy", [True, False])
def test_decisions_of_no_row(greedy: bool) -> None:
    out = np.empty((0, 0))
    got = kernel.decide_rows(
        np.zeros((0, 70)), np.zeros((0, 10), np.float32), np.zeros(0, bool), np.zeros(0, np.int64), 0,
        np.zeros(70), np.ones(70), np.zeros(6 * 80, np.float32), np.zeros(6, np.float32),
        np.array([80, 6]), np.ones((2, 6), bool), greedy, np.empty(0), 0.0, np.ones(6, bool),
        REGIME_COLUMNS, out, np.empty(0, np.int64), np.empty(0),
    )  # fmt: skip
    assert got == 0
