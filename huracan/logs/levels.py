"""Per-logger levels: a default plus longest-dotted-prefix overrides, shared by structlog and stdlib."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from structlog import DropEvent
from structlog.typing import EventDict, WrappedLogger

NAME_TO_LEVEL: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def parse_level(name: str) -> int:
    try:
        return NAME_TO_LEVEL[name.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown log level {name!r}; expected one of debug, info, warning, error, critical"
        ) from None


class LevelTable:
    """`level` for every logger, unless a configured prefix matches its name.

    Prefixes match whole dotted components, as stdlib's logger hierarchy does: "huracan.ex" does not
    cover "huracan.exchange", so the two halves of the pipeline never disagree about a logger.
    """

    __slots__ = ("_cache", "_prefixes", "default")

    def __init__(self, level: str = "info", levels: Mapping[str, str] | None = None) -> None:
        self.default = parse_level(level)
        self._prefixes = {prefix.strip("."): parse_level(lvl) for prefix, lvl in (levels or {}).items()}
        self._prefixes.pop("", None)
        # Logger names are few and long-lived, so each is resolved once.
        self._cache: dict[str, int] = {}

    @property
    def prefixes(self) -> Mapping[str, int]:
        return self._prefixes

    @property
    def most_verbose(self) -> int:
        return min([self.default, *self._prefixes.values()])

    def threshold(self, name: str) -> int:
        found = self._cache.get(name)
        if found is not None:
            return found
        level = self.default
        probe = name
        while probe:
            if probe in self._prefixes:
                level = self._prefixes[probe]
                break
            probe = probe.rpartition(".")[0]
        if len(self._cache) < 10_000:
            self._cache[name] = level
        return level


class LevelFilter:
    """Processor: drop an event below the level of its logger.

    The wrapper class already drops everything below the most verbose configured level for free; this
    catches the rest (a logger at info while another one is at debug), so it runs first in the chain.
    """

    __slots__ = ("table",)

    def __init__(self, table: LevelTable) -> None:
        self.table = table

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        name = event_dict.get("logger")
        if not isinstance(name, str):
            # structlog.get_logger(__name__) passes the name to our factory rather than binding it.
            name = getattr(logger, "name", "") or "root"
            event_dict["logger"] = name
        level = NAME_TO_LEVEL.get(method_name)
        if level is not None and level < self.table.threshold(name):
            raise DropEvent
        return event_dict
