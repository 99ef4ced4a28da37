"""`huracan halt | reduce | resume | state`: the operator's hand on the trading state.

The state lives in the database (daemon_state), so the command works whether the daemon runs
or not; a running daemon picks the change up within seconds (it polls) and acts on it: HALTED
cancels every open order of its symbols on the venue, REDUCING cancels working entries.
`resume` also resets the circuit breaker: its loss count starts again from now.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from huracan.config import HuracanConfig
from huracan.exit_codes import EX_OK, EX_SOFTWARE, EX_UNAVAILABLE
from huracan.risk.portfolio import TradingState

COMMANDS = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.ACTIVE}


def add_state_parsers(commands: Any, parents: list[argparse.ArgumentParser]) -> None:
    for name, state in COMMANDS.items():
        sub = commands.add_parser(name, parents=parents, help=f"set the trading state to {state.value}")
        sub.add_argument("--reason", default="operator", help="why (recorded in risk_events)")
    commands.add_parser("state", parents=parents, help="show the trading state")


async def cmd_state(config: HuracanConfig, args: argparse.Namespace) -> int:
    from huracan.memory.database import DatabaseUnavailable, SchemaNotCurrent, open_command_pool
    from huracan.risk.state_store import load_state, set_state

    try:
        pool = await open_command_pool(config.database, config.daemon.state_dir)
    except (DatabaseUnavailable, SchemaNotCurrent, OSError) as exc:
        print(f"huracan {args.command}: the database is not available: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    try:
        if args.command in COMMANDS:
            state = COMMANDS[args.command]
            await set_state(
                pool,
                state,
                reason=args.reason,
                by="operator",
                mode=config.exchange.mode,
                now_ms=time.time_ns() // 1_000_000,
                reset_breaker=state is TradingState.ACTIVE,
            )
        record = await load_state(pool, config.exchange.mode)
    except Exception as exc:
        print(f"huracan {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    finally:
        await pool.close()
    print(
        f"trading state ({config.exchange.mode}): {record.state.value} "
        f"(by {record.by or 'default'}: {record.reason or '-'})"
    )
    return EX_OK
