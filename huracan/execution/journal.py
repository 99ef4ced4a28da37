"""The write-ahead order journal: every order and fill in PostgreSQL before anyone relies on it.

`open_orders` commits the order rows in PENDING_SUBMIT before the request leaves (a crash after
it leaves a row that reconciliation resolves by client order id); `update_order` persists every
later status; `record_fill` writes the fill, the order's totals, the position and the
trade_memory row of a closed trade in one transaction, once per (exchange, venue trade id).
The position book is the fold of the fills (`open_positions` gives them back at start-up), so
what is committed here is the whole truth after a crash.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from huracan.exchange.client_ids import client_order_id
from huracan.execution.order_state import WORKING, FillReport, ManagedOrder, OrderStatus
from huracan.execution.positions import ClosedTrade, Position


def _ts(time_ms: int) -> datetime:
    return datetime.fromtimestamp(time_ms / 1000, UTC)


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class StoredFill:
    order: ManagedOrder
    fill: FillReport
    fee: Decimal
    fee_currency: str


@dataclass(frozen=True, slots=True)
class OrderRow:
    """An order's row as it stands at one moment: writes that wait in line record history as it
    happened, not whatever the order has become by the time they run."""

    db_id: int | None
    status: str
    exchange_order_id: str | None
    quantity: Decimal
    filled_quantity: Decimal
    average_fill_price: Decimal | None
    venue_message: str | None
    is_terminal: bool
    symbol: str
    side: str

    @classmethod
    def of(cls, order: ManagedOrder) -> OrderRow:
        return cls(
            order.db_id,
            order.status.value,
            order.exchange_order_id,
            order.quantity,
            order.filled_quantity,
            order.average_fill_price,
            order.venue_message,
            order.is_terminal,
            order.symbol,
            order.side,
        )


@dataclass(frozen=True, slots=True)
class PositionRow:
    """A position's row at one moment; `ref` is the live position, which gets the row's id."""

    ref: Position
    quantity: Decimal
    average_entry_price: Decimal
    size_multiplier: Decimal
    stop_price: Decimal | None
    take_profit_price: Decimal | None
    realised_pnl_quote: Decimal
    fees_quote: Decimal
    exit_order_id: int | None

    @classmethod
    def of(cls, position: Position) -> PositionRow:
        return cls(
            position,
            position.quantity,
            position.average_entry_price,
            Decimal(str(position.entry.size_multiplier)),
            position.stop_price,
            position.take_profit_price,
            position.realised_pnl_quote,
            position.entry_fees_quote + position.exit_fees_quote,
            position.exit_order_id,
        )


class OrderJournal:
    def __init__(self, pool: asyncpg.Pool, *, exchange: str, mode: str, prefix: str, account_currency: str):
        self.pool = pool
        self.exchange = exchange
        self.mode = mode
        self.prefix = prefix
        self.account_currency = account_currency

    async def next_client_order_ids(self, count: int) -> list[str]:
        """`count` fresh ids from the persistent sequence, in its order (a block: one round trip
        for many orders; ids a restart leaves unused are gaps, never repeats)."""
        numbers = await self.pool.fetch(
            "SELECT nextval('client_order_id_seq') AS n FROM generate_series(1, $1::int) ORDER BY 1", count
        )
        return [client_order_id(self.prefix, int(r["n"])) for r in numbers]

    async def open_order(self, order: ManagedOrder, intent: dict[str, Any], now_ms: int) -> None:
        """Commit one order row (see open_orders); sets its db_id."""
        await self.open_orders([(order, intent, now_ms)])

    async def open_orders(self, batch: Sequence[tuple[ManagedOrder, dict[str, Any], int]]) -> None:
        """The write-ahead: commit the orders' rows (status as each has it: PENDING_SUBMIT) in one
        statement, all or none, and set each order's db_id."""
        columns: list[list[Any]] = [[] for _ in range(13)]
        for order, intent, now_ms in batch:
            values = (
                order.client_order_id,
                order.exchange_order_id,
                order.symbol,
                order.side,
                order.order_type,
                "PO" if order.post_only else "GTC",
                order.post_only,
                order.status.value,
                order.quantity,
                order.limit_price,
                order.reason,
                json.dumps(intent),
                _ts(now_ms),
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
        rows = await self.pool.fetch(
            """
            INSERT INTO orders (client_order_id, exchange, exchange_order_id, symbol, mode, side, order_type,
                                time_in_force, post_only, status, quantity, limit_price, reason, intent,
                                created_at, submitted_at, updated_at)
            SELECT o.cid, $1, o.xid, o.symbol, $2, o.side, o.type, o.tif, o.post_only, o.status, o.quantity,
                   o.price, o.reason, o.intent::jsonb, o.at, o.at, o.at
            FROM unnest($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bool[],
                        $10::text[], $11::numeric[], $12::numeric[], $13::text[], $14::text[],
                        $15::timestamptz[])
                 AS o(cid, xid, symbol, side, type, tif, post_only, status, quantity, price, reason, intent, at)
            RETURNING id, client_order_id
            """,
            self.exchange,
            self.mode,
            *columns,
        )
        ids = {r["client_order_id"]: int(r["id"]) for r in rows}
        for order, _, _ in batch:
            order.db_id = ids[order.client_order_id]

    async def update_order(
        self, order: ManagedOrder | OrderRow, now_ms: int, conn: asyncpg.Connection | None = None
    ) -> None:
        row = order if isinstance(order, OrderRow) else OrderRow.of(order)
        target: Any = conn if conn is not None else self.pool
        await target.execute(
            """
            UPDATE orders SET status = $2, exchange_order_id = COALESCE($3, exchange_order_id), quantity = $9,
                   filled_quantity = $4, average_fill_price = $5, venue_message = COALESCE($6, venue_message),
                   updated_at = $7, closed_at = CASE WHEN $8 THEN COALESCE(closed_at, $7) END
            WHERE id = $1
            """,
            row.db_id,
            row.status,
            row.exchange_order_id,
            row.filled_quantity,
            row.average_fill_price,
            row.venue_message,
            _ts(now_ms),
            row.is_terminal,
            row.quantity,
        )

    async def record_fill(
        self,
        order: ManagedOrder | OrderRow,
        fill: FillReport,
        *,
        fee: Decimal,
        fee_currency: str,
        position: Position | PositionRow | None,
        closed: ClosedTrade | None,
        quote_to_account: Decimal,
        closing: Position | None = None,
    ) -> bool:
        """One fill and everything it changes, in one transaction; False when the venue trade id
        was recorded before (nothing is written then). `closing`: the position `closed` ended,
        whose row id an earlier write in line may have set after the trade was made."""
        order = order if isinstance(order, OrderRow) else OrderRow.of(order)
        if isinstance(position, Position):
            position = PositionRow.of(position)
        async with self.pool.acquire() as conn, conn.transaction():
            fill_id = await conn.fetchval(
                """
                INSERT INTO fills (order_id, exchange, venue_trade_id, symbol, side, price, quantity, fee,
                                   fee_currency, liquidity, filled_at, fee_quote)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                ON CONFLICT (exchange, venue_trade_id) DO NOTHING RETURNING id
                """,
                order.db_id,
                self.exchange,
                fill.trade_id,
                order.symbol,
                order.side,
                fill.price,
                fill.quantity,
                fee,
                fee_currency,
                fill.liquidity,
                _ts(fill.time_ms),
                fill.fee_quote,
            )
            if fill_id is None:
                return False
            await self.update_order(order, fill.time_ms, conn)
            inserted: int | None = None
            if position is not None:
                inserted = await self._save_position(conn, position, fill.time_ms)
            if closed is not None:
                if closed.position_id is None and closing is not None:
                    closed = replace(closed, position_id=closing.db_id)
                await self._close_position(conn, closed, quote_to_account)
        if inserted is not None and position is not None:
            # Only once committed: a rolled-back insert must not leave the position an id.
            position.ref.db_id = inserted
        return True

    async def _save_position(self, conn: asyncpg.Connection, row: PositionRow, now_ms: int) -> int | None:
        """Insert the position's row (returning its new id) or update it (returning None)."""
        position = row.ref
        values = (
            row.quantity,
            row.average_entry_price,
            row.size_multiplier,
            row.stop_price,
            row.take_profit_price,
            row.realised_pnl_quote,
            row.fees_quote,
        )
        if position.db_id is None:
            new_id: int = await conn.fetchval(
                """
                INSERT INTO positions (mode, exchange, symbol, quantity, average_entry_price, size_multiplier,
                                       stop_loss_price, take_profit_price, realised_pnl_quote, fees_quote,
                                       entry_order_id, opened_at, updated_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) RETURNING id
                """,
                self.mode,
                self.exchange,
                position.symbol,
                *values,
                position.entry.entry_order_id,
                _ts(position.opened_ms),
            )
            return new_id
        await conn.execute(
            """
            UPDATE positions SET quantity = $2, average_entry_price = $3, size_multiplier = $4,
                   stop_loss_price = $5, take_profit_price = $6, realised_pnl_quote = $7, fees_quote = $8,
                   exit_order_id = COALESCE($9, exit_order_id), updated_at = $10
            WHERE id = $1
            """,
            position.db_id,
            *values,
            row.exit_order_id,
            _ts(now_ms),
        )
        return None

    async def _close_position(
        self, conn: asyncpg.Connection, trade: ClosedTrade, quote_to_account: Decimal
    ) -> None:
        if trade.position_id is not None:
            await conn.execute(
                """
                UPDATE positions SET status = 'closed', quantity = 0, realised_pnl_quote = $2, fees_quote = $3,
                       exit_order_id = COALESCE($4, exit_order_id), closed_at = $5, updated_at = $5
                WHERE id = $1
                """,
                trade.position_id,
                trade.pnl_quote,
                trade.fees_quote,
                trade.exit_order_id,
                _ts(max(trade.exit_time_ms, trade.entry_time_ms)),
            )
        entry = trade.entry
        await conn.execute(
            """
            INSERT INTO trade_memory (mode, exchange, symbol, entry_time, exit_time, entry_price, exit_price,
                                      quantity, size_multiplier, pnl_quote, pnl_account, account_currency,
                                      pnl_bps, fees_quote, slippage_bps, entry_features, exit_reason,
                                      entry_regime, model_version, confidence, position_id, entry_order_id,
                                      exit_order_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20,
                    $21, $22, $23)
            """,
            self.mode,
            self.exchange,
            trade.symbol,
            _ts(trade.entry_time_ms),
            _ts(max(trade.exit_time_ms, trade.entry_time_ms)),
            trade.entry_price,
            trade.exit_price,
            trade.quantity,
            Decimal(str(entry.size_multiplier)),
            trade.pnl_quote,
            trade.pnl_quote * quote_to_account,
            self.account_currency,
            trade.pnl_bps,
            trade.fees_quote,
            trade.slippage_bps,
            list(entry.features) or [0.0],
            trade.exit_reason,
            entry.regime,
            entry.model_version,
            min(max(entry.confidence, 0.0), 1.0),
            trade.position_id,
            entry.entry_order_id,
            trade.exit_order_id,
        )

    # --- reading back ---------------------------------------------------------------------------
    async def working_orders(self) -> list[tuple[ManagedOrder, dict[str, Any]]]:
        rows = await self.pool.fetch(
            """
            SELECT o.*, COALESCE(array_agg(f.venue_trade_id) FILTER (WHERE f.id IS NOT NULL), '{}') AS trade_ids,
                   COALESCE(sum(f.price * f.quantity), 0) AS notional
            FROM orders o LEFT JOIN fills f ON f.order_id = o.id
            WHERE o.exchange = $1 AND o.mode = $2 AND o.status = ANY($3::text[])
            GROUP BY o.id ORDER BY o.id
            """,
            self.exchange,
            self.mode,
            [s.value for s in WORKING],
        )
        return [(self._order_of(r), json.loads(r["intent"])) for r in rows]

    @staticmethod
    def _order_of(row: asyncpg.Record) -> ManagedOrder:
        order = ManagedOrder(
            client_order_id=row["client_order_id"],
            symbol=row["symbol"],
            side=row["side"],
            order_type=row["order_type"],
            quantity=row["quantity"],
            limit_price=row["limit_price"],
            post_only=row["post_only"],
            reason=row["reason"],
            status=OrderStatus(row["status"]),
            exchange_order_id=row["exchange_order_id"],
            filled_quantity=row["filled_quantity"],
            fill_notional=row["notional"],
            db_id=row["id"],
            venue_message=row["venue_message"],
        )
        order.trade_ids.update(row["trade_ids"])
        order.created_ms = _ms(row["created_at"])
        return order

    async def open_positions(self) -> list[asyncpg.Record]:
        """Open positions with the entry order's intent and every fill since the position opened,
        oldest first: the book folds them back into positions. A position without any fill
        comes as one row with fill_id NULL, so it is reported, not lost."""
        return list(
            await self.pool.fetch(
                """
                SELECT p.id AS position_id, p.symbol, p.opened_at, p.entry_order_id, eo.intent AS entry_intent,
                       f.id AS fill_id, f.side, f.price, f.quantity, f.fee, f.fee_currency, f.fee_quote, f.filled_at,
                       o.id AS order_id, o.reason AS order_reason, o.intent AS order_intent
                FROM positions p
                JOIN orders eo ON eo.id = p.entry_order_id
                LEFT JOIN (fills f JOIN orders o ON o.id = f.order_id)
                     ON f.symbol = p.symbol AND f.exchange = p.exchange AND o.mode = p.mode
                     AND f.id >= COALESCE(
                         (SELECT min(id) FROM fills WHERE order_id = p.entry_order_id),
                         -- rows of builds that named a replaced maker entry: its first buy fill
                         (SELECT min(b.id) FROM fills b JOIN orders bo ON bo.id = b.order_id
                          WHERE b.symbol = p.symbol AND b.exchange = p.exchange AND bo.mode = p.mode
                                AND b.side = 'buy' AND b.filled_at >= p.opened_at))
                WHERE p.status = 'open' AND p.mode = $1 AND p.exchange = $2
                ORDER BY p.id, f.id
                """,
                self.mode,
                self.exchange,
            )
        )

    async def realised_since(self, since_ms: int) -> Decimal:
        value = await self.pool.fetchval(
            "SELECT COALESCE(sum(pnl_account), 0) FROM trade_memory WHERE mode = $1 AND exchange = $2 AND exit_time >= $3",
            self.mode,
            self.exchange,
            _ts(since_ms),
        )
        return Decimal(value)

    async def abandon_session(self, now_ms: int, why: str) -> tuple[int, int]:
        """Replay restarts history from its beginning: orders and positions of an earlier replay
        session cannot continue. Working orders become CANCELED and open positions closed (no
        trade is invented for them); returns how many of each."""
        async with self.pool.acquire() as conn, conn.transaction():
            orders = await conn.execute(
                "UPDATE orders SET status = 'CANCELED', venue_message = $3, updated_at = $4, closed_at = $4 "
                "WHERE exchange = $1 AND mode = $2 AND status = ANY($5::text[])",
                self.exchange,
                self.mode,
                why,
                _ts(now_ms),
                [s.value for s in WORKING],
            )
            positions = await conn.execute(
                "UPDATE positions SET status = 'closed', closed_at = GREATEST(opened_at, $3), updated_at = $3 "
                "WHERE exchange = $1 AND mode = $2 AND status = 'open'",
                self.exchange,
                self.mode,
                _ts(now_ms),
            )
        return int(orders.split()[-1]), int(positions.split()[-1])

    async def _order_where(self, condition: str, value: str) -> tuple[ManagedOrder, dict[str, Any]] | None:
        row = await self.pool.fetchrow(
            f"""
            SELECT o.*, COALESCE(array_agg(f.venue_trade_id) FILTER (WHERE f.id IS NOT NULL), '{{}}') AS trade_ids,
                   COALESCE(sum(f.price * f.quantity), 0) AS notional
            FROM orders o LEFT JOIN fills f ON f.order_id = o.id
            WHERE o.exchange = $1 AND o.mode = $2 AND {condition}
            GROUP BY o.id
            """,  # noqa: S608 (condition is one of two literals below)
            self.exchange,
            self.mode,
            value,
        )
        return None if row is None else (self._order_of(row), json.loads(row["intent"]))

    async def order_by_client_id(self, client_order_id: str) -> tuple[ManagedOrder, dict[str, Any]] | None:
        return await self._order_where("o.client_order_id = $3", client_order_id)

    async def order_by_exchange_id(
        self, exchange_order_id: str
    ) -> tuple[ManagedOrder, dict[str, Any]] | None:
        return await self._order_where("o.exchange_order_id = $3", exchange_order_id)

    async def net_base_by_symbol(self, bases: dict[str, str]) -> dict[str, Decimal]:
        """Per symbol, the coins our fills have left on the venue: bought, less base fees, less
        sold. `bases` maps symbol -> base asset. The ledger reconciliation compares balances with."""
        rows = await self.pool.fetch(
            """
            SELECT f.symbol,
                   sum(CASE WHEN f.side = 'buy' THEN f.quantity ELSE -f.quantity END) AS traded,
                   array_agg(f.fee) FILTER (WHERE f.side = 'buy') AS buy_fees,
                   array_agg(f.fee_currency) FILTER (WHERE f.side = 'buy') AS buy_fee_currencies
            FROM fills f JOIN orders o ON o.id = f.order_id
            WHERE f.exchange = $1 AND o.mode = $2 GROUP BY f.symbol
            """,
            self.exchange,
            self.mode,
        )
        net: dict[str, Decimal] = {}
        for row in rows:
            base = bases.get(row["symbol"])
            fees = zip(row["buy_fees"] or [], row["buy_fee_currencies"] or [], strict=True)
            net[row["symbol"]] = row["traded"] - sum(
                (fee for fee, asset in fees if asset == base), Decimal(0)
            )
        return net

    async def last_fill_ms(self, symbol: str) -> int | None:
        """Venue time of the newest fill recorded for `symbol` (None: none yet)."""
        value = await self.pool.fetchval(
            "SELECT max(f.filled_at) FROM fills f JOIN orders o ON o.id = f.order_id "
            "WHERE f.exchange = $1 AND o.mode = $2 AND f.symbol = $3",
            self.exchange,
            self.mode,
            symbol,
        )
        return None if value is None else _ms(value)

    async def known_trade_ids(self, trade_ids: list[str]) -> set[str]:
        rows = await self.pool.fetch(
            "SELECT venue_trade_id FROM fills WHERE exchange = $1 AND venue_trade_id = ANY($2::text[])",
            self.exchange,
            trade_ids,
        )
        return {r["venue_trade_id"] for r in rows}
