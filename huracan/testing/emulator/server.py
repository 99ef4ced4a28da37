"""The aiohttp application: Binance spot REST routes, request signing checks, faults, errors.

Errors come back as Binance sends them: HTTP 400 (401 for API-key problems) with
``{"code": -XXXX, "msg": "..."}``. Signed endpoints need the `X-MBX-APIKEY` header, a
`timestamp` within `recvWindow` of the emulator's wall clock, and `signature` = hex
HMAC-SHA256 of the query string followed by the body (signature removed) under the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from huracan.testing.emulator import wire
from huracan.testing.emulator.book import SyntheticBook, synthetic_book
from huracan.testing.emulator.candles import SymbolCandles
from huracan.testing.emulator.clock import MarketClock
from huracan.testing.emulator.control import add_control_routes
from huracan.testing.emulator.faults import FaultKind, FaultRule, FaultSchedule, corrupt_klines
from huracan.testing.emulator.market_time import Pace, wall_ms
from huracan.testing.emulator.markets import MarketRules, exchange_info, text8
from huracan.testing.emulator.matching import MatchingEngine, OrderRejected, OrderRequest

Handler = Callable[[web.Request, dict[str, str]], Awaitable[Any]]
CONTROL_PREFIX = "/emulator/"
DAY_MS = 86_400_000


@dataclass
class EmulatorState:
    """Everything the routes read and change."""

    candles: Mapping[str, SymbolCandles]
    rules: Mapping[str, MarketRules]
    clock: MarketClock
    engine: MatchingEngine
    faults: FaultSchedule
    api_key: str
    api_secret: str
    spread_bps: Decimal = Decimal(4)
    forming_bar: bool = False  # EmulatorConfig.forming_bar
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    history: dict[tuple[str, str], deque[str]] = field(default_factory=dict)
    updates: int = 0
    # Paced mode (python -m huracan.testing.emulator --speed N): market time follows wall time.
    pace: Pace | None = None

    def catch_up(self) -> None:
        """Paced mode: move market time to where the pace says it is by now. Called before every
        request as well as on each tick, so an answer never lags the pace (a client computing
        market time from the same pace sees the bars it expects, however late the tick runs)."""
        if self.pace is not None:
            behind = self.pace.market_ms(wall_ms()) - self.clock.now_ms
            if behind >= self.clock.step_ms:
                self.advance(behind // self.clock.step_ms)

    def set_pace(self, bars_per_second: float) -> Pace:
        """From now on market time passes at `bars_per_second` (0 freezes it)."""
        self.catch_up()
        self.pace = Pace(self.clock.now_ms, wall_ms(), bars_per_second, self.clock.step_ms)
        return self.pace

    def advance(self, bars: int) -> None:
        before, after = self.clock.advance(bars)
        # Bars in time order across symbols, so fills keep market time order.
        passed = [(bar, mid) for mid, c in self.candles.items() for bar in c.closed_between(before, after)]
        for bar, market_id in sorted(passed, key=lambda p: (p[0].close_time_ms, p[1])):
            self.engine.on_bar(bar, market_id)

    def book(self, market_id: str) -> SyntheticBook:
        bar = self.candles[market_id].last_closed(self.clock.now_ms)
        if bar is None:
            raise OrderRejected(-1121, "Invalid symbol.")  # no history yet at this market time
        return synthetic_book(bar, self.rules[market_id], self.spread_bps)


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=status)


def _decimal(params: Mapping[str, str], name: str) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise OrderRejected(
            -1100,
            f"Illegal characters found in parameter '{name}'; legal range is '^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.",
        ) from None
    if not value.is_finite():
        raise OrderRejected(-1100, f"Illegal characters found in parameter '{name}'.")
    return value


def _int(params: Mapping[str, str], name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise OrderRejected(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        ) from None


def _strip_signature(raw: str) -> tuple[str, str | None]:
    parts = raw.split("&") if raw else []
    kept = [p for p in parts if not p.startswith("signature=")]
    found = [p[len("signature=") :] for p in parts if p.startswith("signature=")]
    return "&".join(kept), (found[0] if found else None)


class Routes:
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # ---- plumbing --------------------------------------------------------------------------
    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._faults_middleware])
        public: dict[str, Handler] = {
            "/api/v3/ping": self.ping,
            "/api/v3/time": self.server_time,
            "/api/v3/exchangeInfo": self.exchange_info,
            "/api/v3/klines": self.klines,
            "/api/v3/uiKlines": self.klines,
            "/api/v3/depth": self.depth,
            "/api/v3/ticker/24hr": self.ticker_24hr,
            "/api/v3/ticker": self.ticker_24hr,
            "/api/v3/ticker/bookTicker": self.book_ticker,
            "/api/v3/ticker/price": self.ticker_price,
        }
        for path, handler in public.items():
            app.router.add_get(path, self._wrap(handler, signed=False))
        signed: list[tuple[str, str, Handler]] = [
            ("GET", "/api/v3/account", self.account),
            ("POST", "/api/v3/order", self.create_order),
            ("GET", "/api/v3/order", self.get_order),
            ("DELETE", "/api/v3/order", self.cancel_order),
            ("GET", "/api/v3/openOrders", self.open_orders),
            ("DELETE", "/api/v3/openOrders", self.cancel_open_orders),
            ("GET", "/api/v3/allOrders", self.all_orders),
            ("GET", "/api/v3/myTrades", self.my_trades),
            ("GET", "/sapi/v1/capital/config/getall", self.capital_config),
            ("GET", "/sapi/v1/margin/allPairs", self.capital_config),
            ("GET", "/sapi/v1/margin/isolated/allPairs", self.capital_config),
        ]
        for method, path, handler in signed:
            app.router.add_route(method, path, self._wrap(handler, signed=True))
        add_control_routes(app, self.state)  # /emulator/...: the emulator's own, not Binance's
        app.router.add_route("*", "/{tail:.*}", self.not_found)
        return app

    async def not_found(self, request: web.Request) -> web.Response:
        return _error(-1000, f"{request.method} {request.path} is not served by the emulator", 404)

    def _wrap(self, handler: Handler, signed: bool) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def route(request: web.Request) -> web.StreamResponse:
            try:
                params = await self._params(request, signed)
                body = await handler(request, params)
            except OrderRejected as rejected:
                return _error(rejected.code, rejected.msg, rejected.http_status)
            return web.json_response(body)

        return route

    async def _params(self, request: web.Request, signed: bool) -> dict[str, str]:
        raw_query = request.raw_path.partition("?")[2]
        raw_body = await request.text() if request.can_read_body else ""
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(raw_body, keep_blank_values=True))
        if signed:
            self._authenticate(request, raw_query, raw_body, params)
        return params

    def _authenticate(
        self, request: web.Request, raw_query: str, raw_body: str, params: dict[str, str]
    ) -> None:
        key = request.headers.get("X-MBX-APIKEY")
        if not key:
            raise OrderRejected(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key, self.state.api_key):
            raise OrderRejected(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        query, query_sig = _strip_signature(raw_query)
        body, body_sig = _strip_signature(raw_body)
        signature = query_sig or body_sig
        if not signature:
            raise OrderRejected(
                -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."
            )
        expected = hmac.new(
            self.state.api_secret.encode(), (query + body).encode(), hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(signature.lower(), expected):
            raise OrderRejected(-1022, "Signature for this request is not valid.")
        timestamp = _int(params, "timestamp")
        if timestamp is None:
            raise OrderRejected(
                -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."
            )
        recv_window = _int(params, "recvWindow") or 5000
        now = wall_ms()
        if timestamp >= now + 1000:
            raise OrderRejected(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if now - timestamp > recv_window:
            raise OrderRejected(-1021, "Timestamp for this request is outside of the recvWindow.")

    # ---- faults ----------------------------------------------------------------------------
    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        state = self.state
        state.catch_up()
        if request.path.startswith(CONTROL_PREFIX):
            return await handler(request)  # the control routes are not part of the fault model
        decision = state.faults.decide(request.method, request.path)
        if decision.latency_ms:
            await asyncio.sleep(decision.latency_ms / 1000)
        rule = decision.fault
        key = (request.method, request.path)
        kind = rule.kind if rule is not None else None
        if rule is not None and kind in _REFUSALS:
            return _refusal(rule)
        if kind is FaultKind.CONNECTION_RESET:
            return self._drop(request)
        if kind is FaultKind.TIMEOUT_BEFORE_ACCEPT:
            assert rule is not None
            await self._hang(rule)
            return self._drop(request)
        response = await handler(request)
        if not isinstance(response, web.Response) or response.text is None:
            return response
        text = response.text
        remembered = state.history.setdefault(key, deque(maxlen=2))
        if kind is FaultKind.TIMEOUT_AFTER_ACCEPT:
            assert rule is not None
            remembered.append(text)
            await self._hang(rule)
            return self._drop(request)
        if kind is FaultKind.MALFORMED_JSON:
            response.text = text[: max(1, len(text) // 2)]
        elif kind is FaultKind.DUPLICATE_RESPONSE and remembered:
            response.text = remembered[-1]
        elif kind is FaultKind.OUT_OF_ORDER:
            response.text = self._out_of_order(text, remembered)
        elif kind is FaultKind.CORRUPT_KLINES:
            assert rule is not None
            response.text = json.dumps(corrupt_klines(json.loads(text), rule.damage))
        remembered.append(text)
        return response

    def _out_of_order(self, text: str, remembered: deque[str]) -> str:
        body = json.loads(text)
        if isinstance(body, list) and len(body) > 1:
            shuffled = list(body)
            while shuffled == body:
                self.state.faults.rng.shuffle(shuffled)
            return json.dumps(shuffled)
        return remembered[0] if remembered else text

    async def _hang(self, rule: FaultRule) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.state.closing.wait(), timeout=rule.hang_s)

    @staticmethod
    def _drop(request: web.Request) -> web.Response:
        if request.transport is not None:
            request.transport.close()
        raise asyncio.CancelledError  # aiohttp ends the handler without writing a response

    # ---- public ----------------------------------------------------------------------------
    def _market(self, params: Mapping[str, str]) -> str:
        market_id = params.get("symbol", "")
        if not market_id:
            raise OrderRejected(
                -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."
            )
        if market_id not in self.state.rules:
            raise OrderRejected(-1121, "Invalid symbol.")
        return market_id

    def _markets(self, params: Mapping[str, str]) -> list[str]:
        if "symbol" in params:
            return [self._market(params)]
        if "symbols" in params:
            try:
                wanted = json.loads(params["symbols"])
            except ValueError:
                raise OrderRejected(-1100, "Illegal characters found in parameter 'symbols'.") from None
            return [self._market({"symbol": str(s)}) for s in wanted]
        return [m for m in self.state.rules if self.state.candles[m].last_closed(self.state.clock.now_ms)]

    async def ping(self, request: web.Request, params: dict[str, str]) -> Any:
        return {}

    async def server_time(self, request: web.Request, params: dict[str, str]) -> Any:
        return {"serverTime": wall_ms()}

    async def exchange_info(self, request: web.Request, params: dict[str, str]) -> Any:
        ids = self._markets(params) if ("symbol" in params or "symbols" in params) else list(self.state.rules)
        return exchange_info((self.state.rules[i] for i in ids), wall_ms())

    async def klines(self, request: web.Request, params: dict[str, str]) -> Any:
        candles = self.state.candles[self._market(params)]
        interval = params.get("interval", "")
        series = candles.series(interval)
        if series is None:
            raise OrderRejected(-1120, "Invalid interval.")
        limit = min(max(_int(params, "limit") or 500, 1), 1000)
        start, end = _int(params, "startTime"), _int(params, "endTime")
        return candles.klines(
            series, self.state.clock.now_ms, start, end, limit, forming=self.state.forming_bar
        )

    async def depth(self, request: web.Request, params: dict[str, str]) -> Any:
        book = self.state.book(self._market(params))
        self.state.updates += 1
        return wire.depth(book, min(max(_int(params, "limit") or 100, 1), 5000), self.state.updates)

    async def ticker_24hr(self, request: web.Request, params: dict[str, str]) -> Any:
        now = self.state.clock.now_ms
        rows = [
            wire.ticker_24hr(
                m, self.state.book(m), self.state.candles[m].window(now, DAY_MS), now - DAY_MS, now
            )
            for m in self._markets(params)
        ]
        return rows[0] if "symbol" in params else rows

    async def book_ticker(self, request: web.Request, params: dict[str, str]) -> Any:
        rows = [wire.book_ticker(m, self.state.book(m)) for m in self._markets(params)]
        return rows[0] if "symbol" in params else rows

    async def ticker_price(self, request: web.Request, params: dict[str, str]) -> Any:
        now = self.state.clock.now_ms
        rows: list[dict[str, str]] = []
        for m in self._markets(params):
            bar = self.state.candles[m].last_closed(now)
            assert bar is not None
            rows.append({"symbol": m, "price": text8(bar.close)})
        return rows[0] if "symbol" in params else rows

    # ---- private ---------------------------------------------------------------------------
    async def account(self, request: web.Request, params: dict[str, str]) -> Any:
        engine = self.state.engine
        omit = params.get("omitZeroBalances", "false").lower() == "true"
        return wire.account(
            engine.balances, engine.maker_fee, engine.taker_fee, self.state.clock.now_ms, omit
        )

    async def capital_config(self, request: web.Request, params: dict[str, str]) -> Any:
        # With ccxt's defaults (fetchCurrencies and fetchMargins on, keys set) load_markets asks
        # these sapi endpoints too: no coins, no margin pairs; ccxt makes do with the markets.
        return []

    async def create_order(self, request: web.Request, params: dict[str, str]) -> Any:
        market_id = self._market(params)
        state = self.state
        client_id = params.get("newClientOrderId") or f"emu-{wall_ms()}-{len(state.engine.orders)}"
        order_request = OrderRequest(
            market_id=market_id,
            side=params.get("side", "").upper(),
            type=params.get("type", "").upper(),
            client_order_id=client_id,
            quantity=_decimal(params, "quantity"),
            quote_order_qty=_decimal(params, "quoteOrderQty"),
            price=_decimal(params, "price"),
            time_in_force=params.get("timeInForce"),
        )
        trades_before = len(state.engine.trades)
        order = state.engine.place(order_request, state.book(market_id), state.clock.now_ms)
        fills = [t for t in state.engine.trades[trades_before:] if t.order_id == order.order_id]
        response_type = params.get("newOrderRespType", "FULL").upper()
        if response_type == "ACK":
            return wire.order_ack(order)
        if response_type == "RESULT":
            return wire.order_result(order)
        return wire.order_full(order, fills)

    def _find(self, params: Mapping[str, str]) -> tuple[str, int | None, str | None]:
        market_id = self._market(params)
        order_id = _int(params, "orderId")
        client_id = params.get("origClientOrderId") or None
        if order_id is None and client_id is None:
            raise OrderRejected(
                -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"
            )
        return market_id, order_id, client_id

    async def get_order(self, request: web.Request, params: dict[str, str]) -> Any:
        order = self.state.engine.find(*self._find(params))
        if order is None:
            raise OrderRejected(-2013, "Order does not exist.")
        return wire.order_query(order)

    async def cancel_order(self, request: web.Request, params: dict[str, str]) -> Any:
        market_id, order_id, client_id = self._find(params)
        order = self.state.engine.cancel(market_id, order_id, client_id, self.state.clock.now_ms)
        return wire.order_canceled(order, params.get("newClientOrderId") or f"cancel-{order.order_id}")

    async def cancel_open_orders(self, request: web.Request, params: dict[str, str]) -> Any:
        market_id = self._market(params)
        engine, now = self.state.engine, self.state.clock.now_ms
        canceled = [engine.cancel(market_id, o.order_id, None, now) for o in engine.open_orders(market_id)]
        if not canceled:
            raise OrderRejected(-2011, "Unknown order sent.")
        return [wire.order_canceled(o, f"cancel-{o.order_id}") for o in canceled]

    async def open_orders(self, request: web.Request, params: dict[str, str]) -> Any:
        market_id = self._market(params) if params.get("symbol") else None
        return [wire.order_query(o) for o in self.state.engine.open_orders(market_id)]

    async def all_orders(self, request: web.Request, params: dict[str, str]) -> Any:
        market_id = self._market(params)
        orders = [o for o in self.state.engine.orders.values() if o.market_id == market_id]
        start, end = _int(params, "startTime"), _int(params, "endTime")
        from_id = _int(params, "orderId")
        orders = [
            o
            for o in orders
            if (start is None or o.time_ms >= start)
            and (end is None or o.time_ms <= end)
            and (from_id is None or o.order_id >= from_id)
        ]
        limit = min(_int(params, "limit") or 500, 1000)
        chosen = orders[:limit] if from_id is not None else orders[-limit:]
        return [wire.order_query(o) for o in chosen]

    async def my_trades(self, request: web.Request, params: dict[str, str]) -> Any:
        market_id = self._market(params)
        start, end = _int(params, "startTime"), _int(params, "endTime")
        from_id, order_id = _int(params, "fromId"), _int(params, "orderId")
        trades = [
            t
            for t in self.state.engine.trades
            if t.market_id == market_id
            and (order_id is None or t.order_id == order_id)
            and (start is None or t.time_ms >= start)
            and (end is None or t.time_ms <= end)
            and (from_id is None or t.trade_id >= from_id)
        ]
        limit = min(_int(params, "limit") or 500, 1000)
        chosen = trades[:limit] if (from_id is not None or start is not None) else trades[-limit:]
        return [wire.my_trade(t) for t in chosen]


_REFUSALS = frozenset({FaultKind.HTTP_429, FaultKind.HTTP_418, FaultKind.HTTP_5XX})


def _refusal(rule: FaultRule) -> web.Response:
    if rule.kind is FaultKind.HTTP_5XX:
        return web.Response(
            status=rule.status, text=f"{rule.status} Service Unavailable", content_type="text/html"
        )
    headers = {"Retry-After": str(rule.retry_after_s)}
    if rule.kind is FaultKind.HTTP_429:
        body = {
            "code": -1003,
            "msg": "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
        }
        return web.json_response(body, status=429, headers=headers)
    banned_until = wall_ms() + rule.retry_after_s * 1000
    body = {
        "code": -1003,
        "msg": f"Way too much request weight used; IP banned until {banned_until}. Please use WebSocket Streams for live updates to avoid bans.",
    }
    return web.json_response(body, status=418, headers=headers)
