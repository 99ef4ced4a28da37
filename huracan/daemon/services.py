"""Which services the daemon runs, built from the configuration: the one place that wires the
venue, the market data, the agent, the risk gate and the executor together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal

import asyncpg

from huracan.agent.decide import DecisionService
from huracan.agent.models import ModelSlots
from huracan.agent.performance import PerformanceRecorder
from huracan.analysis.learning import LearningService
from huracan.config import HuracanConfig
from huracan.core.bus import Topic
from huracan.core.clock import Clock, WallClock
from huracan.core.events import CandleClosed
from huracan.core.intents import BarDecided, OrderIntent
from huracan.core.timeframe import timeframe_ms
from huracan.daemon.heartbeat import Heartbeat
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import Service
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.models import MarketRules
from huracan.exchange.replay import ReplayVenue
from huracan.execution.executor import Executor
from huracan.execution.fill_model import FillCosts
from huracan.execution.journal import OrderJournal
from huracan.execution.maker import MakerRules
from huracan.execution.positions import PositionBook
from huracan.execution.reconcile import Reconciler
from huracan.execution.service import TradingService
from huracan.execution.sim_venue import SimulatedVenue, replay_market_rules
from huracan.execution.venue import Venue
from huracan.features.market import CostAssumptions
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.market.universe import check_universe
from huracan.memory.candles import CandleStore
from huracan.memory.embedding import EntryEmbedder
from huracan.memory.learning_store import LearningStore
from huracan.memory.setups import NearestSetups
from huracan.risk.gate import RiskGate
from huracan.risk.manager import RiskManager
from huracan.risk.rates import TickerSource, single_quote
from huracan.rl.env import EnvConfig
from huracan.rl.registry import ModelRegistry, model_dir_of


@dataclass(frozen=True, slots=True)
class ServiceDeps:
    config: HuracanConfig
    pool: asyncpg.Pool
    notifier: Notifier
    # Called by the replay when its data is exhausted; None keeps the daemon up, idle.
    on_replay_end: Callable[[], None] | None = None
    # Market time of shadow and live (None: the wall clock). Another clock is for running the
    # daemon against a venue whose market time is not wall time (the emulator's, in chaos runs).
    clock: Clock | None = None


async def build_services(deps: ServiceDeps, resources: AsyncExitStack) -> list[Service]:
    """The services for the configured mode. Resources they hold (the exchange client) are
    entered on `resources`, so they close after the services have stopped."""
    config = deps.config
    services: list[Service] = [Heartbeat(deps.pool, deps.notifier)]
    universe = config.universe
    store = CandleStore(deps.pool)
    costs = FillCosts.from_settings(
        config.execution, max_volume_share=Decimal(str(config.execution.max_volume_share))
    )
    if config.exchange.mode == "replay":
        replay = ReplayVenue.from_directory(
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
        ingest = CandleIngest(plan, replay, store, replay.clock, on_exhausted=deps.on_replay_end)
        markets = replay_market_rules({s: replay.series[s] for s in universe.symbols})
        simulated = SimulatedVenue(replay.exchange_id, markets, costs, replay.clock.now_ms)
        trading = trading_services(deps, ingest, store, simulated, simulated, markets, replay.clock.now_ms)
        return [*services, ingest, *trading]
    # shadow and live: market data from the exchange; shadow fills simulated, live fills real.
    clock = deps.clock if deps.clock is not None else WallClock()
    # The adapter's clock only tells which bars have closed; requests are signed with ccxt's own.
    adapter = await resources.enter_async_context(ExchangeAdapter(config.exchange, now_ms=clock.now_ms))
    await check_universe(adapter, universe.symbols)
    all_markets = await adapter.load_markets()
    markets = {s: all_markets[s] for s in universe.symbols}
    plan = IngestPlan(tuple(universe.symbols), universe.timeframe, universe.backfill_days)
    ingest = CandleIngest(plan, adapter, store, clock)
    if config.exchange.mode == "shadow":
        simulated = SimulatedVenue(adapter.exchange_id, markets, costs, clock.now_ms)
        return [
            *services,
            ingest,
            *trading_services(deps, ingest, store, simulated, simulated, markets, clock.now_ms),
        ]
    return [*services, ingest, *trading_services(deps, ingest, store, adapter, None, markets, clock.now_ms)]


def trading_services(
    deps: ServiceDeps,
    ingest: CandleIngest,
    store: CandleStore,
    venue: Venue,
    simulated: SimulatedVenue | None,
    markets: dict[str, MarketRules],
    now_ms: Callable[[], int],
    rates: TickerSource | None = None,
) -> list[Service]:
    """The decision step on the bars `ingest` publishes, the trading task (the risk gate over
    the intent queue, the executor, the position book) that trades its intents, and the
    learning task that folds the closed trades into the pattern memory the decision step reads."""
    config = deps.config
    execution = config.execution
    rate = config.risk.quote_to_account_rate
    intents: asyncio.Queue[OrderIntent | BarDecided] = asyncio.Queue(config.agent.intent_queue_size)
    bars_per_day = max(1, 86_400_000 // timeframe_ms(ingest.plan.timeframe))
    trading = build_trading(
        config,
        deps.pool,
        venue=venue,
        simulated=simulated,
        markets=markets,
        now_ms=now_ms,
        exchange_id=ingest.source.exchange_id,
        symbols=ingest.plan.symbols,
        timeframe=ingest.plan.timeframe,
        candles=ingest.topic,
        intents=intents,
        rates=rates,
    )
    embedder = EntryEmbedder.default()
    setups = NearestSetups(embedder, k=config.memory.pattern_neighbours)
    learning = LearningService(
        LearningStore(deps.pool, exchange=ingest.source.exchange_id),
        store,
        setups,
        timeframe=ingest.plan.timeframe,
        horizons=[f"{h}h" for h in config.memory.post_exit_horizons_h],
        neighbours=config.memory.pattern_neighbours,
        batch=config.memory.write_batch_size,
        embedder=embedder,
        upstream_stopped=trading.stopped,
        fresh_replay=config.exchange.mode == "replay",
        mode=config.exchange.mode,
        equity_quote=config.risk.capital / rate,
    )
    trading.executor.on_closed = learning.note_closed
    if config.exchange.mode == "replay":
        # The replay clock moves when the ingest publishes: one bar at a time, so the order path
        # (signal lifetimes, maker re-pricing, order times) never sees the next bar's time early.
        ingest.settled = trading.bar_traded
    decide = DecisionService(
        exchange_id=ingest.source.exchange_id,
        symbols=ingest.plan.symbols,
        timeframe=ingest.plan.timeframe,
        candles=ingest.topic,
        store=store,
        models=ModelSlots(ModelRegistry(deps.pool, model_dir_of(config)), ingest.plan.symbols, bars_per_day),
        positions=trading.executor.book,
        patterns=learning.view,
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
            equity_quote=config.risk.position_cap / rate,
            quote_to_account=rate,
            symbols=len(ingest.plan.symbols),
        ),
        positions_ready=trading.positions_ready,
        # Replay: a bar is decided with the loss analyses live would know by its close.
        patterns_ready=learning.ready_for if config.exchange.mode == "replay" else None,
    )
    return [decide, trading, learning]


def build_trading(
    config: HuracanConfig,
    pool: asyncpg.Pool,
    *,
    venue: Venue,
    simulated: SimulatedVenue | None,
    markets: dict[str, MarketRules],
    now_ms: Callable[[], int],
    exchange_id: str,
    symbols: tuple[str, ...],
    timeframe: str,
    candles: Topic[CandleClosed],
    intents: asyncio.Queue[OrderIntent | BarDecided],
    rates: TickerSource | None = None,
) -> TradingService:
    """The trading task over `venue`: journal, position book, executor, risk gate, reconciler.
    `simulated` is the venue when it is the simulated one (replay, shadow), None live; `rates`
    the market data source of the account currency's rate (None: the configured rate)."""
    risk, execution = config.risk, config.execution
    mode = config.exchange.mode
    rate = risk.quote_to_account_rate
    single_quote({m.quote for m in markets.values()})
    step_ms = timeframe_ms(timeframe)
    book = PositionBook(
        capital_quote=risk.capital / rate,
        stop_loss_bps=Decimal(str(execution.stop_loss_bps)),
        take_profit_bps=Decimal(str(execution.take_profit_bps)),
    )
    journal = OrderJournal(
        pool,
        exchange=exchange_id,
        mode=mode,
        prefix=execution.client_order_prefix,
        account_currency=risk.account_currency,
    )
    costs = FillCosts.from_settings(execution)
    executor = Executor(
        venue,
        journal,
        book,
        markets=markets,
        quote_to_account=rate,
        now_ms=now_ms,
        order_timeout_s=execution.order_timeout_s,
        taker_cost_bps=costs.taker_fee_bps + costs.half_spread_bps + costs.slippage_bps,
        maker_fee_bps=costs.maker_fee_bps,
        step_ms=step_ms,
        fee_rates=rates,
    )
    gate = RiskGate(
        RiskManager.from_settings(risk, execution, normal_position=risk.normal_position),
        executor,
        pool,
        mode=mode,
        symbols=symbols,
        capital=risk.capital,
        quote_to_account=rate,
        timezone=risk.trading_day_timezone,
        maker_entries=execution.maker_entries,
        maker=MakerRules(
            offset_bps=Decimal(str(execution.maker_offset_bps)),
            reprice_after_ms=int(execution.reprice_after_s * 1000),
            max_reprices=execution.max_reprices,
            taker_fallback=execution.taker_fallback,
            signal_ttl_ms=int(execution.signal_ttl_s * 1000),
        ),
        flatten_on_breaker=risk.flatten_on_circuit_breaker,
        account_currency=risk.account_currency,
    )
    return TradingService(
        gate,
        candles=candles,
        intents=intents,
        symbols=symbols,
        step_ms=step_ms,
        simulated=simulated,
        reconciler=Reconciler(
            executor,
            symbols,
            live=simulated is None,
            unknown_orders=execution.unknown_venue_orders,
            prefix=execution.client_order_prefix,
        ),
        max_hold_bars=execution.max_hold_bars,
        poll_interval_s=execution.order_poll_interval_s,
        balances_interval_s=execution.reconcile_balances_interval_s,
        # Replay waits for every decision (bar order is the point of a replay); live lets exits
        # go on when the decision step is late by more than a fifth of a bar.
        decision_wait_s=None if mode == "replay" else step_ms / 5000,
        fresh_session=mode == "replay",
        rates=rates,
    )
