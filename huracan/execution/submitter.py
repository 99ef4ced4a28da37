"""Orders on their way out: the write-ahead and the venue's answer, behind the gate, not in it.

The risk gate assesses one intent at a time, and the executor registers each approved order at
once (client order id, place among the working orders, the position it exits), so the next
intent is assessed against it. What needs a round trip happens here, in a task of its own, in
the order the gate approved:

1. write-ahead: every order queued since the last batch in one INSERT, committed (all or none)
   before any of them is sent;
2. the requests, as soon as their batch is committed: concurrently across symbols, in approval
   order within a symbol (each waits for the answer to the one before it);
3. each answer through the executor (ACCEPTED, REJECTED or UNKNOWN; immediate fills).

So a bar's orders cost one commit instead of one each, and on a live venue they are in flight
together instead of one network round trip after another. A batch the database refuses is
written again row by row, so one bad row refuses only its own order, not a stop-loss beside it. A cancel of an order still on its
way waits for its answer (`settled`), sync leaves such orders alone, and `drained` (the
executor's flush) waits for all of them. If the write-ahead fails for every row, nothing
of the batch has been sent: its orders (exits too) are refused in memory, and every later
placement raises until the trading task restarts from the journal; a kill at any point leaves at most orders that a restart's
reconciliation resolves by client order id, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from huracan.exchange.models import OrderRequest
from huracan.execution.approval import ApprovedOrder
from huracan.execution.order_state import ManagedOrder
from huracan.logs import get_logger

log = get_logger("huracan.execution.submitter")

ID_BLOCK = 64  # client order ids fetched per round trip


class OrderSubmissionFailed(RuntimeError):
    """A batch's write-ahead (or the sending task itself) failed: no order may be sent until the
    trading task restarts and reconciles from the journal and the venue."""


@dataclass(frozen=True, slots=True)
class Submission:
    order: ManagedOrder  # registered with the executor, PENDING_SUBMIT, not yet written
    approved: ApprovedOrder  # what the write-ahead row records as its intent
    request: OrderRequest
    at_ms: int


class ClientOrderIds:
    """Client order ids from the persistent sequence, a block at a time: the next id is at hand
    without a round trip, and the next block is fetched in the background at half use."""

    def __init__(self, fetch: Callable[[int], Awaitable[list[str]]], block: int = ID_BLOCK) -> None:
        self.fetch = fetch
        self.block = block
        self._ids: deque[str] = deque()
        self._refill: asyncio.Task[None] | None = None

    async def next(self) -> str:
        if not self._ids:
            if self._refill is not None and not self._refill.done():
                # One fetch at a time keeps the sequence's order; a failed one is fetched again here.
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._refill)
            if not self._ids:
                self._ids.extend(await self.fetch(self.block))
        if len(self._ids) <= self.block // 2 and (self._refill is None or self._refill.done()):
            self._refill = asyncio.create_task(self._fetch_block(), context=contextvars.Context())
            # A failed background fetch is retried by the next call; its error is not lost there.
            self._refill.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._ids.popleft()

    async def _fetch_block(self) -> None:
        self._ids.extend(await self.fetch(self.block))


class Outbox:
    """The queue between registration and the venue; see the module docstring."""

    def __init__(
        self,
        write_ahead: Callable[[Sequence[Submission]], Awaitable[None]],
        send: Callable[[Submission], Awaitable[None]],
        refuse: Callable[[Submission, BaseException], None],
    ) -> None:
        """write_ahead(batch) commits the rows; send(s) sends one and applies the answer (it
        handles the venue's errors itself); refuse(s, error) ends an order that was not sent."""
        self.write_ahead = write_ahead
        self.send = send
        self.refuse = refuse
        self._queue: list[Submission] = []
        self._answered: dict[str, asyncio.Future[None]] = {}  # client order id -> its answer
        self._task: asyncio.Task[None] | None = None
        self._sends: set[asyncio.Task[None]] = set()
        self._last_send: dict[str, asyncio.Task[None]] = {}  # per symbol: the request to wait for
        self.failed: BaseException | None = None
        self.batches = 0

    def check(self) -> None:
        if self.failed is not None:
            raise OrderSubmissionFailed(f"order submission failed earlier: {self.failed!r}")

    def enqueue(self, submission: Submission) -> None:
        self.check()
        self._queue.append(submission)
        self._answered[submission.order.client_order_id] = asyncio.get_running_loop().create_future()
        if self._task is None or self._task.done():
            # A fresh context: the task outlives the gate's pass it was queued in.
            self._task = asyncio.create_task(
                self._drain(), name="order-submission", context=contextvars.Context()
            )

    def in_flight(self, client_order_id: str) -> bool:
        return client_order_id in self._answered

    async def settled(self, client_order_id: str) -> None:
        """Returns once the order's request has been answered (or refused unsent)."""
        answered = self._answered.get(client_order_id)
        if answered is not None:
            await asyncio.shield(answered)

    async def drained(self) -> None:
        """Returns once every submitted order is answered; raises if submission failed."""
        while pending := [t for t in (self._task, *self._sends) if t is not None and not t.done()]:
            await asyncio.wait(pending)  # never cancels them, even when the caller is cancelled
        self.check()

    def abandon(self) -> None:
        """Stop sending (a restart of the trading task: the journal and the venue are the truth
        now, and the reconciliation resolves what was on its way by client order id)."""
        for task in (self._task, *self._sends):
            if task is not None:
                task.cancel()
        for answered in self._answered.values():
            answered.cancel()
        self._answered.clear()
        self._queue.clear()

    async def _drain(self) -> None:
        """Batches written ahead one commit at a time, in order; each batch's requests leave as
        soon as it is committed, without waiting for an earlier batch's answers (a slow venue
        must not hold back the orders approved meanwhile)."""
        while self._queue:
            batch, self._queue = self._queue, []
            self.batches += 1
            try:
                await self.write_ahead(batch)
                written: list[Submission] | None = batch
            except asyncio.CancelledError as exc:
                self._fail(exc, [*batch, *self._queue])
                self._queue = []
                raise
            except Exception as exc:
                written = await self._one_by_one(batch, exc)
            if written is None:
                return
            for submission in written:
                symbol = submission.order.symbol
                send = asyncio.create_task(self._send_after(self._last_send.get(symbol), submission))
                self._last_send[symbol] = send
                self._sends.add(send)
                send.add_done_callback(self._sent)

    async def _one_by_one(self, batch: list[Submission], error: Exception) -> list[Submission] | None:
        """A refused batch written again row by row: one row the database will not take (a bad
        payload) must not keep a stop-loss in the same batch from leaving. Only the rows it
        refuses are refused; if it refuses every one (the database is gone), submission fails:
        None, and every queued order is refused unsent."""
        written: list[Submission] = []
        refused: list[Submission] = []
        for submission in batch if len(batch) > 1 else []:
            try:
                await self.write_ahead([submission])
            except asyncio.CancelledError as exc:
                self._fail(exc, [s for s in batch if s not in written and s not in refused] + self._queue)
                self._queue = []
                raise
            except Exception as exc:
                log.error("write-ahead refused an order; not sent", client_order_id=submission.order.client_order_id,
                          error=repr(exc))  # fmt: skip
                refused.append(submission)
                self.refuse(submission, exc)
                self._answer(submission)
            else:
                written.append(submission)
        if written:
            return written
        self._fail(error, [s for s in batch if s not in refused] + self._queue)
        self._queue = []
        log.error("write-ahead failed; nothing of the batch was sent", orders=len(batch), error=repr(error))
        return None

    async def _send_after(self, previous: asyncio.Task[None] | None, submission: Submission) -> None:
        """Within a symbol, a request leaves only once the one before it was answered."""
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        if self.failed is not None:
            self._fail(self.failed, [submission])
            return
        try:
            await self.send(submission)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # Whatever became of this order, sync finds it by client order id; nothing more is sent.
            self.failed = exc
            log.error(
                "order submission failed", client_order_id=submission.order.client_order_id, error=repr(exc)
            )
        finally:
            self._answer(submission)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        for symbol, last in list(self._last_send.items()):
            if last is task:
                del self._last_send[symbol]

    def _fail(self, error: BaseException, unsent: list[Submission]) -> None:
        self.failed = error
        for submission in unsent:
            self.refuse(submission, error)
            self._answer(submission)

    def _answer(self, submission: Submission) -> None:
        answered = self._answered.pop(submission.order.client_order_id, None)
        if answered is not None and not answered.done():
            answered.set_result(None)
