"""Order matching and the account (pure; no I/O; Decimal throughout).

- MARKET orders take liquidity from the synthetic book at once (taker fee); when the book runs
  out the rest EXPIRES, as on Binance.
- LIMIT orders that cross the book take what they can at once (taker); the rest rests (GTC),
  expires (IOC), or the whole order expires unfilled when it cannot fill completely (FOK).
- LIMIT_MAKER that would cross is rejected (-2010 "Order would immediately match and take.").
- Resting orders fill on later bars that trade through their price (buy: low < price; sell:
  high > price), at their price, maker fee, at most `max_fill_share` of the bar's volume per
  bar shared among the resting orders in time priority, so large orders fill partially.
- Commission is taken from what the order receives: base for buys, quote for sells (Binance
  without BNB), rounded to 8 decimals. Balances: free and locked; limit buys lock
  price x quantity of the quote, sells lock the base quantity.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from huracan.testing.emulator.book import SyntheticBook
from huracan.testing.emulator.candles import Bar
from huracan.testing.emulator.markets import MarketRules

_EIGHT = Decimal("0.00000001")
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})


class OrderRejected(Exception):
    """A request the venue refuses, in Binance's terms."""

    def __init__(self, code: int, msg: str, http_status: int = 400) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg, self.http_status = code, msg, http_status


INSUFFICIENT = (-2010, "Account has insufficient balance for requested action.")
WOULD_TAKE = (-2010, "Order would immediately match and take.")


@dataclass(frozen=True, slots=True)
class OrderRequest:
    market_id: str
    side: str  # BUY | SELL
    type: str  # LIMIT | LIMIT_MAKER | MARKET
    client_order_id: str
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    time_in_force: str | None = None


@dataclass(slots=True)
class Order:
    order_id: int
    client_order_id: str
    market_id: str
    side: str
    type: str
    time_in_force: str
    price: Decimal  # 0 for MARKET
    orig_qty: Decimal
    orig_quote_qty: Decimal
    time_ms: int
    update_time_ms: int
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cumm_quote_qty: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)  # quote (buy) or base (sell) still locked for this order

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True, slots=True)
class Trade:
    trade_id: int
    order_id: int
    market_id: str
    side: str
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    is_maker: bool


@dataclass(slots=True)
class Balance:
    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)


@dataclass
class MatchingEngine:
    markets: Mapping[str, MarketRules]
    balances: dict[str, Balance]
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    max_fill_share: Decimal = Decimal("0.1")
    orders: dict[int, Order] = field(default_factory=dict)
    trades: list[Trade] = field(default_factory=list)
    _order_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1_000_001))
    _trade_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(5_000_001))

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())

    # ---- lookups ---------------------------------------------------------------------------
    def find(self, market_id: str, order_id: int | None, client_order_id: str | None) -> Order | None:
        if order_id is not None:
            order = self.orders.get(order_id)
            return order if order is not None and order.market_id == market_id else None
        matches = [
            o
            for o in self.orders.values()
            if o.market_id == market_id and o.client_order_id == client_order_id
        ]
        open_matches = [o for o in matches if o.is_open]
        chosen = open_matches or matches
        return chosen[-1] if chosen else None

    def open_orders(self, market_id: str | None = None) -> list[Order]:
        return [o for o in self.orders.values() if o.is_open and market_id in (None, o.market_id)]

    # ---- placing ---------------------------------------------------------------------------
    def place(self, request: OrderRequest, book: SyntheticBook, now_ms: int) -> Order:
        rules = self.markets.get(request.market_id)
        if rules is None:
            raise OrderRejected(-1121, "Invalid symbol.")
        order = self._validate(request, rules, book, now_ms)
        self._lock_or_reject(order, rules, book, request)
        self.orders[order.order_id] = order
        if order.type == "MARKET" or self._crosses(order, book):
            self._take(order, rules, book, request.quote_order_qty, now_ms)
        if order.is_open and order.type == "LIMIT" and order.time_in_force in ("IOC", "FOK"):
            self._close(order, "EXPIRED", now_ms)
        return order

    def _validate(self, request: OrderRequest, rules: MarketRules, book: SyntheticBook, now_ms: int) -> Order:
        if request.side not in ("BUY", "SELL"):
            raise OrderRejected(
                -1100, "Illegal characters found in parameter 'side'; legal range is 'BUY', 'SELL'."
            )
        if request.type not in ("LIMIT", "LIMIT_MAKER", "MARKET"):
            raise OrderRejected(-1116, "Invalid orderType.")
        if any(o.client_order_id == request.client_order_id for o in self.open_orders()):
            raise OrderRejected(-2010, "Duplicate order sent.")
        tif = request.time_in_force or "GTC"
        price = request.price or Decimal(0)
        qty = request.quantity
        if request.type == "LIMIT":
            if request.time_in_force is None:
                raise _missing("timeInForce")
            if tif not in ("GTC", "IOC", "FOK"):
                raise OrderRejected(-1115, "Invalid timeInForce.")
        if request.type in ("LIMIT", "LIMIT_MAKER"):
            if request.price is None:
                raise _missing("price")
            if qty is None:
                raise _missing("quantity")
        if request.type == "MARKET":
            if (qty is None) == (request.quote_order_qty is None):
                raise OrderRejected(
                    -1102,
                    "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty or both were sent.",
                )
            if request.quote_order_qty is not None and request.quote_order_qty <= 0:
                raise OrderRejected(-1013, "Invalid quoteOrderQty.")
        if request.type != "MARKET" and (
            price < rules.min_price or price > rules.max_price or price % rules.tick_size != 0
        ):
            raise OrderRejected(-1013, "Filter failure: PRICE_FILTER")
        if qty is not None and (qty < rules.min_qty or qty > rules.max_qty or qty % rules.step_size != 0):
            raise OrderRejected(-1013, "Filter failure: LOT_SIZE")
        notional = (
            request.quote_order_qty
            if request.quote_order_qty is not None
            else (qty or Decimal(0)) * (price if request.type != "MARKET" else book.mid)
        )
        if notional < rules.min_notional or (request.type != "MARKET" and notional > rules.max_notional):
            raise OrderRejected(-1013, "Filter failure: NOTIONAL")
        order = Order(
            order_id=next(self._order_ids),
            client_order_id=request.client_order_id,
            market_id=request.market_id,
            side=request.side,
            type=request.type,
            time_in_force=tif,
            price=price,
            orig_qty=qty if qty is not None else Decimal(0),
            orig_quote_qty=request.quote_order_qty or Decimal(0),
            time_ms=now_ms,
            update_time_ms=now_ms,
        )
        if order.type == "LIMIT_MAKER" and self._crosses(order, book):
            raise OrderRejected(*WOULD_TAKE)
        return order

    @staticmethod
    def _crosses(order: Order, book: SyntheticBook) -> bool:
        if order.type == "MARKET":
            return True
        return order.price >= book.best_ask if order.side == "BUY" else order.price <= book.best_bid

    def _lock_or_reject(
        self, order: Order, rules: MarketRules, book: SyntheticBook, request: OrderRequest
    ) -> None:
        if order.side == "BUY":
            wallet = self.balance(rules.quote)
            if order.type == "MARKET":
                need = request.quote_order_qty or _cost_to_buy(book, order.orig_qty)
            else:
                need = order.price * order.orig_qty
        else:
            wallet = self.balance(rules.base)
            need = order.orig_qty if order.type != "MARKET" or request.quantity is not None else Decimal(0)
            if order.type == "MARKET" and request.quote_order_qty is not None:
                need = rules.floor_qty(request.quote_order_qty / book.best_bid)
        if need > wallet.free:
            raise OrderRejected(*INSUFFICIENT)
        wallet.free -= need
        wallet.locked += need
        order.locked = need

    # ---- filling ---------------------------------------------------------------------------
    def _take(
        self,
        order: Order,
        rules: MarketRules,
        book: SyntheticBook,
        quote_budget: Decimal | None,
        now_ms: int,
    ) -> None:
        levels = book.asks if order.side == "BUY" else book.bids
        fills: list[tuple[Decimal, Decimal]] = []
        budget = quote_budget
        wanted = order.orig_qty if quote_budget is None else None
        for level in levels:
            if order.type != "MARKET" and (
                level.price > order.price if order.side == "BUY" else level.price < order.price
            ):
                break
            if wanted is not None:
                qty = min(level.qty, wanted - sum((q for _, q in fills), Decimal(0)))
            else:
                assert budget is not None
                qty = rules.floor_qty(min(level.qty, budget / level.price))
            if qty <= 0:
                break
            fills.append((level.price, qty))
            if budget is not None:
                budget -= qty * level.price
        filled = sum((q for _, q in fills), Decimal(0))
        if order.type == "MARKET" and quote_budget is not None:
            order.orig_qty = filled
        if order.time_in_force == "FOK" and order.type == "LIMIT" and filled < order.orig_qty:
            self._close(order, "EXPIRED", now_ms)
            return
        for price, qty in fills:
            self._fill(order, rules, price, qty, is_maker=False, now_ms=now_ms)
        if order.type == "MARKET" and order.is_open:
            self._close(
                order, "EXPIRED" if order.executed_qty < order.orig_qty or filled == 0 else "FILLED", now_ms
            )

    def _fill(
        self, order: Order, rules: MarketRules, price: Decimal, qty: Decimal, is_maker: bool, now_ms: int
    ) -> Trade:
        fee_rate = self.maker_fee if is_maker else self.taker_fee
        quote_qty = price * qty
        base, quote = self.balance(rules.base), self.balance(rules.quote)
        if order.side == "BUY":
            commission = (qty * fee_rate).quantize(_EIGHT, ROUND_HALF_UP)
            spent = min(quote_qty, order.locked)
            quote.locked -= spent
            order.locked -= spent
            quote.free -= quote_qty - spent  # only when a market order's estimate fell short
            base.free += qty - commission
            commission_asset = rules.base
        else:
            commission = (quote_qty * fee_rate).quantize(_EIGHT, ROUND_HALF_UP)
            sold = min(qty, order.locked)
            base.locked -= sold
            order.locked -= sold
            base.free -= qty - sold
            quote.free += quote_qty - commission
            commission_asset = rules.quote
        order.executed_qty += qty
        order.cumm_quote_qty += quote_qty
        order.update_time_ms = now_ms
        order.status = "FILLED" if order.executed_qty >= order.orig_qty else "PARTIALLY_FILLED"
        trade = Trade(
            next(self._trade_ids),
            order.order_id,
            order.market_id,
            order.side,
            price,
            qty,
            quote_qty,
            commission,
            commission_asset,
            now_ms,
            is_maker,
        )
        self.trades.append(trade)
        if order.status == "FILLED":
            self._release(order)
        return trade

    def _release(self, order: Order) -> None:
        rules = self.markets[order.market_id]
        wallet = self.balance(rules.quote if order.side == "BUY" else rules.base)
        wallet.locked -= order.locked
        wallet.free += order.locked
        order.locked = Decimal(0)

    def _close(self, order: Order, status: str, now_ms: int) -> None:
        order.status = status
        order.update_time_ms = now_ms
        self._release(order)

    def cancel(self, market_id: str, order_id: int | None, client_order_id: str | None, now_ms: int) -> Order:
        order = self.find(market_id, order_id, client_order_id)
        if order is None or not order.is_open:
            raise OrderRejected(-2011, "Unknown order sent.")
        self._close(order, "CANCELED", now_ms)
        return order

    def on_bar(self, bar: Bar, market_id: str) -> list[Trade]:
        """Fill resting orders of `market_id` that `bar` traded through (time priority)."""
        rules = self.markets[market_id]
        budget = rules.floor_qty(bar.volume * self.max_fill_share)
        trades: list[Trade] = []
        for order in sorted(self.open_orders(market_id), key=lambda o: o.order_id):
            through = bar.low < order.price if order.side == "BUY" else bar.high > order.price
            if not through or budget <= 0:
                continue
            qty = min(order.remaining, budget)
            budget -= qty
            trades.append(self._fill(order, rules, order.price, qty, is_maker=True, now_ms=bar.close_time_ms))
        return trades


def _missing(name: str) -> OrderRejected:
    return OrderRejected(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _cost_to_buy(book: SyntheticBook, qty: Decimal) -> Decimal:
    cost, left = Decimal(0), qty
    for level in book.asks:
        take = min(level.qty, left)
        cost += take * level.price
        left -= take
        if left <= 0:
            break
    return cost
