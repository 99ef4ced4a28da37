"""Paced market time: the emulator's market time as a pure function of wall time (Pace), the
client's clock computed from it (PacedMarketClock, with an injected wall clock), and a paced
emulator process whose answers agree with what a client computes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from huracan.core.timeframe import bar_open
from huracan.exchange.urls import point_at
from huracan.testing.chaos import chaos_data_dir
from huracan.testing.chaos.daemon import fetch_pace
from huracan.testing.chaos.runner import control
from huracan.testing.emulator import SPOT_ONLY_OPTIONS
from huracan.testing.emulator.market_time import Pace, PacedMarketClock

STEP = 300_000
START = 1_609_459_200_000 + 2000 * STEP  # on a bar boundary
WALL0 = 1_790_000_000_000


class FakeWall:
    """Wall time that moves only when slept on, and the sleeps asked for."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms
        self.slept: list[float] = []

    def __call__(self) -> int:
        return self.now_ms

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now_ms += max(1, round(seconds * 1000))


# --- Pace: the emulator's stepped market time ---------------------------------------------------
def test_pace_moves_in_whole_bars_at_the_given_speed() -> None:
    pace = Pace(START, WALL0, 5.0, STEP)
    assert pace.market_ms(WALL0 - 10_000) == START  # before the pace began: where it started
    assert pace.market_ms(WALL0) == START
    assert pace.market_ms(WALL0 + 199) == START
    assert pace.market_ms(WALL0 + 200) == START + STEP  # 5 bars per second: one every 200 ms
    assert pace.market_ms(WALL0 + 1_000) == START + 5 * STEP
    assert pace.wall_of_bar(1) == WALL0 + 200
    assert pace.wall_of_bar(7) == WALL0 + 1_400


@given(
    speed=st.floats(min_value=0.1, max_value=50, allow_nan=False),
    bars=st.integers(min_value=0, max_value=1_000_000),
)
def test_pace_the_wall_time_of_a_bar_is_the_first_that_reaches_it(speed: float, bars: int) -> None:
    pace = Pace(START, WALL0, speed, STEP)
    wall = pace.wall_of_bar(bars)
    assert pace.bars_at(wall) >= bars
    assert pace.bars_at(wall - 1) < bars or bars == 0


def test_pace_round_trips_as_json_and_refuses_nonsense() -> None:
    pace = Pace(START, WALL0, 7.5, STEP)
    assert Pace.of_json({**pace.as_json(), "now_ms": 1}) == pace
    with pytest.raises(ValueError, match="bars_per_second"):
        Pace(START, WALL0, -1.0, STEP)
    with pytest.raises(ValueError, match="step_ms"):
        Pace(START, WALL0, 1.0, 0)


# --- PacedMarketClock: what the daemon reads ------------------------------------------------------
def test_clock_is_continuous_and_agrees_with_the_emulator_at_every_bar() -> None:
    wall = FakeWall(WALL0)
    pace = Pace(START, WALL0, 5.0, STEP)
    clock = PacedMarketClock(pace, wall=wall)
    assert clock.now_ms() == START
    wall.now_ms = WALL0 + 100  # half a bar of wall time: half a bar of market time
    assert clock.now_ms() == START + STEP // 2
    for elapsed in range(0, 5_000, 37):
        wall.now_ms = WALL0 + elapsed
        # The emulator's market time is the clock's, floored to the bar.
        assert bar_open(clock.now_ms(), "5m") == pace.market_ms(wall.now_ms)


async def test_sleep_until_sleeps_the_wall_time_until_market_time_reaches_it() -> None:
    wall = FakeWall(WALL0)
    clock = PacedMarketClock(Pace(START, WALL0, 5.0, STEP), wall=wall, sleep=wall.sleep)
    target = START + STEP + 2_000  # a bar's close and the venue's settle delay
    await clock.sleep_until(target)
    assert clock.now_ms() >= target
    assert wall.now_ms - WALL0 == 202  # 1 bar = 200 ms of wall time; 2 s of market time ~1.3 ms
    slept = len(wall.slept)
    await clock.sleep_until(target - 5)  # already past: no sleep at all
    assert len(wall.slept) == slept


async def test_sleep_until_does_not_return_early_when_the_timer_wakes_early() -> None:
    class EarlyWall(FakeWall):
        async def sleep(self, seconds: float) -> None:
            self.slept.append(seconds)
            self.now_ms += max(1, round(seconds * 1000) - 3)  # wakes up to 3 ms too soon

    wall = EarlyWall(WALL0)
    clock = PacedMarketClock(Pace(START, WALL0, 5.0, STEP), wall=wall, sleep=wall.sleep)
    await clock.sleep_until(START + 10 * STEP)
    assert clock.now_ms() >= START + 10 * STEP
    assert len(wall.slept) >= 2


def test_a_frozen_emulator_has_no_paced_clock() -> None:
    with pytest.raises(ValueError, match="frozen"):
        PacedMarketClock(Pace(START, WALL0, 0.0, STEP))


# --- a paced emulator process against a client's computed clock -----------------------------------
def _client(url: str) -> Any:
    exchange = ccxt.binance(
        {
            "apiKey": "emulator-key",
            "secret": "emulator-secret",
            "enableRateLimit": False,
            "options": dict(SPOT_ONLY_OPTIONS),
        }
    )
    point_at(exchange, url)
    return exchange


@pytest.fixture
def paced_emulator(tmp_path: Path) -> Iterator[str]:
    """`python -m huracan.testing.emulator --speed 20` in a process of its own; yields its URL."""
    data = chaos_data_dir(tmp_path, 1500)
    process = subprocess.Popen(
        [sys.executable, "-m", "huracan.testing.emulator", "--data", str(data), "--speed", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_paced_emulator_serves_the_bars_its_pace_says_have_closed(paced_emulator: str) -> None:
    url = paced_emulator
    pace = await fetch_pace(url)
    assert pace.bars_per_second == 20
    assert pace.step_ms == STEP
    clock = PacedMarketClock(pace)
    exchange = _client(url)
    try:
        await exchange.load_markets()  # not inside the timed asks below
        for _ in range(8):
            # Ask right after a bar's close: the emulator must already serve that bar, and no
            # bar that closes after the answer.
            await clock.sleep_until(bar_open(clock.now_ms(), "5m") + STEP + 1)
            newest_before = bar_open(clock.now_ms(), "5m") - STEP
            rows = await exchange.fetch_ohlcv("BTC/USDT", "5m", None, 3)
            newest_after = bar_open(clock.now_ms(), "5m") - STEP
            assert newest_before <= rows[-1][0] <= newest_after
    finally:
        await exchange.close()


async def test_paced_emulator_can_be_frozen(paced_emulator: str) -> None:
    frozen = await asyncio.to_thread(control, paced_emulator, "/emulator/clock?bars_per_second=0", "POST")
    assert frozen["bars_per_second"] == 0
    assert frozen["start_ms"] == frozen["now_ms"]
    await asyncio.sleep(0.2)  # four bars at the old pace
    again = await asyncio.to_thread(control, paced_emulator, "/emulator/clock")
    assert again["now_ms"] == frozen["now_ms"]
