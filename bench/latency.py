"""End-to-end latency and replay throughput of the daemon's event path, on a real PostgreSQL.

1. Latency, 20 symbols: the daemon's decision step and trading task as wired by
   `trading_services` (DecisionService; TradingService with RiskGate, Executor, SimulatedVenue,
   OrderJournal) run as asyncio tasks. Per bar time the bench stores the 20 bars and publishes one
   CandleClosed on the candle topic, as the ingest does (with the next bar's opens, which the
   venue shows forming: the simulated venue fills the bar's market orders at them before the
   next bar closes), then waits until the trading task is done with it. Timed from the publish:
   the approved order at the executor (`Executor.place` entered, after the gate) and to the venue
   (just before `create_order`, after the journal's write-ahead), first and last order the
   decision step asked for in the bar; bars without one are not counted. The engine's own orders
   (stop-loss, take-profit, time exits, maker re-prices) reach the gate before the decision's
   (the decision is computed first) and are listed apart. Taker entries are the goal's path;
   maker entries follow. Streams: the 3 bundled real series from different offsets (as
   bench/inference.py).
   Model: an untrained policy whose head is biased to enter (and to exit about one bar in ten),
   sampled; the path is what is timed. Risk limits are raised so that entries are approved.
2. Replay throughput: `Daemon` in replay mode, until_end (replay venue -> ingest -> candle store ->
   decide -> gate -> executor -> journal), D days of the 3 bundled symbols, taker entries, the same
   model as champion: bar times x symbols / seconds from the first bar's trading to the last's end.

Stamps come from subclasses swapped onto the daemon's own objects (bench/latency_probe.py);
uvloop as `huracan run`; logging at warning; a throwaway private cluster. Prints a table, then
one JSON line.

    .venv/bin/python bench/latency.py [--bars N] [--days D]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import orjson
import torch
import uvloop
from latency_probe import BarTimes, Probe, TimedDecision, TimedExecutor, TimedTrading, TimedVenue, instrument

from huracan.agent.decide import PRIME_BARS, DecisionService
from huracan.config import ConfigSources, HuracanConfig, load_config
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import CandleSeries
from huracan.core.clock import ReplayClock
from huracan.core.events import CandleClosed
from huracan.core.timeframe import timeframe_ms
from huracan.daemon.app import Daemon
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import Liveness, RunningConfig, Service, ServiceContext
from huracan.daemon.services import ServiceDeps, build_services, trading_services
from huracan.exchange.replay import ReplayVenue
from huracan.execution.fill_model import FillCosts
from huracan.execution.service import TradingService
from huracan.execution.sim_venue import SimulatedVenue, replay_market_rules
from huracan.features.market import CostAssumptions
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH, STATE_SCHEMA
from huracan.logs import configure_logging
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.memory.candles import CandleStore
from huracan.memory.cluster import PrivateCluster
from huracan.memory.database import ensure_database, open_pool
from huracan.memory.migrate import apply_migrations, default_migrations_dir
from huracan.rl.checkpoint import save_checkpoint
from huracan.rl.env import EnvConfig
from huracan.rl.ppo import PPOConfig, checkpoint, make_policy
from huracan.rl.registry import ModelRegistry, model_dir_of
from huracan.rl.trainer import Features

N_SYMBOLS = 20
TIMEFRAME = "5m"
STEP_MS = timeframe_ms(TIMEFRAME)
BARS_PER_DAY = 86_400_000 // STEP_MS
WARM_BARS = 20  # published first and not counted: start-up, first allocations
GOAL_P99_MS = 1.0
# Policy head bias, by AgentAction: flat -> ENTER_LONG_SMALL with p ~0.87; long -> EXIT p ~0.1.
HEAD_BIAS = (0.0, 3.0, 0.0, 0.0, -2.2, 0.0)
OVERLAY = """\
exchange: {{mode: replay}}
universe: {{replay_data_dir: "{data}", backfill_days: 2}}
daemon: {{state_dir: "{state}"}}
agent: {{greedy: false}}
execution: {{maker_entries: false}}
logging: {{level: warning}}
risk: {{max_open_positions: 40, max_orders_per_minute: 100000, normal_position: 1000,
  daily_loss_limit: 1000000, circuit_breaker_loss: 1000000, daily_profit_target: null}}
"""
Streams = dict[str, CandleSeries]


# --- data, model, database ------------------------------------------------------------------------
def streams(bars: int) -> Streams:
    """20 real streams on the same bar times: the 3 bundled series from different offsets."""
    files = find_candle_files(BUNDLED_CANDLES_DIR, TIMEFRAME)
    sources = [read_candle_file(files[s]) for s in sorted(files)]
    times = sources[0].open_time_ms[:bars]
    out: Streams = {}
    for k in range(N_SYMBOLS):
        src, offset = sources[k % len(sources)], (k // len(sources)) * 1_000
        if offset + bars > len(src):
            raise SystemExit(f"--bars too many for the bundled data ({len(src) - offset} at most)")
        cut = slice(offset, offset + bars)
        prices = (src.open[cut], src.high[cut], src.low[cut], src.close[cut], src.volume[cut])
        out[f"S{k:02d}/USDT"] = CandleSeries("binance", f"S{k:02d}/USDT", TIMEFRAME, times, *prices)
    return out


def save_biased_model(data: Streams, path: Path) -> Path:
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(Features.of(data, CostAssumptions()).market.reshape(-1, MARKET_WIDTH))
    config = PPOConfig(seed=0)
    torch.manual_seed(0)
    policy = make_policy(STATE_SCHEMA.size, config)
    with torch.no_grad():
        policy.policy_head.bias.copy_(torch.tensor(HEAD_BIAS))
    env, state, schema = EnvConfig(bars_per_day=BARS_PER_DAY), normaliser.state(), STATE_SCHEMA
    saved = checkpoint(
        policy, None, env, config, schema_hash=schema.hash, feature_names=schema.names, normaliser=state
    )
    save_checkpoint(saved, path)
    return path


def slice_days(directory: Path, days: int) -> Path:
    """The first `days` days of each bundled file (as the tests' bundled_slice fixture)."""
    directory.mkdir(parents=True)
    for source in BUNDLED_CANDLES_DIR.glob(f"*_{TIMEFRAME}.csv"):
        lines = source.read_text().splitlines(keepends=True)
        if len(lines) < 1 + days * BARS_PER_DAY:
            raise SystemExit(f"--days {days}: the bundled files hold {(len(lines) - 1) // BARS_PER_DAY} days")
        (directory / source.name).write_text("".join(lines[: 1 + days * BARS_PER_DAY]))
    return directory


async def prepare(config: HuracanConfig, dsn: str, model: Path, version: str) -> asyncpg.Pool:
    """A migrated database with `model` registered as champion; returns a pool on it."""
    await ensure_database(dsn)
    pool = await open_pool(config.database, dsn)
    async with pool.acquire() as conn:
        await apply_migrations(conn, default_migrations_dir())
    registry = ModelRegistry(pool, model_dir_of(config))
    record = await registry.register(model, version=version, notes="bench/latency.py: biased, untrained")
    await registry.promote(record.version, expected_schema_hash=STATE_SCHEMA.hash)
    return pool


# --- 1. latency -----------------------------------------------------------------------------------
@dataclass(slots=True)
class LatencyRun:
    bars: list[BarTimes]
    published: int
    trade: TradingService


async def watch_bar(probe: Probe, tasks: Sequence[asyncio.Task[None]]) -> asyncio.Task[None]:
    """A task that ends when the trading task is done with the bar about to be published (with
    a service's error if one stops meanwhile). Started, and waiting, before the publish: the
    bench's own bookkeeping is not part of the time measured from it."""

    async def watch() -> None:
        waiter = asyncio.ensure_future(probe.done.wait())
        finished, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        if waiter not in finished:
            waiter.cancel()
            _ = [task.result() for task in finished]  # raises the service's error
            raise RuntimeError("a service stopped while a bar was in flight")

    watching = asyncio.create_task(watch())
    for _ in range(2):  # one turn for it to register its callbacks, one for its waiter to wait
        await asyncio.sleep(0)
    return watching


async def latency_run(config: HuracanConfig, pool: asyncpg.Pool, data: Streams, wanted: int) -> LatencyRun:
    symbols = tuple(data)
    times = data[symbols[0]].open_time_ms
    clock = ReplayClock(int(times[PRIME_BARS]), bar_ms=STEP_MS)
    source = ReplayVenue(data, clock)
    store = CandleStore(pool)
    await store.write([data[s].candle(i) for s in symbols for i in range(PRIME_BARS)])  # the history
    ingest = CandleIngest(IngestPlan(symbols, TIMEFRAME, 0, close_delay_ms=0), source, store, clock)
    markets = replay_market_rules(data)
    execution = config.execution
    costs = FillCosts.from_settings(execution, max_volume_share=Decimal(str(execution.max_volume_share)))
    probe = Probe()
    venue = instrument(SimulatedVenue(source.exchange_id, markets, costs, clock.now_ms), TimedVenue, probe)
    deps = ServiceDeps(config, pool, Notifier({}))
    services = trading_services(deps, ingest, store, venue, venue, markets, clock.now_ms)
    decide = instrument(next(s for s in services if isinstance(s, DecisionService)), TimedDecision, probe)
    trade = instrument(next(s for s in services if isinstance(s, TradingService)), TimedTrading, probe)
    instrument(trade.executor, TimedExecutor, probe)
    running, stopping, liveness = RunningConfig(config), asyncio.Event(), Liveness()
    tasks = [
        asyncio.create_task(s.run(ServiceContext(s.name, running, stopping, liveness)))
        for s in (decide, trade)
    ]
    counted = published = 0
    try:
        for i in range(PRIME_BARS, len(times)):
            open_ms = int(times[i])
            candles = {s: data[s].candle(i) for s in symbols}
            # As the ingest publishes a bar: with the next bar's open, which the venue shows forming.
            opens = {s: float(data[s].open[i + 1]) for s in symbols} if i + 1 < len(times) else {}
            await clock.sleep_until(open_ms + STEP_MS)
            await store.write(list(candles.values()))  # as the ingest: stored, then published
            probe.done.clear()
            watching = await watch_bar(probe, tasks)
            probe.begin(open_ms)
            await ingest.topic.publish(CandleClosed(TIMEFRAME, open_ms, candles, next_opens=opens))
            await watching
            published += 1
            if published > WARM_BARS and any(p.decided for p in probe.bars[-1].placements):
                counted += 1
                if counted >= wanted:
                    break
    finally:
        stopping.set()
        await asyncio.gather(*tasks)
    return LatencyRun(probe.bars[WARM_BARS:], published, trade)


def ms(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    p50, p99 = np.percentile(np.array(values) * 1e3, [50, 99])
    return float(p50), float(p99)


ROWS = (  # label, key in the JSON line
    ("publish -> first order at executor", "executor_first"),
    ("publish -> last order at executor", "executor_last"),
    ("publish -> first order to the venue", "venue_first"),
    ("publish -> last order to the venue", "venue_last"),
    ("  before decide(): fills, sync, marks", "before_decide"),
    ("  decide() alone: the intents, before the paper books", "decide_only"),
    ("  decide() done -> first order at executor: rules, gate", "decide_to_executor"),
    ("publish -> first rule order at executor", "rule_first"),
    ("publish -> trading task done with the bar", "bar_done"),
)


def measured(run: LatencyRun) -> list[BarTimes]:
    return [b for b in run.bars if any(p.decided for p in b.placements)]


def latency_figures(run: LatencyRun) -> dict[str, tuple[float, float]]:
    """p50, p99 in ms of each figure of ROWS, over the bars where the decision step placed an order."""
    out: dict[str, list[float]] = {key: [] for _, key in ROWS}
    for bar in run.bars:
        ruled = [p for p in bar.placements if not p.decided]
        if ruled:
            out["rule_first"].append(ruled[0].at - bar.published)
        out["bar_done"].append(bar.done - bar.published)
    for bar in measured(run):
        decided = [p for p in bar.placements if p.decided]
        first, last = decided[0], decided[-1]
        out["executor_first"].append(first.at - bar.published)
        out["executor_last"].append(last.at - bar.published)
        out["venue_first"].append(first.venue - bar.published)
        out["venue_last"].append(last.venue - bar.published)
        out["before_decide"].append(bar.decide_start - bar.published)
        out["decide_only"].append(bar.decide_end - bar.decide_start)
        out["decide_to_executor"].append(first.at - bar.decide_end)
    return {key: ms(values) for key, values in out.items()}


# --- 2. replay throughput -------------------------------------------------------------------------
@dataclass(slots=True)
class ReplayRun:
    status: int
    stream_s: float  # from the first bar's trading to the end of the last one's
    wall_s: float  # Daemon.run: database, migrations, backfill, the stream, shutdown
    ingest: CandleIngest
    trade: TradingService


async def replay_run(config: HuracanConfig, sources: ConfigSources) -> ReplayRun:
    probe = Probe()
    found: list[TradingService] = []

    async def services(deps: ServiceDeps, resources: contextlib.AsyncExitStack) -> list[Service]:
        built = await build_services(deps, resources)
        for service in built:
            if isinstance(service, TradingService):
                found.append(instrument(service, TimedTrading, probe))
        return built

    daemon = Daemon(config, sources, notifier=Notifier({}), services=services, until_end=True)
    started = time.perf_counter()
    status = await daemon.run()
    wall = time.perf_counter() - started
    ingest = next(s for s in daemon.services if isinstance(s, CandleIngest))
    return ReplayRun(status, probe.last_done - probe.first_start, wall, ingest, found[0])


def counts(trade: TradingService) -> dict[str, Any]:
    stats, gate = trade.executor.stats, trade.gate.stats
    found = (stats.placed, stats.fills, len(stats.trades), gate.approved, gate.denied)
    return dict(zip(("orders", "fills", "trades", "gate_approved", "gate_denied"), found, strict=True))


# --- main -----------------------------------------------------------------------------------------
async def bench(args: argparse.Namespace, root: Path, cluster: PrivateCluster) -> dict[str, Any]:
    overlay = root / "bench.yaml"
    data_dir = slice_days(root / "candles", args.days + 2)  # 2 days of backfill, then D days replayed
    overlay.write_text(OVERLAY.format(data=data_dir, state=root / "state"))

    def sources(db: str) -> ConfigSources:  # one database per run: a replay session owns its journal
        return ConfigSources(overlay=overlay, environ={"HURACAN_DATABASE__DSN": cluster.dsn(db)})

    data = streams(PRIME_BARS + 2 * max(args.bars, args.maker_bars) + WARM_BARS)
    model = save_biased_model(data, root / "biased.pt")
    runs: dict[str, LatencyRun | None] = {"taker": None, "maker": None}
    server = "?"
    for name, wanted in (("taker", args.bars), ("maker", args.maker_bars)):
        if wanted:
            config = load_config(sources(name))
            execution = config.execution.model_copy(update={"maker_entries": name == "maker"})
            config = config.model_copy(update={"execution": execution})
            pool = await prepare(config, cluster.dsn(name), model, f"bench-{name}")
            try:
                server = str(await pool.fetchval("SHOW server_version"))
                runs[name] = await latency_run(config, pool, data, wanted)
            finally:
                await pool.close()
    replay_config = load_config(sources("replay"))
    await (await prepare(replay_config, cluster.dsn("replay"), model, "bench-replay")).close()
    replay = await replay_run(replay_config, sources("replay"))
    if replay.status != 0:
        raise RuntimeError(f"the replay daemon exited with status {replay.status}")
    return {"server": server, **runs, "replay": replay}


def report(result: dict[str, Any], args: argparse.Namespace) -> None:
    taker: LatencyRun = result["taker"]
    maker: LatencyRun | None = result["maker"]
    replay: ReplayRun = result["replay"]
    t = latency_figures(taker)
    m = latency_figures(maker) if maker is not None else {}
    p99 = t["executor_first"][1]
    print(
        f"{N_SYMBOLS} symbols; {len(measured(taker)):,} bar times with an order from the decision step "
        f"({taker.published:,} published, the first {WARM_BARS} not counted); uvloop, 1 torch thread, "
        f"PostgreSQL {result['server']}"
    )
    print(f"{'latency, ms':<56}{'taker p50':>10}{'p99':>9}{'maker p50':>11}{'p99':>9}")
    for label, key in ROWS:
        print(
            f"{label:<56}{t[key][0]:>10.3f}{t[key][1]:>9.3f}"
            + (f"{m[key][0]:>11.3f}{m[key][1]:>9.3f}" if m else "")
        )
    print(
        f"goal: p99 <= {GOAL_P99_MS} ms, first order at the executor, taker: {'pass' if p99 <= GOAL_P99_MS else 'MISS'}"
    )
    runs = {
        "": counts(taker.trade),
        "maker_": counts(maker.trade) if maker else {},
        "replay_": counts(replay.trade),
    }
    for name, c in runs.items():
        if c:
            denied = ", ".join(f"{k} {v}" for k, v in sorted(c["gate_denied"].items())) or "none"
            print(
                f"{name.strip('_') or 'taker'} run: {c['orders']:,} orders, {c['fills']:,} fills, {c['trades']:,} "
                f"trades; gate approved {c['gate_approved']:,}, denied: {denied}"
            )
    symbols = len(replay.ingest.plan.symbols)
    candles = replay.ingest.stats.published * symbols
    rate = candles / replay.stream_s
    print(
        f"replay throughput (Daemon until_end, {args.days} days x {symbols} symbols, taker entries): "
        f"{candles:,} candles in {replay.stream_s:.2f} s = {rate:,.0f} candles/s; Daemon.run {replay.wall_s:.2f} s"
    )
    figures: dict[str, Any] = {
        "bench": "latency",
        "symbols": N_SYMBOLS,
        "bars_measured": len(measured(taker)),
    }
    figures |= {
        "bars_published": taker.published,
        "maker_bars_measured": len(measured(maker)) if maker else 0,
    }
    for prefix, figs in (("", t), ("maker_", m)):
        for key, (p50, p99_) in figs.items():
            figures |= {f"{prefix}{key}_p50_ms": round(p50, 4), f"{prefix}{key}_p99_ms": round(p99_, 4)}
    figures |= {"goal_p99_ms": GOAL_P99_MS, "goal_met": bool(p99 <= GOAL_P99_MS)}
    figures |= {name + k: v for name, c in runs.items() for k, v in c.items()}
    figures |= {"replay_days": args.days, "replay_symbols": symbols, "replay_candles": candles}
    figures |= {"candles_per_s": round(rate), "replay_stream_s": round(replay.stream_s, 3)}
    figures |= {"replay_wall_s": round(replay.wall_s, 3), "cpus": os.cpu_count()}
    figures |= {"python": platform.python_version(), "torch": torch.__version__, "torch_threads": 1}
    figures |= {"asyncpg": asyncpg.__version__, "postgres": result["server"]}
    print(orjson.dumps(figures).decode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=2_000, help="bar times with a decided order (taker)")
    parser.add_argument("--maker-bars", type=int, default=500, help="the same with maker entries; 0: skip")
    parser.add_argument("--days", type=int, default=20, help="days replayed through the daemon")
    args = parser.parse_args()
    configure_logging(level="warning")
    root = Path(tempfile.mkdtemp(prefix="huracan-bench-"))
    root.chmod(0o755)  # when we are root, the server runs as the postgres user
    cluster = PrivateCluster(root / "postgres")
    try:
        cluster.ensure_started()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(bench(args, root, cluster))
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(result, args)


if __name__ == "__main__":
    main()
