"""Validation of every bar (each rule on its own, batches as ccxt delivers them) and gap detection."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.core.candle import Candle
from huracan.core.timeframe import timeframe_ms
from huracan.market.candle_files import read_candle_file
from huracan.market.validation import RejectReason, find_gaps, validate_bar, validate_batch

REPO = Path(__file__).resolve().parent.parent
BUNDLED_BTC = REPO / "data" / "candles" / "binance_BTC-USDT_5m.csv"
SHARED_BTC = REPO.parent / "shared" / "data" / "candles" / "binance_BTC-USDT_5m.csv"

STEP = timeframe_ms("5m")
T0 = 1_609_459_200_000  # 2021-01-01 00:00 UTC
NOW = T0 + 1_000 * STEP


def bar(open_time_ms: int = T0, **values: Any) -> Candle:
    fields: dict[str, Any] = {"open": 100.0, "high": 110.0, "low": 90.0, "close": 105.0, "volume": 12.5}
    fields.update(values)
    return Candle("binance", "BTC/USDT", "5m", open_time_ms, **fields)


def ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp() * 1000)


# --- each rule with a hand-made bar --------------------------------------------------------------


@pytest.mark.parametrize(
    ("candle", "reason"),
    [
        (bar(open=math.nan), RejectReason.NOT_FINITE),
        (bar(high=math.inf), RejectReason.NOT_FINITE),
        (bar(low=-math.inf), RejectReason.NOT_FINITE),
        (bar(volume=math.nan), RejectReason.NOT_FINITE),
        (bar(close=None), RejectReason.NOT_FINITE),  # a venue that sent no number
        (bar(open=0.0, low=0.0), RejectReason.NON_POSITIVE_PRICE),
        (bar(low=-1.0), RejectReason.NON_POSITIVE_PRICE),
        (bar(close=-5.0), RejectReason.NON_POSITIVE_PRICE),
        (bar(low=101.0), RejectReason.INCONSISTENT_RANGE),  # above the open
        (bar(high=104.0), RejectReason.INCONSISTENT_RANGE),  # below the close
        (bar(open=95.0, close=95.0, low=100.0, high=90.0), RejectReason.INCONSISTENT_RANGE),
        (bar(volume=-0.001), RejectReason.NEGATIVE_VOLUME),
        (bar(T0 + 1), RejectReason.MISALIGNED),
        (bar(T0 + STEP // 2), RejectReason.MISALIGNED),
        (bar(NOW), RejectReason.NOT_CLOSED),  # opens now: still forming
        (bar(NOW + 10 * STEP), RejectReason.NOT_CLOSED),  # in the future
    ],
)
def test_each_rule_rejects_a_bar_that_breaks_it(candle: Candle, reason: RejectReason) -> None:
    assert validate_bar(candle, now_ms=NOW, last_accepted=None) is reason


def test_a_sound_bar_is_accepted_including_zero_volume_and_a_flat_bar() -> None:
    assert validate_bar(bar(), now_ms=NOW, last_accepted=None) is None
    assert validate_bar(bar(volume=0.0), now_ms=NOW, last_accepted=None) is None
    flat = bar(open=7.0, high=7.0, low=7.0, close=7.0)
    assert validate_bar(flat, now_ms=NOW, last_accepted=None) is None
    # The bar that closed exactly now has closed.
    assert validate_bar(bar(NOW - STEP), now_ms=NOW, last_accepted=None) is None
    assert validate_bar(bar(NOW - STEP), now_ms=NOW - 1, last_accepted=None) is RejectReason.NOT_CLOSED


def test_order_and_duplicates_against_the_last_accepted_bar() -> None:
    last = bar(T0 + 10 * STEP)
    assert validate_bar(bar(T0 + 11 * STEP), now_ms=NOW, last_accepted=last) is None
    assert validate_bar(bar(T0 + 9 * STEP), now_ms=NOW, last_accepted=last) is RejectReason.OUT_OF_ORDER
    # Same open time: identical is a harmless repeat, anything else is a conflict.
    assert validate_bar(bar(T0 + 10 * STEP), now_ms=NOW, last_accepted=last) is None
    changed = bar(T0 + 10 * STEP, volume=13.0)
    assert validate_bar(changed, now_ms=NOW, last_accepted=last) is RejectReason.DUPLICATE_CONFLICT


def test_the_last_accepted_bar_must_be_of_the_same_stream() -> None:
    other = dataclasses.replace(bar(), symbol="ETH/USDT")
    with pytest.raises(ValueError, match="ETH/USDT"):
        validate_bar(bar(T0 + STEP), now_ms=NOW, last_accepted=other)


def test_an_unknown_timeframe_is_the_callers_error() -> None:
    with pytest.raises(ValueError, match="unknown timeframe"):
        validate_bar(dataclasses.replace(bar(), timeframe="5s"), now_ms=NOW, last_accepted=None)


# --- property: sound bars pass, one broken rule gives exactly its reason ------------------------

prices = st.floats(min_value=1e-8, max_value=1e7, allow_nan=False, allow_infinity=False)


@st.composite
def sound_bars(draw: st.DrawFn) -> tuple[Candle, int, Candle | None]:
    """A bar that meets every rule, the time it is validated at, and an earlier accepted bar."""
    timeframe = draw(st.sampled_from(["1m", "5m", "15m", "1h", "1d"]))
    step = timeframe_ms(timeframe)
    open_, close = draw(prices), draw(prices)
    low = draw(st.floats(min_value=1e-9, max_value=min(open_, close)))
    high = draw(st.floats(min_value=max(open_, close), max_value=1e8))
    volume = draw(st.floats(min_value=0.0, max_value=1e12))
    index = draw(st.integers(min_value=1, max_value=10**7))
    open_time = index * step
    now = open_time + step + draw(st.integers(min_value=0, max_value=10 * step))
    candle = Candle("binance", "SOL/USDT", timeframe, open_time, open_, high, low, close, volume)
    last = None
    if draw(st.booleans()):
        back = draw(st.integers(min_value=1, max_value=index))
        last = Candle("binance", "SOL/USDT", timeframe, open_time - back * step, 1.0, 2.0, 0.5, 1.5, 3.0)
    return candle, now, last


@given(sound_bars())
def test_any_sound_bar_is_accepted(case: tuple[Candle, int, Candle | None]) -> None:
    candle, now, last = case
    assert validate_bar(candle, now_ms=now, last_accepted=last) is None
    verdict = validate_batch([candle], now_ms=now, last_accepted=last)
    assert verdict.accepted == (candle,)
    assert verdict.rejected == ()


@st.composite
def broken_bars(draw: st.DrawFn) -> tuple[Candle, int, Candle | None, RejectReason]:
    """A sound bar with one field changed to break one rule, and the reason that rule gives."""
    candle, now, last = draw(sound_bars())
    step = timeframe_ms(candle.timeframe)
    o, c = candle.open, candle.close
    reason = draw(st.sampled_from(list(RejectReason)))
    change: dict[str, Any] = {}
    if reason is RejectReason.NOT_FINITE:
        field = draw(st.sampled_from(["open", "high", "low", "close", "volume"]))
        change[field] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    elif reason is RejectReason.NON_POSITIVE_PRICE:
        field = draw(st.sampled_from(["open", "high", "low", "close"]))
        change[field] = draw(st.floats(min_value=-1e7, max_value=0.0))
    elif reason is RejectReason.INCONSISTENT_RANGE:
        if draw(st.booleans()):
            change["low"] = draw(st.floats(min_value=min(o, c), max_value=1e9, exclude_min=True))
        else:
            change["high"] = draw(st.floats(min_value=1e-12, max_value=max(o, c), exclude_max=True))
    elif reason is RejectReason.NEGATIVE_VOLUME:
        change["volume"] = draw(st.floats(min_value=-1e12, max_value=-1e-12))
    elif reason is RejectReason.MISALIGNED:
        change["open_time_ms"] = candle.open_time_ms + draw(st.integers(min_value=1, max_value=step - 1))
    elif reason is RejectReason.NOT_CLOSED:
        now = candle.open_time_ms + step - draw(st.integers(min_value=1, max_value=100 * step))
    elif reason is RejectReason.OUT_OF_ORDER:
        ahead = draw(st.integers(min_value=1, max_value=1000))
        last = Candle(
            candle.exchange,
            candle.symbol,
            candle.timeframe,
            candle.open_time_ms + ahead * step,
            1,
            2,
            0.5,
            1.5,
            3,
        )
        now = max(now, last.open_time_ms + step)
    else:  # DUPLICATE_CONFLICT: the accepted bar at this open time had another volume
        last = dataclasses.replace(candle, volume=candle.volume + 1.0)
    return dataclasses.replace(candle, **change), now, last, reason


@settings(max_examples=300)
@given(broken_bars())
def test_breaking_one_rule_gives_exactly_that_reason(
    case: tuple[Candle, int, Candle | None, RejectReason],
) -> None:
    candle, now, last, reason = case
    assert validate_bar(candle, now_ms=now, last_accepted=last) is reason
    verdict = validate_batch([candle], now_ms=now, last_accepted=last)
    assert verdict.accepted == ()
    assert verdict.rejected == ((candle, reason),)


# --- batches as ccxt delivers them --------------------------------------------------------------


@pytest.fixture(scope="module")
def real_bars() -> list[Candle]:
    series = read_candle_file(BUNDLED_BTC)
    return [series.candle(i) for i in range(300)]


def test_overlapping_pages_accept_each_bar_once(real_bars: list[Candle]) -> None:
    pages = real_bars[0:100] + real_bars[50:150] + real_bars[100:200] + real_bars[199:300]
    verdict = validate_batch(pages, now_ms=NOW * 10, last_accepted=None)
    assert verdict.accepted == tuple(real_bars)
    assert verdict.rejected == ()
    assert verdict.duplicates == 50 + 50 + 1
    assert verdict.last_accepted == real_bars[-1]


def test_a_page_repeating_the_last_accepted_bar_drops_it_silently(real_bars: list[Candle]) -> None:
    verdict = validate_batch(real_bars[99:200], now_ms=NOW * 10, last_accepted=real_bars[99])
    assert verdict.accepted == tuple(real_bars[100:200])
    assert verdict.duplicates == 1
    assert verdict.rejected == ()


def test_a_conflicting_duplicate_is_rejected_and_the_first_kept(real_bars: list[Candle]) -> None:
    changed = dataclasses.replace(real_bars[60], close=real_bars[60].close + 0.01)
    changed = dataclasses.replace(changed, high=max(changed.high, changed.close))
    pages = [*real_bars[0:100], *real_bars[50:60], changed, *real_bars[61:150]]
    verdict = validate_batch(pages, now_ms=NOW * 10, last_accepted=None)
    assert verdict.accepted == tuple(real_bars[:150])
    assert verdict.rejected == ((changed, RejectReason.DUPLICATE_CONFLICT),)
    assert verdict.duplicates == 49
    # Against the bar accepted before the batch, too.
    again = validate_batch([changed], now_ms=NOW * 10, last_accepted=real_bars[60])
    assert again.rejected == ((changed, RejectReason.DUPLICATE_CONFLICT),)


def test_out_of_order_bars_are_rejected_and_do_not_stop_the_batch(real_bars: list[Candle]) -> None:
    b = real_bars
    verdict = validate_batch([b[0], b[1], b[3], b[2], b[4]], now_ms=NOW * 10, last_accepted=None)
    assert verdict.accepted == (b[0], b[1], b[3], b[4])
    assert verdict.rejected == ((b[2], RejectReason.OUT_OF_ORDER),)
    # Older than the bar accepted before the batch, and not a copy we can recognise: out of order.
    before = validate_batch([b[5], b[11]], now_ms=NOW * 10, last_accepted=b[10])
    assert before.accepted == (b[11],)
    assert before.rejected == ((b[5], RejectReason.OUT_OF_ORDER),)


def test_rejected_bars_are_never_accepted_and_the_rest_go_on(real_bars: list[Candle]) -> None:
    b = real_bars
    bad = [
        dataclasses.replace(b[1], volume=-1.0),
        dataclasses.replace(b[2], low=math.nan),
        dataclasses.replace(b[3], open_time_ms=b[3].open_time_ms + 7),
    ]
    forming = b[6]
    verdict = validate_batch(
        [b[0], *bad, b[4], b[5], forming], now_ms=forming.open_time_ms + 1, last_accepted=None
    )
    assert verdict.accepted == (b[0], b[4], b[5])
    assert [r for _, r in verdict.rejected] == [
        RejectReason.NEGATIVE_VOLUME,
        RejectReason.NOT_FINITE,
        RejectReason.MISALIGNED,
        RejectReason.NOT_CLOSED,
    ]


def test_streams_in_one_batch_are_ordered_each_on_its_own(real_bars: list[Candle]) -> None:
    btc = real_bars[:3]
    eth = [dataclasses.replace(c, symbol="ETH/USDT") for c in real_bars[:3]]
    mixed = [btc[0], eth[0], btc[1], eth[1], eth[0], btc[2], eth[2]]
    verdict = validate_batch(mixed, now_ms=NOW * 10, last_accepted=btc[0])
    assert verdict.accepted == (eth[0], btc[1], eth[1], btc[2], eth[2])
    assert verdict.duplicates == 2  # btc[0] (the last accepted) and the repeated eth[0]


def test_an_empty_batch() -> None:
    verdict = validate_batch([], now_ms=NOW, last_accepted=None)
    assert (verdict.accepted, verdict.rejected, verdict.duplicates, verdict.last_accepted) == (
        (),
        (),
        0,
        None,
    )


# --- gaps -----------------------------------------------------------------------------------------


def test_find_gaps_by_hand() -> None:
    grid = np.arange(T0, T0 + 20 * STEP, STEP, dtype=np.int64)
    end = T0 + 20 * STEP
    assert find_gaps(grid, "5m", T0, end) == []
    kept = np.delete(grid, [0, 5, 6, 7, 19])
    assert find_gaps(kept, "5m", T0, end) == [
        (T0, T0),
        (T0 + 5 * STEP, T0 + 7 * STEP),
        (T0 + 19 * STEP, T0 + 19 * STEP),
    ]
    # Nothing stored: the whole window is one gap; an empty window has none.
    assert find_gaps(np.array([], dtype=np.int64), "5m", T0, end) == [(T0, end - STEP)]
    assert find_gaps(grid, "5m", end, end) == []
    assert find_gaps(grid, "5m", end, T0) == []
    # The window's start rounds up to the next bar, its end is exclusive.
    assert find_gaps(kept, "5m", T0 + 1, end - STEP + 1) == [
        (T0 + 5 * STEP, T0 + 7 * STEP),
        (T0 + 19 * STEP, T0 + 19 * STEP),
    ]
    assert find_gaps(kept, "5m", T0 + 1, end - STEP) == [(T0 + 5 * STEP, T0 + 7 * STEP)]
    # Times outside the window, repeats and disorder do not matter.
    shuffled = np.concatenate([kept[::-1], kept[:3], [T0 - 50 * STEP, end + 5 * STEP]]).astype(np.int64)
    assert find_gaps(shuffled, "5m", T0, end) == find_gaps(kept, "5m", T0, end)


def test_find_gaps_refuses_misaligned_times() -> None:
    with pytest.raises(ValueError, match=f"open time {T0 + 3} is not aligned to 5m"):
        find_gaps(np.array([T0, T0 + 3], dtype=np.int64), "5m", T0, T0 + STEP * 4)


@given(st.lists(st.booleans(), min_size=0, max_size=300), st.sampled_from(["1m", "5m", "1h"]))
def test_find_gaps_matches_a_bar_by_bar_count(present: list[bool], timeframe: str) -> None:
    step = timeframe_ms(timeframe)
    start = 1_000 * 86_400_000
    times = np.array([start + i * step for i, here in enumerate(present) if here], dtype=np.int64)
    expected: list[tuple[int, int]] = []
    for i, here in enumerate(present):
        if here:
            continue
        t = start + i * step
        if expected and expected[-1][1] == t - step:
            expected[-1] = (expected[-1][0], t)
        else:
            expected.append((t, t))
    assert find_gaps(times, timeframe, start, start + len(present) * step) == expected


KNOWN_SOURCE_A_GAPS = [  # ../shared/data/candles/PROVENANCE.md, source A, 5m
    ("2020-12-21 14:10", "2020-12-21 17:55", 46),
    ("2020-12-25 02:00", "2020-12-25 02:55", 12),
    ("2021-02-11 03:45", "2021-02-11 04:55", 15),
    ("2021-03-06 02:00", "2021-03-06 03:25", 18),
    ("2021-04-20 02:00", "2021-04-20 04:25", 30),
    ("2021-04-25 04:05", "2021-04-25 08:40", 56),
]


def _gaps_of(path: Path, start_ms: int, end_ms: int) -> list[tuple[str, str, int]]:
    times = read_candle_file(path).open_time_ms
    fmt = "%Y-%m-%d %H:%M"
    return [
        (
            datetime.fromtimestamp(a / 1000, UTC).strftime(fmt),
            datetime.fromtimestamp(b / 1000, UTC).strftime(fmt),
            (b - a) // STEP + 1,
        )
        for a, b in find_gaps(times, "5m", start_ms, end_ms)
    ]


@pytest.mark.skipif(not SHARED_BTC.exists(), reason=f"the shared candle collection is not at {SHARED_BTC}")
def test_find_gaps_finds_the_known_outages_in_the_shared_btc_file() -> None:
    times = read_candle_file(SHARED_BTC).open_time_ms
    assert _gaps_of(SHARED_BTC, int(times[0]), int(times[-1]) + STEP) == KNOWN_SOURCE_A_GAPS


def test_find_gaps_finds_the_outages_in_the_bundled_btc_file() -> None:
    gaps = _gaps_of(BUNDLED_BTC, ms("2021-01-01 00:00"), ms("2021-04-01 00:00"))
    assert gaps == KNOWN_SOURCE_A_GAPS[2:4]
