"""Loggers handed out by get_logger: cheap when filtered, yet they follow reconfiguration.

structlog's choice is between cache_logger_on_first_use=True (a filtered call costs ~60 ns, but a
module-level logger keeps its level and stream for ever) and False (every call rebuilds a bound
logger: ~1.5 µs even when filtered). A proxy caches the real bound logger's methods in its own
__dict__ and is invalidated on configure_logging/set_levels, so it gets both: the filtered call is an
attribute lookup plus structlog's no-op, and the next call after a reconfiguration rebuilds.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any, cast

import structlog
from structlog.typing import FilteringBoundLogger

# Returns the bound logger for (name, context) under the current configuration.
Builder = Callable[[str, dict[str, Any]], FilteringBoundLogger]

_live: weakref.WeakSet[LoggerProxy] = weakref.WeakSet()
_live_lock = threading.Lock()


def _unconfigured(name: str, context: dict[str, Any]) -> FilteringBoundLogger:
    # Before configure_logging (a library use, a test): whatever structlog is configured to do.
    return cast(FilteringBoundLogger, structlog.get_logger().bind(**context))


_builder: list[Builder] = [_unconfigured]


def set_builder(builder: Builder | None) -> None:
    """None goes back to plain structlog configuration."""
    _builder[:] = [builder or _unconfigured]
    invalidate_all()


def invalidate_all() -> None:
    with _live_lock:
        proxies = list(_live)
    for proxy in proxies:
        proxy.__dict__.clear()


class LoggerProxy:
    __slots__ = ("__dict__", "__weakref__", "_context", "_name")

    def __init__(self, name: str, context: dict[str, Any]) -> None:
        self._name = name
        self._context = context
        with _live_lock:
            _live.add(self)

    def __getattr__(self, attr: str) -> Any:
        # Only reached when attr is not cached yet (first use, or after invalidate_all).
        if attr.startswith("__"):
            raise AttributeError(attr)
        value = getattr(_builder[0](self._name, self._context), attr)
        self.__dict__[attr] = value
        return value

    def __repr__(self) -> str:
        return f"<LoggerProxy {self._name} {self._context!r}>"

    # Binding returns another proxy rather than a bound logger, so that a logger bound once and kept
    # (self.log = log.bind(service=...)) follows set_levels too.
    def bind(self, **new_values: Any) -> LoggerProxy:
        return LoggerProxy(self._name, {**self._context, **new_values})

    def unbind(self, *keys: str) -> LoggerProxy:
        context = dict(self._context)
        for key in keys:
            del context[key]  # KeyError for a missing key, as structlog's unbind
        return LoggerProxy(self._name, context)

    def try_unbind(self, *keys: str) -> LoggerProxy:
        context = {k: v for k, v in self._context.items() if k not in keys}
        return LoggerProxy(self._name, context)

    def new(self, **new_values: Any) -> LoggerProxy:
        return LoggerProxy(self._name, {"logger": self._name, **new_values})
