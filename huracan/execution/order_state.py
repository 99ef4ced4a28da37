"""The order state machine: one ManagedOrder per order, moved only by events; pure, no I/O.

Statuses are those of the `orders` table. The executor writes an order ahead (committed in
PENDING_SUBMIT before the request leaves), then feeds it what it learns:

    NEW --SUBMIT--> PENDING_SUBMIT --ACCEPTED--> ACCEPTED --PARTIAL_FILL--> PARTIALLY_FILLED --FILL--> FILLED
                         |  \\--TIMEOUT--> UNKNOWN (the request's outcome is not known)
                         \\--REJECTED / EXPIRED / CANCELED / fills
    ACCEPTED, PARTIALLY_FILLED --CANCEL_REQUESTED--> PENDING_CANCEL --CANCELED--> CANCELED
    PENDING_CANCEL --CANCEL_REJECTED--> ACCEPTED or PARTIALLY_FILLED (whichever the fills say)
    UNKNOWN is resolved by what the venue says (ACCEPTED, fills, CANCELED, EXPIRED, REJECTED),
    or by NOT_FOUND (looked up by client order id, it was never placed: REJECTED).
    CANCELED and EXPIRED still take fills reported late; fills that complete the order make it
    FILLED, because facts from the venue win over our idea of the order.

TRANSITIONS is the whole machine, one row per allowed (status, event); the single move a
table cannot express (a rejected cancel goes back to ACCEPTED or PARTIALLY_FILLED depending on
the fills) lives in FILL_DEPENDENT_TRANSITIONS. On top of the tables one rule keeps a status
from ever contradicting the quantities: FILLED exactly when filled == quantity, ACCEPTED,
PENDING_SUBMIT and REJECTED with nothing filled, PARTIALLY_FILLED with part of it; a FILL event
needs the order completely filled and a PARTIAL_FILL event part of it (quantities move only
through apply_fill, which brings its own event).

An event the machine does not allow is ignored, not applied: the order stays exactly as it was
(only `invalid_events` counts it) and a warning is logged. Venue reports arrive late, twice and
out of order (a cancel confirmation after the last fill, a retry's answer after a lookup), and
the row is persisted after every change: applying a stale event would move a FILLED order back
to CANCELED or reopen a terminal one, i.e. write a wrong fact to the database and to the
position book, whereas ignoring it leaves the last consistent state, which the next
reconciliation (statuses through event_for_venue_status, quantities through apply_fill)
corrects if it was the order that was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal

from huracan.logs import get_logger

log = get_logger("huracan.execution.orders")


class OrderStatus(StrEnum):
    """An order's status as we last know it; the values are the `orders.status` CHECK's."""

    NEW = "NEW"
    PENDING_SUBMIT = "PENDING_SUBMIT"
    ACCEPTED = "ACCEPTED"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    PENDING_CANCEL = "PENDING_CANCEL"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"
    UNKNOWN = "UNKNOWN"


class OrderEvent(StrEnum):
    SUBMIT = "SUBMIT"  # we are about to send the order
    ACCEPTED = "ACCEPTED"  # the venue acknowledged it, nothing filled
    PARTIAL_FILL = "PARTIAL_FILL"  # part of it is filled
    FILL = "FILL"  # it is now completely filled
    CANCEL_REQUESTED = "CANCEL_REQUESTED"  # we are about to send a cancel
    CANCELED = "CANCELED"  # the venue canceled it
    CANCEL_REJECTED = "CANCEL_REJECTED"  # the cancel failed; the order is still working
    REJECTED = "REJECTED"  # the venue refused the order
    EXPIRED = "EXPIRED"  # the venue expired it (the unfilled rest of a market/IOC order)
    TIMEOUT = "TIMEOUT"  # a request's outcome is unknown (timeout, ambiguous error)
    NOT_FOUND = "NOT_FOUND"  # an UNKNOWN order does not exist and can no longer appear


TERMINAL: Final[frozenset[OrderStatus]] = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)
# What reconciliation looks at: sent (or about to be) and not finished.
WORKING: Final[frozenset[OrderStatus]] = frozenset(set(OrderStatus) - TERMINAL - {OrderStatus.NEW})

_S, _E = OrderStatus, OrderEvent

# fmt: off
TRANSITIONS: Final[Mapping[tuple[OrderStatus, OrderEvent], OrderStatus]] = MappingProxyType({
    # from                  event                  -> to
    (_S.NEW,              _E.SUBMIT):           _S.PENDING_SUBMIT,

    (_S.PENDING_SUBMIT,   _E.ACCEPTED):         _S.ACCEPTED,
    (_S.PENDING_SUBMIT,   _E.PARTIAL_FILL):     _S.PARTIALLY_FILLED,
    (_S.PENDING_SUBMIT,   _E.FILL):             _S.FILLED,
    (_S.PENDING_SUBMIT,   _E.REJECTED):         _S.REJECTED,
    (_S.PENDING_SUBMIT,   _E.EXPIRED):          _S.EXPIRED,
    (_S.PENDING_SUBMIT,   _E.CANCELED):         _S.CANCELED,
    (_S.PENDING_SUBMIT,   _E.TIMEOUT):          _S.UNKNOWN,

    (_S.ACCEPTED,         _E.PARTIAL_FILL):     _S.PARTIALLY_FILLED,
    (_S.ACCEPTED,         _E.FILL):             _S.FILLED,
    (_S.ACCEPTED,         _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.ACCEPTED,         _E.CANCELED):         _S.CANCELED,
    (_S.ACCEPTED,         _E.EXPIRED):          _S.EXPIRED,

    (_S.PARTIALLY_FILLED, _E.PARTIAL_FILL):     _S.PARTIALLY_FILLED,
    (_S.PARTIALLY_FILLED, _E.FILL):             _S.FILLED,
    (_S.PARTIALLY_FILLED, _E.CANCEL_REQUESTED): _S.PENDING_CANCEL,
    (_S.PARTIALLY_FILLED, _E.CANCELED):         _S.CANCELED,
    (_S.PARTIALLY_FILLED, _E.EXPIRED):          _S.EXPIRED,

    # A fill after our cancel request counts; the cancel's answer is still coming.
    (_S.PENDING_CANCEL,   _E.PARTIAL_FILL):     _S.PENDING_CANCEL,
    (_S.PENDING_CANCEL,   _E.FILL):             _S.FILLED,
    (_S.PENDING_CANCEL,   _E.CANCELED):         _S.CANCELED,
    (_S.PENDING_CANCEL,   _E.EXPIRED):          _S.EXPIRED,
    (_S.PENDING_CANCEL,   _E.TIMEOUT):          _S.UNKNOWN,
    # (PENDING_CANCEL, CANCEL_REJECTED): see FILL_DEPENDENT_TRANSITIONS.

    (_S.UNKNOWN,          _E.ACCEPTED):         _S.ACCEPTED,
    (_S.UNKNOWN,          _E.PARTIAL_FILL):     _S.PARTIALLY_FILLED,
    (_S.UNKNOWN,          _E.FILL):             _S.FILLED,
    (_S.UNKNOWN,          _E.CANCELED):         _S.CANCELED,
    (_S.UNKNOWN,          _E.EXPIRED):          _S.EXPIRED,
    (_S.UNKNOWN,          _E.REJECTED):         _S.REJECTED,
    (_S.UNKNOWN,          _E.NOT_FOUND):        _S.REJECTED,
    (_S.UNKNOWN,          _E.TIMEOUT):          _S.UNKNOWN,

    # Fills executed before the cancel/expiry, reported late: recorded; completing ones win.
    (_S.CANCELED,         _E.PARTIAL_FILL):     _S.CANCELED,
    (_S.CANCELED,         _E.FILL):             _S.FILLED,
    (_S.EXPIRED,          _E.PARTIAL_FILL):     _S.EXPIRED,
    (_S.EXPIRED,          _E.FILL):             _S.FILLED,
})

# (status, event) -> (target when nothing is filled, target when part of the order is filled)
FILL_DEPENDENT_TRANSITIONS: Final[Mapping[tuple[OrderStatus, OrderEvent], tuple[OrderStatus, OrderStatus]]] = (
    MappingProxyType({
        (_S.PENDING_CANCEL, _E.CANCEL_REJECTED): (_S.ACCEPTED, _S.PARTIALLY_FILLED),
    })
)
# fmt: on

# Statuses that never hold a fill (FILLED holds the whole quantity, PARTIALLY_FILLED part of it,
# the others any amount below the quantity).
_NOTHING_FILLED: Final = frozenset({_S.NEW, _S.PENDING_SUBMIT, _S.ACCEPTED, _S.REJECTED})


@dataclass(slots=True)
class ManagedOrder:
    """The executor's view of one order, persisted to `orders` after every change."""

    client_order_id: str
    symbol: str
    side: Literal["buy", "sell"]
    order_type: Literal["market", "limit"]
    quantity: Decimal
    limit_price: Decimal | None = None
    post_only: bool = False
    reason: str = "entry"  # entry, exit:stop_loss, exit:signal, reconciliation...
    status: OrderStatus = OrderStatus.NEW
    exchange_order_id: str | None = None
    filled_quantity: Decimal = Decimal(0)
    fill_notional: Decimal = Decimal(0)  # sum of price * quantity over the fills
    fees_quote: Decimal = Decimal(0)  # fees converted to the quote currency by the caller
    trade_ids: set[str] = field(default_factory=set)  # venue trade ids seen
    db_id: int | None = None
    venue_message: str | None = None
    invalid_events: int = 0
    created_ms: int = 0  # when the executor created it (its clock); settles lookups of lost orders

    def __post_init__(self) -> None:
        # The `orders` table's own checks, caught where the order is made.
        if not self.quantity > 0:
            raise ValueError(f"order {self.client_order_id}: quantity must be positive, got {self.quantity}")
        if self.order_type == "limit" and self.limit_price is None:
            raise ValueError(f"order {self.client_order_id}: a limit order needs a limit price")
        if self.post_only and self.order_type != "limit":
            raise ValueError(f"order {self.client_order_id}: post-only applies to limit orders")

    @property
    def remaining_quantity(self) -> Decimal:
        return self.quantity - self.filled_quantity

    @property
    def average_fill_price(self) -> Decimal | None:
        """Volume-weighted price of the fills; None before any fill."""
        if self.filled_quantity == 0:
            return None
        return self.fill_notional / self.filled_quantity

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_working(self) -> bool:
        return self.status in WORKING


def _consistent(status: OrderStatus, filled: Decimal, quantity: Decimal) -> bool:
    """Whether `status` can describe an order with `filled` of `quantity` filled."""
    if status is OrderStatus.FILLED or filled == quantity:
        return status is OrderStatus.FILLED and filled == quantity
    if status in _NOTHING_FILLED:
        return filled == 0
    if status is OrderStatus.PARTIALLY_FILLED:
        return 0 < filled < quantity
    return 0 <= filled < quantity


def _target(order: ManagedOrder, event: OrderEvent, filled: Decimal) -> OrderStatus | None:
    """Where `event` takes `order` once `filled` is filled, or None when it may not happen."""
    key = (order.status, event)
    target = TRANSITIONS.get(key)
    if target is None:
        choice = FILL_DEPENDENT_TRANSITIONS.get(key)
        if choice is None:
            return None
        target = choice[0] if filled == 0 else choice[1]
    if event is OrderEvent.FILL and filled != order.quantity:
        return None
    if event is OrderEvent.PARTIAL_FILL and not 0 < filled < order.quantity:
        return None
    return target if _consistent(target, filled, order.quantity) else None


def transition(order: ManagedOrder, event: OrderEvent) -> bool:
    """Apply `event` to `order`. True when the machine allows it (the status changed or, per
    the table, stays); False when it does not: the order is left as it was, `invalid_events`
    counted and a warning logged."""
    target = _target(order, event, order.filled_quantity)
    if target is None:
        order.invalid_events += 1
        log.warning(
            "invalid order transition ignored",
            client_order_id=order.client_order_id,
            status=order.status.value,
            # structlog's first parameter is named `event` (the message): a keyword cannot reuse it.
            order_event=event.value,
            filled=str(order.filled_quantity),
            quantity=str(order.quantity),
        )
        return False
    order.status = target
    return True


@dataclass(frozen=True, slots=True)
class FillReport:
    """One execution of an order, as the venue reported it."""

    trade_id: str
    price: Decimal
    quantity: Decimal
    fee_quote: Decimal  # converted to the quote currency by the caller; negative for a rebate
    liquidity: Literal["maker", "taker"] | None
    time_ms: int


class FillOutcome(StrEnum):
    NEW = "NEW"  # recorded
    DUPLICATE = "DUPLICATE"  # trade id seen before: ignored
    OVERFILL = "OVERFILL"  # would take the filled quantity above the order's: refused
    REFUSED = "REFUSED"  # the order's status takes no fills (NEW, REJECTED)


def apply_fill(order: ManagedOrder, fill: FillReport) -> FillOutcome:
    """Record `fill` on `order` once per trade id and move its status (FILL when the order is
    now completely filled, PARTIAL_FILL otherwise). Anything but NEW leaves the order as it was.

    Raises ValueError for a non-positive or non-finite price or quantity, or a non-finite fee:
    the adapter never produces one, so it is a programming error upstream."""
    for name, value in (("price", fill.price), ("quantity", fill.quantity)):
        if not (value.is_finite() and value > 0):
            raise ValueError(f"fill {fill.trade_id}: {name} must be positive, got {value}")
    if not fill.fee_quote.is_finite():
        raise ValueError(f"fill {fill.trade_id}: fee must be finite, got {fill.fee_quote}")
    if fill.trade_id in order.trade_ids:
        return FillOutcome.DUPLICATE
    filled = order.filled_quantity + fill.quantity
    if filled > order.quantity:
        log.error(
            "fill would exceed the order's quantity; refused",
            client_order_id=order.client_order_id,
            trade_id=fill.trade_id,
            fill_quantity=str(fill.quantity),
            filled=str(order.filled_quantity),
            quantity=str(order.quantity),
            status=order.status.value,
        )
        return FillOutcome.OVERFILL
    event = OrderEvent.FILL if filled == order.quantity else OrderEvent.PARTIAL_FILL
    target = _target(order, event, filled)
    if target is None:
        log.warning(
            "fill refused: the order takes no fills",
            client_order_id=order.client_order_id,
            trade_id=fill.trade_id,
            status=order.status.value,
        )
        return FillOutcome.REFUSED
    order.filled_quantity = filled
    order.fill_notional += fill.price * fill.quantity
    order.fees_quote += fill.fee_quote
    order.trade_ids.add(fill.trade_id)
    order.status = target
    return FillOutcome.NEW


_VENUE_EVENTS: Final[Mapping[str, OrderEvent]] = MappingProxyType(
    {"canceled": _E.CANCELED, "expired": _E.EXPIRED, "rejected": _E.REJECTED}
)
_VENUE_TARGETS: Final[Mapping[OrderEvent, OrderStatus]] = MappingProxyType(
    {_E.CANCELED: _S.CANCELED, _E.EXPIRED: _S.EXPIRED, _E.REJECTED: _S.REJECTED}
)


def event_for_venue_status(
    order: ManagedOrder, venue_status: str, venue_filled: Decimal
) -> OrderEvent | None:
    """The status event that brings `order` in line with the venue's view of it, or None when
    it already is in line or no status event alone can do it.

    `venue_status` is the exchange adapter's ("open", "closed", "canceled", "expired",
    "rejected"; ValueError for anything else) and `venue_filled` the venue's filled amount.
    Quantities move only through apply_fill, statuses only through this, so a caller that sees
    `venue_filled` above the order's filled quantity fetches the trades first, applies them,
    then asks:

    - open, nothing filled: ACCEPTED when we had not heard (PENDING_SUBMIT, UNKNOWN), else None
      (a PENDING_CANCEL order is open until the cancel's answer comes);
    - open, part filled: None: the fills drive the status. One exception: an UNKNOWN order
      whose fills all arrived while a cancel was pending (PENDING_CANCEL keeps its status on a
      fill) gets PARTIAL_FILL when our filled quantity equals the venue's;
    - closed: FILL when our filled quantity is the whole order (and the status says otherwise),
      else None: the missing fills must be fetched first;
    - canceled, expired, rejected: CANCELED, EXPIRED, REJECTED unless the order already is. The
      event may still be invalid (a FILLED order the venue calls canceled): transition then
      ignores it and logs the disagreement.
    """
    status = order.status
    if venue_status == "open":
        if venue_filled == 0:
            if order.filled_quantity == 0 and status in (_S.PENDING_SUBMIT, _S.UNKNOWN):
                return OrderEvent.ACCEPTED
            return None
        if status is _S.UNKNOWN and venue_filled == order.filled_quantity < order.quantity:
            return OrderEvent.PARTIAL_FILL
        return None
    if venue_status == "closed":
        if order.filled_quantity == order.quantity and status is not _S.FILLED:
            return OrderEvent.FILL
        return None
    event = _VENUE_EVENTS.get(venue_status)
    if event is None:
        raise ValueError(f"unknown venue order status {venue_status!r}")
    return None if status is _VENUE_TARGETS[event] else event
