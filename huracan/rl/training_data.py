"""Where training candles come from: the database, or the candle files (the bundled real
history by default), for the chosen symbols and period, aligned on common bar times."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import numpy as np

from huracan.core.candle import CandleSeries
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.memory.candles import CandleStore

DataSource = Literal["auto", "database", "files"]


class TrainingDataError(Exception):
    """Not enough or inconsistent candles to train on; the message says what is missing where."""


@dataclass(frozen=True, slots=True)
class Period:
    start_ms: int
    end_ms: int  # exclusive

    @classmethod
    def of(cls, start: date | None, end: date | None) -> Period:
        """[start, end] as whole UTC days; an open end is unbounded."""

        def at(day: date) -> int:
            return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)

        start_ms = at(start) if start else 0
        end_ms = at(end + timedelta(days=1)) if end else 2**62
        if end_ms <= start_ms:
            raise TrainingDataError(f"training period ends ({end}) before it starts ({start})")
        return cls(start_ms, end_ms)


def read_files(
    directory: Path, symbols: Sequence[str], timeframe: str, period: Period
) -> dict[str, CandleSeries]:
    files = find_candle_files(directory, timeframe)
    missing = [s for s in symbols if s not in files]
    if missing:
        raise TrainingDataError(
            f"{directory}: no {timeframe} candle file for {', '.join(missing)} (found: {', '.join(sorted(files)) or 'none'})"
        )
    return {s: read_candle_file(files[s]).between(period.start_ms, period.end_ms) for s in symbols}


async def read_database(
    store: CandleStore, exchange_id: str, symbols: Sequence[str], timeframe: str, period: Period
) -> dict[str, CandleSeries]:
    return {
        s: await store.read_series(exchange_id, s, timeframe, period.start_ms, period.end_ms) for s in symbols
    }


def align(series: Mapping[str, CandleSeries], *, min_bars: int) -> dict[str, CandleSeries]:
    """Keep the bar times every symbol has, so one index means one moment for all of them."""
    if not series:
        raise TrainingDataError("no symbols to train on")
    common = None
    for s in series.values():
        common = (
            s.open_time_ms if common is None else np.intersect1d(common, s.open_time_ms, assume_unique=True)
        )
    assert common is not None
    if len(common) < min_bars:
        counts = ", ".join(f"{sym} {len(s)}" for sym, s in series.items())
        raise TrainingDataError(
            f"only {len(common)} bar times common to all symbols ({counts} bars); at least {min_bars} needed"
        )
    aligned: dict[str, CandleSeries] = {}
    for symbol, s in series.items():
        keep = np.isin(s.open_time_ms, common, assume_unique=True)
        aligned[symbol] = CandleSeries(
            s.exchange,
            s.symbol,
            s.timeframe,
            s.open_time_ms[keep],
            s.open[keep],
            s.high[keep],
            s.low[keep],
            s.close[keep],
            s.volume[keep],
        )
    return aligned
