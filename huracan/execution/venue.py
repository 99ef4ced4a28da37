"""What the executor needs from a venue: the exchange adapter (live) and the simulated venue
(replay, shadow) both answer these, so one order path serves every mode."""

from __future__ import annotations

from typing import Protocol

from huracan.exchange.models import Balance, CancelResult, Order, OrderAck, OrderRequest, TopOfBook, Trade


class Venue(Protocol):
    """What the executor needs from a venue: the exchange adapter and the simulated venue."""

    exchange_id: str
    # True when it answers without I/O (the simulated venue): overlapping its requests gains
    # nothing, so the executor does not pay for tasks to do it.
    local: bool

    async def create_order(self, request: OrderRequest) -> OrderAck: ...
    async def cancel_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> CancelResult: ...
    async def fetch_order(
        self, symbol: str, *, order_id: str | None = None, client_order_id: str | None = None
    ) -> Order: ...
    async def fetch_open_orders(self, symbol: str) -> list[Order]: ...
    async def fetch_my_trades(self, symbol: str, since_ms: int) -> list[Trade]: ...
    async def fetch_balances(self) -> dict[str, Balance]: ...
    async def fetch_top_of_book(self, symbol: str) -> TopOfBook: ...
