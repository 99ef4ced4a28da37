"""A loopback exchange emulator: the part of Binance's spot REST API that ccxt's `binance` uses.

Run it on its own with ``python -m huracan.testing.emulator --port P --data DIR``, or in a
test::

    emulator = await start_emulator(EmulatorConfig(data_dir=path))
    exchange = ccxt.async_support.binance({"apiKey": "emulator-key", "secret": "emulator-secret",
        "enableRateLimit": False, "options": SPOT_ONLY_OPTIONS})
    point_at(exchange, emulator.url)          # huracan.exchange.urls
    ...
    emulator.advance(3)                       # three bars of market time pass; resting orders fill
    await exchange.close(); await emulator.close()

It serves the candle files in `data_dir` (only bars closed before `now_ms`), a synthetic book
around the last close, an account with balances that move with fills, and a seeded fault
schedule (`emulator.faults`, replaceable at runtime).

What ccxt 4.5's `binance` raises for each error and fault of the emulator (checked by
tests/test_emulator*.py; note: ccxt maps 429 to DDoSProtection, not RateLimitExceeded):

| emulator answer | ccxt exception |
| --- | --- |
| 429 + Retry-After, -1003 (HTTP_429) | DDoSProtection (binance.handle_errors; not RateLimitExceeded) |
| 418 + Retry-After, -1003 (HTTP_418) | DDoSProtection |
| 500 / 502 / 503 text body (HTTP_5XX) | ExchangeNotAvailable |
| 504 text body (HTTP_5XX status=504) | RequestTimeout |
| connection closed, no response (CONNECTION_RESET) | ExchangeNotAvailable; but aiohttp silently retries a GET once on a kept-alive connection, so one reset of a GET is invisible (two in a row raise); POST is not retried |
| hang past ccxt's `timeout` (TIMEOUT_BEFORE/AFTER_ACCEPT) | RequestTimeout (after: the order exists) |
| 200 with a truncated body (MALFORMED_JSON) | NO ccxt error: ticker/ohlcv/order come back with None fields (order id None, info a str); fetch_open_orders raises a bare AttributeError |
| previous body again (DUPLICATE_RESPONSE) | no error: the previous order comes back (compare clientOrderId) |
| shuffled klines (OUT_OF_ORDER) | no error: fetch_ohlcv sorts them again; single bodies are an older response |
| -1021 timestamp outside recvWindow | InvalidNonce |
| -1022 bad signature (HTTP 400) | AuthenticationError |
| -2015 bad API key (HTTP 401) | AuthenticationError; DDoSProtection once a private call has succeeded before on that instance (ccxt's "temporary ban" workaround) |
| -2014 missing API key (401) | AuthenticationError |
| -1121 Invalid symbol | BadSymbol |
| -2010 "Account has insufficient balance for requested action." | InsufficientFunds |
| -2010 "Order would immediately match and take." (postOnly) | OrderImmediatelyFillable (an InvalidOrder) |
| -2010 "Duplicate order sent." | InvalidOrder |
| -1013 "Filter failure: LOT_SIZE" / "PRICE_FILTER" | InvalidOrder (ccxt matches the filter name) |
| -1013 "Filter failure: NOTIONAL" | BadRequest |
| -2013 Order does not exist (GET) / -2011 Unknown order sent (DELETE) | OrderNotFound |
| -1120 Invalid interval, -1102 missing parameter, -1100 bad number | BadRequest |
| 404 unknown path, -1000 | OperationFailed |
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from aiohttp import web

from huracan.testing.emulator.candles import load_candles
from huracan.testing.emulator.clock import MarketClock
from huracan.testing.emulator.faults import (
    FaultKind,
    FaultRule,
    FaultSchedule,
    InjectedFault,
    KlineCorruption,
    KlineDamage,
)
from huracan.testing.emulator.market_time import EmulatorClock, Pace, PacedMarketClock
from huracan.testing.emulator.markets import MarketRules, derive_rules
from huracan.testing.emulator.matching import Balance, MatchingEngine
from huracan.testing.emulator.server import EmulatorState, Routes

__all__ = [
    "SPOT_ONLY_OPTIONS",
    "EmulatorClock",
    "EmulatorConfig",
    "FaultKind",
    "FaultRule",
    "FaultSchedule",
    "InjectedFault",
    "KlineCorruption",
    "KlineDamage",
    "Pace",
    "PacedMarketClock",
    "RunningEmulator",
    "start_emulator",
]

# ccxt options that keep `binance` on the spot endpoints the emulator serves.
SPOT_ONLY_OPTIONS: Mapping[str, object] = MappingProxyType(
    {
        "defaultType": "spot",
        "fetchMarkets": {"types": ["spot"]},
        "fetchCurrencies": False,
        "fetchMargins": False,
    }
)

HISTORY_BARS = 1000  # bars of the finest timeframe before the default start


@dataclass(frozen=True)
class EmulatorConfig:
    data_dir: Path
    api_key: str = "emulator-key"
    api_secret: str = "emulator-secret"  # noqa: S105 (a fixed test secret, loopback only)
    balances: Mapping[str, Decimal] = field(default_factory=lambda: {"USDT": Decimal("100000")})
    start_time_ms: int | None = None  # default: first bar + HISTORY_BARS of the finest timeframe
    faults: FaultSchedule | None = None
    maker_fee: Decimal = Decimal("0.001")
    taker_fee: Decimal = Decimal("0.001")
    max_fill_share: Decimal = Decimal("0.1")  # of a bar's volume that resting orders may fill
    spread_bps: Decimal = Decimal(4)
    # Klines end with the bar still forming, as Binance's do (shown at its first trade: the open).
    forming_bar: bool = False


class RunningEmulator:
    """A started emulator; `close()` stops it."""

    def __init__(self, url: str, state: EmulatorState, runner: web.AppRunner) -> None:
        self.url = url
        self._state = state
        self._runner = runner

    @property
    def now_ms(self) -> int:
        return self._state.clock.now_ms

    @property
    def step_ms(self) -> int:
        """The finest bar length: what one `advance()` moves market time by."""
        return self._state.clock.step_ms

    @property
    def faults(self) -> FaultSchedule:
        return self._state.faults

    @faults.setter
    def faults(self, schedule: FaultSchedule) -> None:
        self._state.faults = schedule

    @property
    def rules(self) -> Mapping[str, MarketRules]:
        """Filters per Binance market id (BTCUSDT), as served in exchangeInfo."""
        return self._state.rules

    @property
    def engine(self) -> MatchingEngine:
        """The matching engine (orders, trades, balances), for assertions in tests."""
        return self._state.engine

    def advance(self, bars: int = 1) -> None:
        """Move market time by whole bars of the finest timeframe, filling resting orders."""
        self._state.advance(bars)

    @property
    def pace(self) -> Pace | None:
        """Paced mode's market time as a function of wall time; None when not paced."""
        return self._state.pace

    def set_pace(self, bars_per_second: float) -> Pace:
        """From now on market time follows wall time at `bars_per_second` (0 freezes it); call
        `catch_up()` (every request does) to bring it to where the pace says."""
        return self._state.set_pace(bars_per_second)

    def catch_up(self) -> None:
        self._state.catch_up()

    async def close(self) -> None:
        self._state.closing.set()  # release hanging (timeout) faults
        await self._runner.cleanup()


async def start_emulator(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0) -> RunningEmulator:
    candles = await asyncio.to_thread(load_candles, config.data_dir)
    rules = {market_id: derive_rules(c) for market_id, c in candles.items()}
    step_ms = min(c.step_ms for c in candles.values())
    start = config.start_time_ms
    if start is None:
        first = min(int(c.source.open_time_ms[0]) for c in candles.values())
        last = max(int(c.source.open_time_ms[-1]) + c.step_ms for c in candles.values())
        start = min(first + HISTORY_BARS * step_ms, last)
    engine = MatchingEngine(
        markets=rules,
        balances={asset: Balance(free=Decimal(amount)) for asset, amount in config.balances.items()},
        maker_fee=config.maker_fee,
        taker_fee=config.taker_fee,
        max_fill_share=config.max_fill_share,
    )
    state = EmulatorState(
        candles=candles,
        rules=rules,
        clock=MarketClock(start, step_ms),
        engine=engine,
        faults=config.faults if config.faults is not None else FaultSchedule(seed=0),
        api_key=config.api_key,
        api_secret=config.api_secret,
        spread_bps=config.spread_bps,
        forming_bar=config.forming_bar,
    )
    runner = web.AppRunner(Routes(state).build(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    return RunningEmulator(f"http://{bound[0]}:{bound[1]}", state, runner)
