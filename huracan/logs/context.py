"""Context carried by every event of the current asyncio task (or thread): symbol, client_order_id..."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import structlog


def bind_context(**kv: object) -> None:
    """Bind for the rest of the current task; a task started afterwards inherits a copy."""
    structlog.contextvars.bind_contextvars(**kv)


def unbind_context(*keys: str) -> None:
    structlog.contextvars.unbind_contextvars(*keys)


@contextlib.contextmanager
def log_context(**kv: object) -> Iterator[None]:
    """Bind for the duration of a block; previous values (if any) come back afterwards."""
    with structlog.contextvars.bound_contextvars(**kv):
        yield
