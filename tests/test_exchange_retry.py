"""The retry policy: full-jitter backoff, cap, Retry-After, only Retryable, logged (fake sleep)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from huracan.config.sections import ExchangeSettings
from huracan.exchange.errors import (
    AuthenticationFailed,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    NetworkFailure,
    OutcomeUnknown,
    RateLimited,
    RequestTimedOut,
)
from huracan.exchange.retry import RetryPolicy, call_with_retries
from huracan.logs import configure_logging
from huracan.logs.setup import reset_logging


class FakeSleep:
    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: ExchangeError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


@pytest.fixture
def log_buffer() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    yield buf
    reset_logging()


def test_from_settings() -> None:
    policy = RetryPolicy.from_settings(ExchangeSettings(retry_attempts=7, retry_cap_s=3.0))
    assert (policy.attempts, policy.cap_s) == (7, 3.0)
    assert RetryPolicy.from_settings(ExchangeSettings(retry_cap_s=0.1)).base_s == 0.1
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0, cap_s=1.0)


@given(
    st.integers(min_value=1, max_value=200),
    st.floats(min_value=0.0, max_value=0.999999),
    st.floats(min_value=0.01, max_value=100.0),
    st.floats(min_value=0.001, max_value=5.0),
)
def test_full_jitter_stays_within_the_exponential_ceiling_and_the_cap(
    retry: int, draw: float, cap: float, base: float
) -> None:
    policy = RetryPolicy(attempts=5, cap_s=cap, base_s=base)
    wait = policy.backoff_s(retry, draw)
    assert 0.0 <= wait <= min(cap, base * 2.0 ** (retry - 1)) + 1e-12
    assert policy.backoff_s(retry, 0.0) == 0.0


async def test_retries_retryable_errors_until_success(log_buffer: io.StringIO) -> None:
    sleep = FakeSleep()
    call = Flaky(NetworkFailure("reset"), ExchangeUnavailable("503"), RequestTimedOut("slow"))
    policy = RetryPolicy(attempts=5, cap_s=10.0, base_s=1.0)
    result = await call_with_retries(call, policy, operation="fetch_ticker", sleep=sleep, draw=lambda: 0.5)
    assert result == "ok"
    assert call.calls == 4
    assert sleep.waits == [0.5, 1.0, 2.0]  # half of 1, 2, 4
    lines = [json.loads(line) for line in log_buffer.getvalue().splitlines()]
    retries = [line for line in lines if line["event"] == "exchange call retried"]
    assert [(r["attempt"], r["cause"], r["wait_s"]) for r in retries] == [
        (1, "NetworkFailure", 0.5),
        (2, "ExchangeUnavailable", 1.0),
        (3, "RequestTimedOut", 2.0),
    ]
    assert all(r["operation"] == "fetch_ticker" and r["attempts"] == 5 for r in retries)


async def test_gives_up_after_the_configured_attempts_with_the_last_error() -> None:
    sleep = FakeSleep()
    call = Flaky(*(NetworkFailure(f"reset {i}") for i in range(10)))
    with pytest.raises(NetworkFailure, match="reset 2"):
        await call_with_retries(call, RetryPolicy(attempts=3, cap_s=1.0), operation="x", sleep=sleep)
    assert call.calls == 3
    assert len(sleep.waits) == 2


async def test_waits_are_capped() -> None:
    sleep = FakeSleep()
    call = Flaky(*(NetworkFailure("x") for _ in range(9)))
    policy = RetryPolicy(attempts=10, cap_s=3.0, base_s=1.0)
    await call_with_retries(call, policy, operation="x", sleep=sleep, draw=lambda: 0.999)
    assert max(sleep.waits) <= 3.0
    assert sleep.waits[-1] == pytest.approx(3.0 * 0.999)


@pytest.mark.parametrize(
    "error",
    [
        InsufficientFunds("no money"),
        AuthenticationFailed("bad key"),
        OutcomeUnknown("lost"),
        ExchangeError("unknown code"),
    ],
)
async def test_never_retries_what_is_not_retryable(error: ExchangeError) -> None:
    sleep = FakeSleep()
    call = Flaky(error)
    with pytest.raises(type(error)):
        await call_with_retries(call, RetryPolicy(attempts=5, cap_s=1.0), operation="x", sleep=sleep)
    assert call.calls == 1
    assert sleep.waits == []


async def test_honours_retry_after() -> None:
    sleep = FakeSleep()
    call = Flaky(RateLimited("429", retry_after_s=2.0), RateLimited("429"))
    policy = RetryPolicy(attempts=5, cap_s=5.0, base_s=0.1)
    assert await call_with_retries(call, policy, operation="x", sleep=sleep, draw=lambda: 0.5) == "ok"
    assert sleep.waits == [2.0, 0.1]


async def test_a_retry_after_beyond_the_cap_is_not_slept_through() -> None:
    sleep = FakeSleep()
    call = Flaky(RateLimited("418 banned", retry_after_s=3600.0))
    with pytest.raises(RateLimited):
        await call_with_retries(call, RetryPolicy(attempts=5, cap_s=30.0), operation="x", sleep=sleep)
    assert call.calls == 1
    assert sleep.waits == []
