"""Exact decimals for numbers that travelled as floats."""

from __future__ import annotations

from decimal import Decimal


def decimal_of(value: float) -> Decimal:
    """The exact decimal a float stands for as the venue sent it.

    ccxt (and the CSV reader) parse the venue's decimal strings into floats. Decimal(x) would
    store the binary float's full expansion (0.1 -> 0.1000000000000000055511151231257827...),
    which is not what the venue said and would make a re-sent bar look different from the stored
    one. repr(x) is the shortest string that parses back to the same float, and for any decimal
    of up to 15 significant digits (every price and volume a venue sends) it is that very
    decimal, so Decimal(repr(x)) recovers the venue's number exactly ("29000.01", not a
    neighbour of it) and numeric -> float8 gives back x. A whole number loses repr's ".0", so
    that psql shows 29000 as the venue wrote it, not 29000.0."""
    text = repr(float(value))
    return Decimal(text[:-2] if text.endswith(".0") else text)
