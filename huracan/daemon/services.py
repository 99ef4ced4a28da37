"""Which services the daemon runs, built from the configuration: the one place that wires the
venue, the market data, (later) the agent, the risk gate and the executors together."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from huracan.config import HuracanConfig
from huracan.daemon.heartbeat import Heartbeat
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import FatalError, Service
from huracan.exchange.replay import ReplayVenue
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.memory.candles import CandleStore


@dataclass(frozen=True, slots=True)
class ServiceDeps:
    config: HuracanConfig
    pool: asyncpg.Pool
    notifier: Notifier
    # Called by the replay when its data is exhausted; None keeps the daemon up, idle.
    on_replay_end: Callable[[], None] | None = None


def build_services(deps: ServiceDeps) -> list[Service]:
    config = deps.config
    services: list[Service] = [Heartbeat(deps.pool, deps.notifier)]
    universe = config.universe
    plan = IngestPlan(tuple(universe.symbols), universe.timeframe, universe.backfill_days)
    if config.exchange.mode == "replay":
        venue = ReplayVenue.from_directory(
            universe.replay_data_dir,
            universe.symbols,
            universe.timeframe,
            backfill_days=universe.backfill_days,
            bars_per_second=universe.replay_speed,
        )
        # Replay bars are settled history: no need to wait for the venue after a bar closes.
        plan = IngestPlan(plan.symbols, plan.timeframe, plan.backfill_days, close_delay_ms=0)
        services.append(
            CandleIngest(plan, venue, CandleStore(deps.pool), venue.clock, on_exhausted=deps.on_replay_end)
        )
        return services
    raise FatalError(
        f"exchange.mode {config.exchange.mode!r} needs the exchange adapter, which is not wired into the "
        "daemon yet; use mode 'replay'"
    )
