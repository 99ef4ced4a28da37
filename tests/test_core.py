"""Core pieces: timeframes, the replay clock, the in-process topic."""

from __future__ import annotations

import asyncio
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from huracan.core.bus import Topic
from huracan.core.clock import ReplayClock, WallClock
from huracan.core.timeframe import bar_open, timeframe_ms


@pytest.mark.parametrize(
    ("name", "ms"), [("1m", 60_000), ("5m", 300_000), ("15m", 900_000), ("1h", 3_600_000), ("1d", 86_400_000)]
)
def test_timeframes(name: str, ms: int) -> None:
    assert timeframe_ms(name) == ms


@pytest.mark.parametrize("bad", ["", "m", "0m", "5", "5s", "-5m", "1.5h", "5M"])
def test_unknown_timeframes_are_named(bad: str) -> None:
    with pytest.raises(ValueError, match=f"unknown timeframe {bad!r}"):
        timeframe_ms(bad)


@given(st.integers(min_value=0, max_value=2**42), st.sampled_from(["1m", "5m", "1h", "1d"]))
def test_bar_open_is_the_aligned_start_of_the_containing_bar(time_ms: int, timeframe: str) -> None:
    opened = bar_open(time_ms, timeframe)
    assert opened % timeframe_ms(timeframe) == 0
    assert opened <= time_ms < opened + timeframe_ms(timeframe)


async def test_replay_clock_jumps_when_slept_and_never_goes_back() -> None:
    clock = ReplayClock(1_000_000, bar_ms=60_000)
    started = time.monotonic()
    await clock.sleep_until(1_000_000 + 3_600_000)
    assert clock.now_ms() == 4_600_000
    await clock.sleep_until(0)
    assert clock.now_ms() == 4_600_000
    assert time.monotonic() - started < 0.1


async def test_replay_clock_at_a_set_speed_takes_real_time() -> None:
    clock = ReplayClock(0, bar_ms=60_000, bars_per_second=20)
    started = time.monotonic()
    await clock.sleep_until(4 * 60_000)  # 4 bars at 20 bars/s: 0.2 s
    assert 0.15 < time.monotonic() - started < 1.0
    assert clock.now_ms() == 240_000


async def test_wall_clock_sleeps_until_the_time() -> None:
    clock = WallClock()
    target = clock.now_ms() + 50
    await clock.sleep_until(target)
    assert clock.now_ms() >= target


async def test_topic_delivers_to_every_subscriber_and_applies_backpressure() -> None:
    topic: Topic[int] = Topic("bars")
    fast = topic.subscribe("fast", maxsize=10)
    slow = topic.subscribe("slow", maxsize=1)
    with pytest.raises(ValueError, match="already subscribes"):
        topic.subscribe("slow")
    await topic.publish(1)
    blocked = asyncio.create_task(topic.publish(2))
    await asyncio.sleep(0.01)
    assert not blocked.done(), "a full subscriber queue holds the publisher back"
    assert await slow.get() == 1
    await asyncio.wait_for(blocked, timeout=1)
    assert [fast.get_nowait(), fast.get_nowait()] == [1, 2]
    topic.unsubscribe("slow")
    assert topic.subscribers == ["fast"]
