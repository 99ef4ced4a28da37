"""Validation of every bar before it is stored, and detection of the bars a stored window lacks.

Pure: no I/O, no clock (the caller passes `now_ms`). A rejected bar gets one reason, the first
rule it breaks in the order of `RejectReason`, so that breaking one rule gives exactly that
rule's reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from huracan.core.candle import Candle
from huracan.core.timeframe import timeframe_ms


class RejectReason(StrEnum):
    """Why a bar was not stored, in the order the rules are checked."""

    NOT_FINITE = "not_finite"  # a price or the volume is NaN or infinite
    NON_POSITIVE_PRICE = "non_positive_price"  # open, high, low or close <= 0
    INCONSISTENT_RANGE = "inconsistent_range"  # low > min(open, close) or high < max(open, close)
    NEGATIVE_VOLUME = "negative_volume"
    MISALIGNED = "misaligned"  # open time not a multiple of the timeframe (bars align to the epoch)
    NOT_CLOSED = "not_closed"  # closes after now: still forming, or in the future
    OUT_OF_ORDER = "out_of_order"  # not after the last accepted bar of its stream
    DUPLICATE_CONFLICT = "duplicate_conflict"  # same open time as an accepted bar, other values


StreamKey = tuple[str, str, str]  # exchange, symbol, timeframe


def stream_of(candle: Candle) -> StreamKey:
    return (candle.exchange, candle.symbol, candle.timeframe)


def same_values(a: Candle, b: Candle) -> bool:
    """The same bar: stream, open time and all five values equal."""
    return a == b


def _finite(value: float) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:  # None or a string where the venue sent no number: not a finite number
        return False


def check_bar(candle: Candle, *, now_ms: int) -> RejectReason | None:
    """The rules a bar must meet on its own (everything but order and duplicates).
    ValueError if the bar's timeframe is not one: that is the caller's, not the venue's, error."""
    step = timeframe_ms(candle.timeframe)
    o, h, low, c, v = candle.open, candle.high, candle.low, candle.close, candle.volume
    if not all(_finite(x) for x in (o, h, low, c, v)):
        return RejectReason.NOT_FINITE
    if min(o, h, low, c) <= 0:
        return RejectReason.NON_POSITIVE_PRICE
    if low > min(o, c) or h < max(o, c):  # together these also rule out low > high
        return RejectReason.INCONSISTENT_RANGE
    if v < 0:
        return RejectReason.NEGATIVE_VOLUME
    if candle.open_time_ms % step:
        return RejectReason.MISALIGNED
    if candle.open_time_ms + step > now_ms:
        return RejectReason.NOT_CLOSED
    return None


def validate_bar(candle: Candle, *, now_ms: int, last_accepted: Candle | None) -> RejectReason | None:
    """None if `candle` may follow `last_accepted` (the newest bar already accepted in the same
    stream, or None when there is none), else why not.

    An identical copy of `last_accepted` is not rejected (ccxt pages overlap): it is valid but not
    new; `validate_batch` drops such copies, and the store would count it as already present.
    A bar at or before `last_accepted`'s open time is otherwise OUT_OF_ORDER, or DUPLICATE_CONFLICT
    when it has the same open time. ValueError if `last_accepted` is of another stream."""
    if last_accepted is not None and stream_of(last_accepted) != stream_of(candle):
        raise ValueError(
            f"last accepted bar is of {stream_of(last_accepted)}, not of the bar's stream {stream_of(candle)}"
        )
    reason = check_bar(candle, now_ms=now_ms)
    if reason is not None or last_accepted is None:
        return reason
    if candle.open_time_ms == last_accepted.open_time_ms:
        return None if same_values(candle, last_accepted) else RejectReason.DUPLICATE_CONFLICT
    if candle.open_time_ms < last_accepted.open_time_ms:
        return RejectReason.OUT_OF_ORDER
    return None


@dataclass(frozen=True, slots=True)
class BatchVerdict:
    """What to store (`accepted`, each bar once, oldest first within each stream), what was
    rejected and why, and how many identical copies of accepted bars were dropped."""

    accepted: tuple[Candle, ...]
    rejected: tuple[tuple[Candle, RejectReason], ...]
    duplicates: int

    @property
    def last_accepted(self) -> Candle | None:
        return self.accepted[-1] if self.accepted else None


def validate_batch(candles: Sequence[Candle], *, now_ms: int, last_accepted: Candle | None) -> BatchVerdict:
    """Validate bars in the order given (as fetched, pages possibly overlapping).

    Each stream is checked on its own; `last_accepted` is the newest bar already accepted in its
    stream. A bar with the open time of a bar accepted before it (in this batch, or
    `last_accepted`) is an identical duplicate, dropped and counted, or a DUPLICATE_CONFLICT; any
    other bar not after its stream's newest accepted bar is OUT_OF_ORDER."""
    accepted: list[Candle] = []
    rejected: list[tuple[Candle, RejectReason]] = []
    duplicates = 0
    newest: dict[StreamKey, Candle] = {}
    seen: dict[tuple[StreamKey, int], Candle] = {}
    if last_accepted is not None:
        newest[stream_of(last_accepted)] = last_accepted
        seen[(stream_of(last_accepted), last_accepted.open_time_ms)] = last_accepted
    for candle in candles:
        stream = stream_of(candle)
        reason = check_bar(candle, now_ms=now_ms)
        if reason is None:
            before = seen.get((stream, candle.open_time_ms))
            if before is not None:
                if same_values(candle, before):
                    duplicates += 1
                    continue
                reason = RejectReason.DUPLICATE_CONFLICT
            else:
                last = newest.get(stream)
                if last is not None and candle.open_time_ms <= last.open_time_ms:
                    reason = RejectReason.OUT_OF_ORDER
        if reason is not None:
            rejected.append((candle, reason))
            continue
        accepted.append(candle)
        newest[stream] = candle
        seen[(stream, candle.open_time_ms)] = candle
    return BatchVerdict(tuple(accepted), tuple(rejected), duplicates)


def find_gaps(
    open_times_ms: npt.NDArray[np.int64], timeframe: str, start_ms: int, end_ms: int
) -> list[tuple[int, int]]:
    """Missing bars of a stream within [start_ms, end_ms), as (first_missing, last_missing) open
    times, oldest first.

    The expected bars are those whose open time is aligned to `timeframe` and lies in the window;
    `open_times_ms` may be unsorted, hold duplicates and reach outside the window. ValueError if a
    time in it is not aligned (stored bars are validated, so that is a bug upstream)."""
    step = timeframe_ms(timeframe)
    times = np.asarray(open_times_ms, dtype=np.int64)
    misaligned = times % step != 0
    if misaligned.any():
        raise ValueError(
            f"open time {int(times[misaligned][0])} is not aligned to {timeframe} "
            f"({int(misaligned.sum())} misaligned)"
        )
    first = -(-start_ms // step) * step  # the first aligned time >= start
    last = (end_ms - 1) // step * step  # the last aligned time < end
    if first > last:
        return []
    inside = np.unique(times[(times >= first) & (times <= last)])
    bounds = np.concatenate(([first - step], inside, [last + step])).astype(np.int64)
    jumps = np.flatnonzero(np.diff(bounds) > step)
    return [(int(bounds[i]) + step, int(bounds[i + 1]) - step) for i in jumps]
