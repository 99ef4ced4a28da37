"""`python -m huracan.testing.chaos daemon --url URL --dsn DSN --state-dir DIR`: the real daemon
(huracan.daemon.app.Daemon with build_services) in live mode against a paced emulator.

Everything is the product's: heartbeat, candle ingest over the exchange adapter and ccxt, the
agent's decision step with the registry's champion, the trading task with the risk gate, the
executor, the journal and the reconciler. The one thing changed is the clock: the emulator's
market time is 2021 moving at N bars per wall second, so the daemon gets a PacedMarketClock
computed from the emulator's GET /emulator/clock instead of the wall clock.

The configuration goes through the loader as a deployment's would: config/base.yaml, then an
overlay written to the state dir, then the secrets from the (given) environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
import yaml

from huracan.config import ConfigSources, HuracanConfig, load_config
from huracan.testing.chaos.venue import SYMBOLS, TIMEFRAME, exchange_settings
from huracan.testing.emulator.control import CLOCK_PATH
from huracan.testing.emulator.market_time import Pace, PacedMarketClock

# Days of 5m bars fetched at the first start: the decision step primes its features on
# PRIME_BARS = 4 x WARMUP_BARS = 1360 bars (4.7 days) before the first bar it decides on.
BACKFILL_DAYS = 6
PREFIX = "chaos"


def overlay(url: str, state_dir: Path, prefix: str = PREFIX) -> dict[str, Any]:
    """The daemon's settings over config/base.yaml. Durations the product measures with its
    market clock (maker re-price, signal age) are given in market time: at N bars per second
    the emulator's market passes 300 x N times as fast as the wall clock."""
    exchange = {k: v for k, v in exchange_settings(url).items() if k not in ("api_key", "api_secret")}
    return {
        "exchange": exchange,
        "universe": {"symbols": list(SYMBOLS), "timeframe": TIMEFRAME, "backfill_days": BACKFILL_DAYS},
        "database": {"pool_max_size": 4},
        "daemon": {"state_dir": str(state_dir), "shutdown_timeout_s": 5.0},
        # The biased champion (huracan.testing.champion) is sampled: it enters and exits often.
        "agent": {"greedy": False},
        # Permissive, so the run trades all along: no loss limit, breaker or profit target stops it.
        "risk": {
            "max_open_positions": 2,
            "max_orders_per_minute": 100_000,
            "daily_loss_limit": 1_000_000,
            "circuit_breaker_loss": 1_000_000,
            "daily_profit_target": None,
        },
        "execution": {
            "client_order_prefix": prefix,
            "maker_entries": True,
            "reprice_after_s": 600.0,  # two bars of market time
            "max_reprices": 2,
            "signal_ttl_s": 1800.0,  # six bars
            "order_poll_interval_s": 1.0,
        },
        "logging": {"level": "info", "format": "json"},
    }


def daemon_sources(url: str, dsn: str, state_dir: Path, prefix: str = PREFIX) -> ConfigSources:
    """Writes the overlay into `state_dir` (atomically: a kill may land at any point) and returns
    where the daemon reads its configuration from."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "chaos.yaml"
    text = yaml.safe_dump(overlay(url, state_dir, prefix), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(text)
        partial.replace(path)
    environ = {
        "HURACAN_EXCHANGE__API_KEY": "emulator-key",
        "HURACAN_EXCHANGE__API_SECRET": "emulator-secret",
        "HURACAN_DATABASE__DSN": dsn,
    }
    return ConfigSources(overlay=path, environ=environ)


def daemon_config(url: str, dsn: str, state_dir: Path, prefix: str = PREFIX) -> HuracanConfig:
    return load_config(daemon_sources(url, dsn, state_dir, prefix))


async def fetch_pace(url: str) -> Pace:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url + CLOCK_PATH) as response:
        response.raise_for_status()
        return Pace.of_json(await response.json())


async def run_daemon(url: str, dsn: str, state_dir: Path) -> int:
    from huracan.daemon.app import Daemon
    from huracan.logs import configure_logging, register_secrets

    sources = daemon_sources(url, dsn, state_dir)
    config = load_config(sources)
    # JSON lines to stderr, which the runner sends to a file per daemon run.
    configure_logging(level=config.logging.level, levels=config.logging.levels, fmt="json", stream=sys.stderr)
    register_secrets(config.secrets())
    clock = PacedMarketClock(await fetch_pace(url))
    return await Daemon(config, sources, clock=clock).run()


def main_daemon(url: str, dsn: str, state_dir: Path) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as `huracan run`
        return runner.run(run_daemon(url, dsn, state_dir))
