"""The exchange adapter: ccxt's async client behind our own types, errors, retries and budget.

    async with ExchangeAdapter(settings.exchange) as exchange:
        markets = await exchange.load_markets()
        candles = await exchange.fetch_ohlcv("BTC/USDT", "5m", since_ms, until_ms)
        ack = await exchange.create_order(OrderRequest("BTC/USDT", "buy", "limit", Decimal("0.01"),
                                                       client_order_id("hur", 42), price=Decimal(20000)))

Any ccxt exchange id works (spot markets only); Binance spot is the default and the tested one.
`sandbox: true` switches ccxt to the exchange's testnet; `api_url` sends every REST call to
another Binance-compatible host (the loopback emulator) through `huracan.exchange.urls.point_at`.

Every call: our request budget for its endpoint class, then the retry policy (reads and
cancels; never order creation), then `translate` of any ccxt error. Callers never see ccxt.

`create_order` returns an OrderAck, raises OutcomeUnknown (the order may exist: reconcile by
its client order id later), or raises any other ExchangeError, which means the order does not
exist (OrderNotPlaced when a lost answer resolved to "not placed"; see adapter_orders).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import ccxt.async_support as ccxt

from huracan.config.sections import ExchangeSettings
from huracan.core.candle import Candle
from huracan.core.timeframe import timeframe_ms
from huracan.exchange.adapter_orders import FUTURE_TOLERANCE_S, prepare_order, resolve_lost_order
from huracan.exchange.budget import EndpointClass, RequestBudget
from huracan.exchange.client_ids import is_valid_client_order_id
from huracan.exchange.errors import (
    BadResponse,
    BadSymbol,
    DuplicateClientOrderId,
    ExchangeError,
    InvalidOrder,
    OrderNotFound,
    OutcomeUnknown,
    translate,
)
from huracan.exchange.models import (
    Balance,
    CancelResult,
    MarketRules,
    Order,
    OrderAck,
    OrderRequest,
    Ticker,
    TopOfBook,
    Trade,
    parse_balances,
    parse_market,
    parse_order,
    parse_ticker,
    parse_top_of_book,
    parse_trade,
)
from huracan.exchange.retry import RetryPolicy, call_with_retries
from huracan.exchange.urls import point_at
from huracan.logs import get_logger, register_secrets

log = get_logger("huracan.exchange.adapter")

T = TypeVar("T")

# Keep ccxt on spot: by default Binance's load_markets also asks the futures hosts and, with
# keys, the capital and margin endpoints.
SPOT_OPTIONS: dict[str, object] = {
    "defaultType": "spot",
    "fetchMarkets": {"types": ["spot"]},
    "fetchCurrencies": False,
    "fetchMargins": False,
}
OHLCV_PAGE = 1000  # Binance's largest klines page
TRADES_PAGE = 1000
DEFAULT_RECV_WINDOW_MS = 5000
# What ccxt's parsers raise when a 200 carries a body that is not what they expect.
_PARSER_ERRORS = (TypeError, KeyError, AttributeError, ValueError, IndexError)


def make_client(
    settings: ExchangeSettings, *, recv_window_ms: int, enable_rate_limit: bool = True
) -> ccxt.Exchange:
    """A ccxt async client for `settings`: spot only, sandbox, `api_url` applied."""
    if settings.id not in ccxt.exchanges:
        raise ValueError(f"exchange.id {settings.id!r} is not an exchange ccxt knows")
    config: dict[str, Any] = {
        "enableRateLimit": enable_rate_limit,
        "timeout": max(1, round(settings.request_timeout_s * 1000)),
        "options": {**SPOT_OPTIONS, "recvWindow": recv_window_ms},
    }
    if settings.api_key is not None:
        config["apiKey"] = settings.api_key.get_secret_value()
    if settings.api_secret is not None:
        config["secret"] = settings.api_secret.get_secret_value()
    client: ccxt.Exchange = getattr(ccxt, settings.id)(config)
    if settings.sandbox:
        try:
            client.set_sandbox_mode(True)
        except ccxt.NotSupported:
            raise ValueError(f"exchange {settings.id!r} has no sandbox (testnet) in ccxt") from None
    if settings.api_url is not None:
        point_at(client, settings.api_url)
        if settings.api_url.startswith("http://"):
            # close() waits this long for TLS connections to wind down; plain HTTP has none.
            client.timeout_on_exit = 0
    return client


def _the_order_asked(order: Order, order_id: str | None, client_order_id: str | None) -> Order:
    """`order`, if it is the one asked about. A proxy or a venue that replays an earlier answer
    would otherwise make us apply another order's status and fills to this one."""
    if (order_id is not None and order.id != order_id) or (
        client_order_id is not None and order.client_order_id != client_order_id
    ):
        raise BadResponse(
            f"asked about order {order_id or client_order_id}, the answer is about {order.id} ({order.client_order_id})"
        )
    return order


def _exactly_one(order_id: str | None, client_order_id: str | None) -> None:
    if (order_id is None) == (client_order_id is None):
        raise ValueError("give exactly one of order_id and client_order_id")


class ExchangeAdapter:
    local = False  # every request is a round trip to the exchange: see Venue.local

    def __init__(
        self,
        settings: ExchangeSettings,
        *,
        budget: RequestBudget | None = None,
        retry: RetryPolicy | None = None,
        recv_window_ms: int = DEFAULT_RECV_WINDOW_MS,
        lost_order_lookups: int | None = None,
        enable_ccxt_rate_limit: bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.exchange_id = settings.id
        self._secrets = [
            s.get_secret_value() for s in (settings.api_key, settings.api_secret) if s is not None
        ]
        register_secrets(self._secrets)
        self._client = make_client(
            settings, recv_window_ms=recv_window_ms, enable_rate_limit=enable_ccxt_rate_limit
        )
        self._budget = budget if budget is not None else RequestBudget(sleep=sleep)
        self._retry = retry if retry is not None else RetryPolicy.from_settings(settings)
        self._settle_s = recv_window_ms / 1000 + FUTURE_TOLERANCE_S
        self._lost_order_lookups = lost_order_lookups or settings.retry_attempts + 1
        self._sleep = sleep
        self._now_ms = now_ms
        self._markets: dict[str, MarketRules] = {}
        # The forming bar's (open time, open) by (symbol, timeframe), from the last fetch_ohlcv.
        self._forming: dict[tuple[str, str], tuple[int, float]] = {}

    async def __aenter__(self) -> ExchangeAdapter:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    # --- the one way to the exchange ------------------------------------------------------------
    def _translate(self, exc: ccxt.BaseError, *, sent: bool) -> ExchangeError:
        # Called straight from an except clause: no await lies between ccxt storing this
        # response's headers (Retry-After) and this read.
        headers = getattr(self._client, "last_response_headers", None)
        return translate(
            exc, sent=sent, headers=headers if isinstance(headers, dict) else None, secrets=self._secrets
        )

    async def _once(
        self, endpoint: EndpointClass, operation: str, fn: Callable[[], Awaitable[T]], sent: bool
    ) -> T:
        await self._budget.acquire(endpoint)
        error: ExchangeError
        try:
            return await fn()
        except ccxt.BaseError as exc:
            error = self._translate(exc, sent=sent)
        except _PARSER_ERRORS as exc:
            kind = OutcomeUnknown if sent else BadResponse
            error = kind(f"{operation}: unreadable answer ({type(exc).__name__})")
        raise error from None

    async def _call(
        self, endpoint: EndpointClass, operation: str, fn: Callable[[], Awaitable[T]], *, retried: bool = True
    ) -> T:
        if not retried:
            return await self._once(endpoint, operation, fn, sent=False)
        return await call_with_retries(
            lambda: self._once(endpoint, operation, fn, sent=False),
            self._retry,
            operation=operation,
            sleep=self._sleep,
        )

    # --- market data ----------------------------------------------------------------------------
    async def load_markets(self, *, reload: bool = False) -> dict[str, MarketRules]:
        """The spot markets by symbol ("BTC/USDT"), with their precision and limits."""

        async def fetch() -> dict[str, MarketRules]:
            markets = await self._client.load_markets(reload)
            return {symbol: parse_market(m) for symbol, m in markets.items() if m.get("spot", True)}

        self._markets = await self._call(EndpointClass.MARKET_DATA, "load_markets", fetch)
        return dict(self._markets)

    async def market(self, symbol: str) -> MarketRules:
        if not self._markets:
            await self.load_markets()
        try:
            return self._markets[symbol]
        except KeyError:
            raise BadSymbol(f"{self.exchange_id} has no spot market {symbol}") from None

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list[Candle]:
        """Closed bars with open time in [since_ms, until_ms), oldest first, each once, in as
        many pages as it takes."""
        step = timeframe_ms(timeframe)
        closed_by = self._now_ms() - step  # a bar that opened after this has not closed
        bars: dict[int, Candle] = {}
        since = since_ms
        while since < until_ms:
            page_since = since

            async def page(page_since: int = page_since) -> list[Candle]:
                rows = await self._client.fetch_ohlcv(
                    symbol, timeframe, page_since, OHLCV_PAGE, {"until": until_ms - 1}
                )
                return self._candles(symbol, timeframe, rows)

            candles = await self._call(EndpointClass.MARKET_DATA, "fetch_ohlcv", page)
            for candle in candles:
                if since_ms <= candle.open_time_ms < until_ms and candle.open_time_ms <= closed_by:
                    bars[candle.open_time_ms] = candle
                elif closed_by < candle.open_time_ms <= closed_by + step:  # still forming: its open is final
                    self._forming[(symbol, timeframe)] = (candle.open_time_ms, candle.open)
            # A bar dated past the window (a hostile one far in the future) must not move the next
            # page past the bars still to fetch.
            newest = max((c.open_time_ms for c in candles if c.open_time_ms < until_ms), default=None)
            if newest is None or len(candles) < OHLCV_PAGE or newest + step <= since:
                break
            since = newest + step
        return [bars[t] for t in sorted(bars)]

    def opening_price(self, symbol: str, timeframe: str, open_time_ms: int) -> float | None:
        """The open of the bar opening at `open_time_ms`, if the last fetch_ohlcv of the symbol
        saw it forming (no request of its own)."""
        seen = self._forming.get((symbol, timeframe))
        return seen[1] if seen is not None and seen[0] == open_time_ms else None

    def _candles(self, symbol: str, timeframe: str, rows: Any) -> list[Candle]:
        """ccxt's rows as Candles. A price or volume ccxt could not read (None) becomes NaN, so
        that validation rejects and reports that bar (NOT_FINITE) while the others of the page
        go on; a row without a readable open time cannot be placed and is left out (logged).
        BadResponse when no row is readable: the answer as a whole is garbage (a truncated body)."""
        if not isinstance(rows, list):
            raise BadResponse(f"fetch_ohlcv {symbol}: unreadable answer ({type(rows).__name__})")
        candles = []
        unreadable = []
        for row in rows:
            if not isinstance(row, list | tuple) or len(row) < 6 or not isinstance(row[0], int):
                unreadable.append(row)
                continue
            candles.append(self._candle(symbol, timeframe, row))
        if unreadable:
            if not candles:
                raise BadResponse(f"fetch_ohlcv {symbol}: unreadable bars {unreadable[:3]!r}")
            log.warning(
                "unreadable bars left out", symbol=symbol, count=len(unreadable), first=repr(unreadable[0])
            )
        return candles

    def _candle(self, symbol: str, timeframe: str, row: Any) -> Candle:
        numbers = [
            v if isinstance(v, int | float) and not isinstance(v, bool) else math.nan for v in row[1:6]
        ]
        return Candle(self.exchange_id, symbol, timeframe, int(row[0]), *map(float, numbers))

    async def fetch_ticker(self, symbol: str) -> Ticker:
        async def fetch() -> Ticker:
            return parse_ticker(await self._client.fetch_ticker(symbol), symbol)

        return await self._call(EndpointClass.MARKET_DATA, "fetch_ticker", fetch)

    async def fetch_top_of_book(self, symbol: str) -> TopOfBook:
        async def fetch() -> TopOfBook:
            return parse_top_of_book(await self._client.fetch_order_book(symbol, 5), symbol)

        return await self._call(EndpointClass.MARKET_DATA, "fetch_top_of_book", fetch)

    # --- account --------------------------------------------------------------------------------
    async def fetch_balances(self) -> dict[str, Balance]:
        """Assets with a non-zero balance."""

        async def fetch() -> dict[str, Balance]:
            return parse_balances(await self._client.fetch_balance())

        return await self._call(EndpointClass.ACCOUNT, "fetch_balances", fetch)

    async def fetch_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order:
        """One order, by the exchange's id or by our client order id; OrderNotFound if none."""
        _exactly_one(order_id, client_order_id)
        return await self._call(
            EndpointClass.ACCOUNT, "fetch_order", lambda: self._fetch_order(symbol, order_id, client_order_id)
        )

    async def _fetch_order(self, symbol: str, order_id: str | None, client_order_id: str | None) -> Order:
        params = {} if client_order_id is None else {"origClientOrderId": client_order_id}
        return _the_order_asked(
            parse_order(await self._client.fetch_order(order_id, symbol, params)), order_id, client_order_id
        )

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        async def fetch() -> list[Order]:
            return [parse_order(o) for o in await self._client.fetch_open_orders(symbol)]

        return await self._call(EndpointClass.ACCOUNT, "fetch_open_orders", fetch)

    async def fetch_my_trades(self, symbol: str, since_ms: int) -> list[Trade]:
        """Our trades in `symbol` from `since_ms` on, oldest first, in pages."""
        trades: dict[str, Trade] = {}
        since = since_ms
        while True:
            page_since = since

            async def page(page_since: int = page_since) -> list[Trade]:
                rows = await self._client.fetch_my_trades(symbol, page_since, TRADES_PAGE)
                return [parse_trade(row) for row in rows]

            batch = await self._call(EndpointClass.ACCOUNT, "fetch_my_trades", page)
            fresh = [t for t in batch if t.id not in trades]
            trades.update((t.id, t) for t in batch)
            if len(batch) < TRADES_PAGE or not fresh:
                break
            since = max(t.timestamp_ms for t in batch)
        return sorted(trades.values(), key=lambda t: (t.timestamp_ms, t.id))

    # --- orders ---------------------------------------------------------------------------------
    async def create_order(self, request: OrderRequest) -> OrderAck:
        """Place `request` once (never retried). The answer lost: look the order up by its client
        order id (adapter_orders.resolve_lost_order). The client order id already in use: the
        earlier submission is the order, returned as found."""
        if not is_valid_client_order_id(request.client_order_id):
            raise InvalidOrder(f"client order id {request.client_order_id!r} is not valid for the exchange")
        rules = await self.market(request.symbol)
        prepared = prepare_order(
            request, rules, self._client.amount_to_precision, self._client.price_to_precision
        )
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.post_only:
            params["postOnly"] = True
        cid = request.client_order_id

        async def send() -> Order:
            raw = await self._client.create_order(
                request.symbol, request.type, request.side, prepared.amount, prepared.price, params
            )
            order = parse_order(raw)
            if order.client_order_id != cid:
                raise BadResponse(f"create_order {cid}: the answer is for order {order.client_order_id}")
            return order

        try:
            await self._budget.acquire(EndpointClass.ORDERS)
            order = await self._once_sent("create_order", send)
        except OutcomeUnknown as lost:
            log.warning(
                "order answer lost; looking it up by client order id", client_order_id=cid, cause=str(lost)
            )
            found = await resolve_lost_order(
                lambda: self._lookup(request.symbol, cid),
                client_order_id=cid,
                settle_s=self._settle_s,
                policy=self._retry,
                lookups=self._lost_order_lookups,
                clock=asyncio.get_running_loop().time,
                sleep=self._sleep,
            )
            return OrderAck(found, via="lookup")
        except DuplicateClientOrderId:
            earlier = await call_with_retries(
                lambda: self._lookup(request.symbol, cid),
                self._retry,
                operation="fetch_order",
                sleep=self._sleep,
            )
            if earlier is None:
                raise
            log.info(
                "client order id already placed; returning that order",
                client_order_id=cid,
                order_id=earlier.id,
            )
            return OrderAck(earlier, via="lookup")
        log.info(
            "order placed",
            client_order_id=cid,
            order_id=order.id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            amount=prepared.amount,
            price=prepared.price,
            status=order.status,
        )
        return OrderAck(order, via="response")

    async def _once_sent(self, operation: str, fn: Callable[[], Awaitable[Order]]) -> Order:
        """One state-changing request: a lost or unreadable answer is OutcomeUnknown."""
        error: ExchangeError
        try:
            return await fn()
        except ccxt.BaseError as exc:
            error = self._translate(exc, sent=True)
        except BadResponse as exc:
            error = OutcomeUnknown(f"{operation}: {exc}")
        except _PARSER_ERRORS as exc:
            error = OutcomeUnknown(f"{operation}: unreadable answer ({type(exc).__name__})")
        raise error from None

    async def _lookup(self, symbol: str, client_order_id: str) -> Order | None:
        """One look-up by client order id, translated, not retried; None when not found."""
        try:
            return await self._once(
                EndpointClass.ACCOUNT,
                "fetch_order",
                lambda: self._fetch_order(symbol, None, client_order_id),
                sent=False,
            )
        except OrderNotFound:
            return None

    async def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> CancelResult:
        """Cancel one order (retried: cancelling twice is harmless). "Unknown order" from the
        exchange is an answer, not a failure: the order is looked up and reported as
        `already_closed` (filled, canceled or expired before) or `not_found`."""
        _exactly_one(order_id, client_order_id)
        params = {} if client_order_id is None else {"origClientOrderId": client_order_id}

        async def cancel() -> Order:
            raw = await self._client.cancel_order(order_id, symbol, params)
            order = parse_order(raw)
            # Binance names the cancel request itself in clientOrderId; the order's own id is
            # origClientOrderId in the raw answer.
            info = raw.get("info") if isinstance(raw, dict) else None
            original = info.get("origClientOrderId") if isinstance(info, dict) else None
            if client_order_id is not None and original is not None and original != client_order_id:
                raise BadResponse(f"asked to cancel {client_order_id}, the answer is about {original}")
            return _the_order_asked(order, order_id, None)

        try:
            order = await self._call(EndpointClass.ORDERS, "cancel_order", cancel)
        except OrderNotFound:
            try:
                final = await self.fetch_order(symbol, order_id=order_id, client_order_id=client_order_id)
            except OrderNotFound:
                log.info("cancel: no such order", order_id=order_id, client_order_id=client_order_id)
                return CancelResult("not_found", None)
            if final.is_open:
                raise ExchangeError(
                    f"cancel of {final.id} ({final.client_order_id}): the exchange says unknown order, yet lists it open"
                ) from None
            log.info(
                "cancel: order already closed",
                order_id=final.id,
                client_order_id=final.client_order_id,
                status=final.status,
            )
            return CancelResult("already_closed", final)
        log.info(
            "order canceled", order_id=order.id, client_order_id=order.client_order_id, status=order.status
        )
        return CancelResult("canceled", order)
