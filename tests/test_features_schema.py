from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from huracan.features.context import CONTEXT_FEATURES
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
