"""The request budget: token buckets that never exceed their rate (hypothesis), FIFO, async."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.exchange.budget import DEFAULT_RATES, EndpointClass, Rate, RequestBudget, TokenBucket

EPS = 1e-6


@settings(max_examples=300, deadline=None)
@given(
    st.floats(min_value=0.1, max_value=100.0),
    st.integers(min_value=1, max_value=20),
    st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=1, max_size=120),
    st.floats(min_value=0.0, max_value=1000.0),
)
def test_grants_never_exceed_burst_plus_rate_times_window(
    per_second: float, burst: int, gaps: list[float], start: float
) -> None:
    bucket = TokenBucket(Rate(per_second, burst), start)
    now = start
    grants = []
    for gap in gaps:
        now += gap
        delay = bucket.reserve(now)
        assert delay >= 0
        grants.append(now + delay)
    # First come, first served: a later request is never granted before an earlier one.
    assert all(a <= b + EPS for a, b in itertools.pairwise(grants))
    # Over every window [grants[i], grants[j]]: at most burst + rate * width grants.
    for i in range(len(grants)):
        for j in range(i, len(grants)):
            width = grants[j] - grants[i]
            assert j - i + 1 <= burst + per_second * width + EPS


def test_a_full_bucket_grants_its_burst_at_once_then_paces() -> None:
    bucket = TokenBucket(Rate(per_second=2.0, burst=3), now=0.0)
    assert [bucket.reserve(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.reserve(0.0) == pytest.approx(0.5)
    assert bucket.reserve(0.0) == pytest.approx(1.0)
    assert bucket.available(10.0) == 3.0  # refills, up to the burst


def test_rates_are_validated() -> None:
    with pytest.raises(ValueError, match="per_second"):
        Rate(0.0, 1)
    with pytest.raises(ValueError, match="no rate"):
        RequestBudget({EndpointClass.ORDERS: Rate(1.0, 1)})


async def test_acquire_waits_per_endpoint_class_on_its_own_bucket() -> None:
    clock = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    rates = {**DEFAULT_RATES, EndpointClass.ORDERS: Rate(per_second=1.0, burst=2)}
    budget = RequestBudget(rates, clock=lambda: clock[0], sleep=sleep)
    waits = [await budget.acquire(EndpointClass.ORDERS) for _ in range(4)]
    assert waits == [0.0, 0.0, pytest.approx(1.0), pytest.approx(1.0)]
    # Market data has its own, still full, bucket.
    assert await budget.acquire(EndpointClass.MARKET_DATA) == 0.0
    assert clock[0] == pytest.approx(2.0)
