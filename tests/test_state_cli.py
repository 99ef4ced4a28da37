"""`huracan halt | reduce | resume | state` against PostgreSQL: the state is per mode, survives
in the database, is logged in risk_events, and `resume` restarts the circuit breaker's count."""

from __future__ import annotations

import argparse
from pathlib import Path

import asyncpg
import pytest

from huracan.config import ConfigSources, HuracanConfig, load_config
from huracan.exit_codes import EX_OK
from huracan.risk.portfolio import TradingState
from huracan.risk.state_cli import add_state_parsers, cmd_state
from huracan.risk.state_store import load_state

pytestmark = pytest.mark.db

BASE = Path(__file__).resolve().parents[1] / "config" / "base.yaml"


def make_config(tmp_path: Path, dsn: str, mode: str = "replay") -> HuracanConfig:
    return load_config(
        ConfigSources(
            base=BASE,
            overlay=None,
            environ={
                "HURACAN_DATABASE__DSN": dsn,
                "HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state"),
                "HURACAN_EXCHANGE__MODE": mode,
            },
        )
    )


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="huracan")
    add_state_parsers(parser.add_subparsers(dest="command"), parents=[])
    return parser.parse_args(list(argv))


async def test_halt_reduce_resume_per_mode(
    tmp_path: Path, db_dsn: str, db_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    replay = make_config(tmp_path, db_dsn)
    shadow = make_config(tmp_path, db_dsn, mode="shadow")
    assert (await load_state(db_pool, "replay")).state is TradingState.ACTIVE

    assert await cmd_state(replay, parse("halt", "--reason", "news")) == EX_OK
    assert "HALTED" in capsys.readouterr().out
    halted = await load_state(db_pool, "replay")
    assert (halted.state, halted.by, halted.reason) == (TradingState.HALTED, "operator", "news")
    # Another mode's state is its own.
    assert (await load_state(db_pool, "shadow")).state is TradingState.ACTIVE
    assert await cmd_state(shadow, parse("reduce")) == EX_OK
    assert (await load_state(db_pool, "shadow")).state is TradingState.REDUCING
    assert (await load_state(db_pool, "replay")).state is TradingState.HALTED

    assert await cmd_state(replay, parse("resume")) == EX_OK
    resumed = await load_state(db_pool, "replay")
    assert resumed.state is TradingState.ACTIVE
    assert resumed.breaker_reset_ms > 0  # the breaker counts losses from now on
    assert await cmd_state(replay, parse("state")) == EX_OK
    assert "replay): ACTIVE" in capsys.readouterr().out

    assert (
        await db_pool.fetchval("SELECT detail FROM risk_events ORDER BY id LIMIT 1")
        == "HALTED by operator: news"
    )
    events = await db_pool.fetch("SELECT mode, decision, reason_code FROM risk_events ORDER BY id")
    assert [(e["mode"], e["decision"], e["reason_code"]) for e in events] == [
        ("replay", "halted", "operator"),
        ("shadow", "halted", "operator"),
        ("replay", "resumed", "operator"),
    ]
