"""The risk gate's seal on an order: ApprovedOrder, and the context in which the executor may
send one (`gate_pass`, opened by the risk gate alone; tests/test_gate_only_path.py checks that)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from huracan.core.intents import OrderIntent
from huracan.execution.positions import EntryContext

_gate_open: ContextVar[bool] = ContextVar("huracan_gate_open", default=False)


class UngatedOrder(RuntimeError):
    """An order was about to reach the venue without passing the risk gate."""


@contextlib.contextmanager
def gate_pass() -> Iterator[None]:
    """Opened by the risk gate around an approved order's placement; nothing else opens it."""
    token = _gate_open.set(True)
    try:
        yield
    finally:
        _gate_open.reset(token)


@dataclass(frozen=True, slots=True)
class ApprovedOrder:
    """An intent the gate approved, sized and priced."""

    intent: OrderIntent
    quantity: Decimal
    order_type: Literal["market", "limit"]
    reason: str  # entry | exit:<why>
    limit_price: Decimal | None = None
    post_only: bool = False
    entry: EntryContext | None = None  # for entries: what the trade memory will need
    decided_ms: int = 0  # when the decision was made (signal freshness for the taker fallback)
    reprices: int = 0  # maker re-prices already spent on this intent


def gate_is_open() -> bool:
    return _gate_open.get()
