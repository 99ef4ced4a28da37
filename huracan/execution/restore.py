"""Start-up: the executor's working orders and position book, as the journal has them.

The book is the fold of the journal's fills since each open position's entry: the same code
that applied them the first time applies them again, so a restart cannot disagree with the run
that wrote them. Hold times count the bars since the entry; the latest marks survive a restart
of the task within the process.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from huracan.core.intents import AgentAction, OrderIntent
from huracan.execution.approval import ApprovedOrder
from huracan.execution.order_state import ManagedOrder
from huracan.execution.positions import EntryContext, entry_context_of
from huracan.logs import get_logger

log = get_logger("huracan.execution.restore")

if TYPE_CHECKING:
    from huracan.execution.executor import Executor


async def restore_from_journal(executor: Executor) -> None:
    for order, payload in await executor.journal.working_orders():
        executor.orders[order.client_order_id] = order
        entry = payload.get("entry")
        if entry is not None:
            executor.approved[order.client_order_id] = _restored_approval(
                order, payload, entry_context_of(entry, order.db_id)
            )
    rows = await executor.journal.open_positions()
    for row in rows:
        symbol = row["symbol"]
        if row["fill_id"] is None:
            # Written by a build that named the wrong entry order (a re-priced maker entry's
            # first one): its coins are on the venue, but not in the book.
            log.error(
                "open position without its entry order's fills: not restored",
                position_id=row["position_id"],
                symbol=symbol,
                entry_order_id=row["entry_order_id"],
            )
            continue
        rules = executor.markets.get(symbol)
        if rules is None:
            continue
        fee_currency = row["fee_currency"]
        fee = row["fee"]
        fee_base = fee if fee_currency == rules.base else Decimal(0)
        # The fee as it was counted at the fill (a third currency priced then), when recorded.
        fee_quote = row["fee_quote"]
        if fee_quote is None:
            fee_quote = fee if fee_currency == rules.quote else fee_base * row["price"]
        if row["side"] == "buy":
            entry_payload = json.loads(row["entry_intent"]).get("entry", {})
            effect = executor.book.apply_buy(
                symbol,
                price=row["price"],
                quantity=row["quantity"],
                fee_quote=fee_quote,
                fee_base=fee_base,
                time_ms=int(row["filled_at"].timestamp() * 1000),
                entry=entry_context_of(entry_payload, row["entry_order_id"]),
                amount_step=rules.amount_step,
            )
            if effect.position is not None:
                effect.position.db_id = row["position_id"]
                effect.position.opened_ms = int(row["opened_at"].timestamp() * 1000)
        elif symbol in executor.book.positions:
            executor.book.apply_sell(
                symbol, price=row["price"], quantity=row["quantity"], fee_quote=fee_quote, time_ms=0
            )
    now = executor.now_ms()
    for symbol, held in executor.book.positions.items():
        held.hold_bars = max(0, (now - held.opened_ms) // executor.step_ms)
        held.last_price = executor.book.last_prices.get(
            symbol, held.last_price
        )  # marks survive a task restart
    executor.book.touch()
    for order in executor.orders.values():
        exiting = executor.book.positions.get(order.symbol)
        if order.side == "sell" and exiting is not None:
            exiting.exit_reason = order.reason.removeprefix("exit:")
            exiting.exit_order_id = order.db_id


def _restored_approval(order: ManagedOrder, payload: dict[str, Any], entry: EntryContext) -> ApprovedOrder:
    intent = OrderIntent(
        symbol=order.symbol,
        action=AgentAction[payload.get("action", "ENTER_LONG_NORMAL")],
        side=order.side,
        size_multiplier=float(payload.get("size_multiplier") or 1.0),
        bar_open_time_ms=int(payload.get("bar_open_time_ms") or 0),
        reference_price=Decimal(str(payload.get("reference_price") or entry.reference_price)),
        model_version=entry.model_version,
        confidence=entry.confidence,
        reason=str(payload.get("reason") or "agent"),
    )
    return ApprovedOrder(
        intent,
        order.quantity,
        order.order_type,
        order.reason,
        order.limit_price,
        order.post_only,
        entry,
        int(payload.get("decided_ms") or 0),
        int(payload.get("reprices") or 0),
    )
