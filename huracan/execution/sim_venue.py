"""The simulated venue of replay and shadow mode: the exchange adapter's order methods, answered
in memory, with fills from the fill model as each bar opens (market orders) and closes.

The executor cannot tell it from the live adapter (same methods, same types, same errors), so
replay, shadow and live run one order path. Orders wait for the next bar: a market order placed
after bar t closed fills at bar t+1's open, as the training environment's rules say; resting
limits fill when a later bar trades through them (huracan/execution/fill_model.py). The market
order fills as soon as that open is known (on_open: the venue's forming bar, as ingestion sees
it), as a live venue fills it at once; without it, when bar t+1 closes (on_bar). Same fills.

A bar's candles are handled between the candle close and the decision, so the venue keeps what
they need at hand: open orders indexed by symbol (a candle of a symbol without one costs a dict
look-up), each with the fill model's view of it (SimOrder, rebuilt only when a fill changes what
is left), and the bar read lazily (CandleBar: a market order needs the open alone). Every price,
quantity and fee is the Decimal the plain computation gives: nothing here is rounded or cached
in a way that could change a number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from decimal import ROUND_HALF_EVEN, Decimal

from huracan.core.candle import Candle, CandleSeries
from huracan.core.numbers import decimal_of
from huracan.core.timeframe import timeframe_ms
from huracan.exchange.adapter_orders import prepare_order
from huracan.exchange.errors import OrderNotFound, PostOnlyWouldTake
from huracan.exchange.models import (
    Balance,
    CancelResult,
    MarketRules,
    Order,
    OrderAck,
    OrderRequest,
    TopOfBook,
    Trade,
)
from huracan.execution.fill_model import (
    CandleBar,
    FillCosts,
    SimFill,
    SimOrder,
    fill_at_open,
    fill_on_bar,
    post_only_would_cross,
    synthetic_top_of_book,
)
from huracan.execution.positions import floor_to_step
from huracan.testing.emulator.markets import rules_from_prices


def replay_market_rules(series: Mapping[str, CandleSeries]) -> dict[str, MarketRules]:
    """Market rules for replayed symbols, derived from their price level as the emulator does."""
    rules = {}
    for symbol, candles in series.items():
        derived = rules_from_prices(symbol, symbol.replace("/", ""), candles.close)
        rules[symbol] = MarketRules(
            symbol=symbol,
            market_id=derived.market_id,
            base=derived.base,
            quote=derived.quote,
            active=True,
            amount_step=derived.step_size,
            tick_size=derived.tick_size,
            min_amount=derived.min_qty,
            max_amount=derived.max_qty,
            min_notional=derived.min_notional,
            min_price=derived.min_price,
            max_price=derived.max_price,
        )
    return rules


@dataclass(slots=True)
class _SimOrder:
    """An order the venue holds: what it answers about it, and what the fill model sees of it
    (`working`: what is left to fill, placed at the order's time)."""

    order: Order
    working: SimOrder
    fills: int = 0


class SimulatedVenue:
    local = True  # answers at once: see Venue.local

    def __init__(
        self,
        exchange_id: str,
        markets: Mapping[str, MarketRules],
        costs: FillCosts,
        now_ms: Callable[[], int],
    ) -> None:
        self.exchange_id = exchange_id
        self.markets = dict(markets)
        self.costs = costs
        self.now_ms = now_ms
        self._orders: dict[str, _SimOrder] = {}  # by client order id
        # The open ones by symbol, in the order they were placed (the fill model's time priority).
        self._open: dict[str, dict[str, _SimOrder]] = {}
        self._finished: list[str] = []  # client order ids closed or canceled since forget_closed
        self._bar_ms: dict[str, int] = {}  # bar length by timeframe
        self._trades: dict[str, list[Trade]] = {s: [] for s in self.markets}
        # Closes kept as floats and made exact when asked: a bar's 20 conversions sit between
        # the candle close and the decision, most of them for symbols no one asks about.
        self._last_close_float: dict[str, float] = {}
        self._market_ms = 0  # close of the newest bar seen

    # --- market data ----------------------------------------------------------------------------
    async def market(self, symbol: str) -> MarketRules:
        return self.markets[symbol]

    async def fetch_top_of_book(self, symbol: str) -> TopOfBook:
        close = self._last_close(symbol)
        if close is None:
            raise OrderNotFound(f"{symbol}: no price yet")
        bid, ask = synthetic_top_of_book(close, self.costs)
        return TopOfBook(symbol, self.now_ms(), bid, Decimal(0), ask, Decimal(0))

    def on_open(self, symbol: str, open_time_ms: int, price: float) -> list[Trade]:
        """The bar of `symbol` opening at `open_time_ms` has opened at `price`: the orders that
        take at the open fill now (fill_at_open), the others wait for the bar's close."""
        working = self._open.get(symbol)
        if not working:
            return []
        orders = [s.working for s in working.values()]
        return self._record(symbol, fill_at_open(orders, open_time_ms, decimal_of(price), self.costs))

    def on_bar(self, candle: Candle) -> list[Trade]:
        """A closed bar of `candle.symbol`: fill what it fills, then remember its close."""
        symbol = candle.symbol
        working = self._open.get(symbol)
        trades: list[Trade] = []
        if working:
            orders = [s.working for s in working.values()]
            trades = self._record(symbol, fill_on_bar(orders, CandleBar(candle), self.costs))
        self._last_close_float[symbol] = candle.close
        bar_ms = self._bar_ms.get(candle.timeframe)
        if bar_ms is None:
            bar_ms = self._bar_ms[candle.timeframe] = timeframe_ms(candle.timeframe)
        self._market_ms = max(self._market_ms, candle.open_time_ms + bar_ms)
        return trades

    def _record(self, symbol: str, fills: list[SimFill]) -> list[Trade]:
        """The fill model's fills as the venue's trades, on the market's lot step."""
        trades: list[Trade] = []
        step = self.markets[symbol].amount_step
        for fill in fills:
            # A share of the bar's volume is rarely a whole number of lots; the venue's fills
            # are, and what is left must be an amount it would take. The fee follows the
            # quantity, by this expression even when nothing was cut: fee * q / q can differ
            # from fee in its last digit, and the venue's fees are this expression's.
            quantity = floor_to_step(fill.quantity, step)
            if quantity <= 0:
                continue
            fee = fill.fee_quote * quantity / fill.quantity
            trades.append(
                self._apply(fill.client_order_id, fill.price, quantity, fee, fill.liquidity, fill.time_ms)
            )
        return trades

    def _last_close(self, symbol: str) -> Decimal | None:
        close = self._last_close_float.get(symbol)
        return None if close is None else decimal_of(close)

    def _apply(
        self, cid: str, price: Decimal, quantity: Decimal, fee: Decimal, liquidity: str, time_ms: int
    ) -> Trade:
        sim = self._orders[cid]
        order = sim.order
        filled = order.filled + quantity
        notional = price * quantity
        cost = (order.cost or Decimal(0)) + notional
        remaining = order.amount - filled
        done = remaining <= 0
        sim.fills += 1
        # Built directly, not with dataclasses.replace: this runs for every fill, before the
        # decision, and replace's field walk costs more than the rest of the fill.
        sim.order = Order(
            id=order.id,
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            type=order.type,
            status="closed" if done else "open",
            price=order.price,
            amount=order.amount,
            filled=filled,
            remaining=remaining,
            average=cost / filled,
            cost=cost,
            timestamp_ms=order.timestamp_ms,
        )
        if done:
            self._close(sim)
        else:
            sim.working = replace(sim.working, quantity=remaining)
        trade = Trade(
            id=f"{cid}-{sim.fills}",  # client order ids never repeat, so neither do these
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            amount=quantity,
            cost=notional,
            fee=fee,
            fee_asset=self.markets[order.symbol].quote,
            taker_or_maker=liquidity,
            timestamp_ms=time_ms,
        )
        self._trades[order.symbol].append(trade)
        return trade

    def _close(self, sim: _SimOrder) -> None:
        """The order is no longer open: out of its symbol's working orders, into forget_closed's."""
        cid = sim.order.client_order_id
        assert cid is not None  # create_order keys every order by its request's client order id
        del self._open[sim.order.symbol][cid]
        self._finished.append(cid)

    # --- orders ---------------------------------------------------------------------------------
    async def create_order(self, request: OrderRequest) -> OrderAck:
        known = self._orders.get(request.client_order_id)
        if known is not None:
            return OrderAck(known.order, via="lookup")
        rules = self.markets[request.symbol]
        prepared = prepare_order(
            request,
            rules,
            lambda _s, amount: str(floor_to_step(Decimal(amount), rules.amount_step)),
            lambda _s, price: str(
                (Decimal(price) / rules.tick_size).to_integral_value(ROUND_HALF_EVEN) * rules.tick_size
            ),
        )
        price = Decimal(prepared.price) if prepared.price is not None else None
        amount = Decimal(prepared.amount)
        close = self._last_close(request.symbol) if request.post_only and price is not None else None
        if close is not None and price is not None:
            bid, ask = synthetic_top_of_book(close, self.costs)
            if post_only_would_cross(request.side, price, bid, ask):
                raise PostOnlyWouldTake(
                    f"{request.client_order_id}: post-only order would immediately match and take"
                )
        # Stamped with the close of the bar it was decided on, not the clock (shadow decides a
        # moment after the close, and replay's clock runs ahead of the bar being traded while
        # ingestion fills its queue): the next bar is the one that fills it.
        now = self._market_ms or self.now_ms()
        order = Order(
            # From the client order id (a database sequence): unique across replays of the same
            # history, which a counter or the replay clock would not be.
            id=f"sim-{request.client_order_id}",
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            status="open",
            price=price,
            amount=amount,
            filled=Decimal(0),
            remaining=amount,
            average=None,
            cost=Decimal(0),
            timestamp_ms=now,
        )
        # The fill model's view is made here, once, not on each bar it works through.
        working = SimOrder(
            order.client_order_id or order.id,
            order.side,
            "market" if order.type == "market" else "limit",
            amount,
            price,
            request.post_only,
            now,
        )
        sim = _SimOrder(order, working)
        self._orders[request.client_order_id] = sim
        self._open.setdefault(request.symbol, {})[request.client_order_id] = sim
        return OrderAck(order, via="response")

    def _find(self, client_order_id: str | None, order_id: str | None) -> _SimOrder:
        if client_order_id is not None:
            sim = self._orders.get(client_order_id)
            if sim is not None:
                return sim
        for sim in self._orders.values():
            if order_id is not None and sim.order.id == order_id:
                return sim
        raise OrderNotFound(f"order {client_order_id or order_id} does not exist")

    async def fetch_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order:
        return self._find(client_order_id, order_id).order

    async def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> CancelResult:
        try:
            sim = self._find(client_order_id, order_id)
        except OrderNotFound:
            return CancelResult("not_found", None)
        if not sim.order.is_open:
            return CancelResult("already_closed", sim.order)
        sim.order = replace(sim.order, status="canceled")
        self._close(sim)
        return CancelResult("canceled", sim.order)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        return [s.order for s in self._open.get(symbol, {}).values()]

    async def fetch_my_trades(self, symbol: str, since_ms: int) -> list[Trade]:
        return [t for t in self._trades.get(symbol, ()) if t.timestamp_ms >= since_ms]

    async def fetch_balances(self) -> dict[str, Balance]:
        """A simulated account holds what the fills say; the position book is its ledger."""
        return {}

    def forget_closed(self) -> None:
        """Drop finished orders and their trades once the executor has them (replay runs for
        months of bars; memory must not grow with them). Only the symbols that lost an order
        have trades to drop."""
        if not self._finished:
            return
        symbols = set()
        for cid in self._finished:
            sim = self._orders.pop(cid, None)
            if sim is not None:
                symbols.add(sim.order.symbol)
        self._finished.clear()
        for symbol in symbols:
            self._trades[symbol] = [t for t in self._trades[symbol] if t.id.rsplit("-", 1)[0] in self._orders]
