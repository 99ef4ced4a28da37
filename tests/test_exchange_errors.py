"""The ccxt -> Huracan error mapping, Retry-After, and messages without secrets (pure)."""

from __future__ import annotations

import inspect
import socket

import aiohttp
import ccxt.async_support as ccxt
import pytest
from ccxt.base import errors as ccxt_errors

from huracan.exchange import errors as ours
from huracan.exchange.errors import retry_after_seconds, sanitize, translate

# (ccxt error, message, our class when the request was a read, our class for an order post)
TABLE: list[tuple[type[Exception], str, type[ours.ExchangeError], type[ours.ExchangeError]]] = [
    (ccxt.RateLimitExceeded, "slow down", ours.RateLimited, ours.RateLimited),
    (ccxt.DDoSProtection, "binance 429 Too Many Requests {}", ours.RateLimited, ours.RateLimited),
    (ccxt.InvalidNonce, "-1021 outside recvWindow", ours.ClockSkew, ours.ClockSkew),
    (ccxt.ChecksumError, "checksum", ours.ClockSkew, ours.ClockSkew),
    (ccxt.RequestTimeout, "binance POST http://x/api/v3/order", ours.RequestTimedOut, ours.OutcomeUnknown),
    (
        ccxt.ExchangeNotAvailable,
        "binance 503 Service Unavailable",
        ours.ExchangeUnavailable,
        ours.OutcomeUnknown,
    ),
    (ccxt.OnMaintenance, "system maintenance", ours.ExchangeUnavailable, ours.OutcomeUnknown),
    (ccxt.NetworkError, "network", ours.NetworkFailure, ours.OutcomeUnknown),
    (ccxt.BadResponse, "garbage", ours.BadResponse, ours.OutcomeUnknown),
    (ccxt.NullResponse, "empty", ours.BadResponse, ours.OutcomeUnknown),
    (ccxt.CancelPending, "pending", ours.ExchangeUnavailable, ours.OutcomeUnknown),
    (ccxt.OrderNotFound, "-2013 Order does not exist.", ours.OrderNotFound, ours.OrderNotFound),
    (
        ccxt.OrderImmediatelyFillable,
        "would immediately match",
        ours.PostOnlyWouldTake,
        ours.PostOnlyWouldTake,
    ),
    (ccxt.DuplicateOrderId, "dup", ours.DuplicateClientOrderId, ours.DuplicateClientOrderId),
    (
        ccxt.InvalidOrder,
        'binance {"code":-2010,"msg":"Duplicate order sent."}',
        ours.DuplicateClientOrderId,
        ours.DuplicateClientOrderId,
    ),
    (ccxt.InvalidOrder, "Filter failure: LOT_SIZE", ours.InvalidOrder, ours.InvalidOrder),
    (ccxt.OrderNotFillable, "not fillable", ours.InvalidOrder, ours.InvalidOrder),
    (ccxt.InsufficientFunds, "-2010 insufficient balance", ours.InsufficientFunds, ours.InsufficientFunds),
    (ccxt.PermissionDenied, "no trading right", ours.PermissionDenied, ours.PermissionDenied),
    (ccxt.AccountNotEnabled, "not enabled", ours.PermissionDenied, ours.PermissionDenied),
    (ccxt.AccountSuspended, "suspended", ours.PermissionDenied, ours.PermissionDenied),
    (ccxt.AuthenticationError, "-1022 bad signature", ours.AuthenticationFailed, ours.AuthenticationFailed),
    (ccxt.BadSymbol, "-1121 Invalid symbol.", ours.BadSymbol, ours.BadSymbol),
    (
        ccxt.BadRequest,
        'binance {"code":-1013,"msg":"Filter failure: NOTIONAL"}',
        ours.BelowMinimum,
        ours.BelowMinimum,
    ),
    (ccxt.BadRequest, "-1100 illegal characters", ours.BadRequest, ours.BadRequest),
    (ccxt.ArgumentsRequired, "needs a symbol", ours.BadRequest, ours.BadRequest),
    (ccxt.NotSupported, "not supported", ours.BadRequest, ours.BadRequest),
    (ccxt.MarketClosed, "closed", ours.MarketClosed, ours.MarketClosed),
    (ccxt.OperationRejected, "rejected", ours.OrderRejected, ours.OrderRejected),
    (ccxt.ExchangeError, 'binance {"code":-9999}', ours.ExchangeError, ours.ExchangeError),
    (ccxt.ExchangeClosedByUser, "closed", ours.ExchangeError, ours.ExchangeError),
]


@pytest.mark.parametrize(("ccxt_class", "message", "read", "order_post"), TABLE)
def test_mapping(
    ccxt_class: type[ccxt.BaseError],
    message: str,
    read: type[ours.ExchangeError],
    order_post: type[ours.ExchangeError],
) -> None:
    as_read = translate(ccxt_class(message), sent=False)
    as_post = translate(ccxt_class(message), sent=True)
    assert type(as_read) is read
    assert type(as_post) is order_post
    assert as_read.ccxt_error == ccxt_class.__name__


def test_every_ccxt_error_maps_to_one_of_ours() -> None:
    classes = [
        c for _, c in inspect.getmembers(ccxt_errors, inspect.isclass) if issubclass(c, ccxt.BaseError)
    ]
    assert len(classes) > 30
    for cls in classes:
        for sent in (False, True):
            assert isinstance(translate(cls("x"), sent=sent), ours.ExchangeError), cls


def test_the_taxonomy_keeps_retryable_and_unknown_apart() -> None:
    assert not issubclass(ours.OutcomeUnknown, ours.Retryable)
    assert issubclass(ours.RequestTimedOut, ours.Retryable)
    for rejection in (ours.InvalidOrder, ours.InsufficientFunds, ours.PostOnlyWouldTake, ours.BelowMinimum):
        assert issubclass(rejection, ours.OrderRejected)
        assert not issubclass(rejection, ours.Retryable)
    for never in (ours.AuthenticationFailed, ours.PermissionDenied, ours.BadSymbol, ours.BadRequest):
        assert not issubclass(never, ours.Retryable)


def _caused(error: ccxt.BaseError, cause: BaseException) -> ccxt.BaseError:
    error.__cause__ = cause
    return error


def test_a_connection_that_never_opened_is_not_an_unknown_outcome() -> None:
    refused = _caused(ccxt.ExchangeNotAvailable("binance POST x"), socket.gaierror("no such host"))
    assert type(translate(refused, sent=True)) is ours.NetworkFailure
    reset = _caused(ccxt.ExchangeNotAvailable("binance POST x"), aiohttp.ServerDisconnectedError())
    assert type(translate(reset, sent=True)) is ours.OutcomeUnknown
    assert type(translate(reset, sent=False)) is ours.NetworkFailure
    payload = _caused(ccxt.ExchangeError("binance POST x"), aiohttp.ClientPayloadError("cut"))
    assert type(translate(payload, sent=False)) is ours.NetworkFailure
    assert type(translate(payload, sent=True)) is ours.OutcomeUnknown


def test_retry_after_comes_from_the_headers_or_the_ban_text() -> None:
    error = translate(
        ccxt.DDoSProtection("binance 429 Too Many Requests"), sent=False, headers={"Retry-After": "7"}
    )
    assert isinstance(error, ours.RateLimited)
    assert error.retry_after_s == 7.0
    assert retry_after_seconds({"retry-after": "2.5"}) == 2.5
    assert retry_after_seconds({"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"}, now_s=1445412480.0) == 10.0
    ban = (
        'binance 418 {"code":-1003,"msg":"Way too much request weight used; IP banned until 1700000060000."}'
    )
    assert retry_after_seconds(None, ban, now_s=1_700_000_000.0) == 60.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds(None, "no hint") is None
    assert retry_after_seconds({"Retry-After": "-3"}) == 0.0
    plain = translate(ccxt.RateLimitExceeded("slow"), sent=False)
    assert isinstance(plain, ours.RateLimited)
    assert plain.retry_after_s is None


def test_messages_lose_signatures_and_keys() -> None:
    key, secret = "AbCdEfKEY123456", "s3cr3t-SECRET-xyz"
    text = (
        f"binance GET https://api.binance.com/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=deadbeef "
        f"apiKey={key} secret={secret}"
    )
    error = translate(ccxt.RequestTimeout(text), sent=False, secrets=[key, secret, None])
    assert "deadbeef" not in str(error)
    assert key not in str(error)
    assert secret not in str(error)
    assert "https://api.binance.com/api/v3/order?" in str(error)
    assert len(sanitize("x" * 5000)) < 700
