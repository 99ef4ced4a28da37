"""configure_logging and friends: one structlog chain for our events, the same tail for stdlib records.

Processor order (structlog events):
  LevelFilter -> merge_contextvars -> add_log_level -> TimeStamper(ts) -> StackInfoRenderer
  -> exceptions to dicts (json) or text (console), never with locals -> Redactor -> renderer
stdlib records (ccxt, asyncpg, aiohttp, warnings) enter through ProcessorFormatter: the handler applies
the level table first, the pre-chain adds logger/context/level/ts/exception, then the same Redactor
and renderer. Both write through one Sink, so lines never interleave.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from structlog.processors import ExceptionRenderer
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from huracan.logs import proxy
from huracan.logs.levels import LevelFilter, LevelTable
from huracan.logs.redact import REDACTOR
from huracan.logs.render import ConsoleRenderer, JsonRenderer, LogFormat, is_journal_stream, resolve_format
from huracan.logs.render import use_colors as _use_colors


class Sink:
    """The one place lines are written: a lock shared by structlog and stdlib, a flush per line
    (journald and `tail -f` see a line when it happens; a crash loses none)."""

    __slots__ = ("dropped", "lock", "stream")

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()
        self.dropped = 0

    def write_line(self, line: str) -> None:
        with self.lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except UnicodeEncodeError:
                # An ASCII stdout (LANG=C without UTF-8 mode): escape rather than lose the line.
                encoding = getattr(self.stream, "encoding", None) or "ascii"
                self._write_quietly(line.encode(encoding, "backslashreplace").decode(encoding) + "\n")
            except (OSError, ValueError):
                # A closed stream or a journald restart (EPIPE) must not stop trading; count the loss.
                self.dropped += 1

    def _write_quietly(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.dropped += 1

    def flush(self) -> None:
        with self.lock, contextlib.suppress(OSError, ValueError):
            self.stream.flush()


class Writer:
    """The structlog "wrapped logger": named (so structlog.get_logger(__name__) gets a `logger` field)
    and writing to the current sink."""

    __slots__ = ("name", "sink")

    def __init__(self, name: str, sink: Sink) -> None:
        self.name = name
        self.sink = sink

    def msg(self, message: str) -> None:
        self.sink.write_line(message)

    debug = info = warning = warn = error = err = exception = critical = fatal = log = msg


class StructlogHandler(logging.Handler):
    """stdlib records into the same format and sink; levels from the same table."""

    def __init__(self, sink: Sink, table: LevelTable, formatter: logging.Formatter) -> None:
        super().__init__()
        self.sink = sink
        self.table = table
        self.setFormatter(formatter)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < self.table.threshold(record.name):
            return
        try:
            line = self.format(record)
        except structlog.DropEvent:
            return
        except Exception:
            self.handleError(record)
            return
        self.sink.write_line(line)

    def handleError(self, record: logging.LogRecord) -> None:
        # The stdlib version prints the record's message and args to stderr: unredacted secrets.
        if logging.raiseExceptions:
            exc = sys.exc_info()[1]
            sys.stderr.write(
                f"huracan.logs: could not format a record of {record.name}: {type(exc).__name__}\n"
            )


class _State:
    def __init__(self) -> None:
        self.sink = Sink(sys.stdout)
        self.table = LevelTable()
        self.writers: dict[str, Writer] = {}
        self.handler: StructlogHandler | None = None
        self.stdlib_levels: dict[str, int] = {}  # loggers whose level we set, to undo on set_levels
        self.configured = False
        self.lock = threading.RLock()


_STATE = _State()


def _writer_factory(*args: Any) -> Writer:
    name = args[0] if args and isinstance(args[0], str) else ""
    writer = _STATE.writers.get(name)
    if writer is None or writer.sink is not _STATE.sink:
        writer = _STATE.writers[name] = Writer(name, _STATE.sink)
    return writer


def _build(name: str, context: dict[str, Any]) -> FilteringBoundLogger:
    # The wrapper class carries this logger's own level, so every filtered call is a no-op method.
    wrapper = structlog.make_filtering_bound_logger(_STATE.table.threshold(name))
    # Protocols carry no __init__, hence the cast via Any.
    cls = cast(Any, wrapper)
    return cast(
        FilteringBoundLogger, cls(_writer_factory(name), structlog.get_config()["processors"], dict(context))
    )


def _foreign_logger_name(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    event_dict["logger"] = record.name if record is not None else "root"
    event = event_dict.get("event")
    if isinstance(event, str) and event.endswith("\n"):
        # warnings.formatwarning ends its text with a newline; a JSON line need not carry it.
        event_dict["event"] = event.rstrip("\n")
    return event_dict


def _foreign_stack(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # stdlib already formatted stack_info; StackInfoRenderer would take *our* stack instead.
    stack = event_dict.pop("stack_info", None)
    if stack:
        event_dict["stack"] = stack
    return event_dict


def _chains(
    fmt: str, journald: bool, colors: bool
) -> tuple[list[Processor], list[Processor], list[Processor]]:
    exceptions: Processor = (
        ExceptionRenderer(ExceptionDictTransformer(show_locals=False))  # locals would carry secrets
        if fmt == "json"
        else structlog.processors.format_exc_info
    )
    renderer: Processor = JsonRenderer(journald=journald) if fmt == "json" else ConsoleRenderer(colors=colors)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts")
    ours: list[Processor] = [
        LevelFilter(_STATE.table),
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
        structlog.processors.StackInfoRenderer(),
        exceptions,
        REDACTOR,
        renderer,
    ]
    foreign_pre: list[Processor] = [
        _foreign_logger_name,
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        timestamper,
        structlog.stdlib.ExtraAdder(),
        _foreign_stack,
        exceptions,
    ]
    foreign_tail: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        REDACTOR,
        renderer,
    ]
    return ours, foreign_pre, foreign_tail


def configure_logging(
    *,
    level: str = "info",
    levels: Mapping[str, str] | None = None,
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and stdlib logging once at the entry point; calling it again replaces the
    previous configuration (tests, reload). stream defaults to sys.stdout as it is at call time."""
    with _STATE.lock:
        out = stream if stream is not None else sys.stdout
        table = LevelTable(level, levels)  # validates before anything changes
        chosen = resolve_format(fmt, out)
        journald = chosen == "json" and is_journal_stream(out)
        _STATE.sink = Sink(out)
        _STATE.table = table
        _STATE.writers = {}
        ours, foreign_pre, foreign_tail = _chains(chosen, journald, _use_colors(out))
        structlog.configure(
            processors=ours,
            wrapper_class=structlog.make_filtering_bound_logger(table.most_verbose),
            logger_factory=_writer_factory,
            context_class=dict,
            # Loggers from our get_logger cache themselves (see proxy.py); loggers from
            # structlog.get_logger must keep seeing reconfiguration.
            cache_logger_on_first_use=False,
        )
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign_pre, processors=foreign_tail, use_get_message=True
        )
        root = logging.getLogger()
        if _STATE.handler is not None:
            root.removeHandler(_STATE.handler)
        _STATE.handler = StructlogHandler(_STATE.sink, table, formatter)
        root.addHandler(_STATE.handler)
        _apply_stdlib_levels(table)
        logging.captureWarnings(True)
        _STATE.configured = True
        proxy.set_builder(_build)


def set_levels(level: str, levels: Mapping[str, str]) -> None:
    """Change levels at runtime (SIGHUP) without touching format, stream or handlers."""
    with _STATE.lock:
        table = LevelTable(level, levels)
        if not _STATE.configured:
            configure_logging(level=level, levels=levels)
            return
        _STATE.table = table
        processors = list(structlog.get_config()["processors"])
        processors[0] = LevelFilter(table)
        structlog.configure(
            processors=processors, wrapper_class=structlog.make_filtering_bound_logger(table.most_verbose)
        )
        if _STATE.handler is not None:
            _STATE.handler.table = table
        _apply_stdlib_levels(table)
        proxy.invalidate_all()


def _apply_stdlib_levels(table: LevelTable) -> None:
    logging.getLogger().setLevel(table.default)
    for name in set(_STATE.stdlib_levels) - set(table.prefixes):
        logging.getLogger(name).setLevel(logging.NOTSET)
    for name, lvl in table.prefixes.items():
        logging.getLogger(name).setLevel(lvl)
    _STATE.stdlib_levels = dict(table.prefixes)


def get_logger(name: str) -> FilteringBoundLogger:
    """A logger bound with logger=name; usable at import time, before configure_logging."""
    return cast(FilteringBoundLogger, proxy.LoggerProxy(name, {"logger": name}))


def flush_logs() -> None:
    """Flush the log stream (at shutdown; every line is already flushed as it is written)."""
    _STATE.sink.flush()
    if _STATE.handler is not None:
        _STATE.handler.flush()


def reset_logging() -> None:
    """Undo configure_logging (tests): structlog defaults, our stdlib handler and levels removed."""
    with _STATE.lock:
        root = logging.getLogger()
        if _STATE.handler is not None:
            root.removeHandler(_STATE.handler)
            _STATE.handler = None
        for name in _STATE.stdlib_levels:
            logging.getLogger(name).setLevel(logging.NOTSET)
        _STATE.stdlib_levels = {}
        root.setLevel(logging.WARNING)
        logging.captureWarnings(False)
        structlog.reset_defaults()
        _STATE.configured = False
        _STATE.sink = Sink(sys.stdout)
        _STATE.table = LevelTable()
        _STATE.writers = {}
        proxy.set_builder(None)
