from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.features.normaliser import RunningNormaliser


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.lists(st.integers(1, 80), min_size=1, max_size=8), st.integers(0, 2**31))
def test_chunked_statistics_equal_the_whole(rows: int, cuts: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-1e3, 1e3, 4), rng.uniform(1e-3, 1e2, 4), size=(rows, 4))
    normaliser = RunningNormaliser(4)
    edges = sorted({0, rows, *(min(c, rows) for c in np.cumsum(cuts))})
    for a, b in itertools.pairwise(edges):
        normaliser.update(x[a:b])
    assert normaliser.count == rows
    np.testing.assert_allclose(normaliser.mean, x.mean(axis=0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(normaliser.var, x.var(axis=0), rtol=1e-7, atol=1e-12)


def test_nan_rows_are_skipped_and_output_is_clipped_float32() -> None:
    normaliser = RunningNormaliser(2)
    normaliser.update(np.array([[1.0, 2.0], [np.nan, 5.0], [3.0, 4.0]]))
    assert normaliser.count == 2
    out = normaliser.normalise(np.array([[2.0, 3.0], [1e9, np.nan]]))
    assert out.dtype == np.float32
    assert out[0].tolist() == [0.0, 0.0]
    assert out[1].tolist() == [5.0, 0.0]


def test_state_round_trips_through_plain_values() -> None:
    normaliser = RunningNormaliser(3)
    normaliser.update(np.random.default_rng(1).normal(size=(50, 3)))
    state = normaliser.state()
    assert all(isinstance(v, float) for v in state["mean"] + state["m2"] + [state["count"]])
    again = RunningNormaliser.from_state(state)
    x = np.random.default_rng(2).normal(size=(5, 3))
    assert (again.normalise(x) == normaliser.normalise(x)).all()


@pytest.mark.parametrize(
    "state",
    [
        {},
        {"count": 0.0, "mean": [0.0], "m2": [0.0]},
        {"count": 3.0, "mean": [0.0, 1.0], "m2": [1.0]},
        {"count": 3.0, "mean": [float("nan")], "m2": [1.0]},
        {"count": 3.0, "mean": [0.0], "m2": [-1.0]},
    ],
)
def test_a_bad_state_is_refused(state: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="normaliser state"):
        RunningNormaliser.from_state(state)
