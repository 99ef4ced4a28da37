"""The executor: one order path for replay, shadow and live; only the risk gate may call it.

    gate --ApprovedOrder--> Executor.place (registered at once)
         --> outbox: journal (PENDING_SUBMIT, committed, a batch at a time) --> venue --> answer
    venue --order status, trades--> Executor.sync --> state machine, journal, position book

The venue is the live exchange adapter or the simulated venue; nothing else differs between
the modes. Every order is written to the journal before its request leaves; its outcome is one
of: acknowledged (ACCEPTED, or filled at once), refused (REJECTED, nothing exists), or unknown
(timeout, lost answer: UNKNOWN, which blocks new risk on the symbol until `sync` finds the order
by its client order id or proves it was never placed).

Orders are placed only inside `gate_pass()`, a context the risk gate opens around its calls;
`place` outside it raises UngatedOrder (the runtime half of "no order bypasses risk";
tests/test_gate_only_path.py holds the structural half). The venue's `create_order` is called
only by `_send`, which only the outbox calls, and only for what `place` queued there
(huracan/execution/submitter.py: why the gate does not wait for the round trips).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from decimal import Decimal
from typing import Any, Literal

from huracan.exchange.errors import ExchangeError, OrderNotFound, OrderRejected, OutcomeUnknown, Retryable
from huracan.exchange.models import CancelResult, MarketRules, Order, OrderRequest, Trade
from huracan.execution.approval import ApprovedOrder, UngatedOrder, gate_is_open
from huracan.execution.journal import OrderJournal
from huracan.execution.order_state import (
    FillOutcome,
    FillReport,
    ManagedOrder,
    OrderEvent,
    OrderStatus,
    apply_fill,
    event_for_venue_status,
    transition,
)
from huracan.execution.positions import (
    ClosedTrade,
    EntryContext,
    FillEffect,
    Position,
    PositionBook,
    entry_context_json,
)
from huracan.execution.restore import restore_from_journal
from huracan.execution.stats import ExecutionStats
from huracan.execution.submitter import ClientOrderIds, Outbox, Submission
from huracan.execution.venue import Venue
from huracan.execution.writer import JournalWriter
from huracan.logs import get_logger
from huracan.risk.rates import TickerSource, venue_rate
from huracan.risk.state_store import intent_json

log = get_logger("huracan.execution")
LIQUIDITY: dict[str, Literal["maker", "taker"]] = {"maker": "maker", "taker": "taker"}  # as a venue says it


class Executor:
    def __init__(
        self,
        venue: Venue,
        journal: OrderJournal,
        book: PositionBook,
        *,
        markets: dict[str, MarketRules],
        quote_to_account: Decimal,
        now_ms: Callable[[], int],
        order_timeout_s: float,
        taker_cost_bps: Decimal,
        maker_fee_bps: Decimal,
        settle_s: float = 6.0,
        step_ms: int = 300_000,
        fee_rates: TickerSource | None = None,
    ) -> None:
        self.venue = venue
        self.journal = journal
        self.book = book
        self.markets = markets
        self.quote_to_account = quote_to_account
        self.now_ms = now_ms
        self.order_timeout_s = order_timeout_s
        self.taker_cost_bps = taker_cost_bps  # taker fee + half spread + slippage, for "saved"
        self.maker_fee_bps = maker_fee_bps
        self.settle_ms = int(settle_s * 1000)
        self.step_ms = step_ms  # bar length: a restored position's hold time in bars
        self.fee_rates = fee_rates  # prices fees charged in a third currency
        self.orders: dict[str, ManagedOrder] = {}  # working orders by client order id
        self.approved: dict[str, ApprovedOrder] = {}  # what each working order was approved as
        self.recent_submits: deque[int] = deque(maxlen=1000)
        self.stats = ExecutionStats()
        # Told of each closed trade at once, before its row is written (the pattern memory).
        self.on_closed: Callable[[ClosedTrade], None] | None = None
        # Approvals of orders that just ended, for the maker logic's replacement (popped by it).
        self.finished: dict[str, ApprovedOrder] = {}
        self.writer = JournalWriter(journal)
        self.ids = ClientOrderIds(lambda count: self.journal.next_client_order_ids(count))
        self.outbox = self._new_outbox()

    def _new_outbox(self) -> Outbox:
        return Outbox(self._write_ahead, self._send, self._refuse_unsent)

    # --- what the risk gate reads ---------------------------------------------------------------
    def symbols_with(self, *, side: str) -> frozenset[str]:
        return frozenset(o.symbol for o in self.orders.values() if o.side == side)

    def submits_since(self, since_ms: int) -> tuple[int, ...]:
        """Submission times after `since_ms` (the rate limit's window), oldest first; older ones
        are dropped, so the gate's every look costs the window, not the deque's length."""
        recent = self.recent_submits
        while recent and recent[0] <= since_ms:
            recent.popleft()
        return tuple(recent)

    def unresolved_symbols(self) -> frozenset[str]:
        return frozenset(o.symbol for o in self.orders.values() if o.status is OrderStatus.UNKNOWN)

    # --- placing --------------------------------------------------------------------------------
    async def place(self, approved: ApprovedOrder) -> ManagedOrder:
        """Register the approved order (PENDING_SUBMIT, among the working orders at once) and
        queue it for the write-ahead and the venue (huracan/execution/submitter.py); returns it
        before its answer, which `flush` (or `outbox.settled`) waits for."""
        if not gate_is_open():
            raise UngatedOrder(
                f"{approved.intent.symbol} {approved.intent.side}: orders go through the risk gate"
            )
        client_order_id = await self.ids.next()
        # Checked after the id's await, with nothing awaited before the order is registered and
        # queued: a failure meanwhile must not leave a registered order that is never sent.
        self.writer.check()  # no new order while the journal is behind the venue
        self.outbox.check()
        intent = approved.intent
        now = self.now_ms()
        order = ManagedOrder(
            client_order_id=client_order_id,
            symbol=intent.symbol,
            side=intent.side,
            order_type=approved.order_type,
            quantity=approved.quantity,
            limit_price=approved.limit_price,
            post_only=approved.post_only,
            reason=approved.reason,
        )
        order.created_ms = now
        transition(order, OrderEvent.SUBMIT)
        self.orders[order.client_order_id] = order
        self.approved[order.client_order_id] = approved
        self.recent_submits.append(now)
        if intent.side == "sell":
            position = self.book.positions.get(intent.symbol)
            if position is not None:
                position.exit_reason = approved.reason.removeprefix("exit:")
                position.exit_order_id = None  # its row's id, once written ahead
                position.exit_reference_price = intent.reference_price
        request = OrderRequest(
            intent.symbol,
            intent.side,
            approved.order_type,
            approved.quantity,
            order.client_order_id,
            price=approved.limit_price,
            post_only=approved.post_only,
            reference_price=intent.reference_price,
        )
        self.outbox.enqueue(Submission(order, approved, request, now))
        return order

    async def _write_ahead(self, batch: Sequence[Submission]) -> None:
        # The rows' intent column is built here, behind the gate, not in place().
        await self.journal.open_orders([(s.order, _intent_payload(s.approved), s.at_ms) for s in batch])
        for s in batch:
            position = self.book.positions.get(s.order.symbol)
            if s.order.side == "sell" and position is not None and s.order.client_order_id in self.orders:
                position.exit_order_id = s.order.db_id

    def _refuse_unsent(self, submission: Submission, error: BaseException) -> None:
        order = submission.order
        if order.is_terminal:
            return
        transition(order, OrderEvent.REJECTED)
        order.venue_message = f"not sent: {type(error).__name__}: {error}"[:500]
        if order.db_id is not None:  # written ahead: the journal must not keep it working
            self.write_order(order)
        self.settle(order)

    async def _send(self, submission: Submission) -> None:
        """The request, after its write-ahead; then the venue's answer into the order."""
        order = submission.order
        order.created_ms = self.now_ms()  # the settle window and the maker's clock run from here
        try:
            ack = await asyncio.wait_for(
                self.venue.create_order(submission.request), timeout=self.order_timeout_s
            )
        except (OutcomeUnknown, TimeoutError) as exc:
            if self.orders.get(order.client_order_id) is not order:
                return  # abandoned by a restart meanwhile: reconciliation finds it by client order id
            transition(order, OrderEvent.TIMEOUT)
            order.venue_message = f"outcome unknown: {exc}"[:500]
            self.stats.unknown += 1
            log.warning(
                "order outcome unknown; symbol blocked until resolved",
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                error=str(exc),
            )
        except ExchangeError as exc:
            # Any other error means the order does not exist (adapter contract).
            transition(order, OrderEvent.REJECTED)
            order.venue_message = f"{type(exc).__name__}: {exc}"[:500]
            self.stats.rejected += 1
            log.info(
                "order refused",
                client_order_id=order.client_order_id,
                symbol=order.symbol,
                reason=order.venue_message,
            )
        else:
            if self.orders.get(order.client_order_id) is not order:
                return  # as above: the restarted task's book is not this answer's to change
            self.stats.placed += 1
            order.exchange_order_id = ack.order.id
            if ack.order.amount < order.quantity:
                order.quantity = ack.order.amount  # the venue's rounding of the amount stands
            try:
                await self._apply_venue_order(order, ack.order)
            except ExchangeError as exc:
                # The order exists; its fills are fetched by the next sync.
                log.warning(
                    "fills of a placed order not fetched yet",
                    client_order_id=order.client_order_id,
                    error=str(exc),
                )
        self.write_order(order)
        self.settle(order)

    async def cancel(self, order: ManagedOrder, why: str) -> None:
        """Cancel a working order (never refused: a cancel only lowers risk). An UNKNOWN order is
        cancelled by its client order id too: whether it exists is unknown, so is harmless to ask.
        An order still on its way is cancelled once answered: a cancel must not overtake it."""
        await self.outbox.settled(order.client_order_id)
        if order.is_terminal:
            return
        if order.status is not OrderStatus.UNKNOWN:
            transition(order, OrderEvent.CANCEL_REQUESTED)
            self.write_order(order)
        try:
            result = await self.venue.cancel_order(order.symbol, client_order_id=order.client_order_id)
        except OrderNotFound:
            result = CancelResult("not_found", None)
        except ExchangeError as exc:
            transition(
                order,
                OrderEvent.TIMEOUT if not isinstance(exc, OrderRejected) else OrderEvent.CANCEL_REJECTED,
            )
            log.warning("cancel failed", client_order_id=order.client_order_id, error=str(exc))
            self.write_order(order)
            return
        if result.order is not None:
            await self._apply_venue_order(order, result.order)
        elif result.outcome == "not_found" and order.status is not OrderStatus.UNKNOWN:
            # Nothing of it is on the venue (an UNKNOWN order may still appear until it settles).
            transition(order, OrderEvent.CANCELED)
        order.venue_message = order.venue_message or why
        self.write_order(order)
        self.settle(order)

    # --- following the venue --------------------------------------------------------------------
    async def sync(self) -> list[ClosedTrade]:
        """Bring every working order up to date with the venue: status, fills, UNKNOWN resolved.
        A remote venue's round trips overlap across symbols; within a symbol the orders are
        asked in the order they were placed (an entry's fills before its exit's)."""
        # An order on its way is left alone: its answer brings its news.
        orders = [o for o in self.orders.values() if not self.outbox.in_flight(o.client_order_id)]
        if self.venue.local:
            return await self._sync_symbol(orders)
        by_symbol: dict[str, list[ManagedOrder]] = {}
        for order in orders:
            by_symbol.setdefault(order.symbol, []).append(order)
        found = await asyncio.gather(*map(self._sync_symbol, by_symbol.values()), return_exceptions=True)
        for outcome in found:  # raised once all are done: none goes on behind the caller's back
            if isinstance(outcome, BaseException):
                raise outcome
        return [trade for closed in found if isinstance(closed, list) for trade in closed]

    async def _sync_symbol(self, orders: list[ManagedOrder]) -> list[ClosedTrade]:
        closed: list[ClosedTrade] = []
        for order in orders:
            try:
                closed.extend(await self._sync_order(order))
            except Retryable as exc:
                log.warning("order sync postponed", client_order_id=order.client_order_id, error=str(exc))
        return closed

    async def _sync_order(self, order: ManagedOrder) -> list[ClosedTrade]:
        before = (order.status, order.filled_quantity)
        try:
            venue_order = await self.venue.fetch_order(order.symbol, client_order_id=order.client_order_id)
        except OrderNotFound:
            if (
                order.status in (OrderStatus.UNKNOWN, OrderStatus.PENDING_SUBMIT)
                and self.now_ms() - order.created_ms >= self.settle_ms
            ):
                transition(
                    order,
                    OrderEvent.NOT_FOUND if order.status is OrderStatus.UNKNOWN else OrderEvent.REJECTED,
                )
                order.venue_message = "never reached the venue (not found by client order id)"
                self.write_order(order)
                self.settle(order)
            return []
        order.exchange_order_id = order.exchange_order_id or venue_order.id
        closed = await self._apply_venue_order(order, venue_order)
        if (order.status, order.filled_quantity) != before:
            self.write_order(order)
        self.settle(order)
        return closed

    async def _apply_venue_order(self, order: ManagedOrder, venue_order: Order) -> list[ClosedTrade]:
        closed: list[ClosedTrade] = []
        if venue_order.filled > order.filled_quantity:
            since = (venue_order.timestamp_ms or order.created_ms) - 1000
            trades = await self.venue.fetch_my_trades(order.symbol, since)
            for trade in trades:
                if trade.order_id == venue_order.id and trade.id not in order.trade_ids:
                    result = await self.on_trade(order, trade)
                    if result is not None:
                        closed.append(result)
        if venue_order.filled > order.filled_quantity and not venue_order.is_open:
            # Finished on the venue with fills we have not seen yet: keep it working until they
            # arrive (the next sync asks again), or they would be lost with the order.
            log.warning(
                "finished order's fills not all fetched yet",
                client_order_id=order.client_order_id,
                venue_filled=str(venue_order.filled),
                recorded=str(order.filled_quantity),
            )
            return closed
        event = event_for_venue_status(order, venue_order.status, venue_order.filled)
        if order.status is OrderStatus.UNKNOWN and event is None and venue_order.is_open:
            event = OrderEvent.ACCEPTED
        if event is not None:
            transition(order, event)
        return closed

    async def on_trade(self, order: ManagedOrder, trade: Trade) -> ClosedTrade | None:
        rules = self.markets[order.symbol]
        fee = trade.fee or Decimal(0)
        fee_currency = trade.fee_asset or rules.quote
        fee_base = fee if fee_currency == rules.base else Decimal(0)
        fee_quote = fee if fee_currency == rules.quote else fee_base * trade.price
        if fee and fee_currency not in (rules.base, rules.quote):
            fee_quote = await self.fee_in_quote(fee, fee_currency, rules.quote)
        report = FillReport(
            trade.id,
            trade.price,
            trade.amount,
            fee_quote,
            LIQUIDITY.get(trade.taker_or_maker or ""),
            trade.timestamp_ms,
        )
        outcome = apply_fill(order, report)
        if outcome is FillOutcome.DUPLICATE:
            self.stats.duplicate_fills += 1
            return None
        if outcome is not FillOutcome.NEW:
            log.error(
                "fill refused by the order's state",
                client_order_id=order.client_order_id,
                trade_id=trade.id,
                outcome=outcome.value,
            )
            return None
        closed: ClosedTrade | None = None
        closing: Position | None = None
        if order.side == "buy":
            approved = self.approved.get(order.client_order_id)
            entry = (
                approved.entry
                if approved is not None and approved.entry is not None
                else EntryContext.unknown(trade.price, order.db_id)
            )
            # The position's entry order is the one whose fill opens it, always: a maker entry
            # re-priced or taken as a fallback carries the approval (and the entry context) of
            # the order it replaced, and a restart finds a position's fills from this order's.
            entry = replace(entry, entry_order_id=order.db_id)
            effect = self.book.apply_buy(
                order.symbol,
                price=trade.price,
                quantity=trade.amount,
                fee_quote=fee_quote,
                fee_base=fee_base,
                time_ms=trade.timestamp_ms,
                entry=entry,
                amount_step=rules.amount_step,
            )
        elif order.symbol not in self.book.positions:
            # A sell of coins the book does not hold (an adopted EXTERNAL order): recorded, no
            # position of ours changes.
            log.warning(
                "sell fill without a position of ours",
                client_order_id=order.client_order_id,
                trade_id=trade.id,
            )
            effect = FillEffect(None)
        else:
            closing = self.book.positions[order.symbol]
            effect = self.book.apply_sell(
                order.symbol,
                price=trade.price,
                quantity=trade.amount,
                fee_quote=fee_quote,
                time_ms=trade.timestamp_ms,
            )
            closed = effect.closed
        self.writer.fill(
            order,
            report,
            fee=fee,
            fee_currency=fee_currency,
            position=effect.position,
            closed=closed,
            closing=closing,
            rate=self.quote_to_account,
        )
        saved_bps = self.taker_cost_bps - self.maker_fee_bps
        self.stats.count_fill(trade.price * trade.amount, fee_quote, report.liquidity == "maker", saved_bps)
        if closed is not None:
            self.stats.count_closed(closed, self.quote_to_account)
            if self.on_closed is not None:
                try:
                    self.on_closed(closed)
                except Exception:  # the pattern memory's problem must not fail a fill
                    log.exception("closed-trade hook failed", symbol=closed.symbol)
        return closed

    def write_order(self, order: ManagedOrder) -> None:
        self.writer.order(order, self.now_ms())

    async def flush(self) -> None:
        """Every order on its way answered, then every journal write done, even when submission
        failed (the fills waiting in line are facts). Raises submission's failure, or the
        writer's when that fails too."""
        try:
            await self.outbox.drained()
        except Exception:
            await self.writer.flush()
            raise
        await self.writer.flush()

    async def fee_in_quote(self, fee: Decimal, asset: str, quote: str) -> Decimal:
        """A fee charged in a third currency (BNB) in quote, at the venue's price of it."""
        if self.fee_rates is not None:
            rate = await venue_rate(self.fee_rates, quote=asset, account=quote)
            if rate is not None:
                return fee * rate
        log.error("a fee in a currency we cannot price is counted as 0", fee=str(fee), asset=asset)
        return Decimal(0)

    def reset(self) -> None:
        """Forget everything held in memory: before restore() on a restart of the task, so the
        journal's fills are not folded onto a book that still holds them."""
        self.writer = JournalWriter(self.journal)  # what the crashed run had not written: the venue knows it
        self.outbox.abandon()  # and what it had not sent or heard back of: reconciliation finds it
        self.outbox = self._new_outbox()
        self.book.clear()
        self.orders.clear()
        self.approved.clear()
        self.finished.clear()
        self.stats.closed_account.clear()
        self.stats.realised_account = Decimal(0)

    async def restore(self) -> None:
        """Working orders and open positions as the journal has them (after a restart)."""
        await restore_from_journal(self)

    def settle(self, order: ManagedOrder) -> None:
        """Forget a finished order (its approval goes to `finished` for the maker logic) and free
        its position for a new exit when an exit ended without closing it."""
        if order.is_terminal:
            self.orders.pop(order.client_order_id, None)
            approved = self.approved.pop(order.client_order_id, None)
            position = self.book.positions.get(order.symbol)
            if order.side == "sell" and position is not None and position.exit_order_id == order.db_id:
                position.exit_reason = None  # the exit ended without closing it: rules may exit again
            if approved is not None and order.post_only:  # the maker logic may replace it
                self.finished[order.client_order_id] = approved


def _intent_payload(approved: ApprovedOrder) -> dict[str, Any]:
    """The write-ahead row's intent column: the intent as approved, and its entry context."""
    payload: dict[str, Any] = {**intent_json(approved.intent), "decided_ms": approved.decided_ms}
    payload["reprices"] = approved.reprices
    if approved.entry is not None:
        payload["entry"] = entry_context_json(approved.entry)
    return payload
