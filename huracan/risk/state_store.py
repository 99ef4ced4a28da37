"""The trading state and the risk journal in PostgreSQL, so a restart keeps a halt.

`daemon_state` holds, per mode (replay, shadow, live: a halted live account must not stop a
backtest, nor a backtest's breaker halt live trading), "trading_state:<mode>" ({"state",
"reason", "by", "since"}) and "breaker_reset:<mode>" ({"at": epoch ms}): the circuit breaker
counts losses from that moment, so an operator's `huracan resume` after a breaker halt starts
the count again. Every change of state and every denial is a `risk_events` row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from huracan.core.intents import OrderIntent
from huracan.risk.portfolio import TradingState


def state_key(mode: str) -> str:
    return f"trading_state:{mode}"


def breaker_key(mode: str) -> str:
    return f"breaker_reset:{mode}"


@dataclass(frozen=True, slots=True)
class StateRecord:
    state: TradingState
    reason: str
    by: str
    since_ms: int
    breaker_reset_ms: int


def intent_json(intent: OrderIntent) -> dict[str, Any]:
    return {
        "symbol": intent.symbol,
        "action": intent.action.name,
        "side": intent.side,
        "size_multiplier": intent.size_multiplier,
        "bar_open_time_ms": intent.bar_open_time_ms,
        "reference_price": str(intent.reference_price),
        "model_version": intent.model_version,
        "confidence": intent.confidence,
        "reason": intent.reason,
        "shadow": intent.shadow,
    }


async def load_state(pool: asyncpg.Pool, mode: str) -> StateRecord:
    rows = await pool.fetch(
        "SELECT key, value FROM daemon_state WHERE key = ANY($1::text[])",
        [state_key(mode), breaker_key(mode)],
    )
    values = {r["key"]: json.loads(r["value"]) for r in rows}
    state = values.get(state_key(mode), {})
    try:
        trading = TradingState(state.get("state", TradingState.ACTIVE.value))
    except ValueError:
        # A hand-edited row that names no state: the safe reading is HALTED.
        trading = TradingState.HALTED
    return StateRecord(
        trading,
        str(state.get("reason", "")),
        str(state.get("by", "")),
        int(state.get("since", 0)),
        int(values.get(breaker_key(mode), {}).get("at", 0)),
    )


async def set_state(
    pool: asyncpg.Pool,
    state: TradingState,
    *,
    reason: str,
    by: str,
    mode: str,
    now_ms: int,
    reset_breaker: bool = False,
) -> None:
    """Persist `state` and log it in risk_events, in one transaction."""
    value = json.dumps({"state": state.value, "reason": reason, "by": by, "since": now_ms})
    decision = "resumed" if state is TradingState.ACTIVE else "halted"
    # An operator's words go to the detail; the engine's own reasons are codes already.
    code = "operator" if by == "operator" or not reason.replace("_", "").isalnum() else reason
    async with pool.acquire() as tx, tx.transaction():
        await tx.execute(
            "INSERT INTO daemon_state (key, value, updated_at) VALUES ($1, $2::jsonb, now()) "
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            state_key(mode),
            value,
        )
        if reset_breaker:
            await tx.execute(
                "INSERT INTO daemon_state (key, value, updated_at) VALUES ($1, $2::jsonb, now()) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
                breaker_key(mode),
                json.dumps({"at": now_ms}),
            )
        await tx.execute(
            "INSERT INTO risk_events (occurred_at, mode, decision, reason_code, detail) VALUES ($1, $2, $3, $4, $5)",
            datetime.fromtimestamp(now_ms / 1000, UTC),
            mode,
            decision,
            code.lower(),
            f"{state.value} by {by}: {reason}",
        )


async def record_denial(
    pool: asyncpg.Pool,
    *,
    mode: str,
    intent: OrderIntent,
    decision: str,
    reason_code: str,
    risk_score: float,
    detail: str,
    now_ms: int,
) -> None:
    await pool.execute(
        "INSERT INTO risk_events (occurred_at, mode, decision, reason_code, symbol, intent, risk_score, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8)",
        datetime.fromtimestamp(now_ms / 1000, UTC),
        mode,
        decision,
        reason_code,
        intent.symbol,
        json.dumps(intent_json(intent)),
        risk_score,
        detail,
    )
