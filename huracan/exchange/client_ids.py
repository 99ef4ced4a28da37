"""Deterministic client order ids: a prefix and a number from the database sequence.

    client_order_id("hur", 42) == "hur-42"        parse_client_order_id("hur-42") == ("hur", 42)

The number comes from `client_order_id_seq` (migrations/0002), so an id never repeats, across
restarts too, and the same intent resubmitted keeps its id: the exchange deduplicates by it and
the adapter finds a lost order by it. The format fits Binance's rule `^[a-zA-Z0-9-_]{1,36}$`
for any prefix of up to 16 letters and digits and any bigint sequence value (19 digits).
"""

from __future__ import annotations

import re

MAX_LENGTH = 36
MAX_PREFIX_LENGTH = 16
MAX_SEQUENCE = 2**63 - 1  # PostgreSQL bigint

_PREFIX = re.compile(r"[a-zA-Z0-9]{1,16}")
_ID = re.compile(r"([a-zA-Z0-9]{1,16})-(0|[1-9][0-9]{0,18})")
BINANCE_CLIENT_ID = re.compile(r"[a-zA-Z0-9\-_]{1,36}")


def client_order_id(prefix: str, sequence: int) -> str:
    """The client order id for `sequence` under `prefix`; ValueError naming a bad argument."""
    if not _PREFIX.fullmatch(prefix):
        raise ValueError(f"client order id prefix must be 1 to 16 letters or digits, got {prefix!r}")
    if isinstance(sequence, bool) or not 0 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"client order id sequence must be in [0, 2**63 - 1], got {sequence!r}")
    return f"{prefix}-{sequence}"


def parse_client_order_id(value: str) -> tuple[str, int] | None:
    """(prefix, sequence) of an id that `client_order_id` made; None for any other id (an order
    placed by hand, or by another program on the same account)."""
    match = _ID.fullmatch(value)
    if match is None:
        return None
    sequence = int(match.group(2))
    if sequence > MAX_SEQUENCE:
        return None
    return match.group(1), sequence


def is_valid_client_order_id(value: str) -> bool:
    """Whether Binance accepts `value` as a client order id."""
    return BINANCE_CLIENT_ID.fullmatch(value) is not None
