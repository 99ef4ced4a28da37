"""Renderers: one orjson object per line (with a syslog priority prefix under journald) or console."""

from __future__ import annotations

import json
import os
from typing import Any, Literal, TextIO

import orjson
import structlog
from structlog.typing import EventDict, WrappedLogger

from huracan.logs.redact import REDACTOR

LogFormat = Literal["auto", "json", "console"]

# syslog priorities read by systemd's SyslogLevelPrefix=, so that `journalctl -p err` works.
SYSLOG_PRIORITY = {"critical": 2, "error": 3, "warning": 4, "info": 6, "debug": 7}
_FIRST_KEYS = ("ts", "level", "logger", "event")


def is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def is_journal_stream(stream: TextIO) -> bool:
    """True when systemd connected this very stream to the journal (JOURNAL_STREAM names its fd's
    device and inode); a redirect to a file or a pipe in the same unit does not match."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    if not expected:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def use_colors(stream: TextIO) -> bool:
    # https://no-color.org: present and not empty disables; FORCE_COLOR is structlog's override.
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return is_tty(stream)


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["json", "console"]:
    if fmt == "auto":
        return "console" if is_tty(stream) else "json"
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected auto, json or console")
    return fmt


def _fallback(value: Any) -> str:
    return repr(value)


class JsonRenderer:
    """orjson, keys ts/level/logger/event first so a line reads well in `journalctl` too."""

    __slots__ = ("journald",)

    def __init__(self, *, journald: bool) -> None:
        self.journald = journald

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        ordered = {key: event_dict.pop(key) for key in _FIRST_KEYS if key in event_dict}
        ordered.update(event_dict)
        try:
            line = orjson.dumps(ordered, default=_fallback, option=orjson.OPT_NON_STR_KEYS).decode()
        except (TypeError, orjson.JSONEncodeError):
            # orjson refuses integers beyond 64 bits and some exotic keys; the stdlib never does.
            line = json.dumps(ordered, default=_fallback, ensure_ascii=False)
        if self.journald:
            return f"<{SYSLOG_PRIORITY.get(ordered.get('level', 'info'), 6)}>{line}"
        return line


class ConsoleRenderer:
    """structlog's ConsoleRenderer, with the finished line passed through the redactor once more:
    this format is for people, so the extra pass costs nothing that matters."""

    __slots__ = ("_inner",)

    def __init__(self, *, colors: bool) -> None:
        self._inner = structlog.dev.ConsoleRenderer(
            colors=colors,
            timestamp_key="ts",
            # Exceptions arrive already formatted (and redacted); plain_traceback keeps it quiet about it.
            exception_formatter=structlog.dev.plain_traceback,
        )

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
        return REDACTOR.redact_text(self._inner(logger, method_name, event_dict))
