"""Reconciliation: the journal and the venue brought to agree, before trading and while it runs.

At start-up (the gate refuses every order until this is done):
1. the journal's working orders and open positions are loaded (Executor.restore);
2. every open order of our symbols on the venue that the journal does not hold as working is
   looked up: one of ours (by client order id) is taken back; any other is cancelled or adopted
   as EXTERNAL (`execution.unknown_venue_orders`);
3. every working order is asked for by its client order id until none is left UNKNOWN or
   PENDING_SUBMIT (an order the venue never received is REJECTED once it can no longer appear);
4. the venue's recent trades of our orders that the journal lacks are recorded (an untracked
   fill: the daemon died between the venue's fill and our write);
5. balances are compared with the positions; a difference is logged as an error.
While running: working orders every poll, unknown venue orders with them, balances every minute.
Simulated venues hold nothing across a restart, so only step 1 applies to them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from huracan.exchange.client_ids import parse_client_order_id
from huracan.exchange.errors import ExchangeError
from huracan.exchange.models import Order
from huracan.execution.executor import Executor
from huracan.execution.order_state import ManagedOrder, OrderEvent, OrderStatus, transition
from huracan.logs import get_logger

log = get_logger("huracan.execution.reconcile")

DAY_MS = 86_400_000


async def cancel_all(executor: Executor, symbols: list[str], why: str) -> int:
    """Cancel every open order of `symbols` on the venue, ours or not (halting and stopping);
    returns how many."""
    canceled = 0
    for order in [o for o in executor.orders.values() if o.symbol in symbols and not o.is_terminal]:
        await executor.cancel(order, why)
        canceled += 1
    for symbol in symbols:
        try:
            open_orders = await executor.venue.fetch_open_orders(symbol)
        except ExchangeError as exc:
            log.error("could not list open orders to cancel them", symbol=symbol, error=str(exc))
            continue
        for venue_order in open_orders:
            tracked = executor.orders.get(venue_order.client_order_id or "")
            if tracked is not None:
                await executor.cancel(tracked, why)  # again: the first try may have failed
                continue
            try:
                await executor.venue.cancel_order(symbol, order_id=venue_order.id)
                canceled += 1
            except ExchangeError as exc:
                log.error(
                    "could not cancel a venue order",
                    symbol=symbol,
                    order_id=venue_order.id,
                    error=str(exc),
                )
    return canceled


class NotReconciled(RuntimeError):
    """The venue and the journal could not be brought to agree: trading must not start."""


@dataclass(slots=True)
class ReconcileReport:
    taken_back: int = 0
    adopted: int = 0
    canceled_unknown: int = 0
    untracked_fills: int = 0
    balance_mismatches: int = 0


class Reconciler:
    def __init__(
        self,
        executor: Executor,
        symbols: Sequence[str],
        *,
        live: bool,
        unknown_orders: Literal["adopt", "cancel"],
        prefix: str,
        attempts: int = 20,
        retry_wait_s: float = 0.5,
    ) -> None:
        self.executor = executor
        self.symbols = tuple(symbols)
        self.live = live
        self.unknown_orders = unknown_orders
        self.prefix = prefix
        self.attempts = attempts
        self.retry_wait_s = retry_wait_s
        self.report = ReconcileReport()

    async def reconcile_at_start(self) -> ReconcileReport:
        executor = self.executor
        await executor.restore()
        if not self.live:
            # A simulated venue starts empty: orders of an earlier session are gone with it.
            for order in list(executor.orders.values()):
                # After a restart of the task within the process the simulated venue still holds
                # the order: cancel it there too, so it cannot fill behind the journal's back.
                await executor.venue.cancel_order(order.symbol, client_order_id=order.client_order_id)
                transition(
                    order,
                    OrderEvent.NOT_FOUND if order.status is OrderStatus.UNKNOWN else OrderEvent.CANCELED,
                )
                if not order.is_terminal:
                    order.status = OrderStatus.CANCELED  # NEW/PENDING_SUBMIT rows of a dead session
                order.venue_message = "simulated venue restarted"
                executor.write_order(order)
                executor.settle(order)
            await executor.flush()
            return self.report
        for attempt in range(1, self.attempts + 1):
            try:
                await self._foreign_orders()
                await executor.sync()
                await executor.flush()  # what sync learnt is in the journal before it is searched
                await self._untracked_fills()
            except ExchangeError as exc:
                log.warning("reconciliation attempt failed", attempt=attempt, error=str(exc))
                await asyncio.sleep(self.retry_wait_s)
                continue
            pending = [
                o
                for o in executor.orders.values()
                if o.status in (OrderStatus.UNKNOWN, OrderStatus.PENDING_SUBMIT)
            ]
            await executor.flush()
            if not pending:
                await self.check_balances()
                log.info(
                    "reconciled with the venue", **{k: getattr(self.report, k) for k in self.report.__slots__}
                )
                return self.report
            await asyncio.sleep(self.retry_wait_s)
        raise NotReconciled(
            f"{len(executor.unresolved_symbols())} symbol(s) still have orders in an unknown state"
        )

    async def poll_orders(self) -> None:
        try:
            await self.executor.sync()
            await self._foreign_orders()
        except ExchangeError as exc:
            log.warning("order poll failed", error=str(exc))
        await self.executor.flush()

    async def _foreign_orders(self) -> None:
        executor = self.executor
        for symbol in self.symbols:
            for venue_order in await executor.venue.fetch_open_orders(symbol):
                cid = venue_order.client_order_id
                if cid is not None and cid in executor.orders:
                    continue
                ours = cid is not None and (parse_client_order_id(cid) or ("", 0))[0] == self.prefix
                if ours and cid is not None:
                    await self._take_back(cid, venue_order)
                elif self.unknown_orders == "cancel":
                    await executor.venue.cancel_order(symbol, order_id=venue_order.id)
                    self.report.canceled_unknown += 1
                    log.warning(
                        "venue order we did not place canceled",
                        symbol=symbol,
                        order_id=venue_order.id,
                        client_order_id=cid,
                    )
                else:
                    await self._adopt(venue_order)

    async def _take_back(self, cid: str, venue_order: Order) -> None:
        """An order of ours open on the venue that the journal holds as finished (it was wrong:
        trust the venue) or does not hold at all (a foreign process with our prefix)."""
        executor = self.executor
        found = await executor.journal.order_by_client_id(cid)
        if found is None:
            # Every order of ours is written before it is sent: this one broke the write-ahead,
            # or another process trades under our prefix. Either wants a person to look.
            log.error(
                "venue order with our prefix that the journal never wrote: adopted as EXTERNAL",
                client_order_id=cid,
                symbol=venue_order.symbol,
            )
            await self._adopt(venue_order)
            return
        order, _ = found
        order.status = OrderStatus.ACCEPTED if order.filled_quantity == 0 else OrderStatus.PARTIALLY_FILLED
        order.exchange_order_id = venue_order.id
        executor.orders[cid] = order
        self.report.taken_back += 1
        # The journal only ever lags the venue; one that ran ahead of it is a defect to look at.
        log.error("journal said finished, venue says open: order taken back", client_order_id=cid)

    async def _adopt(self, venue_order: Order) -> None:
        executor = self.executor
        cid = venue_order.client_order_id or f"ext-{venue_order.id}"
        order = ManagedOrder(
            client_order_id=cid,
            symbol=venue_order.symbol,
            side=venue_order.side,
            order_type="market" if venue_order.type == "market" else "limit",
            quantity=venue_order.amount,
            limit_price=venue_order.price,
            reason="external",
            status=OrderStatus.ACCEPTED,
            exchange_order_id=venue_order.id,
        )
        order.created_ms = venue_order.timestamp_ms or executor.now_ms()
        await executor.journal.open_order(order, {"external": True}, executor.now_ms())
        executor.orders[cid] = order
        self.report.adopted += 1
        log.warning(
            "venue order we did not place adopted as EXTERNAL", client_order_id=cid, symbol=venue_order.symbol
        )

    async def _untracked_fills(self) -> None:
        executor = self.executor
        for symbol in self.symbols:
            # From a day before the newest fill we hold, in the venue's own time (our clock and
            # the venue's may differ): anything later we may have missed.
            last = await executor.journal.last_fill_ms(symbol)
            since = 0 if last is None else last - DAY_MS
            trades = await executor.venue.fetch_my_trades(symbol, since)
            if not trades:
                continue
            known = await executor.journal.known_trade_ids([t.id for t in trades])
            for trade in trades:
                if trade.id in known or trade.order_id is None:
                    continue
                order = next(
                    (o for o in executor.orders.values() if o.exchange_order_id == trade.order_id), None
                )
                if order is None:
                    found = await executor.journal.order_by_exchange_id(trade.order_id)
                    if found is None:
                        continue  # a trade of an order that is not ours
                    order = found[0]
                before = order.status  # CANCELED/EXPIRED take late fills (order_state's table)
                closed = await executor.on_trade(order, trade)
                self.report.untracked_fills += 1
                log.warning(
                    "untracked fill recorded",
                    client_order_id=order.client_order_id,
                    trade_id=trade.id,
                    status_before=before.value,
                    closed_trade=closed is not None,
                )
                executor.write_order(order)

    async def check_balances(self) -> None:
        """Base balances against the journal's ledger: what our fills left on the venue, the
        dust of closed positions (less than a lot step each, which the book writes off)
        included. Differences are reported, not traded away: coins the trader holds beside
        Huracan are theirs.

        The journal lags the venue by the fills not yet synced or written. An order stays
        working until its fills are recorded, so a symbol with an order still working is left
        for a later check, and the fills of finished orders are written first."""
        executor = self.executor
        try:
            await executor.flush()
            balances = await executor.venue.fetch_balances()
        except ExchangeError as exc:
            log.warning("balance check failed", error=str(exc))
            return
        working = {o.symbol for o in executor.orders.values()}
        ledger = await executor.journal.net_base_by_symbol(
            {s: executor.markets[s].base for s in self.symbols}
        )
        for symbol in self.symbols:
            if symbol in working:
                continue
            rules = executor.markets[symbol]
            held = balances[rules.base].total if rules.base in balances else Decimal(0)
            expected = ledger.get(symbol, Decimal(0))
            if held != expected:
                self.report.balance_mismatches += 1
                log.error(
                    "balance differs from the journal's fills",
                    symbol=symbol,
                    venue=str(held),
                    journal=str(expected),
                )
