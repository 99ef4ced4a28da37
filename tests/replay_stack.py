"""The replay harness of the execution tests: the daemon's own trading task (build_trading)
over the simulated venue, real bundled candles and a real PostgreSQL, driven bar by bar as the
daemon drives it (see Replay.bar)."""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import asyncpg

from huracan.config import HuracanConfig
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.bus import Topic
from huracan.core.candle import CandleSeries
from huracan.core.events import CandleClosed
from huracan.core.intents import (
    AgentAction,
    BarDecided,
    OrderIntent,
)
from huracan.core.numbers import decimal_of
from huracan.daemon.service import Liveness, RunningConfig, ServiceContext
from huracan.daemon.services import build_trading
from huracan.execution.fill_model import FillCosts
from huracan.execution.positions import Position
from huracan.execution.service import TradingService
from huracan.execution.sim_venue import SimulatedVenue, replay_market_rules
from huracan.market.candle_files import read_candle_file
from huracan.risk.portfolio import TradingState

BTC, ETH = "BTC/USDT", "ETH/USDT"
EXCHANGE = "binance"
STEP = 300_000
BPS = Decimal(10_000)
RATE = Decimal("0.79")  # risk.quote_to_account_rate's default
BAR_TIMEOUT_S = 20.0

Decide = Callable[[int], Sequence[OrderIntent]]


# --- data and configuration -----------------------------------------------------------------


@functools.cache
def series_of(symbol: str) -> CandleSeries:
    return read_candle_file(BUNDLED_CANDLES_DIR / f"binance_{symbol.replace('/', '-')}_5m.csv")


def open_ms(symbol: str, index: int) -> int:
    return int(series_of(symbol).open_time_ms[index])


def price(symbol: str, index: int, field: Literal["open", "high", "low", "close", "volume"]) -> Decimal:
    column = getattr(series_of(symbol), field)
    return decimal_of(float(column[index]))


def contiguous(symbols: Sequence[str], first: int, last: int) -> bool:
    """Bars first..last of every symbol are one bar apart and at the same times."""
    times = [open_ms(symbols[0], i) for i in range(first, last + 1)]
    if any(b - a != STEP for a, b in itertools.pairwise(times)):
        return False
    return all(open_ms(s, i) == times[i - first] for s in symbols for i in range(first, last + 1))


def config_of(
    *,
    mode: Literal["replay", "shadow"] = "replay",
    symbols: Sequence[str] = (BTC,),
    risk: dict[str, Any] | None = None,
    execution: dict[str, Any] | None = None,
) -> HuracanConfig:
    """Generous limits, taker entries and exits that never fire unless a test asks for them."""
    return HuracanConfig.model_validate(
        {
            "exchange": {"mode": mode},
            "universe": {"symbols": list(symbols)},
            "risk": {
                "max_heat_pct": 100.0,
                "daily_loss_limit": "1000000000",
                "circuit_breaker_loss": "1000000000",
                "daily_profit_target": None,
                "max_orders_per_minute": 1000,
                "max_open_positions": 3,
                **(risk or {}),
            },
            "execution": {
                "maker_entries": False,
                # Far below any price these bars reach, yet a positive stop price (10_000 would be a
                # stop at 0, which the config refuses).
                "stop_loss_bps": 9_999.0,
                "take_profit_bps": 10_000.0,  # twice the entry price: not within these bars
                "max_hold_bars": 1_000_000_000,
                **(execution or {}),
            },
        }
    )


def intent(action: AgentAction, symbol: str, index: int) -> OrderIntent:
    """What the decision step sends for `action` decided on bar `index`'s close."""
    return OrderIntent.from_action(
        action,
        symbol=symbol,
        bar_open_time_ms=open_ms(symbol, index),
        reference_price=price(symbol, index, "close"),
        model_version="replay-test",
        confidence=0.8,
        state=(0.25, -0.5, 1.0),
        regime="trend",
    )


def nothing(_index: int) -> Sequence[OrderIntent]:
    return ()


# --- the harness -----------------------------------------------------------------------------


class Clock:
    """Replay time, set by the harness to the close of the bar being handled."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass(slots=True)
class Replay:
    config: HuracanConfig
    pool: asyncpg.Pool
    symbols: tuple[str, ...]
    clock: Clock
    venue: SimulatedVenue
    service: TradingService
    ctx: ServiceContext
    next_opens: bool = False  # each bar comes with the next bar's open, as the ingest gives it

    @classmethod
    def build(
        cls, config: HuracanConfig, pool: asyncpg.Pool, *, start: int, next_opens: bool = False
    ) -> Replay:
        """A trading service over a fresh simulated venue; the clock at bar `start`'s open (the
        close of the bar before it)."""
        symbols = tuple(config.universe.symbols)
        markets = replay_market_rules({s: series_of(s) for s in symbols})
        execution = config.execution
        costs = FillCosts.from_settings(execution, max_volume_share=Decimal(str(execution.max_volume_share)))
        clock = Clock(open_ms(symbols[0], start))
        venue = SimulatedVenue(EXCHANGE, markets, costs, clock)
        intents: asyncio.Queue[OrderIntent | BarDecided] = asyncio.Queue()
        service = build_trading(
            config,
            pool,
            venue=venue,
            simulated=venue,
            markets=markets,
            now_ms=clock,
            exchange_id=EXCHANGE,
            symbols=symbols,
            timeframe="5m",
            candles=Topic[CandleClosed]("candles"),
            intents=intents,
        )
        ctx = ServiceContext("trade", RunningConfig(config), asyncio.Event(), Liveness())
        return cls(config, pool, symbols, clock, venue, service, ctx, next_opens)

    async def start(self) -> None:
        """As TradingService.run starts (replay's earlier-session clean-up aside)."""
        service = self.service
        await service.gate.start(fresh_session=service.fresh_session)
        await service.reconciler.reconcile_at_start()
        service.gate.reconciled = True

    async def bar(self, index: int, decide: Decide = nothing) -> None:
        """Bar `index` of every symbol closes. `decide` runs once the book has taken the bar (as
        the decision step waits for positions_ready) and returns the bar's intents."""
        opened = open_ms(self.symbols[0], index)
        assert all(open_ms(s, index) == opened for s in self.symbols)
        self.clock.now = opened + STEP
        following = index + 1 < len(series_of(self.symbols[0]))
        opens = {
            s: float(series_of(s).open[index + 1]) for s in self.symbols if self.next_opens and following
        }
        event = CandleClosed(
            "5m", opened, {s: series_of(s).candle(index) for s in self.symbols}, next_opens=opens
        )
        handling = asyncio.create_task(self.service.on_bar(event, self.ctx))
        ready = asyncio.create_task(self.service.positions_ready(opened))
        done, _ = await asyncio.wait({handling, ready}, timeout=BAR_TIMEOUT_S, return_when="FIRST_COMPLETED")
        if handling in done:
            ready.cancel()
            handling.result()  # raises what on_bar raised before the book took the bar
            raise AssertionError("on_bar returned before the decision step's marker")
        assert ready in done, "the book never took the bar"
        for item in decide(index):
            await self.service.intents.put(item)
        await self.service.intents.put(BarDecided(opened))
        await asyncio.wait_for(handling, BAR_TIMEOUT_S)

    @property
    def book_positions(self) -> dict[str, Position]:
        return self.service.executor.book.positions


def trading_state(replay: Replay) -> TradingState:
    return replay.service.gate.state


async def rows(pool: asyncpg.Pool, query: str, *args: Any) -> list[asyncpg.Record]:
    return list(await pool.fetch(query, *args))
