"""The trading day: it starts at midnight in the configured time zone (Europe/London by
default), so the daily loss limit and profit target reset when the trader's day does."""

from __future__ import annotations

from datetime import UTC, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def trading_day(time_ms: int, zone: str) -> int:
    """The trading day of `time_ms` as a proleptic ordinal of the local date."""
    return _day_of_second(time_ms // 1000, zone)


@lru_cache(maxsize=256)
def _day_of_second(second: int, zone: str) -> int:
    """By the second: the gate asks for the day on every intent, and a zone's offsets are whole
    seconds, so a day never begins inside one."""
    return datetime.fromtimestamp(second, _zone(zone)).date().toordinal()


def day_start_ms(time_ms: int, zone: str) -> int:
    """When the trading day of `time_ms` began (local midnight), epoch ms."""
    local = datetime.fromtimestamp(time_ms / 1000, _zone(zone))
    midnight = datetime.combine(local.date(), time(0), tzinfo=_zone(zone))
    return int(midnight.astimezone(UTC).timestamp() * 1000)
