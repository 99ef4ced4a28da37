"""From candles to trades through the real commands: `huracan train` on real bundled bars
registers a champion, `huracan models list --json` shows it, and `huracan run --until-end`
decides with it on every bar after the warm-up and trades its intents through the risk gate and
the simulated venue into trade_memory."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

pytestmark = pytest.mark.db


def huracan(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huracan.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


def test_train_register_list_and_decide(
    db_dsn: str, tmp_path: Path, bundled_slice: Callable[[int], Path]
) -> None:
    data = bundled_slice(3)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HURACAN_DATABASE__DSN": db_dsn,
        "HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state"),
        "HURACAN_UNIVERSE__REPLAY_DATA_DIR": str(data),
        "HURACAN_UNIVERSE__BACKFILL_DAYS": "1",
        "HURACAN_LOGGING__FORMAT": "json",
        # Small enough for the suite: 3 days of bars, short episodes, a few thousand steps.
        "HURACAN_TRAINING__EPISODE_BARS": "64",
        "HURACAN_TRAINING__N_ENVS": "64",
        "HURACAN_TRAINING__TOTAL_STEPS": "8192",
        # Taker entries and a short time exit, so that three days of bars close trades.
        "HURACAN_EXECUTION__MAKER_ENTRIES": "false",
        "HURACAN_EXECUTION__MAX_HOLD_BARS": "12",
    }
    trained = huracan(["train", "--source", "files"], env)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    assert "training on 864 5m bars of BTC/USDT, ETH/USDT, SOL/USDT from the files" in trained.stderr
    assert "registered and promoted to champion" in trained.stdout

    listed = huracan(["models", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr[-3000:]
    models = json.loads(listed.stdout)
    assert [m["status"] for m in models] == ["active"]
    version = models[0]["version"]
    assert models[0]["artifact_sha256"]
    assert models[0]["metrics"]["train_env_steps"] >= 8192
    assert (tmp_path / "state" / "models" / f"{version}.pt").is_file()

    # A second model is registered as a candidate: the champion stays.
    again = huracan(["train", "--source", "files", "--seed", "8"], env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "registered as a candidate" in again.stdout

    run = huracan(["run", "--until-end"], env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    agent_line = next(line for line in run.stdout.splitlines() if line.startswith("agent:"))
    assert f"champion {version}" in agent_line
    # Day one is backfill (288 bars), read back to prime the features; the first complete row is
    # bar 335 of a history, so of the 576 replayed bar times the first 47 are not decided.
    decisions = int(agent_line.split(";")[1].split()[0])
    assert decisions == 3 * (576 - (335 - 288))
    # The champion's paper results reached model_performance (its paper rows), and agree with the summary.
    paper = agent_line.split("paper results: ")[1]
    rows = asyncio.run(performance(db_dsn))
    if "no paper trades closed" in paper:
        assert rows == []
    else:
        assert {r[0] for r in rows} == {version}
        assert f"{version}: {sum(r[1] for r in rows)} paper trades" in paper

    # The champion's intents were traded: the summary's trades are the trade_memory rows, each
    # with its closed position and its filled entry and exit orders.
    trading = next(line for line in run.stdout.splitlines() if line.startswith("trading:"))
    traded = int(trading.split()[1])
    assert traded > 0, trading
    memory = asyncio.run(trades(db_dsn))
    assert len(memory) == traded
    assert {r["model_version"] for r in memory} == {version}
    assert all(r["position_status"] == "closed" for r in memory)
    assert all(r["entry_status"] == r["exit_status"] == "FILLED" for r in memory)
    assert {r["exit_reason"] for r in memory} <= {"signal", "stop_loss", "take_profit", "time_exit"}
    assert all(len(r["entry_features"]) == 80 for r in memory)
    # Every order filled at the open of the bar after the one it was decided on, as in training
    # (ingestion runs ahead of the trading task; the fills must not drift with it).
    lags = asyncio.run(fill_lags_ms(db_dsn))
    assert lags
    assert set(lags) == {300_000}, sorted(set(lags))


async def fill_lags_ms(dsn: str) -> list[int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            """
            SELECT (extract(epoch FROM f.filled_at) * 1000)::bigint - (o.intent->>'bar_open_time_ms')::bigint AS lag
            FROM fills f JOIN orders o ON o.id = f.order_id
            WHERE o.mode = 'replay' AND (o.intent->>'bar_open_time_ms')::bigint > 0
            """
        )
    finally:
        await conn.close()
    return [int(r["lag"]) for r in rows]


async def trades(dsn: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(
            await conn.fetch(
                """
                SELECT t.model_version, t.exit_reason, t.entry_features, p.status AS position_status,
                       eo.status AS entry_status, xo.status AS exit_status
                FROM trade_memory t JOIN positions p ON p.id = t.position_id
                JOIN orders eo ON eo.id = t.entry_order_id JOIN orders xo ON xo.id = t.exit_order_id
                WHERE t.mode = 'replay'
                """
            )
        )
    finally:
        await conn.close()


async def performance(dsn: str) -> list[tuple[str, int, int]]:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetch(
            "SELECT model_version, trades, wins FROM model_performance WHERE source = 'paper' ORDER BY day"
        )
    finally:
        await conn.close()
    return [(r["model_version"], r["trades"], r["wins"]) for r in found]
