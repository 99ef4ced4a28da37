"""Deterministic client order ids: format, inverse, and Binance's rule (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from huracan.exchange.client_ids import (
    MAX_SEQUENCE,
    client_order_id,
    is_valid_client_order_id,
    parse_client_order_id,
)

prefixes = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=1, max_size=16
)


@given(prefixes, st.integers(min_value=0, max_value=MAX_SEQUENCE))
def test_round_trip_and_binance_valid(prefix: str, sequence: int) -> None:
    value = client_order_id(prefix, sequence)
    assert len(value) <= 36
    assert is_valid_client_order_id(value)
    assert parse_client_order_id(value) == (prefix, sequence)


def test_examples() -> None:
    assert client_order_id("hur", 42) == "hur-42"
    assert parse_client_order_id("hur-42") == ("hur", 42)
    assert len(client_order_id("a" * 16, MAX_SEQUENCE)) == 36


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "hur-x",
        "hur_1",
        "x-R4BD3S82abc",
        "hur-007",
        "hur-",
        "-1",
        f"a-{MAX_SEQUENCE + 1}",
        "a" * 17 + "-1",
    ],
)
def test_foreign_ids_do_not_parse(bad: str) -> None:
    assert parse_client_order_id(bad) is None


@pytest.mark.parametrize(
    ("prefix", "sequence"),
    [("", 1), ("hur-", 1), ("a" * 17, 1), ("hur", -1), ("hur", MAX_SEQUENCE + 1), ("hur", True)],
)
def test_bad_arguments_are_refused(prefix: str, sequence: int) -> None:
    with pytest.raises(ValueError, match="client order id"):
        client_order_id(prefix, sequence)


def test_binance_rule() -> None:
    assert is_valid_client_order_id("x-R4BD3S82_abc-1")
    assert not is_valid_client_order_id("a" * 37)
    assert not is_valid_client_order_id("hur 1")
    assert not is_valid_client_order_id("")
