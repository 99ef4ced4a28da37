from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.features.context import CONTEXT_FEATURES, CONTEXT_WIDTH, context_features
from huracan.features.market import MARKET_FEATURES
from huracan.features.schema import STATE_SCHEMA, STATE_SIZE, FeatureSchema


def test_the_state_is_80_unique_names_market_then_context() -> None:
    assert STATE_SIZE == 80 == len(set(STATE_SCHEMA.names))
    assert STATE_SCHEMA.names == MARKET_FEATURES + CONTEXT_FEATURES
    assert len(STATE_SCHEMA.hash) == 64
    assert STATE_SCHEMA.hash == FeatureSchema(STATE_SCHEMA.names, 1).hash


@given(st.data())
def test_any_rename_reorder_or_version_changes_the_hash(data: st.DataObject) -> None:
    names = list(STATE_SCHEMA.names)
    i = data.draw(st.integers(0, len(names) - 1))
    j = data.draw(st.integers(0, len(names) - 1).filter(lambda k: k != i))
    swapped = names.copy()
    swapped[i], swapped[j] = swapped[j], swapped[i]
    renamed = names.copy()
    renamed[i] = renamed[i] + "_v2"
    hashes = {
        STATE_SCHEMA.hash,
        FeatureSchema(tuple(swapped), 1).hash,
        FeatureSchema(tuple(renamed), 1).hash,
        FeatureSchema(STATE_SCHEMA.names, 2).hash,
    }
    assert len(hashes) == 4


def test_duplicate_names_are_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match="unique"):
        FeatureSchema(("a", "b", "a"), 1)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 30), seed=st.integers(0, 2**16))
def test_context_is_the_same_from_numpy_arrays_and_torch_tensors(n: int, seed: int) -> None:
    # Live inference passes numpy arrays, the training environment torch tensors: one formula.
    rng = np.random.default_rng(seed)
    trades = rng.integers(0, 30, n).astype(np.float64)
    arrays = {
        "pattern_memory": rng.uniform(-300, 300, (n, 3)).astype(np.float32),  # the env's dtype
        "has_position": rng.random(n) < 0.5,
        "size_multiplier": rng.choice([0.5, 1.0, 2.0], n),
        "unrealised_pnl_bps": rng.normal(0, 800, n),
        "hold_bars": rng.integers(0, 3000, n).astype(np.float64),
        "drawdown": rng.uniform(0, 0.3, n),
        "trades_today": trades,
        "wins_today": np.floor(trades * rng.random(n)),
    }
    from_numpy = context_features(bars_per_day=288.0, **arrays)
    from_torch = context_features(bars_per_day=288.0, **{k: torch.from_numpy(v) for k, v in arrays.items()})
    assert isinstance(from_numpy, np.ndarray)
    assert from_numpy.shape == (n, CONTEXT_WIDTH)
    np.testing.assert_array_equal(from_numpy, from_torch.numpy())
    flat = ~arrays["has_position"]
    assert (from_numpy[flat, 4:7] == 0).all()  # nothing of a position where there is none
    assert (from_numpy[trades == 0, 9] == 0).all()  # no win rate before a trade closed
