"""Which services the daemon runs, built from the configuration: the one place that wires the
venue, the market data, the agent, (later) the risk gate and the executors together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg

from huracan.agent.decide import DecisionService
from huracan.agent.models import ModelSlots
from huracan.agent.performance import PerformanceRecorder
from huracan.agent.positions import NoPatternMemory
from huracan.config import HuracanConfig
from huracan.core.clock import WallClock
from huracan.core.intents import OrderIntent
from huracan.core.timeframe import timeframe_ms
from huracan.daemon.heartbeat import Heartbeat
from huracan.daemon.intent_drain import IntentDrain
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import Service
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.replay import ReplayVenue
from huracan.features.market import CostAssumptions
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.market.universe import check_universe
from huracan.memory.candles import CandleStore
from huracan.rl.env import EnvConfig
from huracan.rl.registry import ModelRegistry, model_dir_of


@dataclass(frozen=True, slots=True)
class ServiceDeps:
    config: HuracanConfig
    pool: asyncpg.Pool
    notifier: Notifier
    # Called by the replay when its data is exhausted; None keeps the daemon up, idle.
    on_replay_end: Callable[[], None] | None = None


async def build_services(deps: ServiceDeps, resources: AsyncExitStack) -> list[Service]:
    """The services for the configured mode. Resources they hold (the exchange client) are
    entered on `resources`, so they close after the services have stopped."""
    config = deps.config
    services: list[Service] = [Heartbeat(deps.pool, deps.notifier)]
    universe = config.universe
    store = CandleStore(deps.pool)
    if config.exchange.mode == "replay":
        venue = ReplayVenue.from_directory(
            universe.replay_data_dir,
            universe.symbols,
            universe.timeframe,
            backfill_days=universe.backfill_days,
            bars_per_second=universe.replay_speed,
        )
        # Replay bars are settled history: no need to wait for the venue after a bar closes.
        plan = IngestPlan(
            tuple(universe.symbols), universe.timeframe, universe.backfill_days, close_delay_ms=0
        )
        ingest = CandleIngest(plan, venue, store, venue.clock, on_exhausted=deps.on_replay_end)
        return [*services, ingest, *agent_services(deps, ingest, store)]
    # shadow and live: market data from the exchange. Orders (simulated in shadow, real in live)
    # come with the execution issue; until then both modes ingest and publish market data only.
    adapter = await resources.enter_async_context(ExchangeAdapter(config.exchange))
    await check_universe(adapter, universe.symbols)
    plan = IngestPlan(tuple(universe.symbols), universe.timeframe, universe.backfill_days)
    ingest = CandleIngest(plan, adapter, store, WallClock())
    return [*services, ingest, *agent_services(deps, ingest, store)]


def agent_services(deps: ServiceDeps, ingest: CandleIngest, store: CandleStore) -> list[Service]:
    """The decision step on the bars `ingest` publishes, and the consumer of its intents. Until
    the execution issue lands, the intents are only recorded and each model's paper book is
    its position context."""
    config = deps.config
    intents: asyncio.Queue[OrderIntent] = asyncio.Queue(config.agent.intent_queue_size)
    bars_per_day = max(1, 86_400_000 // timeframe_ms(ingest.plan.timeframe))
    execution = config.execution
    decide = DecisionService(
        exchange_id=ingest.source.exchange_id,
        symbols=ingest.plan.symbols,
        timeframe=ingest.plan.timeframe,
        candles=ingest.topic,
        store=store,
        models=ModelSlots(ModelRegistry(deps.pool, model_dir_of(config)), ingest.plan.symbols, bars_per_day),
        positions=None,  # no executor keeps a position book yet: the champion's paper book stands in
        patterns=NoPatternMemory(),
        intents=intents,
        cost=CostAssumptions(
            taker_fee_bps=execution.taker_fee_bps,
            half_spread_bps=execution.half_spread_bps,
            slippage_bps=execution.slippage_bps,
        ),
        paper_rules=EnvConfig(
            fee_bps=execution.taker_fee_bps,
            half_spread_bps=execution.half_spread_bps,
            slippage_bps=execution.slippage_bps,
            bars_per_day=bars_per_day,
        ),
        # Each symbol's paper account stands for the per-symbol position cap, in quote currency.
        recorder=PerformanceRecorder(
            equity_quote=config.risk.position_cap / config.risk.quote_to_account_rate,
            quote_to_account=config.risk.quote_to_account_rate,
        ),
    )
    return [decide, IntentDrain(intents)]
