"""Which services the daemon runs, built from the configuration: the one place that wires the
venue, the market data, (later) the agent, the risk gate and the executors together."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg

from huracan.config import HuracanConfig
from huracan.core.clock import WallClock
from huracan.daemon.heartbeat import Heartbeat
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import Service
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.replay import ReplayVenue
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.market.universe import check_universe
from huracan.memory.candles import CandleStore


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
        services.append(CandleIngest(plan, venue, store, venue.clock, on_exhausted=deps.on_replay_end))
        return services
    # shadow and live: market data from the exchange. Orders (simulated in shadow, real in live)
    # come with the execution issue; until then both modes ingest and publish market data only.
    adapter = await resources.enter_async_context(ExchangeAdapter(config.exchange))
    await check_universe(adapter, universe.symbols)
    plan = IngestPlan(tuple(universe.symbols), universe.timeframe, universe.backfill_days)
    services.append(CandleIngest(plan, adapter, store, WallClock()))
    return services
