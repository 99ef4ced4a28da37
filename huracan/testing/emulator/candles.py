"""Candles the emulator serves: the finest file per symbol, aggregated to coarser Binance intervals.

Files are read with `huracan.market.candle_files` only. For each symbol the file with the
finest timeframe is the source; klines of any coarser interval from 1m to 1d that is a whole
multiple of it are built by aggregation (open of the first bar, max high, min low, close of the
last, summed volume), with buckets aligned to the Unix epoch as Binance aligns them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from huracan.core.candle import CandleSeries
from huracan.core.numbers import decimal_of
from huracan.core.timeframe import timeframe_ms
from huracan.market.candle_files import find_candle_files, read_candle_file

# Binance's kline intervals that divide a day evenly (so epoch-aligned buckets are Binance's).
BINANCE_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
_FILE_TIMEFRAMES = (*BINANCE_INTERVALS, "1w")


def decimal_text(value: float | Decimal) -> str:
    """Positional text (no exponent) that parses back to the same float."""
    number = value if isinstance(value, Decimal) else decimal_of(value)
    text = format(number, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar as the matching engine sees it (exact decimals)."""

    open_time_ms: int
    close_time_ms: int  # exclusive end: open_time_ms + bar length
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


def aggregate(series: CandleSeries, interval: str) -> CandleSeries:
    """Bars of `series` grouped into epoch-aligned buckets of `interval`."""
    step = timeframe_ms(interval)
    if len(series) == 0:
        return CandleSeries(series.exchange, series.symbol, interval, *_empty_columns())
    buckets = series.open_time_ms - series.open_time_ms % step
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    ends = np.r_[starts[1:], len(series)] - 1
    return CandleSeries(
        series.exchange,
        series.symbol,
        interval,
        buckets[starts].astype(np.int64),
        series.open[starts],
        np.maximum.reduceat(series.high, starts),
        np.minimum.reduceat(series.low, starts),
        series.close[ends],
        np.add.reduceat(series.volume, starts),
    )


def _empty_columns() -> tuple[Any, ...]:
    return (np.zeros(0, dtype=np.int64), *(np.zeros(0, dtype=np.float64) for _ in range(5)))


@dataclass
class SymbolCandles:
    """One symbol's bars at the source timeframe, and aggregates made on demand."""

    symbol: str  # ccxt form, BASE/QUOTE
    source: CandleSeries
    _by_interval: dict[str, CandleSeries] = field(default_factory=dict)

    @property
    def market_id(self) -> str:
        return self.symbol.replace("/", "")

    @property
    def step_ms(self) -> int:
        return timeframe_ms(self.source.timeframe)

    def intervals(self) -> list[str]:
        return [i for i in BINANCE_INTERVALS if timeframe_ms(i) % self.step_ms == 0]

    def series(self, interval: str) -> CandleSeries | None:
        """Bars at `interval`, or None when it is finer than the file or not an even multiple."""
        if interval == self.source.timeframe:
            return self.source
        if interval not in self.intervals():
            return None
        if interval not in self._by_interval:
            self._by_interval[interval] = aggregate(self.source, interval)
        return self._by_interval[interval]

    def closed_count(self, series: CandleSeries, now_ms: int) -> int:
        """How many bars of `series` have closed at `now_ms` (they are a prefix)."""
        step = timeframe_ms(series.timeframe)
        return int(np.searchsorted(series.open_time_ms, now_ms - step, side="right"))

    def klines(
        self,
        series: CandleSeries,
        now_ms: int,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
        *,
        forming: bool = False,
    ) -> list[list[object]]:
        """Binance's /api/v3/klines rows among the bars closed at `now_ms`, and with `forming`
        the bar opened at or before it and not closed, as it stands at its first trade (its
        open; nothing traded yet: the emulator has no trades inside a bar)."""
        closed = self.closed_count(series, now_ms)
        if forming and closed < len(series) and int(series.open_time_ms[closed]) <= now_ms:
            closed += 1  # read as closed below, then shown as forming
        times = series.open_time_ms[:closed]
        lo = 0 if start_ms is None else int(np.searchsorted(times, start_ms, side="left"))
        hi = closed if end_ms is None else int(np.searchsorted(times, end_ms, side="right"))
        if start_ms is None:
            lo = max(lo, hi - limit)
        hi = min(hi, lo + limit)
        step = timeframe_ms(series.timeframe)
        rows: list[list[object]] = []
        for i in range(lo, max(lo, hi)):
            at_open = int(times[i]) + step > now_ms
            close = decimal_of(series.open[i] if at_open else series.close[i])
            volume = Decimal(0) if at_open else decimal_of(series.volume[i])
            quote_volume = (volume * close).quantize(Decimal("0.00000001"))
            rows.append(
                [
                    int(times[i]),
                    decimal_text(series.open[i]),
                    decimal_text(close if at_open else series.high[i]),
                    decimal_text(close if at_open else series.low[i]),
                    decimal_text(close),
                    decimal_text(volume),
                    int(times[i]) + step - 1,
                    decimal_text(quote_volume),
                    0,
                    decimal_text(volume / 2),
                    decimal_text(quote_volume / 2),
                    "0",
                ]
            )
        return rows

    def bar(self, index: int) -> Bar:
        s = self.source
        open_time = int(s.open_time_ms[index])
        return Bar(
            open_time,
            open_time + self.step_ms,
            decimal_of(s.open[index]),
            decimal_of(s.high[index]),
            decimal_of(s.low[index]),
            decimal_of(s.close[index]),
            decimal_of(s.volume[index]),
        )

    def last_closed(self, now_ms: int) -> Bar | None:
        count = self.closed_count(self.source, now_ms)
        return self.bar(count - 1) if count else None

    def window(
        self, now_ms: int, span_ms: int
    ) -> tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal]:
        """Open, high, low, last, previous close and volume of the closed bars in the last `span_ms`."""
        s = self.source
        count = self.closed_count(s, now_ms)
        if count == 0:
            raise ValueError(f"{self.symbol}: no bar has closed at {now_ms}")
        lo = min(int(np.searchsorted(s.open_time_ms[:count], now_ms - span_ms, side="left")), count - 1)
        return (
            decimal_of(s.open[lo]),
            decimal_of(float(np.max(s.high[lo:count]))),
            decimal_of(float(np.min(s.low[lo:count]))),
            decimal_of(s.close[count - 1]),
            decimal_of(s.close[lo - 1] if lo > 0 else s.open[lo]),
            decimal_of(float(np.sum(s.volume[lo:count]))),
        )

    def closed_between(self, after_ms: int, until_ms: int) -> list[Bar]:
        """Source bars that close in (after_ms, until_ms]: those a step of market time passed."""
        first = self.closed_count(self.source, after_ms)
        last = self.closed_count(self.source, until_ms)
        return [self.bar(i) for i in range(first, last)]


def load_candles(data_dir: Path) -> dict[str, SymbolCandles]:
    """The finest candle file of every symbol in `data_dir`, keyed by Binance market id."""
    finest: dict[str, Path] = {}
    for timeframe in sorted(_FILE_TIMEFRAMES, key=timeframe_ms, reverse=True):
        for symbol, path in find_candle_files(data_dir, timeframe).items():
            finest[symbol] = path  # finer timeframes come later and win
    loaded: dict[str, SymbolCandles] = {}
    for symbol, path in sorted(finest.items()):
        candles = SymbolCandles(symbol, read_candle_file(path))
        if len(candles.source) == 0:
            continue
        if candles.market_id in loaded:
            raise ValueError(f"two candle files give market id {candles.market_id}: {path}")
        loaded[candles.market_id] = candles
    if not loaded:
        raise ValueError(f"no candle files (<exchange>_<BASE>-<QUOTE>_<tf>.csv) with bars in {data_dir}")
    return loaded
