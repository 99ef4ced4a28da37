"""What the exchange adapter returns: our own frozen dataclasses, never ccxt's dicts.

Prices, amounts and fees are Decimal, made from ccxt's numbers through str (ccxt parses the
venue's decimal strings into floats whose shortest repr is the venue's text). The parse_*
functions raise BadResponse when a field that must be there is missing or unreadable (a
truncated body reaches ccxt's parsers as text and comes back as a dict of Nones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from huracan.exchange.errors import BadResponse

Side = Literal["buy", "sell"]
OrderType = Literal["limit", "market"]
OrderStatus = Literal["open", "closed", "canceled", "expired", "rejected"]
_STATUSES: frozenset[str] = frozenset({"open", "closed", "canceled", "expired", "rejected"})


@dataclass(frozen=True, slots=True)
class MarketRules:
    """A market's precision and limits, as the exchange publishes them."""

    symbol: str  # BTC/USDT
    market_id: str  # BTCUSDT
    base: str
    quote: str
    active: bool
    amount_step: Decimal  # lot step (Binance LOT_SIZE stepSize)
    tick_size: Decimal  # price step (PRICE_FILTER tickSize)
    min_amount: Decimal | None
    max_amount: Decimal | None
    min_notional: Decimal | None  # NOTIONAL / MIN_NOTIONAL minNotional
    min_price: Decimal | None
    max_price: Decimal | None


@dataclass(frozen=True, slots=True)
class Ticker:
    symbol: str
    timestamp_ms: int | None
    last: Decimal
    bid: Decimal | None
    ask: Decimal | None
    base_volume: Decimal | None
    quote_volume: Decimal | None


@dataclass(frozen=True, slots=True)
class TopOfBook:
    symbol: str
    timestamp_ms: int | None
    bid: Decimal
    bid_amount: Decimal
    ask: Decimal
    ask_amount: Decimal

    @property
    def mid(self) -> Decimal:
        return (self.bid + self.ask) / 2

    @property
    def spread(self) -> Decimal:
        return self.ask - self.bid


@dataclass(frozen=True, slots=True)
class Balance:
    asset: str
    free: Decimal
    used: Decimal
    total: Decimal


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """An order as the execution layer asks for it. `client_order_id` comes from
    `huracan.exchange.client_ids.client_order_id` (a database sequence number): deterministic,
    so a lost submission can be found again."""

    symbol: str
    side: Side
    type: OrderType
    amount: Decimal
    client_order_id: str
    price: Decimal | None = None  # required for limit orders
    post_only: bool = False  # maker only: refused rather than take (limit orders)
    reference_price: Decimal | None = None  # for the notional check of a market order


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    client_order_id: str | None
    symbol: str
    side: Side
    type: str
    status: OrderStatus
    price: Decimal | None
    amount: Decimal
    filled: Decimal
    remaining: Decimal | None
    average: Decimal | None
    cost: Decimal | None
    timestamp_ms: int | None

    @property
    def is_open(self) -> bool:
        return self.status == "open"


@dataclass(frozen=True, slots=True)
class OrderAck:
    """The exchange holds this order. `via`: "response" when the create call answered,
    "lookup" when the answer was lost and the order was found by its client order id."""

    order: Order
    via: Literal["response", "lookup"]


@dataclass(frozen=True, slots=True)
class CancelResult:
    """`canceled`: this call canceled it. `already_closed`: it had filled, been canceled or
    expired before (the exchange said "unknown order"; `order` is its final state).
    `not_found`: the exchange has never heard of it."""

    outcome: Literal["canceled", "already_closed", "not_found"]
    order: Order | None


@dataclass(frozen=True, slots=True)
class Trade:
    id: str
    order_id: str | None
    symbol: str
    side: Side
    price: Decimal
    amount: Decimal
    cost: Decimal
    fee: Decimal | None
    fee_asset: str | None
    taker_or_maker: str | None
    timestamp_ms: int


# --- parsing ccxt's structures -----------------------------------------------------------------------
def decimal_or_none(value: Any, *, what: str = "number") -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError, TypeError):
        raise BadResponse(f"unreadable {what}: {value!r}") from None
    if not result.is_finite():
        raise BadResponse(f"unreadable {what}: {value!r}")
    return result


def required_decimal(source: Mapping[str, Any], key: str, context: str) -> Decimal:
    value = decimal_or_none(source.get(key), what=f"{context} {key}")
    if value is None:
        raise BadResponse(f"{context}: no {key} in the exchange's answer")
    return value


def _dict(raw: Any, context: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise BadResponse(f"{context}: expected an object, got {type(raw).__name__}")
    return raw


def _side(raw: Any, context: str) -> Side:
    if raw == "buy":
        return "buy"
    if raw == "sell":
        return "sell"
    raise BadResponse(f"{context}: unreadable side {raw!r}")


def parse_market(raw: Any) -> MarketRules:
    market = _dict(raw, "market")
    symbol = str(market.get("symbol"))
    precision = _dict(market.get("precision") or {}, f"market {symbol} precision")
    limits = _dict(market.get("limits") or {}, f"market {symbol} limits")
    amount_limits = limits.get("amount") or {}
    price_limits = limits.get("price") or {}
    cost_limits = limits.get("cost") or {}
    return MarketRules(
        symbol=symbol,
        market_id=str(market.get("id")),
        base=str(market.get("base")),
        quote=str(market.get("quote")),
        active=market.get("active") is not False,
        amount_step=required_decimal(precision, "amount", f"market {symbol} precision"),
        tick_size=required_decimal(precision, "price", f"market {symbol} precision"),
        min_amount=decimal_or_none(amount_limits.get("min")),
        max_amount=decimal_or_none(amount_limits.get("max")),
        min_notional=decimal_or_none(cost_limits.get("min")),
        min_price=decimal_or_none(price_limits.get("min")),
        max_price=decimal_or_none(price_limits.get("max")),
    )


def parse_ticker(raw: Any, symbol: str) -> Ticker:
    ticker = _dict(raw, f"ticker {symbol}")
    return Ticker(
        symbol=symbol,
        timestamp_ms=ticker.get("timestamp"),
        last=required_decimal(ticker, "last", f"ticker {symbol}"),
        bid=decimal_or_none(ticker.get("bid")),
        ask=decimal_or_none(ticker.get("ask")),
        base_volume=decimal_or_none(ticker.get("baseVolume")),
        quote_volume=decimal_or_none(ticker.get("quoteVolume")),
    )


def parse_top_of_book(raw: Any, symbol: str) -> TopOfBook:
    book = _dict(raw, f"order book {symbol}")
    bids, asks = book.get("bids") or [], book.get("asks") or []
    if not bids or not asks:
        raise BadResponse(f"order book {symbol}: a side is empty (bids {len(bids)}, asks {len(asks)})")
    context = f"order book {symbol}"
    bid, bid_amount = (decimal_or_none(v, what=context) for v in bids[0][:2])
    ask, ask_amount = (decimal_or_none(v, what=context) for v in asks[0][:2])
    if bid is None or ask is None or bid_amount is None or ask_amount is None:
        raise BadResponse(f"{context}: unreadable best level {bids[0]!r} / {asks[0]!r}")
    return TopOfBook(symbol, book.get("timestamp"), bid, bid_amount, ask, ask_amount)


def parse_balances(raw: Any) -> dict[str, Balance]:
    balance = _dict(raw, "balance")
    free, used, total = (_dict(balance.get(k) or {}, f"balance {k}") for k in ("free", "used", "total"))
    result = {}
    for asset in total:
        amounts = [
            decimal_or_none(part.get(asset), what=f"balance {asset}") or Decimal(0)
            for part in (free, used, total)
        ]
        if any(amounts):
            result[asset] = Balance(asset, amounts[0], amounts[1], amounts[2])
    return result


def parse_order(raw: Any) -> Order:
    order = _dict(raw, "order")
    order_id = order.get("id")
    context = f"order {order_id}"
    if not order_id:
        raise BadResponse("order: no id in the exchange's answer")
    status = order.get("status")
    if status not in _STATUSES:
        raise BadResponse(f"{context}: unreadable status {status!r}")
    return Order(
        id=str(order_id),
        client_order_id=order.get("clientOrderId"),
        symbol=str(order.get("symbol")),
        side=_side(order.get("side"), context),
        type=str(order.get("type")),
        status=status,
        price=decimal_or_none(order.get("price"), what=f"{context} price"),
        amount=required_decimal(order, "amount", context),
        filled=decimal_or_none(order.get("filled"), what=f"{context} filled") or Decimal(0),
        remaining=decimal_or_none(order.get("remaining"), what=f"{context} remaining"),
        average=decimal_or_none(order.get("average"), what=f"{context} average"),
        cost=decimal_or_none(order.get("cost"), what=f"{context} cost"),
        timestamp_ms=order.get("timestamp"),
    )


def parse_trade(raw: Any) -> Trade:
    trade = _dict(raw, "trade")
    trade_id = trade.get("id")
    context = f"trade {trade_id}"
    timestamp = trade.get("timestamp")
    if not trade_id or not isinstance(timestamp, int):
        raise BadResponse(f"{context}: no id or timestamp in the exchange's answer")
    fee = trade.get("fee") or {}
    price = required_decimal(trade, "price", context)
    amount = required_decimal(trade, "amount", context)
    return Trade(
        id=str(trade_id),
        order_id=None if trade.get("order") is None else str(trade.get("order")),
        symbol=str(trade.get("symbol")),
        side=_side(trade.get("side"), context),
        price=price,
        amount=amount,
        cost=decimal_or_none(trade.get("cost"), what=f"{context} cost") or price * amount,
        fee=decimal_or_none(fee.get("cost"), what=f"{context} fee"),
        fee_asset=fee.get("currency"),
        taker_or_maker=trade.get("takerOrMaker"),
        timestamp_ms=timestamp,
    )
