"""Kill -9 chaos: the live trading stack in a worker process, killed at random points, restarted.

    python -m huracan.testing.chaos --kills 200 [--seed 1]        # make chaos

The runner starts the loopback emulator in a process of its own (market time moving at
`--speed` bars per second, so resting orders fill while the worker runs) and a private
PostgreSQL, then again and again starts a worker, lets it trade for a random while and sends it
SIGKILL: no finally block, no rollback but the database's own. Each worker begins as the daemon
does after a crash: the journal restored, the venue reconciled, and only then orders.

The worker is the daemon's live code path (huracan.daemon.services.build_trading: risk gate,
executor, journal, reconciler over the exchange adapter and the real ccxt client), fed random
entries and exits instead of the agent's decisions (the agent adds nothing to what a crash can
do to orders). A last worker reconciles and checks, against the venue's own records:
- no duplicate orders (a client order id is at most one venue order),
- no orphans (every venue order is in the journal; every open one is tracked as working),
- no lost or double-counted fills (every venue trade is recorded once; each order's recorded
  fills add up to what the venue executed),
- balances equal the journal's ledger.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from huracan.config import HuracanConfig
from huracan.config.settings import BUNDLED_CANDLES_DIR

SYMBOLS = ("BTC/USDT", "ETH/USDT")


def chaos_config(url: str, prefix: str = "chaos") -> HuracanConfig:
    return HuracanConfig.model_validate(
        {
            "exchange": {
                "mode": "live",
                "live_opt_in": True,
                "api_url": url,
                "api_key": "emulator-key",
                "api_secret": "emulator-secret",
                "request_timeout_s": 2.0,
                "retry_attempts": 3,
                "retry_cap_s": 0.2,
            },
            "universe": {"symbols": list(SYMBOLS)},
            "risk": {"max_open_positions": 2, "max_orders_per_minute": 10_000},
            "execution": {"reprice_after_s": 0.5, "max_reprices": 2, "client_order_prefix": prefix},
        }
    )


# --- the worker -----------------------------------------------------------------------------------
async def worker(url: str, dsn: str, seed: int, steps: int, verify: bool) -> dict[str, Any]:
    from huracan.core.bus import Topic
    from huracan.core.clock import WallClock
    from huracan.core.events import CandleClosed
    from huracan.core.intents import AgentAction, BarDecided, OrderIntent
    from huracan.daemon.services import build_trading
    from huracan.exchange.adapter import ExchangeAdapter
    from huracan.exchange.errors import ExchangeError
    from huracan.memory.database import create_pool

    config = chaos_config(url)
    rng = random.Random(seed)
    pool = await create_pool(dsn, min_size=1, max_size=4, command_timeout=30)
    try:
        async with ExchangeAdapter(config.exchange, enable_ccxt_rate_limit=False) as adapter:
            all_markets = await adapter.load_markets()
            markets = {s: all_markets[s] for s in SYMBOLS}
            intents: asyncio.Queue[OrderIntent | BarDecided] = asyncio.Queue()
            service = build_trading(
                config,
                pool,
                venue=adapter,
                simulated=None,
                markets=markets,
                now_ms=WallClock().now_ms,
                exchange_id=adapter.exchange_id,
                symbols=SYMBOLS,
                timeframe="5m",
                candles=Topic[CandleClosed]("candles"),
                intents=intents,
            )
            gate, executor = service.gate, service.executor
            await gate.start()
            await service.reconciler.reconcile_at_start()
            gate.reconciled = True
            print(json.dumps({"reconciled": True, "working": len(executor.orders)}), flush=True)
            if verify:
                return await verify_against_venue(adapter, pool, service, adapter.exchange_id)
            for step in range(steps):
                symbol = rng.choice(SYMBOLS)
                try:
                    price = (await adapter.fetch_ticker(symbol)).last
                    executor.book.last_prices[symbol] = price
                    action = AgentAction.EXIT_POSITION if rng.random() < 0.4 else AgentAction.ENTER_LONG_SMALL
                    gate.maker_entries = rng.random() < 0.5
                    await gate.handle(
                        OrderIntent.from_action(
                            action,
                            symbol=symbol,
                            bar_open_time_ms=0,
                            reference_price=price,
                            model_version="chaos",
                            confidence=0.9,
                        )
                    )
                    await executor.sync()
                    await gate.maintain_makers()
                    await executor.flush()  # as the daemon's poll does
                except ExchangeError as exc:
                    print(json.dumps({"step": step, "error": str(exc)}), flush=True)
                print(json.dumps({"step": step}), flush=True)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
            return {"steps": steps}
    finally:
        await pool.close()


async def verify_against_venue(
    adapter: Any, pool: asyncpg.Pool, service: Any, exchange: str
) -> dict[str, Any]:
    client = adapter._client  # the raw ccxt client: the checker reads the venue's own records
    journal = {
        r["client_order_id"]
        for r in await pool.fetch("SELECT client_order_id FROM orders WHERE exchange = $1", exchange)
    }
    fills = await pool.fetch(
        "SELECT f.venue_trade_id, f.quantity, o.client_order_id FROM fills f JOIN orders o ON o.id = f.order_id "
        "WHERE f.exchange = $1",
        exchange,
    )
    recorded = {r["venue_trade_id"]: r for r in fills}
    summed: dict[str, Decimal] = {}
    for r in fills:
        summed[r["client_order_id"]] = summed.get(r["client_order_id"], Decimal(0)) + r["quantity"]
    problems: list[str] = []
    venue_orders = 0
    venue_trades = 0
    for symbol in SYMBOLS:
        orders = await client.fetch_orders(symbol, None, 1000)
        venue_orders += len(orders)
        seen: dict[str, int] = {}
        for order in orders:
            cid = order.get("clientOrderId")
            seen[cid] = seen.get(cid, 0) + 1
            if cid not in journal:
                problems.append(f"orphan venue order {cid}")
            if order.get("status") == "open" and cid not in service.executor.orders:
                problems.append(f"open venue order {cid} not tracked as working")
            filled = Decimal(str(order.get("filled") or 0))
            if summed.get(cid, Decimal(0)) != filled:
                problems.append(
                    f"{cid}: journal fills {summed.get(cid, Decimal(0))}, venue executed {filled}"
                )
        problems.extend(f"duplicate venue orders for {cid}: {n}" for cid, n in seen.items() if n > 1)
        trades = await client.fetch_my_trades(symbol, 0, 1000)
        venue_trades += len(trades)
        problems.extend(f"untracked venue fill {t['id']}" for t in trades if str(t["id"]) not in recorded)
    if len(recorded) != len(fills):
        problems.append("a venue trade id is recorded twice")
    ledger = await service.executor.journal.net_base_by_symbol(
        {s: service.executor.markets[s].base for s in SYMBOLS}
    )
    balances = await adapter.fetch_balances()
    for symbol in SYMBOLS:
        base = service.executor.markets[symbol].base
        held = balances[base].total if base in balances else Decimal(0)
        if held != ledger.get(symbol, Decimal(0)):
            problems.append(
                f"{symbol}: venue holds {held}, the journal's fills {ledger.get(symbol, Decimal(0))}"
            )
    return {
        "venue_orders": venue_orders,
        "venue_trades": venue_trades,
        "journal_orders": len(journal),
        "journal_fills": len(fills),
        "problems": problems,
    }


# --- the runner -----------------------------------------------------------------------------------
@dataclass
class ChaosResult:
    kills: int
    killed_mid_step: int
    verification: dict[str, Any]
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.verification.get("problems") and "error" not in self.verification


def _python() -> list[str]:
    return [sys.executable, "-m", "huracan.testing.chaos"]


def start_emulator(data_dir: Path, speed: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "huracan.testing.emulator", "--data", str(data_dir), "--speed", str(speed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise RuntimeError(f"the emulator did not start: {url!r}")
    return process, url


def run_chaos(
    dsn: str, *, kills: int, seed: int, data_dir: Path, speed: float = 20.0, log: Any = None
) -> ChaosResult:
    """Start the emulator, kill `kills` workers at random points, then verify with a last one."""
    rng = random.Random(seed)
    started = time.monotonic()
    emulator, url = start_emulator(data_dir, speed)
    mid_step = 0
    env = {**os.environ, "HURACAN_LOGGING__LEVEL": "warning"}
    try:
        for kill in range(kills):
            worker = subprocess.Popen(
                [
                    *_python(),
                    "worker",
                    "--url",
                    url,
                    "--dsn",
                    dsn,
                    "--seed",
                    str(seed * 100_003 + kill),
                    "--steps",
                    "1000",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            assert worker.stdout is not None
            first = worker.stdout.readline()  # reconciled: from here on it trades
            if not first:
                worker.wait()
                raise RuntimeError(f"worker {kill} died before reconciling (exit {worker.returncode})")
            time.sleep(rng.uniform(0.05, 1.5))
            worker.send_signal(signal.SIGKILL)
            out, _ = worker.communicate()
            mid_step += int(bool(out) and not out.endswith("\n"))
            if log is not None:
                log(f"kill {kill + 1}/{kills}: after {out.count(chr(10))} lines")
        verify = subprocess.run(
            [*_python(), "worker", "--url", url, "--dsn", dsn, "--seed", "0", "--verify"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=False,
        )
        lines = [line for line in verify.stdout.splitlines() if line.startswith("{")]
        verification = json.loads(lines[-1]) if lines else {"error": verify.stderr[-2000:]}
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    return ChaosResult(kills, mid_step, verification, time.monotonic() - started)


def chaos_data_dir(target: Path, rows: int = 3000) -> Path:
    for symbol in SYMBOLS:
        name = f"binance_{symbol.replace('/', '-')}_5m.csv"
        lines = (BUNDLED_CANDLES_DIR / name).read_text().splitlines()[: rows + 1]
        (target / name).write_text("\n".join(lines) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m huracan.testing.chaos", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    work = sub.add_parser("worker")
    work.add_argument("--url", required=True)
    work.add_argument("--dsn", required=True)
    work.add_argument("--seed", type=int, default=0)
    work.add_argument("--steps", type=int, default=1000)
    work.add_argument("--verify", action="store_true")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "worker":
        from huracan.logs import configure_logging

        configure_logging(level="warning", stream=sys.stderr)
        result = asyncio.run(worker(args.url, args.dsn, args.seed, args.steps, args.verify))
        print(json.dumps(result, default=str), flush=True)
        return 0 if not result.get("problems") else 1
    return _run_standalone(args.kills, args.seed)


def _run_standalone(kills: int, seed: int) -> int:
    from huracan.memory.cluster import PrivateCluster
    from huracan.memory.database import ensure_database
    from huracan.memory.migrate import apply_migrations, default_migrations_dir

    with tempfile.TemporaryDirectory(prefix="huracan-chaos-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 (the server runs as the postgres user and must enter it)
        cluster = PrivateCluster(root / "postgres")
        cluster.ensure_started()
        try:
            dsn = cluster.dsn("chaos")

            async def prepare() -> None:
                await ensure_database(dsn)
                conn = await asyncpg.connect(dsn)
                try:
                    await apply_migrations(conn, default_migrations_dir())
                finally:
                    await conn.close()

            asyncio.run(prepare())
            data = root / "candles"
            data.mkdir()
            result = run_chaos(dsn, kills=kills, seed=seed, data_dir=chaos_data_dir(data), log=print)
        finally:
            cluster.stop()
    print(json.dumps({"kills": result.kills, "seconds": round(result.seconds, 1), **result.verification}))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
