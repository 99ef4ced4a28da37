"""The retry policy for exchange calls: exponential backoff with full jitter, only on `Retryable`.

    wait before retry n (n = 1, 2, ...) = uniform(0, min(cap_s, base_s * 2 ** (n - 1)))
                                          raised to Retry-After when the exchange sent one

At most `attempts` calls in all. A Retry-After longer than `cap_s` ends the retries at once
(a 418 ban lasts minutes to days: the caller, not a sleeping request, should wait that out).
Anything not `Retryable` (a rejected order, bad keys, an unknown outcome) is raised at once.
Order creation is never run through this: see `huracan.exchange.adapter`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from huracan.config.sections import ExchangeSettings
from huracan.exchange.errors import RateLimited, Retryable
from huracan.logs import get_logger

log = get_logger("huracan.exchange.retry")

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]

DEFAULT_BASE_S = 0.25


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int  # calls in all, the first included
    cap_s: float  # the most one backoff waits
    base_s: float = DEFAULT_BASE_S  # the backoff ceiling of the first retry

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.cap_s <= 0 or self.base_s <= 0:
            raise ValueError(f"retry policy needs attempts >= 1 and positive times, got {self}")

    @classmethod
    def from_settings(cls, settings: ExchangeSettings, *, base_s: float = DEFAULT_BASE_S) -> RetryPolicy:
        return cls(
            attempts=settings.retry_attempts,
            cap_s=settings.retry_cap_s,
            base_s=min(base_s, settings.retry_cap_s),
        )

    def backoff_s(self, retry_number: int, draw: float) -> float:
        """Full jitter for retry `retry_number` (from 1), `draw` uniform in [0, 1)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(retry_number - 1, 62))
        return draw * ceiling

    def wait_s(self, retry_number: int, error: BaseException, draw: float) -> float:
        backoff = self.backoff_s(retry_number, draw)
        if isinstance(error, RateLimited) and error.retry_after_s is not None:
            return max(backoff, error.retry_after_s)
        return backoff

    def should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, Retryable):
            return False
        return not (
            isinstance(error, RateLimited)
            and error.retry_after_s is not None
            and error.retry_after_s > self.cap_s
        )


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    operation: str,
    sleep: Sleep = asyncio.sleep,
    draw: Callable[[], float] = random.random,
) -> T:
    """Await `call()` until it returns, raises a non-retryable error, or `policy` gives up (then
    the last error is raised as it is). Each retry is logged with attempt, cause and wait."""

    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome is not None else None
        return policy.wait_s(state.attempt_number, error or Retryable("?"), draw())

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "exchange call retried",
            operation=operation,
            attempt=state.attempt_number,
            attempts=policy.attempts,
            cause=type(error).__name__,
            error=str(error),
            wait_s=round(state.next_action.sleep, 3) if state.next_action is not None else None,
        )

    retrying = AsyncRetrying(
        sleep=sleep,
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        retry=retry_if_exception(policy.should_retry),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover
