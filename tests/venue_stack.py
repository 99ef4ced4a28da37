"""The live trading stack over the emulator, for the tests that fault, crash and reconcile it:
the daemon's own build_trading over the exchange adapter (the real ccxt client) and a stepped
clock (the only thing mocked: waits are instant, time moves when a test says)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import asyncpg

from huracan.config import HuracanConfig
from huracan.core.bus import Topic
from huracan.core.events import CandleClosed
from huracan.core.intents import AgentAction, BarDecided, OrderIntent
from huracan.daemon.services import build_trading
from huracan.exchange.adapter import ExchangeAdapter
from huracan.execution.service import TradingService
from huracan.testing.emulator import RunningEmulator

SYMBOLS = ("BTC/USDT", "ETH/USDT")
TIMEOUT_S = 0.25


class SteppedClock:
    def __init__(self, start_ms: int) -> None:
        self.now = start_ms

    def __call__(self) -> int:
        return self.now


def config_for(emulator: RunningEmulator, seed: int, *, maker: bool) -> HuracanConfig:
    return HuracanConfig.model_validate(
        {
            "exchange": {
                "mode": "live",
                "live_opt_in": True,
                "api_url": emulator.url,
                "api_key": "emulator-key",
                "api_secret": "emulator-secret",
                "request_timeout_s": TIMEOUT_S,
                "retry_attempts": 3,
                "retry_cap_s": 0.01,
            },
            "universe": {"symbols": list(SYMBOLS)},
            "risk": {"max_open_positions": 2, "max_orders_per_minute": 1000},
            "execution": {
                "maker_entries": maker,
                "reprice_after_s": 1.0,
                "max_reprices": 1,
                "order_timeout_s": 5.0,
                "client_order_prefix": f"s{seed}",
            },
        }
    )


async def instant(_seconds: float) -> None:
    await asyncio.sleep(0)


def build(
    config: HuracanConfig,
    pool: asyncpg.Pool,
    adapter: ExchangeAdapter,
    clock: SteppedClock,
    markets: Any,
    exchange: str,
) -> TradingService:
    intents: asyncio.Queue[OrderIntent | BarDecided] = asyncio.Queue()
    service = build_trading(
        config,
        pool,
        venue=adapter,
        simulated=None,
        markets=markets,
        now_ms=clock,
        exchange_id=exchange,
        symbols=SYMBOLS,
        timeframe="5m",
        candles=Topic[CandleClosed]("candles"),
        intents=intents,
    )
    service.reconciler.retry_wait_s = 0.0
    return service


def entry(symbol: str, price: Decimal) -> OrderIntent:
    return OrderIntent.from_action(
        AgentAction.ENTER_LONG_SMALL,
        symbol=symbol,
        bar_open_time_ms=0,
        reference_price=price,
        model_version="faults",
        confidence=0.9,
    )


def exit_of(symbol: str, price: Decimal) -> OrderIntent:
    return OrderIntent.from_action(
        AgentAction.EXIT_POSITION,
        symbol=symbol,
        bar_open_time_ms=0,
        reference_price=price,
        model_version="faults",
        confidence=0.9,
    )
