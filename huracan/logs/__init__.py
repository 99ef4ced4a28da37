"""Structured logging for Huracan: JSON lines for journald, console for people, secrets redacted.

Call configure_logging once at the entry point; get_logger(name) anywhere, import time included.
"""

from huracan.logs.context import bind_context, log_context, unbind_context
from huracan.logs.redact import MASK, register_secrets
from huracan.logs.render import LogFormat
from huracan.logs.setup import configure_logging, flush_logs, get_logger, set_levels

__all__ = [
    "MASK",
    "LogFormat",
    "bind_context",
    "configure_logging",
    "flush_logs",
    "get_logger",
    "log_context",
    "register_secrets",
    "set_levels",
    "unbind_context",
]
