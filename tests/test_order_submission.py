"""Order submission behind the gate (huracan/execution/submitter.py): the gate registers and moves
on, the outbox writes a batch ahead and then sends, cancels wait for orders on their way, and a
failed write-ahead sends nothing.

The first half drives `Outbox` and `ClientOrderIds` with plain callables standing in for the
journal and the venue (what they record is what is asserted). The second half is the daemon's own
trading task on the replay harness (tests/replay_stack.py) with a real PostgreSQL, over a
simulated venue whose `create_order` can be held back, as a slow exchange would hold it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from replay_stack import BTC, ETH, Replay, config_of, contiguous, intent, rows

from huracan.core.intents import AgentAction
from huracan.exchange.models import CancelResult, Order, OrderAck, OrderRequest
from huracan.execution.approval import ApprovedOrder
from huracan.execution.order_state import ManagedOrder, OrderStatus
from huracan.execution.sim_venue import SimulatedVenue
from huracan.execution.submitter import ClientOrderIds, OrderSubmissionFailed, Outbox, Submission

# --- the outbox and the ids, with stand-ins ---------------------------------------------------------


def submission(cid: str, symbol: str) -> Submission:
    order = ManagedOrder(cid, symbol, "buy", "market", Decimal(1), None, False, "entry")
    approved = ApprovedOrder(intent(AgentAction.ENTER_LONG_SMALL, BTC, 9_000), Decimal(1), "market", "entry")
    request = OrderRequest(symbol, "buy", "market", Decimal(1), cid)
    return Submission(order, approved, request, 0)


class Recorder:
    """Journal and venue stand-ins: what was written ahead, what was sent, how many at once."""

    def __init__(self, *, send_s: float = 0.0, fail_write: bool = False, poison: str = "") -> None:
        self.events: list[tuple[str, str]] = []
        self.batches: list[list[str]] = []
        self.refused: list[str] = []
        self.in_flight = self.max_in_flight = 0
        self.send_s = send_s
        self.fail_write = fail_write
        self.poison = poison  # an order whose row the database refuses

    async def write_ahead(self, batch: Sequence[Submission]) -> None:
        await asyncio.sleep(0.01)  # a commit's round trip, during which more orders queue up
        if self.fail_write:
            raise ConnectionResetError("the database went away")
        if any(s.order.client_order_id == self.poison for s in batch):
            raise ValueError("invalid input syntax for type json")  # the whole statement fails
        self.batches.append([s.order.client_order_id for s in batch])
        self.events += [("written", s.order.client_order_id) for s in batch]

    async def send(self, s: Submission) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.events.append(("sent", s.order.client_order_id))
        await asyncio.sleep(self.send_s)
        self.in_flight -= 1

    def refuse(self, s: Submission, error: BaseException) -> None:
        self.refused.append(s.order.client_order_id)

    def outbox(self) -> Outbox:
        return Outbox(self.write_ahead, self.send, self.refuse)


async def test_every_order_is_written_ahead_before_it_is_sent_and_later_ones_batch() -> None:
    journal = Recorder()
    outbox = journal.outbox()
    outbox.enqueue(submission("a", BTC))
    await asyncio.sleep(0)  # the first batch's commit is under way
    for cid, symbol in (("b", ETH), ("c", BTC), ("d", "SOL/USDT")):
        outbox.enqueue(submission(cid, symbol))
    assert all(outbox.in_flight(c) for c in "abcd")
    await outbox.drained()
    # One commit for the order that came alone, one for the three that queued behind it.
    assert journal.batches == [["a"], ["b", "c", "d"]]
    for cid in "abcd":
        assert journal.events.index(("written", cid)) < journal.events.index(("sent", cid))
    assert not any(outbox.in_flight(c) for c in "abcd")
    assert outbox.batches == 2


async def test_sends_overlap_across_symbols_and_keep_their_order_within_one() -> None:
    journal = Recorder(send_s=0.02)
    outbox = journal.outbox()
    for cid, symbol in (("b1", BTC), ("e1", ETH), ("b2", BTC), ("s1", "SOL/USDT")):
        outbox.enqueue(submission(cid, symbol))
    await outbox.drained()
    sent = [cid for what, cid in journal.events if what == "sent"]
    # Three symbols in flight together (a live venue's round trips overlap); BTC's second order
    # leaves only after its first was answered.
    assert journal.max_in_flight == 3
    assert sent.index("b1") < sent.index("b2")
    assert sent[:3] == ["b1", "e1", "s1"]


async def test_a_failed_write_ahead_sends_nothing_and_refuses_every_later_order() -> None:
    journal = Recorder(fail_write=True)
    outbox = journal.outbox()
    outbox.enqueue(submission("a", BTC))
    outbox.enqueue(submission("b", ETH))
    await outbox.settled("a")  # answered: refused unsent, not left hanging
    with pytest.raises(OrderSubmissionFailed, match="the database went away"):
        await outbox.drained()
    assert journal.refused == ["a", "b"]
    assert not [e for e in journal.events if e[0] == "sent"]
    with pytest.raises(OrderSubmissionFailed):
        outbox.enqueue(submission("c", BTC))


async def test_a_row_the_database_refuses_refuses_only_its_own_order() -> None:
    journal = Recorder(poison="entry")
    outbox = journal.outbox()
    outbox.enqueue(submission("stop", BTC))  # a stop-loss exit, in the same batch as the bad row
    outbox.enqueue(submission("entry", ETH))
    await outbox.drained()  # not failed: trading goes on
    assert journal.refused == ["entry"]
    assert journal.events == [("written", "stop"), ("sent", "stop")]
    outbox.enqueue(submission("next", ETH))
    await outbox.drained()
    assert journal.events[-1] == ("sent", "next")


async def test_client_order_ids_come_a_block_at_a_time_in_sequence_order() -> None:
    fetched: list[int] = []
    sequence = iter(range(1, 10_000))

    async def fetch(count: int) -> list[str]:
        fetched.append(count)
        await asyncio.sleep(0.001)
        return [f"id{next(sequence):05d}" for _ in range(count)]

    ids = ClientOrderIds(fetch, block=8)
    drawn = [await ids.next() for _ in range(30)]
    # Increasing without gaps: the background refill at half use appends after what is left.
    assert drawn == [f"id{n:05d}" for n in range(1, 31)]
    assert len(fetched) <= 30 // 8 + 2


# --- the daemon's trading task: the gate does not wait, cancels do --------------------------------


class HeldVenue(SimulatedVenue):
    """The simulated venue, but each create_order waits until `release` is set, and records
    whether its order's write-ahead row was committed when the request arrived."""

    pool: asyncpg.Pool
    release: asyncio.Event
    arrivals: list[tuple[str, str | None]]  # (client order id, status of its row then)
    calls: list[str]

    async def _held(self, request: OrderRequest) -> OrderAck:
        async with self.pool.acquire() as conn:  # another connection: sees only committed rows
            status = await conn.fetchval(
                "SELECT status FROM orders WHERE client_order_id = $1", request.client_order_id
            )
        self.arrivals.append((request.client_order_id, status))
        await self.release.wait()
        self.calls.append(f"create {request.client_order_id}")
        return await super().create_order(request)

    def create_order(self, request: OrderRequest) -> Coroutine[Any, Any, OrderAck]:
        return self._held(request)

    async def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> CancelResult:
        self.calls.append(f"cancel {client_order_id}")
        return await super().cancel_order(symbol, order_id=order_id, client_order_id=client_order_id)


def held(replay: Replay, pool: asyncpg.Pool) -> HeldVenue:
    venue = replay.venue
    venue.__class__ = HeldVenue
    assert isinstance(venue, HeldVenue)
    venue.pool, venue.release, venue.arrivals, venue.calls = pool, asyncio.Event(), [], []
    return venue


@pytest.mark.db
async def test_the_gate_moves_on_while_orders_are_on_their_way(db_pool: asyncpg.Pool) -> None:
    s = 9_000
    assert contiguous((BTC, ETH), s, s + 2)
    replay = Replay.build(config_of(symbols=(BTC, ETH)), db_pool, start=s)
    await replay.start()
    venue = held(replay, db_pool)
    gate, executor = replay.service.gate, replay.service.executor
    entries = [intent(AgentAction.ENTER_LONG_SMALL, BTC, s), intent(AgentAction.ENTER_LONG_SMALL, ETH, s)]
    for entry in entries:
        assessment = await asyncio.wait_for(gate.handle(entry), 1.0)  # the venue holds: no wait here
        assert assessment is not None
        assert assessment.allowed
    working = list(executor.orders.values())
    assert [(o.symbol, o.status) for o in working] == [
        (BTC, OrderStatus.PENDING_SUBMIT),
        (ETH, OrderStatus.PENDING_SUBMIT),
    ]
    # The next intent is assessed against the orders on their way: a second BTC entry is refused.
    again = await gate.handle(intent(AgentAction.ENTER_LONG_NORMAL, BTC, s))
    assert again is not None
    assert (again.allowed, again.reason) == (False, "entry_in_progress")
    await asyncio.sleep(0.2)
    # Both requests reached the venue (the first still unanswered), each after its row was committed.
    assert [status for _, status in venue.arrivals] == ["PENDING_SUBMIT", "PENDING_SUBMIT"]
    venue.release.set()
    await executor.flush()
    assert {o.status for o in executor.orders.values()} == {OrderStatus.ACCEPTED}
    statuses = await rows(db_pool, "SELECT status FROM orders ORDER BY id")
    assert [r["status"] for r in statuses] == ["ACCEPTED", "ACCEPTED"]
    assert (
        await db_pool.fetchval("SELECT count(*) FROM risk_events WHERE reason_code = 'entry_in_progress'")
        == 1
    )


@pytest.mark.db
async def test_an_exit_cancels_an_entry_only_after_the_entry_was_answered(db_pool: asyncpg.Pool) -> None:
    s = 9_000
    replay = Replay.build(config_of(symbols=(BTC,)), db_pool, start=s)
    await replay.start()
    venue = held(replay, db_pool)
    gate, executor = replay.service.gate, replay.service.executor
    await gate.handle(intent(AgentAction.ENTER_LONG_SMALL, BTC, s))
    (entry,) = executor.orders.values()
    cancelling = asyncio.create_task(executor.cancel(entry, "test"))
    await asyncio.sleep(0.2)
    assert not cancelling.done()
    assert venue.calls == []
    venue.release.set()
    await asyncio.wait_for(cancelling, 2.0)
    # Never a cancel before its create: the venue would answer "not found" and the order, once it
    # lands, would be an orphan.
    assert venue.calls == [f"create {entry.client_order_id}", f"cancel {entry.client_order_id}"]
    assert entry.status is OrderStatus.CANCELED
    assert not executor.orders
    await executor.flush()
    assert [r["status"] for r in await rows(db_pool, "SELECT status FROM orders")] == ["CANCELED"]


@pytest.mark.db
async def test_a_failed_write_ahead_leaves_nothing_sent_and_the_next_order_refused(
    db_pool: asyncpg.Pool,
) -> None:
    s = 9_000
    replay = Replay.build(config_of(symbols=(BTC, ETH)), db_pool, start=s)
    await replay.start()
    venue = held(replay, db_pool)
    venue.release.set()
    gate, executor = replay.service.gate, replay.service.executor
    real = executor.journal.open_orders

    async def refuse(*args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("the database went away")

    executor.journal.open_orders = refuse  # type: ignore[method-assign]
    await gate.handle(intent(AgentAction.ENTER_LONG_SMALL, BTC, s))
    with pytest.raises(OrderSubmissionFailed):
        await executor.flush()
    executor.journal.open_orders = real  # type: ignore[method-assign]
    assert venue.arrivals == []
    assert not executor.orders
    with pytest.raises(OrderSubmissionFailed):
        await gate.handle(intent(AgentAction.ENTER_LONG_SMALL, ETH, s))
    assert await db_pool.fetchval("SELECT count(*) FROM orders") == 0


class RemoteVenue(SimulatedVenue):
    """The simulated venue, answering fetch_order after a round trip, as an exchange would."""

    local = False
    in_flight = 0
    most_in_flight = 0

    async def fetch_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order:
        RemoteVenue.in_flight += 1
        RemoteVenue.most_in_flight = max(RemoteVenue.most_in_flight, RemoteVenue.in_flight)
        await asyncio.sleep(0.02)
        RemoteVenue.in_flight -= 1
        return await super().fetch_order(symbol, order_id=order_id, client_order_id=client_order_id)


@pytest.mark.db
async def test_a_remote_venue_is_asked_about_every_symbol_at_once(db_pool: asyncpg.Pool) -> None:
    s = 9_000
    assert contiguous((BTC, ETH), s, s + 2)
    replay = Replay.build(config_of(symbols=(BTC, ETH)), db_pool, start=s)
    await replay.start()
    replay.venue.__class__ = RemoteVenue
    await replay.bar(
        s,
        lambda i: [
            intent(AgentAction.ENTER_LONG_SMALL, BTC, i),
            intent(AgentAction.ENTER_LONG_SMALL, ETH, i),
        ],
    )
    await replay.bar(s + 1)  # both fill at this bar's open; the sync before the decision finds them
    # One round trip for the two symbols, not one after the other; the fills are all taken.
    assert RemoteVenue.most_in_flight == 2
    assert set(replay.book_positions) == {BTC, ETH}
    assert not replay.service.executor.orders


class BrokenForEth(SimulatedVenue):
    """create_order raises an error outside the adapter's taxonomy for ETH (a fault of ours)."""

    async def create_order(self, request: OrderRequest) -> OrderAck:
        if request.symbol == ETH:
            raise RuntimeError("unexpected payload from the exchange")
        return await super().create_order(request)


@pytest.mark.db
async def test_a_failed_submission_still_writes_the_bars_fills_and_denials(db_pool: asyncpg.Pool) -> None:
    s = 9_000
    assert contiguous((BTC, ETH), s, s + 2)
    replay = Replay.build(config_of(symbols=(BTC, ETH)), db_pool, start=s)
    await replay.start()
    await replay.bar(s, lambda i: [intent(AgentAction.ENTER_LONG_SMALL, BTC, i)])
    replay.venue.__class__ = BrokenForEth
    # Bar s + 1: the BTC entry fills at the open; a second BTC entry is denied (position open: a
    # risk_events row, written behind) and the ETH entry's send raises.
    with pytest.raises(OrderSubmissionFailed):
        await replay.bar(
            s + 1,
            lambda i: [
                intent(AgentAction.ENTER_LONG_SMALL, BTC, i),
                intent(AgentAction.ENTER_LONG_SMALL, ETH, i),
            ],
        )
    assert await db_pool.fetchval("SELECT count(*) FROM fills") == 1
    assert await db_pool.fetchval("SELECT count(*) FROM risk_events WHERE reason_code = 'position_open'") == 1
    assert await db_pool.fetchval("SELECT status FROM orders WHERE symbol = $1", BTC) == "FILLED"
