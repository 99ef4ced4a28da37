"""Our own request budget per endpoint class, on top of ccxt's limiter.

ccxt's limiter spaces requests by the exchange's published weights; this budget caps what the
daemon itself may spend per kind of request, so a backfill cannot starve order traffic and a
retry storm cannot spend the order rate (Binance spot: 50 orders per 10 s, 6000 weight per
minute). One token bucket per class:

    market_data  candles, tickers, books, markets
    account      balances, order and trade look-ups
    orders       create and cancel

`TokenBucket` is pure (the caller passes the time). A reservation takes a token at once, in
debt if need be, and says how long until it is due: waiters are served in arrival order and
the grants, over any window of w seconds, number at most burst + rate * w.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from huracan.logs import get_logger

log = get_logger("huracan.exchange.budget")


class EndpointClass(enum.StrEnum):
    MARKET_DATA = "market_data"
    ACCOUNT = "account"
    ORDERS = "orders"


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    def __post_init__(self) -> None:
        if self.per_second <= 0 or self.burst < 1:
            raise ValueError(f"a rate needs per_second > 0 and burst >= 1, got {self}")


DEFAULT_RATES: Mapping[EndpointClass, Rate] = MappingProxyType(
    {
        EndpointClass.MARKET_DATA: Rate(per_second=10.0, burst=20),
        EndpointClass.ACCOUNT: Rate(per_second=5.0, burst=10),
        EndpointClass.ORDERS: Rate(per_second=4.0, burst=8),  # well inside 50 per 10 s
    }
)


class TokenBucket:
    """`burst` tokens, refilled at `per_second`; starts full. Times are seconds on one clock."""

    __slots__ = ("_tokens", "_updated", "rate")

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self._tokens = float(rate.burst)
        self._updated = now

    def _refill(self, now: float) -> None:
        if now > self._updated:
            self._tokens = min(
                float(self.rate.burst), self._tokens + (now - self._updated) * self.rate.per_second
            )
            self._updated = now

    def available(self, now: float) -> float:
        """Tokens that could be taken at `now` (negative: owed to earlier reservations)."""
        self._refill(now)
        return self._tokens

    def reserve(self, now: float) -> float:
        """Take one token; the seconds from `now` until it is due (0: at once)."""
        self._refill(now)
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate.per_second


class RequestBudget:
    """One bucket per endpoint class; `acquire` waits until a request of that class may go."""

    def __init__(
        self,
        rates: Mapping[EndpointClass, Rate] = DEFAULT_RATES,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        missing = set(EndpointClass) - set(rates)
        if missing:
            raise ValueError(f"request budget has no rate for {sorted(missing)}")
        self._clock = clock
        self._sleep = sleep
        now = clock()
        self._buckets = {endpoint: TokenBucket(rates[endpoint], now) for endpoint in EndpointClass}

    async def acquire(self, endpoint: EndpointClass) -> float:
        """Wait for a token of `endpoint`'s bucket; the seconds waited."""
        delay = self._buckets[endpoint].reserve(self._clock())
        if delay > 0:
            log.debug("request budget wait", endpoint=str(endpoint), wait_s=round(delay, 3))
            await self._sleep(delay)
        return delay
