"""The journal's write-behind: every write after an order's first waits in line here.

An order's first row is write-ahead (committed before its request leaves: the outbox's batch,
huracan/execution/submitter.py).
Every later write (status changes, fills with their position and trade_memory rows) is a
snapshot of the rows at that moment, queued and written in order by `flush()`. The venue is the
source of what happened: if the process dies with writes in line, start-up reconciliation finds
the orders (still working in the journal) and their fills again by client order id and venue
trade id. So the decision step and the gate never wait for the database between a bar's close
and the next order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import partial
from typing import Any

from huracan.execution.journal import OrderJournal, OrderRow, PositionRow
from huracan.execution.order_state import FillReport, ManagedOrder
from huracan.execution.positions import ClosedTrade, Position
from huracan.logs import get_logger

log = get_logger("huracan.execution.writer")


class JournalWriteFailed(RuntimeError):
    """A queued write failed: the journal is a consistent prefix of what happened, and must stay
    one until a restart reconciles the rest from the venue."""


class JournalWriter:
    def __init__(self, journal: OrderJournal) -> None:
        self.journal = journal
        self._pending: list[Callable[[], Awaitable[object]]] = []
        self._lock = asyncio.Lock()
        self.failed: BaseException | None = None

    def _queue(self, write: Callable[[], Awaitable[object]]) -> None:
        # After a failure nothing more is written: a later row (an order now FILLED) over a lost
        # earlier one (its fill) is a state reconciliation could not repair.
        if self.failed is None:
            self._pending.append(write)

    def later(self, write: Callable[..., Awaitable[object]], *args: Any, **kwargs: Any) -> None:
        """Any other record that must not hold up the order path (the gate's risk_events rows)."""
        self._queue(partial(write, *args, **kwargs))

    def order(self, order: ManagedOrder, now_ms: int) -> None:
        self._queue(partial(self.journal.update_order, OrderRow.of(order), now_ms))

    def fill(
        self,
        order: ManagedOrder,
        report: FillReport,
        *,
        fee: Decimal,
        fee_currency: str,
        position: Position | None,
        closed: ClosedTrade | None,
        closing: Position | None,
        rate: Decimal,
    ) -> None:
        self._queue(
            partial(
                self._record_fill,
                OrderRow.of(order),
                report,
                fee,
                fee_currency,
                None if position is None else PositionRow.of(position),
                closed,
                closing,
                rate,
            )
        )

    async def _record_fill(
        self,
        order: OrderRow,
        report: FillReport,
        fee: Decimal,
        fee_currency: str,
        position: PositionRow | None,
        closed: ClosedTrade | None,
        closing: Position | None,
        rate: Decimal,
    ) -> None:
        recorded = await self.journal.record_fill(
            order,
            report,
            fee=fee,
            fee_currency=fee_currency,
            position=position,
            closed=closed,
            quote_to_account=rate,
            closing=closing,
        )
        if not recorded:
            log.error(
                "fill already in the journal but not in memory",
                order_id=order.db_id,
                trade_id=report.trade_id,
            )

    async def flush(self) -> None:
        """Write what waits in line, in order (one flush at a time). Raises JournalWriteFailed
        once a write has failed, now and on every later call: the task must restart."""
        async with self._lock:
            self.check()
            while self._pending:
                write = self._pending.pop(0)
                try:
                    await write()
                except asyncio.CancelledError as exc:
                    self.failed = exc  # stopped mid-write: whether it landed is unknown
                    self._pending.clear()
                    raise
                except Exception as exc:
                    self.failed = exc
                    self._pending.clear()  # the venue still knows them: a restart finds them again
                    raise JournalWriteFailed(f"a journal write failed: {exc!r}") from exc

    def check(self) -> None:
        """Raise JournalWriteFailed when a write has failed (nothing may be sent after that)."""
        if self.failed is not None:
            raise JournalWriteFailed(f"a journal write failed earlier: {self.failed!r}")
