"""The schema's promises: constraints reject bad rows, money round-trips exactly, psql readers
find a comment on every table."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

pytestmark = pytest.mark.db

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


async def _insert_candle(conn: asyncpg.Connection, **overrides: Any) -> None:
    row: dict[str, Any] = {
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "timeframe": "5m",
        "open_time": T0,
        "open": Decimal("100"),
        "high": Decimal("110"),
        "low": Decimal("95"),
        "close": Decimal("105"),
        "volume": Decimal("12.5"),
    } | overrides
    await conn.execute(
        "INSERT INTO candles (exchange, symbol, timeframe, open_time, open, high, low, close, volume)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        *row.values(),
    )


async def _insert_order(conn: asyncpg.Connection, **overrides: Any) -> int:
    sequence_number = await conn.fetchval("SELECT nextval('client_order_id_seq')")
    row: dict[str, Any] = {
        "client_order_id": f"hur-{sequence_number}",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "mode": "shadow",
        "side": "buy",
        "order_type": "limit",
        "status": "NEW",
        "quantity": Decimal("0.01"),
        "limit_price": Decimal("65000.5"),
        "reason": "entry",
    } | overrides
    order_id: int = await conn.fetchval(
        "INSERT INTO orders (client_order_id, exchange, symbol, mode, side, order_type, status,"
        " quantity, limit_price, reason) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        *row.values(),
    )
    return order_id


async def _insert_fill(conn: asyncpg.Connection, order_id: int, venue_trade_id: str) -> None:
    await conn.execute(
        "INSERT INTO fills (order_id, exchange, venue_trade_id, symbol, side, price, quantity, fee,"
        " fee_currency, liquidity, filled_at) VALUES ($1, 'binance', $2, 'BTC/USDT', 'buy', 65000.5,"
        " 0.01, 0.65, 'USDT', 'maker', now())",
        order_id,
        venue_trade_id,
    )


async def _insert_trade(conn: asyncpg.Connection, **overrides: Any) -> int:
    row: dict[str, Any] = {
        "mode": "replay",
        "exchange": "binance",
        "symbol": "BTC/USDT",
        "entry_time": T0,
        "exit_time": T0 + timedelta(hours=2, minutes=5),
        "entry_price": Decimal("65000.12"),
        "exit_price": Decimal("65650.00"),
        "quantity": Decimal("0.015"),
        "size_multiplier": Decimal("1.5"),
        "pnl_quote": Decimal("9.7482"),
        "pnl_account": Decimal("7.701078"),
        "pnl_bps": 99.98,
        "fees_quote": Decimal("0.49"),
        "slippage_bps": 1.2,
        "entry_features": [0.1, -0.5, 1.25],
        "exit_reason": "take_profit",
        "entry_regime": "trending_up",
        "model_version": "ppo-0001",
        "confidence": 0.72,
    } | overrides
    columns = ", ".join(row)
    params = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    trade_id: int = await conn.fetchval(
        f"INSERT INTO trade_memory ({columns}) VALUES ({params}) RETURNING id", *row.values()
    )
    return trade_id


async def test_every_table_has_a_comment(db_conn: asyncpg.Connection) -> None:
    rows = await db_conn.fetch(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment FROM pg_class c"
        " WHERE c.relkind = 'r' AND c.relnamespace = current_schema()::regnamespace"
    )
    comments = {r["relname"]: r["comment"] for r in rows}
    # Which tables exist is test_migrations' business; here: every one of them is described.
    assert len(comments) >= 14
    assert [name for name, comment in comments.items() if not comment and name != "schema_migrations"] == []


async def test_candles_round_trip_exactly_and_reject_impossible_bars(db_conn: asyncpg.Connection) -> None:
    price = Decimal("67123.123456789012345678")
    await _insert_candle(db_conn, open=price, high=price, low=price, close=price, volume=Decimal("0"))
    stored = await db_conn.fetchrow("SELECT open, volume, open_time FROM candles")
    assert stored["open"] == price
    assert str(stored["open"]) == str(price)
    assert stored["open_time"] == T0

    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_candle(db_conn)  # same exchange, symbol, timeframe, open_time
    later = T0 + timedelta(minutes=5)
    with pytest.raises(asyncpg.CheckViolationError, match="candles_range"):
        await _insert_candle(db_conn, open_time=later, low=Decimal("120"))  # low above high
    with pytest.raises(asyncpg.CheckViolationError, match="candles_range"):
        await _insert_candle(db_conn, open_time=later, close=Decimal("111"))  # close above high
    with pytest.raises(asyncpg.CheckViolationError, match="candles_prices_positive"):
        await _insert_candle(db_conn, open_time=later, low=Decimal("0"))
    with pytest.raises(asyncpg.CheckViolationError, match="candles_volume_non_negative"):
        await _insert_candle(db_conn, open_time=later, volume=Decimal("-1"))
    nan = Decimal("NaN")
    with pytest.raises(asyncpg.CheckViolationError, match="candles_finite"):
        await _insert_candle(db_conn, open_time=later, open=nan, high=nan, low=nan, close=nan)
    with pytest.raises(asyncpg.CheckViolationError, match="candles_timeframe_check"):
        await _insert_candle(db_conn, open_time=later, timeframe="5 minutes")


async def test_orders_constraints(db_conn: asyncpg.Connection) -> None:
    order_id = await _insert_order(db_conn, client_order_id="hur-1")
    assert order_id > 0
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_order(db_conn, client_order_id="hur-1")
    with pytest.raises(asyncpg.CheckViolationError, match="orders_status_check"):
        await _insert_order(db_conn, status="DONE")
    with pytest.raises(asyncpg.CheckViolationError, match="orders_limit_has_price"):
        await _insert_order(db_conn, limit_price=None)
    with pytest.raises(asyncpg.CheckViolationError, match="orders_fill_within_quantity"):
        await db_conn.execute("UPDATE orders SET filled_quantity = 0.02 WHERE id = $1", order_id)
    first = await db_conn.fetchval("SELECT nextval('client_order_id_seq')")
    second = await db_conn.fetchval("SELECT nextval('client_order_id_seq')")
    assert second > first


async def test_fills_are_unique_per_venue_trade_and_need_their_order(db_conn: asyncpg.Connection) -> None:
    order_id = await _insert_order(db_conn)
    await _insert_fill(db_conn, order_id, "T-1001")
    with pytest.raises(asyncpg.UniqueViolationError, match="fills_venue_trade_unique"):
        await _insert_fill(db_conn, order_id, "T-1001")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _insert_fill(db_conn, order_id + 1000, "T-1002")
    fee = await db_conn.fetchval("SELECT fee FROM fills WHERE venue_trade_id = 'T-1001'")
    assert fee == Decimal("0.65")


async def test_one_open_position_per_symbol(db_conn: asyncpg.Connection) -> None:
    insert = (
        "INSERT INTO positions (mode, exchange, symbol, quantity, average_entry_price, opened_at)"
        " VALUES ($1, 'binance', 'BTC/USDT', 0.01, 65000, now())"
    )
    await db_conn.execute(insert, "shadow")
    await db_conn.execute(insert, "replay")  # another mode's book is separate
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_conn.execute(insert, "shadow")
    with pytest.raises(asyncpg.CheckViolationError, match="positions_closed_iff_closed_at"):
        await db_conn.execute("UPDATE positions SET status = 'closed' WHERE mode = 'shadow'")


async def test_trade_memory_derives_and_checks(db_conn: asyncpg.Connection) -> None:
    trade_id = await _insert_trade(db_conn)
    row = await db_conn.fetchrow(
        "SELECT is_win, hold_duration, pnl_account, entry_features FROM trade_memory WHERE id = $1", trade_id
    )
    assert row["is_win"] is True
    assert row["hold_duration"] == timedelta(hours=2, minutes=5)
    assert row["pnl_account"] == Decimal("7.701078")
    assert row["entry_features"] == pytest.approx([0.1, -0.5, 1.25], rel=1e-6)  # real[] is float32

    losing = await _insert_trade(db_conn, pnl_quote=Decimal("-3.2"), exit_reason="stop_loss")
    assert await db_conn.fetchval("SELECT is_win FROM trade_memory WHERE id = $1", losing) is False

    bad_rows: list[tuple[dict[str, Any], str]] = [
        ({"exit_reason": "bored"}, "trade_memory_exit_reason_check"),
        ({"win_quality": "GREAT"}, "trade_memory_win_quality_check"),
        ({"confidence": 1.5}, "trade_memory_confidence_check"),
        ({"mode": "paper"}, "trade_memory_mode_check"),
        ({"exit_time": T0 - timedelta(seconds=1)}, "trade_memory_exit_after_entry"),
        ({"pnl_quote": Decimal("NaN")}, "trade_memory_finite"),
    ]
    for overrides, constraint in bad_rows:
        with pytest.raises(asyncpg.CheckViolationError, match=constraint):
            await _insert_trade(db_conn, **overrides)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _insert_trade(db_conn, entry_order_id=999_999)


async def test_post_exit_tracking_needs_a_trade_and_one_row_per_horizon(db_conn: asyncpg.Connection) -> None:
    insert = (
        "INSERT INTO post_exit_tracking (trade_id, horizon, horizon_time, price_at_horizon, best_price,"
        " best_price_at, worst_price, worst_price_at, missed_profit_bps, should_have_held,"
        " should_have_exited_earlier) VALUES ($1, $2, now(), 66000, 66500, now(), 65400, now(), 12.5,"
        " true, false)"
    )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db_conn.execute(insert, 424242, "1h")
    trade_id = await _insert_trade(db_conn)
    await db_conn.execute(insert, trade_id, "1h")
    await db_conn.execute(insert, trade_id, "4h")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_conn.execute(insert, trade_id, "1h")
    with pytest.raises(asyncpg.CheckViolationError, match="post_exit_tracking_horizon_check"):
        await db_conn.execute(insert, trade_id, "2h")
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db_conn.execute("DELETE FROM trade_memory WHERE id = $1", trade_id)  # memory is not lost


async def test_analysis_tables(db_conn: asyncpg.Connection) -> None:
    trade_id = await _insert_trade(db_conn, pnl_quote=Decimal("-5"))
    insert = (
        "INSERT INTO loss_analysis (trade_id, primary_failure_reason, secondary_reasons, severity,"
        " preventable, misleading_features, confidence_penalty, regime_changed)"
        " VALUES ($1, $2, $3, 'moderate', true, ARRAY['rsi_14'], 0.2, true)"
    )
    with pytest.raises(asyncpg.CheckViolationError, match="loss_analysis_primary_failure_reason_check"):
        await db_conn.execute(insert, trade_id, "bad_luck", [])
    with pytest.raises(asyncpg.CheckViolationError, match="loss_analysis_secondary_reasons_check"):
        await db_conn.execute(insert, trade_id, "regime_change", ["bad_luck"])
    await db_conn.execute(insert, trade_id, "stop_too_tight", ["costs_exceeded_move"])
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_conn.execute(insert, trade_id, "regime_change", [])

    win_id = await _insert_trade(db_conn)
    await db_conn.execute(
        "INSERT INTO win_analysis (trade_id, win_quality, skill_score) VALUES ($1, 'EARLY_EXIT', 0.8)", win_id
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await db_conn.execute(
            "INSERT INTO win_analysis (trade_id, win_quality) VALUES ($1, 'SPLENDID')", trade_id
        )


async def test_pattern_library_and_model_tables(db_conn: asyncpg.Connection) -> None:
    pattern_id = await db_conn.fetchval(
        "INSERT INTO pattern_library (centroid, occurrences, wins, losses, win_rate, reliability,"
        " optimal_size_multiplier) VALUES ($1, 10, 6, 3, 0.6, 0.4, 1.5) RETURNING pattern_id",
        [0.25, 0.5],
    )
    assert await _insert_trade(db_conn, pattern_id=pattern_id) > 0
    with pytest.raises(asyncpg.CheckViolationError, match="pattern_library_outcomes_within_occurrences"):
        await db_conn.execute("UPDATE pattern_library SET wins = 8 WHERE pattern_id = $1", pattern_id)

    perf = "INSERT INTO model_performance (model_version, day, trades, wins, losses) VALUES ($1, $2, 4, 3, 1)"
    await db_conn.execute(perf, "ppo-0001", date(2025, 3, 1))
    await db_conn.execute(perf, "ppo-0001", date(2025, 3, 2))
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_conn.execute(perf, "ppo-0001", date(2025, 3, 1))

    register = (
        "INSERT INTO model_registry (version, status, state_schema_hash, artifact_path)"
        " VALUES ($1, $2, 'h1', $1 || '.pt')"
    )
    await db_conn.execute(register, "ppo-0001", "active")
    await db_conn.execute(register, "ppo-0002", "shadow")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_conn.execute(register, "ppo-0003", "active")  # one active model at a time
    with pytest.raises(asyncpg.CheckViolationError, match="model_registry_status_check"):
        await db_conn.execute(register, "ppo-0004", "champion")


async def test_daemon_state_upsert_and_event_tables(db_pool: asyncpg.Pool) -> None:
    upsert = (
        "INSERT INTO daemon_state (key, value) VALUES ($1, $2::jsonb)"
        " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()"
    )
    await db_pool.execute(upsert, "trading_state", '{"state": "ACTIVE"}')
    await db_pool.execute(upsert, "trading_state", '{"state": "HALTED"}')
    assert await db_pool.fetchval("SELECT value->>'state' FROM daemon_state") == "HALTED"

    await db_pool.execute(
        "INSERT INTO risk_events (mode, decision, reason_code, symbol, intent, risk_score)"
        " VALUES ('shadow', 'rejected', 'daily_loss_limit', 'BTC/USDT', '{\"action\": 2}', 0.9)"
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute(
            "INSERT INTO risk_events (mode, decision, reason_code) VALUES ('shadow', 'rejected', 'Bad Code')"
        )
    with pytest.raises(asyncpg.CheckViolationError, match="health_events_severity_check"):
        await db_pool.execute(
            "INSERT INTO health_events (component, event, severity, message)"
            " VALUES ('ingest', 'stale_candles', 'panic', 'no candle for 15 minutes')"
        )
