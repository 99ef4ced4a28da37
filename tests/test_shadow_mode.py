"""Shadow mode: the daemon takes its market data from an exchange through the adapter; here the
exchange is our loopback emulator, reached over HTTP by the real ccxt client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from huracan.config import ConfigSources, load_config
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.daemon.app import Daemon
from huracan.daemon.sdnotify import Notifier
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exit_codes import EX_CONFIG
from huracan.market.ingest import CandleIngest
from huracan.testing.emulator import (
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    RunningEmulator,
    start_emulator,
)

pytestmark = pytest.mark.db

DATA = BUNDLED_CANDLES_DIR


@pytest.fixture
async def emulator() -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorConfig(data_dir=DATA))
    yield running
    await running.close()


def shadow_sources(emulator: RunningEmulator, db_dsn: str, state_dir: Path, **extra: str) -> ConfigSources:
    return ConfigSources(
        environ={
            "HURACAN_EXCHANGE__MODE": "shadow",
            "HURACAN_EXCHANGE__API_URL": emulator.url,
            "HURACAN_EXCHANGE__API_KEY": "emulator-key",
            "HURACAN_EXCHANGE__API_SECRET": "emulator-secret",
            "HURACAN_DATABASE__DSN": db_dsn,
            "HURACAN_DAEMON__STATE_DIR": str(state_dir),
            "HURACAN_UNIVERSE__BACKFILL_DAYS": "1",
            **extra,
        }
    )


async def run_briefly(daemon: Daemon) -> int:
    task = asyncio.create_task(daemon.run())
    async with asyncio.timeout(30):
        # Watching from outside, as an operator would, keeps test hooks out of the daemon.
        while daemon.supervisor is None and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    daemon.request_stop("test")
    return await task


async def test_shadow_mode_ingests_through_the_exchange_adapter(
    emulator: RunningEmulator, db_dsn: str, tmp_path: Path
) -> None:
    # A zero-latency rule on every request makes the emulator list the requests it served.
    emulator.faults = FaultSchedule(
        seed=1, rules=[FaultRule(FaultKind.LATENCY, probability=1.0, latency_ms=0)]
    )
    sources = shadow_sources(emulator, db_dsn, tmp_path)
    daemon = Daemon(load_config(sources), sources, notifier=Notifier({}))
    assert await run_briefly(daemon) == 0
    (ingest,) = [s for s in daemon.services if isinstance(s, CandleIngest)]
    assert isinstance(ingest.source, ExchangeAdapter)
    served = {f"{r.method} {r.path}" for r in emulator.faults.injected}
    assert {"GET /api/v3/exchangeInfo", "GET /api/v3/klines"} <= served


async def test_a_symbol_the_exchange_does_not_list_is_a_configuration_error(
    emulator: RunningEmulator, db_dsn: str, tmp_path: Path
) -> None:
    sources = shadow_sources(
        emulator, db_dsn, tmp_path, HURACAN_UNIVERSE__SYMBOLS='["BTC/USDT", "DOGE/USDT"]'
    )
    daemon = Daemon(load_config(sources), sources, notifier=Notifier({}))
    assert await asyncio.wait_for(daemon.run(), timeout=30) == EX_CONFIG
