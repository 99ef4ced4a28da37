"""The order path's two careful parts: precision and minimums before sending, and resolving an
order whose answer was lost.

Precision: an order's amount is truncated to the lot step and its price rounded to the tick by
ccxt's own `amount_to_precision` / `price_to_precision` (the rules the exchange will apply),
then checked against the market's minimum amount and minimum notional. Anything that rounds to
zero or falls below a minimum is refused with BelowMinimum before a request is made.

The unknown-outcome protocol (`resolve_lost_order`): an order request went out and its answer
was lost (timeout, reset after sending, 5xx, an unreadable or foreign body). The order carries
a deterministic client order id, so:

1. Look it up by client order id at once. Found: that is the order (`OrderAck(via="lookup")`).
2. Not found yet: the request may still be in flight inside the exchange. Binance executes a
   signed request only while `server_time - timestamp <= recvWindow`, and refuses one whose
   timestamp is more than 1 s ahead of its clock; so once recvWindow + 1 s has passed since the
   answer was lost (the request's timestamp is earlier than that), the order can no longer
   appear. Look again after that settle time.
3. Still not found after the settle time: `OrderNotPlaced` (safe to submit again).
4. Look-ups that fail (network, 5xx, 429) are tried again with the retry policy's backoff, up
   to `lookups` in all; if none could answer, `OutcomeUnknown` is raised: reconciliation at
   start-up or later resolves it by the same client order id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from huracan.exchange.errors import (
    BelowMinimum,
    ExchangeError,
    InvalidOrder,
    OrderNotPlaced,
    OutcomeUnknown,
    Retryable,
)
from huracan.exchange.models import MarketRules, Order, OrderRequest
from huracan.exchange.retry import RetryPolicy
from huracan.logs import get_logger

log = get_logger("huracan.exchange.orders")

# Binance refuses a signed request whose timestamp is more than this far ahead of its clock.
FUTURE_TOLERANCE_S = 1.0


@dataclass(frozen=True, slots=True)
class PreparedOrder:
    """An order with amount and price as the exchange's precision rules make them (text, so
    that no float ever carries them)."""

    request: OrderRequest
    amount: str
    price: str | None


def prepare_order(
    request: OrderRequest,
    rules: MarketRules,
    amount_to_precision: Callable[[str, str], Any],
    price_to_precision: Callable[[str, str], Any],
) -> PreparedOrder:
    """Apply the market's precision and check its minimums; BelowMinimum or InvalidOrder with a
    reason naming the numbers when the order cannot be sent as asked. The two callables are
    ccxt's, taking (symbol, number as text); ccxt raises its InvalidOrder when an amount
    truncates to zero, which is caught here."""
    symbol = request.symbol
    if request.amount <= 0:
        raise BelowMinimum(f"{symbol}: amount {request.amount} is not positive")
    try:
        amount_text = str(amount_to_precision(symbol, str(request.amount)))
    except Exception:  # ccxt.InvalidOrder: "must be greater than minimum amount precision"
        amount_text = "0"
    amount = Decimal(amount_text)
    if amount <= 0:
        raise BelowMinimum(
            f"{symbol}: amount {request.amount} rounds to 0 at the lot step {rules.amount_step}"
        )
    if rules.min_amount is not None and amount < rules.min_amount:
        raise BelowMinimum(
            f"{symbol}: amount {amount} (from {request.amount}) is below the market's minimum amount {rules.min_amount}"
        )
    price_text: str | None = None
    if request.type == "limit":
        if request.price is None:
            raise InvalidOrder(f"{symbol}: a limit order needs a price")
        if request.price <= 0:
            raise InvalidOrder(f"{symbol}: price {request.price} is not positive")
        price_text = str(price_to_precision(symbol, str(request.price)))
        if Decimal(price_text) <= 0:
            raise InvalidOrder(f"{symbol}: price {request.price} rounds to 0 at the tick {rules.tick_size}")
    elif request.post_only:
        raise InvalidOrder(f"{symbol}: a market order cannot be post-only")
    notional_price = Decimal(price_text) if price_text is not None else request.reference_price
    if rules.min_notional is not None and notional_price is not None:
        notional = amount * notional_price
        if notional < rules.min_notional:
            raise BelowMinimum(
                f"{symbol}: notional {notional} (amount {amount} at {notional_price}) is below the market's minimum notional {rules.min_notional}"
            )
    return PreparedOrder(request, amount_text, price_text)


async def resolve_lost_order(
    lookup: Callable[[], Awaitable[Order | None]],
    *,
    client_order_id: str,
    settle_s: float,
    policy: RetryPolicy,
    lookups: int,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    draw: Callable[[], float] = lambda: 1.0,
) -> Order:
    """The order placed under `client_order_id`, whose create answer was just lost; see the
    module's docstring. `lookup` fetches it by client order id (None: not found, without
    retries of its own); `settle_s` is how long after now the order could still appear;
    `clock` is monotonic seconds."""
    deadline = clock() + settle_s
    last_error: ExchangeError | None = None
    for attempt in range(1, lookups + 1):
        try:
            order = await lookup()
        except Retryable as exc:
            last_error = exc
            log.warning(
                "lost order look-up failed",
                client_order_id=client_order_id,
                attempt=attempt,
                cause=type(exc).__name__,
                error=str(exc),
            )
            if attempt < lookups:
                await sleep(policy.wait_s(attempt, exc, draw()))
            continue
        except ExchangeError as exc:
            raise OutcomeUnknown(
                f"order {client_order_id}: the answer was lost and the look-up failed ({type(exc).__name__}: {exc})",
                client_order_id=client_order_id,
            ) from None
        if order is not None:
            log.info(
                "lost order found", client_order_id=client_order_id, order_id=order.id, status=order.status
            )
            return order
        remaining = deadline - clock()
        if remaining <= 0:
            log.info("lost order was not placed", client_order_id=client_order_id, lookups=attempt)
            raise OrderNotPlaced(
                f"order {client_order_id}: the answer was lost, and the exchange has no such order "
                f"{settle_s:.1f} s later: it was not placed",
                client_order_id=client_order_id,
            )
        # Not there yet, but it still could appear: look again once it no longer can.
        if attempt < lookups:
            await sleep(remaining + 0.01)
    raise OutcomeUnknown(
        f"order {client_order_id}: the answer was lost and {lookups} look-ups could not tell "
        f"(last: {type(last_error).__name__}: {last_error})",
        client_order_id=client_order_id,
    )
