"""The simulated venue of replay and shadow mode: the exchange adapter's order methods, answered
in memory, with fills from the fill model as each bar closes.

The executor cannot tell it from the live adapter (same methods, same types, same errors), so
replay, shadow and live run one order path. Orders wait for the next bar: a market order placed
after bar t closed fills at bar t+1's open, as the training environment's rules say; resting
limits fill when a later bar trades through them (huracan/execution/fill_model.py).
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
    FillCosts,
    SimBar,
    SimOrder,
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
    order: Order
    placed_ms: int
    post_only: bool
    fills: int = 0


class SimulatedVenue:
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

    def on_bar(self, candle: Candle) -> list[Trade]:
        """A closed bar of `candle.symbol`: fill what it fills, then remember its close."""
        symbol = candle.symbol
        working = [s for s in self._orders.values() if s.order.symbol == symbol and s.order.is_open]
        trades: list[Trade] = []
        if working:
            bar = SimBar.of(candle)
            sim_orders = [
                SimOrder(
                    s.order.client_order_id or s.order.id,
                    s.order.side,
                    "market" if s.order.type == "market" else "limit",
                    s.order.remaining if s.order.remaining is not None else s.order.amount,
                    s.order.price,
                    s.post_only,
                    s.placed_ms,
                )
                for s in working
            ]
            step = self.markets[symbol].amount_step
            for fill in fill_on_bar(sim_orders, bar, self.costs):
                # A share of the bar's volume is rarely a whole number of lots; the venue's
                # fills are, and what is left must be an amount it would take.
                quantity = floor_to_step(fill.quantity, step)
                if quantity <= 0:
                    continue
                fill = replace(fill, quantity=quantity, fee_quote=fill.fee_quote * quantity / fill.quantity)
                trades.append(
                    self._apply(
                        fill.client_order_id,
                        fill.price,
                        fill.quantity,
                        fill.fee_quote,
                        fill.liquidity,
                        fill.time_ms,
                    )
                )
        self._last_close_float[symbol] = candle.close
        self._market_ms = max(self._market_ms, candle.open_time_ms + timeframe_ms(candle.timeframe))
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
        cost = (order.cost or Decimal(0)) + price * quantity
        remaining = order.amount - filled
        sim.fills += 1
        sim.order = replace(
            order,
            filled=filled,
            remaining=remaining,
            cost=cost,
            average=cost / filled,
            status="closed" if remaining <= 0 else "open",
        )
        trade = Trade(
            id=f"{cid}-{sim.fills}",  # client order ids never repeat, so neither do these
            order_id=order.id,
            symbol=order.symbol,
            side=order.side,
            price=price,
            amount=quantity,
            cost=price * quantity,
            fee=fee,
            fee_asset=self.markets[order.symbol].quote,
            taker_or_maker=liquidity,
            timestamp_ms=time_ms,
        )
        self._trades[order.symbol].append(trade)
        return trade

    # --- orders ---------------------------------------------------------------------------------
    async def create_order(self, request: OrderRequest) -> OrderAck:
        if request.client_order_id in self._orders:
            return OrderAck(self._orders[request.client_order_id].order, via="lookup")
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
        close = self._last_close(request.symbol)
        if request.post_only and price is not None and close is not None:
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
            amount=Decimal(prepared.amount),
            filled=Decimal(0),
            remaining=Decimal(prepared.amount),
            average=None,
            cost=Decimal(0),
            timestamp_ms=now,
        )
        self._orders[request.client_order_id] = _SimOrder(order, now, request.post_only)
        return OrderAck(order, via="response")

    def _find(self, client_order_id: str | None, order_id: str | None) -> _SimOrder:
        if client_order_id is not None and client_order_id in self._orders:
            return self._orders[client_order_id]
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
        return CancelResult("canceled", sim.order)

    async def fetch_open_orders(self, symbol: str) -> list[Order]:
        return [s.order for s in self._orders.values() if s.order.symbol == symbol and s.order.is_open]

    async def fetch_my_trades(self, symbol: str, since_ms: int) -> list[Trade]:
        return [t for t in self._trades.get(symbol, ()) if t.timestamp_ms >= since_ms]

    async def fetch_balances(self) -> dict[str, Balance]:
        """A simulated account holds what the fills say; the position book is its ledger."""
        return {}

    def forget_closed(self) -> None:
        """Drop finished orders and their trades once the executor has them (replay runs for
        months of bars; memory must not grow with them)."""
        done = [cid for cid, s in self._orders.items() if not s.order.is_open]
        for cid in done:
            del self._orders[cid]
        for symbol in self._trades:
            self._trades[symbol] = [t for t in self._trades[symbol] if t.id.rsplit("-", 1)[0] in self._orders]
