"""Maker entries: rest at the bid, follow it a few times, then take or let go. Pure.

An entry goes out as a post-only limit at the best bid less `maker_offset_bps`. Once it has
rested `reprice_after_s` and the bid has moved above it (the book walked away), it is replaced
at the new bid, up to `max_reprices` times. When the budget is spent and the bid is still away,
the rest is taken with a market order if the signal is still fresh (`signal_ttl_s` since the
decision) and `taker_fallback` is on; otherwise the entry is abandoned. Exits never rest: a
missed exit costs more than the fee it would save, so they go taker at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from huracan.execution.order_state import ManagedOrder, OrderStatus

BPS = Decimal(10_000)
MakerStep = Literal["reprice", "fallback", "abandon"]


@dataclass(frozen=True, slots=True)
class MakerRules:
    offset_bps: Decimal
    reprice_after_ms: int
    max_reprices: int
    taker_fallback: bool
    signal_ttl_ms: int


@dataclass(frozen=True, slots=True)
class MakerAction:
    order: ManagedOrder
    step: MakerStep
    price: Decimal | None = None  # the new limit for a re-price


def maker_price(bid: Decimal, offset_bps: Decimal, tick: Decimal) -> Decimal:
    """The post-only buy price: the bid less the offset, down to the tick (never above the bid,
    so it cannot cross)."""
    raw = bid * (1 - offset_bps / BPS)
    return (raw / tick).to_integral_value(ROUND_DOWN) * tick


def maker_actions(
    orders: Mapping[str, ManagedOrder],
    placed_ms: Mapping[str, int],
    decided_ms: Mapping[str, int],
    reprices: Mapping[str, int],
    bids: Mapping[str, Decimal],
    ticks: Mapping[str, Decimal],
    now_ms: int,
    rules: MakerRules,
) -> list[MakerAction]:
    """What to do with each resting maker entry now (orders with nothing to do are left out)."""
    actions: list[MakerAction] = []
    for cid, order in orders.items():
        if not (order.post_only and order.side == "buy"):
            continue
        if order.status not in (OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED):
            continue
        bid = bids.get(order.symbol)
        if bid is None or order.limit_price is None:
            continue
        if now_ms - placed_ms.get(cid, now_ms) < rules.reprice_after_ms:
            continue
        new_price = maker_price(bid, rules.offset_bps, ticks[order.symbol])
        if new_price <= order.limit_price:
            continue  # still at (or above) the best bid: keep our place in the queue
        if reprices.get(cid, 0) < rules.max_reprices:
            actions.append(MakerAction(order, "reprice", new_price))
        elif rules.taker_fallback and now_ms - decided_ms.get(cid, now_ms) <= rules.signal_ttl_ms:
            actions.append(MakerAction(order, "fallback"))
        else:
            actions.append(MakerAction(order, "abandon"))
    return actions
