"""Our taxonomy of exchange errors, and the one mapping onto it from ccxt's exception hierarchy.

Callers never see a ccxt exception: every adapter call goes through `translate`. What a caller
does with each class:

| class | meaning | caller |
| --- | --- | --- |
| `Retryable` (NetworkFailure, RequestTimedOut, RateLimited, ExchangeUnavailable, ClockSkew, BadResponse) | the request did nothing (or was a read); trying again later is safe | the adapter already retried; try later |
| `OutcomeUnknown` | a state-changing request (an order) was sent and its answer lost | look the order up by client order id; never resend blindly |
| `OrderRejected(reason)` (InvalidOrder, InsufficientFunds, PostOnlyWouldTake, BelowMinimum, DuplicateClientOrderId, MarketClosed) | the exchange (or our precision check) refused the order; it does not exist | do not retry the same order |
| `OrderNotPlaced` | an OutcomeUnknown resolved: the order is certainly not on the exchange | may submit again |
| `OrderNotFound` | no such order (fetch or cancel) | |
| `AuthenticationFailed`, `PermissionDenied` | keys wrong, expired, or lacking a right | stop trading, tell the operator |
| `BadSymbol` | the market does not exist on this exchange | configuration error |
| `BadRequest` | we sent something the exchange does not understand (a bug) | log, do not retry |

Retry-After: ccxt does not carry it on its exceptions. `binance.handle_errors` raises
DDoSProtection("binance 429 Too Many Requests {body}") for 429 and 418; the response headers
are only kept on the client, as `exchange.last_response_headers` (enableLastResponseHeaders is
on by default), written just before `handle_errors` raises. No await lies between that write
and the adapter's `except`, so reading it there sees this request's headers even with other
requests in flight. `translate` takes those headers and reads `Retry-After` (seconds or an
HTTP date); failing that, Binance's 418 body "IP banned until 1700000000000" gives the time.

Messages: ccxt's texts embed the request URL, and for a signed GET the query string carries
the HMAC signature (the API key travels in a header, never in the text). `sanitize` drops every
query string and masks the key and secret if given, and translated errors are raised `from
None` by the adapter, so neither the signature nor a key reaches a log line or a traceback.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime

import aiohttp
import ccxt.async_support as ccxt

MASK = "**********"
_QUERY = re.compile(r"(https?://[^\s?#]+)\?[^\s#]*")
_BANNED_UNTIL = re.compile(r"banned until (\d{12,14})")
_MAX_MESSAGE = 600


class ExchangeError(Exception):
    """Base of every error the adapter raises. `ccxt_error` names the ccxt class it came from."""

    def __init__(self, message: str, *, ccxt_error: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.ccxt_error = ccxt_error


# --- retryable: nothing happened, or it was a read ------------------------------------------------
class Retryable(ExchangeError):
    """Transient: the same request may succeed later."""


class NetworkFailure(Retryable):
    """No usable answer: connection refused or reset, DNS, an HTTP client error."""


class RequestTimedOut(NetworkFailure):
    """No answer within the request timeout."""


class RateLimited(Retryable):
    """The exchange refused the request for its rate (429, 418 ban). Wait at least retry_after_s."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, ccxt_error: str | None = None):
        super().__init__(message, ccxt_error=ccxt_error)
        self.retry_after_s = retry_after_s


class ExchangeUnavailable(Retryable):
    """The exchange is down, overloaded or in maintenance (5xx, OnMaintenance)."""


class ClockSkew(Retryable):
    """The request's timestamp fell outside the exchange's receive window; it was not executed."""


class BadResponse(Retryable):
    """The exchange answered with something that does not parse into what was asked for."""


# --- the answer to a state-changing request was lost ----------------------------------------------
class OutcomeUnknown(ExchangeError):
    """A state-changing request was (or may have been) sent and its answer lost: the order may or
    may not exist. Resolve it by looking the order up by its client order id."""

    def __init__(self, message: str, *, client_order_id: str | None = None, ccxt_error: str | None = None):
        super().__init__(message, ccxt_error=ccxt_error)
        self.client_order_id = client_order_id


class OrderNotPlaced(ExchangeError):
    """An unknown outcome resolved: the order is not on the exchange, and no longer can be."""

    def __init__(self, message: str, *, client_order_id: str) -> None:
        super().__init__(message)
        self.client_order_id = client_order_id


# --- refusals --------------------------------------------------------------------------------------
class OrderRejected(ExchangeError):
    """The order was refused (by the exchange, or by our precision check before sending)."""

    def __init__(self, reason: str, *, ccxt_error: str | None = None) -> None:
        super().__init__(reason, ccxt_error=ccxt_error)
        self.reason = reason


class InvalidOrder(OrderRejected):
    """Parameters the exchange does not accept (price or lot filter, type, time in force)."""


class InsufficientFunds(OrderRejected):
    pass


class PostOnlyWouldTake(OrderRejected):
    """A post-only (maker) order would have matched at once."""


class BelowMinimum(OrderRejected):
    """Amount rounds to zero, or is below the market's minimum amount or notional."""


class DuplicateClientOrderId(OrderRejected):
    """The client order id is in use: an earlier submission with this id exists."""


class MarketClosed(OrderRejected):
    pass


class OrderNotFound(ExchangeError):
    """No such order on the exchange."""


class AuthenticationFailed(ExchangeError):
    pass


class PermissionDenied(AuthenticationFailed):
    """Keys are valid but lack the right (trading disabled, IP not allowed, account suspended)."""


class BadSymbol(ExchangeError):
    pass


class BadRequest(ExchangeError):
    """A request the exchange does not understand or does not support: our bug, not retryable."""


# --- the mapping ------------------------------------------------------------------------------------
def sanitize(text: str, secrets: Iterable[str | None] = ()) -> str:
    """`text` without URL query strings (they carry signatures) and without any of `secrets`."""
    cleaned = _QUERY.sub(r"\1?…", text)
    for secret in secrets:
        if secret and len(secret) >= 4:
            cleaned = cleaned.replace(secret, MASK)
    if len(cleaned) > _MAX_MESSAGE:
        cleaned = cleaned[:_MAX_MESSAGE] + "…"
    return cleaned


def retry_after_seconds(
    headers: Mapping[str, str] | None, message: str = "", *, now_s: float | None = None
) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date) or, failing
    that, Binance's "banned until <epoch ms>" text; None when neither says."""
    now = time.time() if now_s is None else now_s
    value = None
    for key, header in (headers or {}).items():
        if key.lower() == "retry-after":
            value = header.strip()
            break
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - now)
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    banned = _BANNED_UNTIL.search(message)
    if banned:
        return max(0.0, int(banned.group(1)) / 1000 - now)
    return None


def _never_sent(exc: BaseException) -> bool:
    """True when the transport failed before any byte could reach the exchange."""
    cause = exc.__cause__
    return isinstance(cause, aiohttp.ClientConnectorError | socket.gaierror | aiohttp.ConnectionTimeoutError)


def translate(
    exc: ccxt.BaseError,
    *,
    sent: bool,
    headers: Mapping[str, str] | None = None,
    secrets: Iterable[str | None] = (),
) -> ExchangeError:
    """Our error for a ccxt exception.

    `sent`: the request changes state on the exchange (creates an order) and may have reached
    it. Then a lost or unreadable answer (timeout, reset, 5xx, garbage) is `OutcomeUnknown`,
    not `Retryable`: the order may exist. Refusals that prove nothing was done (429, clock
    skew, a connection that never opened) stay what they are.
    `headers`: the response headers of the failed request (for Retry-After).
    `secrets`: values to mask in the message (API key and secret).

    The checks run from the most specific ccxt class to the most general, because ccxt's
    classes nest: RateLimitExceeded and DDoSProtection are NetworkErrors, RequestTimeout is a
    NetworkError, OnMaintenance is an ExchangeNotAvailable, OrderNotFound and
    OrderImmediatelyFillable are InvalidOrders, PermissionDenied is an AuthenticationError,
    BadSymbol is a BadRequest.
    """
    name = type(exc).__name__
    message = sanitize(str(exc), secrets)

    def unknown_or(error: ExchangeError) -> ExchangeError:
        if sent and not _never_sent(exc):
            return OutcomeUnknown(f"answer lost ({name}): {message}", ccxt_error=name)
        return error

    # Network layer (OperationFailed branch).
    if isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        return RateLimited(message, retry_after_s=retry_after_seconds(headers, message), ccxt_error=name)
    if isinstance(exc, ccxt.InvalidNonce):
        return ClockSkew(message, ccxt_error=name)
    if isinstance(exc, ccxt.RequestTimeout):
        return unknown_or(RequestTimedOut(message, ccxt_error=name))
    if isinstance(exc, ccxt.ExchangeNotAvailable):  # OnMaintenance included; 5xx and resets too
        if isinstance(exc.__cause__, aiohttp.ClientError | OSError):
            return unknown_or(NetworkFailure(message, ccxt_error=name))
        return unknown_or(ExchangeUnavailable(message, ccxt_error=name))
    if isinstance(exc, ccxt.NetworkError):
        return unknown_or(NetworkFailure(message, ccxt_error=name))
    if isinstance(exc, ccxt.BadResponse):
        return unknown_or(BadResponse(message, ccxt_error=name))
    if isinstance(exc, ccxt.CancelPending):
        return unknown_or(ExchangeUnavailable(message, ccxt_error=name))

    # Exchange's answers (ExchangeError branch).
    if isinstance(exc, ccxt.OrderNotFound):
        return OrderNotFound(message, ccxt_error=name)
    if isinstance(exc, ccxt.OrderImmediatelyFillable):
        return PostOnlyWouldTake(message, ccxt_error=name)
    if isinstance(exc, ccxt.DuplicateOrderId) or "Duplicate order sent" in message:
        return DuplicateClientOrderId(message, ccxt_error=name)
    if isinstance(exc, ccxt.InvalidOrder):
        return InvalidOrder(message, ccxt_error=name)
    if isinstance(exc, ccxt.InsufficientFunds):
        return InsufficientFunds(message, ccxt_error=name)
    if isinstance(exc, ccxt.PermissionDenied | ccxt.AccountSuspended):
        return PermissionDenied(message, ccxt_error=name)
    if isinstance(exc, ccxt.AuthenticationError):
        return AuthenticationFailed(message, ccxt_error=name)
    if isinstance(exc, ccxt.BadSymbol):
        return BadSymbol(message, ccxt_error=name)
    if isinstance(exc, ccxt.BadRequest):
        # Binance's -1013 "Filter failure: NOTIONAL" (and MIN_NOTIONAL) arrives as a BadRequest.
        if "NOTIONAL" in message:
            return BelowMinimum(message, ccxt_error=name)
        return BadRequest(message, ccxt_error=name)
    if isinstance(exc, ccxt.MarketClosed):
        return MarketClosed(message, ccxt_error=name)
    if isinstance(exc, ccxt.OperationRejected):
        return OrderRejected(message, ccxt_error=name)
    if isinstance(exc, ccxt.ArgumentsRequired | ccxt.NotSupported):
        return BadRequest(message, ccxt_error=name)
    if isinstance(exc, ccxt.ExchangeError) and isinstance(exc.__cause__, aiohttp.ClientError):
        # ccxt wraps aiohttp's base ClientError (a payload or protocol error) in a bare ExchangeError.
        return unknown_or(NetworkFailure(message, ccxt_error=name))
    # An exchange error code ccxt does not know, ExchangeClosedByUser, anything else.
    return ExchangeError(message, ccxt_error=name)
