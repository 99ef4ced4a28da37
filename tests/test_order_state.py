"""The order state machine: its table, fills, venue statuses, and properties over random histories."""

from __future__ import annotations

import copy
import dataclasses
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huracan.execution import order_state
from huracan.execution.order_state import (
    FILL_DEPENDENT_TRANSITIONS,
    TERMINAL,
    TRANSITIONS,
    WORKING,
    FillOutcome,
    FillReport,
    ManagedOrder,
    OrderEvent,
    OrderStatus,
    apply_fill,
    event_for_venue_status,
    transition,
)

S, E = OrderStatus, OrderEvent
QTY = Decimal("4")
HALF = Decimal("2")


class RecordingLog:
    def __init__(self) -> None:
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def warning(self, message: str, **kw: Any) -> None:
        self.records.append(("warning", message, kw))

    def error(self, message: str, **kw: Any) -> None:
        self.records.append(("error", message, kw))


@pytest.fixture(autouse=True)
def recorded_log(monkeypatch: pytest.MonkeyPatch) -> RecordingLog:
    recorder = RecordingLog()
    monkeypatch.setattr(order_state, "log", recorder)
    return recorder


def make_order(status: OrderStatus = S.NEW, filled: Decimal = Decimal(0), **kw: Any) -> ManagedOrder:
    order = ManagedOrder(
        "c-1", "BTC/USDT", "buy", "limit", QTY, limit_price=Decimal(100), status=status, **kw
    )
    order.filled_quantity = filled
    order.fill_notional = filled * 100
    return order


def fill(trade_id: str, quantity: str | Decimal, price: str = "100", fee: str = "0.1") -> FillReport:
    return FillReport(trade_id, Decimal(price), Decimal(quantity), Decimal(fee), "maker", 1_700_000_000_000)


def state(order: ManagedOrder) -> tuple[OrderStatus, Decimal]:
    return order.status, order.filled_quantity


def unchanged_but_counted(before: ManagedOrder, after: ManagedOrder) -> bool:
    return after.invalid_events == before.invalid_events + 1 and before == dataclasses.replace(
        after, invalid_events=before.invalid_events, trade_ids=set(after.trade_ids)
    )


# --- the table -------------------------------------------------------------------------------------
def test_status_values_and_sets() -> None:
    assert {s.value for s in OrderStatus} == {
        "NEW", "PENDING_SUBMIT", "ACCEPTED", "PARTIALLY_FILLED", "FILLED",
        "PENDING_CANCEL", "CANCELED", "REJECTED", "EXPIRED", "UNKNOWN",
    }  # fmt: skip
    assert all(s.value == s.name for s in OrderStatus)
    assert all(e.value == e.name for e in OrderEvent)
    assert {S.FILLED, S.CANCELED, S.REJECTED, S.EXPIRED} == TERMINAL
    assert {S.PENDING_SUBMIT, S.ACCEPTED, S.PARTIALLY_FILLED, S.PENDING_CANCEL, S.UNKNOWN} == WORKING
    assert not any(s is S.FILLED or s is S.REJECTED for s, _ in TRANSITIONS)
    assert not set(TRANSITIONS) & set(FILL_DEPENDENT_TRANSITIONS)


def _filled_for(source: OrderStatus, event: OrderEvent, target: OrderStatus) -> Decimal:
    if target is S.FILLED:
        return QTY
    if S.PARTIALLY_FILLED in (source, target) or event is E.PARTIAL_FILL:
        return HALF
    return Decimal(0)


@pytest.mark.parametrize(("key", "target"), list(TRANSITIONS.items()), ids=lambda v: str(v))
def test_every_transition_of_the_table(
    key: tuple[OrderStatus, OrderEvent], target: OrderStatus, recorded_log: RecordingLog
) -> None:
    source, event = key
    order = make_order(source, _filled_for(source, event, target))
    assert transition(order, event) is True
    assert (order.status, order.invalid_events) == (target, 0)
    assert not recorded_log.records


@pytest.mark.parametrize(("filled", "target"), [(Decimal(0), S.ACCEPTED), (HALF, S.PARTIALLY_FILLED)])
def test_rejected_cancel_goes_back_to_what_the_fills_say(filled: Decimal, target: OrderStatus) -> None:
    order = make_order(S.PENDING_CANCEL, filled)
    assert transition(order, E.CANCEL_REJECTED) is True
    assert order.status is target


INVALID = [
    (S.NEW, E.ACCEPTED), (S.NEW, E.CANCEL_REQUESTED), (S.NEW, E.TIMEOUT),
    (S.PENDING_SUBMIT, E.SUBMIT), (S.PENDING_SUBMIT, E.NOT_FOUND), (S.PENDING_SUBMIT, E.CANCEL_REQUESTED),
    (S.ACCEPTED, E.SUBMIT), (S.ACCEPTED, E.REJECTED), (S.ACCEPTED, E.TIMEOUT), (S.ACCEPTED, E.ACCEPTED),
    (S.PARTIALLY_FILLED, E.ACCEPTED), (S.PARTIALLY_FILLED, E.REJECTED),
    (S.PENDING_CANCEL, E.CANCEL_REQUESTED), (S.PENDING_CANCEL, E.REJECTED), (S.PENDING_CANCEL, E.ACCEPTED),
    (S.FILLED, E.CANCELED), (S.FILLED, E.EXPIRED), (S.FILLED, E.PARTIAL_FILL), (S.FILLED, E.TIMEOUT),
    (S.CANCELED, E.ACCEPTED), (S.CANCELED, E.EXPIRED), (S.CANCELED, E.CANCEL_REQUESTED),
    (S.EXPIRED, E.CANCELED), (S.EXPIRED, E.SUBMIT),
    (S.REJECTED, E.ACCEPTED), (S.REJECTED, E.FILL), (S.REJECTED, E.PARTIAL_FILL), (S.REJECTED, E.SUBMIT),
    (S.UNKNOWN, E.SUBMIT), (S.UNKNOWN, E.CANCEL_REQUESTED), (S.UNKNOWN, E.CANCEL_REJECTED),
]  # fmt: skip


@pytest.mark.parametrize(("source", "event"), INVALID, ids=str)
def test_invalid_transitions_are_ignored(
    source: OrderStatus, event: OrderEvent, recorded_log: RecordingLog
) -> None:
    filled = QTY if source is S.FILLED else HALF if source is S.PARTIALLY_FILLED else Decimal(0)
    order = make_order(source, filled, exchange_order_id="x-9", venue_message="hi")
    order.trade_ids.add("t-0")
    before = copy.deepcopy(order)
    assert transition(order, event) is False
    assert unchanged_but_counted(before, order)
    assert recorded_log.records == [
        (
            "warning",
            "invalid order transition ignored",
            {
                "client_order_id": "c-1",
                "status": source.value,
                "order_event": event.value,
                "filled": str(filled),
                "quantity": str(QTY),
            },
        )
    ]


@pytest.mark.parametrize(
    ("source", "filled", "event"),
    [
        (S.ACCEPTED, Decimal(0), E.FILL),  # FILL says "completely filled": the fills must say so too
        (S.PENDING_SUBMIT, Decimal(0), E.PARTIAL_FILL),
        (S.PARTIALLY_FILLED, HALF, E.FILL),
        (S.UNKNOWN, HALF, E.ACCEPTED),  # ACCEPTED means nothing filled
        (S.UNKNOWN, HALF, E.NOT_FOUND),  # REJECTED never has fills
        (S.UNKNOWN, HALF, E.REJECTED),
    ],
)
def test_events_that_contradict_the_fills_are_ignored(
    source: OrderStatus, filled: Decimal, event: OrderEvent
) -> None:
    order = make_order(source, filled)
    before = copy.deepcopy(order)
    assert transition(order, event) is False
    assert unchanged_but_counted(before, order)


# --- ManagedOrder ----------------------------------------------------------------------------------
def test_managed_order_defaults_and_properties() -> None:
    order = ManagedOrder("c-2", "ETH/USDT", "sell", "market", Decimal("3"))
    assert (order.status, order.reason, order.trade_ids, order.created_ms) == (S.NEW, "entry", set(), 0)
    assert (order.average_fill_price, order.remaining_quantity) == (None, Decimal(3))
    assert (order.is_terminal, order.is_working) == (False, False)
    transition(order, E.SUBMIT)
    assert (order.is_terminal, order.is_working) == (False, True)
    apply_fill(order, fill("a", "1", price="10"))
    apply_fill(order, fill("b", "2", price="13"))
    assert (order.average_fill_price, order.remaining_quantity) == (Decimal(12), Decimal(0))
    assert (order.is_terminal, order.is_working) == (True, False)
    assert ManagedOrder("c-3", "X/Y", "buy", "market", Decimal(1)).trade_ids is not order.trade_ids


@pytest.mark.parametrize(
    "kw",
    [
        {"order_type": "market", "quantity": Decimal(0)},
        {"order_type": "limit", "quantity": Decimal(1)},
        {"order_type": "market", "quantity": Decimal(1), "post_only": True},
    ],
)
def test_managed_order_refuses_what_the_table_refuses(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ManagedOrder("c-4", "X/Y", "buy", **kw)


# --- fills -----------------------------------------------------------------------------------------
def test_fills_accumulate_and_drive_the_status() -> None:
    order = make_order(S.ACCEPTED)
    assert apply_fill(order, fill("t1", "1", price="100", fee="0.1")) is FillOutcome.NEW
    assert state(order) == (S.PARTIALLY_FILLED, Decimal(1))
    assert apply_fill(order, fill("t2", "3", price="104", fee="-0.05")) is FillOutcome.NEW
    assert state(order) == (S.FILLED, QTY)
    assert (order.fill_notional, order.fees_quote) == (Decimal(412), Decimal("0.05"))
    assert order.trade_ids == {"t1", "t2"}
    assert order.average_fill_price == Decimal(103)


def test_fills_after_a_cancel_request() -> None:
    order = make_order(S.ACCEPTED)
    assert transition(order, E.CANCEL_REQUESTED)
    assert apply_fill(order, fill("t1", "1")) is FillOutcome.NEW
    assert state(order) == (S.PENDING_CANCEL, Decimal(1))
    assert transition(order, E.CANCELED)
    assert state(order) == (S.CANCELED, Decimal(1))
    # ...or the rest fills before the cancel lands: the order is FILLED and the cancel's answer stale.
    order = make_order(S.PARTIALLY_FILLED, HALF)
    transition(order, E.CANCEL_REQUESTED)
    assert apply_fill(order, fill("t9", HALF)) is FillOutcome.NEW
    assert state(order) == (S.FILLED, QTY)
    assert transition(order, E.CANCELED) is False
    assert state(order) == (S.FILLED, QTY)


def test_rejected_cancel_after_fills_during_the_cancel() -> None:
    order = make_order(S.ACCEPTED)
    transition(order, E.CANCEL_REQUESTED)
    apply_fill(order, fill("t1", "1"))
    assert transition(order, E.CANCEL_REJECTED)
    assert state(order) == (S.PARTIALLY_FILLED, Decimal(1))


@pytest.mark.parametrize("terminal", [S.CANCELED, S.EXPIRED])
def test_late_fills_after_cancel_or_expiry(terminal: OrderStatus) -> None:
    order = make_order(terminal)
    assert apply_fill(order, fill("t1", "1")) is FillOutcome.NEW
    assert (*state(order), order.trade_ids) == (terminal, Decimal(1), {"t1"})
    assert apply_fill(order, fill("t2", "3")) is FillOutcome.NEW
    assert state(order) == (S.FILLED, QTY)


def test_duplicate_trade_ids_are_ignored() -> None:
    order = make_order(S.ACCEPTED)
    assert apply_fill(order, fill("t1", "1")) is FillOutcome.NEW
    before = copy.deepcopy(order)
    assert apply_fill(order, fill("t1", "1")) is FillOutcome.DUPLICATE
    assert apply_fill(order, fill("t1", "2", price="99")) is FillOutcome.DUPLICATE
    assert order == before


def test_overfill_is_refused_and_logged(recorded_log: RecordingLog) -> None:
    order = make_order(S.PARTIALLY_FILLED, Decimal(3))
    before = copy.deepcopy(order)
    assert apply_fill(order, fill("t7", "2")) is FillOutcome.OVERFILL
    assert order == before
    assert [(level, kw["trade_id"]) for level, _, kw in recorded_log.records] == [("error", "t7")]
    # A trade refused once is not remembered: the same id within the quantity is taken later.
    assert apply_fill(order, fill("t7", "1")) is FillOutcome.NEW
    assert state(order) == (S.FILLED, QTY)
    assert apply_fill(order, fill("t8", "0.001")) is FillOutcome.OVERFILL


@pytest.mark.parametrize("status", [S.NEW, S.REJECTED])
def test_fills_refused_where_the_status_takes_none(status: OrderStatus, recorded_log: RecordingLog) -> None:
    order = make_order(status)
    before = copy.deepcopy(order)
    assert apply_fill(order, fill("t1", "1")) is FillOutcome.REFUSED
    assert order == before
    assert [level for level, _, _ in recorded_log.records] == ["warning"]


@pytest.mark.parametrize(
    ("price", "quantity", "fee"),
    [("0", "1", "0"), ("1", "0", "0"), ("-1", "1", "0"), ("1", "-1", "0"), ("NaN", "1", "0"),
     ("1", "Infinity", "0"), ("1", "1", "NaN")],
)  # fmt: skip
def test_impossible_fills_raise(price: str, quantity: str, fee: str) -> None:
    with pytest.raises(ValueError):
        apply_fill(make_order(S.ACCEPTED), fill("t1", quantity, price=price, fee=fee))


# --- UNKNOWN ---------------------------------------------------------------------------------------
def test_unknown_resolved_by_accepted() -> None:
    order = make_order(S.PENDING_SUBMIT)
    assert transition(order, E.TIMEOUT)
    assert (order.status, order.is_working) == (S.UNKNOWN, True)
    assert transition(order, E.TIMEOUT)
    assert state(order) == (S.UNKNOWN, Decimal(0))
    assert event_for_venue_status(order, "open", Decimal(0)) is E.ACCEPTED
    assert transition(order, E.ACCEPTED)
    assert state(order) == (S.ACCEPTED, Decimal(0))


def test_unknown_resolved_by_fills() -> None:
    order = make_order(S.UNKNOWN)
    assert apply_fill(order, fill("t1", QTY)) is FillOutcome.NEW
    assert state(order) == (S.FILLED, QTY)
    assert event_for_venue_status(order, "closed", QTY) is None


def test_unknown_resolved_by_not_found() -> None:
    order = make_order(S.UNKNOWN)
    assert transition(order, E.NOT_FOUND)
    assert (order.status, order.is_terminal) == (S.REJECTED, True)
    assert apply_fill(order, fill("t1", "1")) is FillOutcome.REFUSED


def test_unknown_after_a_lost_cancel_with_fills_is_resolved_by_the_venue() -> None:
    order = make_order(S.ACCEPTED)
    transition(order, E.CANCEL_REQUESTED)
    apply_fill(order, fill("t1", "1"))
    assert transition(order, E.TIMEOUT)
    assert state(order) == (S.UNKNOWN, Decimal(1))
    assert event_for_venue_status(order, "open", Decimal(1)) is E.PARTIAL_FILL
    assert transition(order, E.PARTIAL_FILL)
    assert state(order) == (S.PARTIALLY_FILLED, Decimal(1))


# --- venue statuses --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("status", "filled", "venue_status", "venue_filled", "expected"),
    [
        (S.PENDING_SUBMIT, "0", "open", "0", E.ACCEPTED),
        (S.ACCEPTED, "0", "open", "0", None),  # already in line
        (S.PENDING_CANCEL, "0", "open", "0", None),  # the cancel's answer is still coming
        (S.PARTIALLY_FILLED, "2", "open", "2", None),
        (S.PARTIALLY_FILLED, "1", "open", "2", None),  # quantities move through fills only
        (S.ACCEPTED, "0", "open", "2", None),
        (S.UNKNOWN, "1", "open", "2", None),
        (S.PARTIALLY_FILLED, "2", "closed", "4", None),  # fetch the fills first
        (S.PENDING_CANCEL, "0", "canceled", "0", E.CANCELED),
        (S.CANCELED, "0", "canceled", "0", None),
        (S.PARTIALLY_FILLED, "2", "canceled", "3", E.CANCELED),
        (S.ACCEPTED, "0", "expired", "0", E.EXPIRED),
        (S.EXPIRED, "0", "expired", "0", None),
        (S.PENDING_SUBMIT, "0", "rejected", "0", E.REJECTED),
        (S.FILLED, "4", "canceled", "4", E.CANCELED),  # a disagreement: transition will log it
    ],
)
def test_event_for_venue_status(
    status: OrderStatus, filled: str, venue_status: str, venue_filled: str, expected: OrderEvent | None
) -> None:
    order = make_order(status, Decimal(filled))
    assert event_for_venue_status(order, venue_status, Decimal(venue_filled)) is expected


def test_event_for_unknown_venue_status_raises() -> None:
    with pytest.raises(ValueError):
        event_for_venue_status(make_order(S.ACCEPTED), "partially_filled", Decimal(0))


# --- properties over random histories --------------------------------------------------------------
QUANTITIES = [Decimal(q) for q in ("0.5", "1", "1.5", "2", "3", "4")]
Step = tuple[OrderEvent, None] | tuple[None, FillReport]
fills = st.builds(
    fill,
    trade_id=st.sampled_from([f"t{i}" for i in range(8)]),  # few ids: duplicates are common
    quantity=st.sampled_from(QUANTITIES),
    price=st.sampled_from(["99.5", "100", "101.25"]),
    fee=st.sampled_from(["0", "0.01", "-0.002"]),
)
any_event = st.sampled_from(list(OrderEvent)).map(lambda e: (e, None))


def _steps_from(status: OrderStatus) -> st.SearchStrategy[Step]:
    # Mostly events the table has a row for (else random histories rarely leave NEW), but any
    # event and fills (in sizes that overfill too) at any time.
    allowed = sorted(
        event for source, event in [*TRANSITIONS, *FILL_DEPENDENT_TRANSITIONS] if source is status
    )
    choices: list[st.SearchStrategy[Step]] = [any_event, fills.map(lambda f: (None, f))]
    if allowed:
        choices.append(st.sampled_from(allowed).map(lambda e: (e, None)))
    return st.one_of(*choices)


STEPS_FROM = {status: _steps_from(status) for status in OrderStatus}


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    quantity=st.sampled_from([Decimal(1), Decimal("2.5"), Decimal(4)]),
    length=st.integers(0, 30),
    data=st.data(),
)
def test_random_histories_keep_the_invariants(quantity: Decimal, length: int, data: st.DataObject) -> None:
    order = ManagedOrder("c-p", "BTC/USDT", "sell", "market", quantity)
    new_fills: dict[str, Decimal] = {}
    for _ in range(length):
        event, report = data.draw(STEPS_FROM[order.status])
        before = copy.deepcopy(order)
        if event is not None:
            changed = transition(order, event)
            if not changed:
                assert unchanged_but_counted(before, order)
        else:
            assert report is not None
            outcome = apply_fill(order, report)
            assert isinstance(outcome, FillOutcome)
            if outcome is FillOutcome.NEW:
                assert report.trade_id not in new_fills
                new_fills[report.trade_id] = report.quantity
            else:
                assert order == before
                if outcome is FillOutcome.DUPLICATE:
                    assert report.trade_id in new_fills
        status = order.status
        assert isinstance(status, OrderStatus)
        if before.status in TERMINAL and status is not before.status:
            assert before.status in (S.CANCELED, S.EXPIRED)
            assert (status, event) == (S.FILLED, None)
        assert before.filled_quantity <= order.filled_quantity <= quantity
        assert (order.filled_quantity == quantity) == (status is S.FILLED)
        assert order.trade_ids == set(new_fills)
        assert order.filled_quantity == sum(new_fills.values(), Decimal(0))
        if status in (S.NEW, S.PENDING_SUBMIT, S.ACCEPTED, S.REJECTED):
            assert order.filled_quantity == 0
            assert not order.trade_ids
        if status is S.PARTIALLY_FILLED:
            assert 0 < order.filled_quantity < quantity
        assert order.is_terminal == (status in TERMINAL)
