"""The replay venue: market data from candle files, served as if it were arriving live.

It answers the same questions as the exchange adapter (the ingestion task cannot tell them
apart), but only with bars that have closed by the replay clock's time, so nothing downstream
can see the future. Fills are simulated by the execution package's fill model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from huracan.core.candle import Candle, CandleSeries
from huracan.core.clock import ReplayClock
from huracan.core.timeframe import bar_open, timeframe_ms
from huracan.market.candle_files import find_candle_files, read_candle_file

DAY_MS = 86_400_000


class ReplayDataError(ValueError):
    """The candle files cannot serve the configured universe."""


class ReplayVenue:
    def __init__(self, series: Mapping[str, CandleSeries], clock: ReplayClock) -> None:
        if not series:
            raise ReplayDataError("no candle series to replay")
        exchanges = {s.exchange for s in series.values()}
        timeframes = {s.timeframe for s in series.values()}
        if len(exchanges) != 1 or len(timeframes) != 1:
            raise ReplayDataError(
                f"replay needs one exchange and one timeframe, got {exchanges} and {timeframes}"
            )
        self.series = dict(series)
        self.clock = clock
        self.exchange_id = exchanges.pop()
        self.timeframe = timeframes.pop()
        self.step_ms = timeframe_ms(self.timeframe)

    @classmethod
    def from_directory(
        cls,
        directory: Path,
        symbols: Sequence[str],
        timeframe: str,
        *,
        backfill_days: int,
        bars_per_second: float = 0.0,
    ) -> ReplayVenue:
        """Replay `symbols` from the files in `directory`; the clock starts `backfill_days` after
        the first bar that every symbol has, so the backfill finds history to load."""
        files = find_candle_files(directory, timeframe)
        absent = [s for s in symbols if s not in files]
        if absent:
            raise ReplayDataError(
                f"no {timeframe} candle file for {', '.join(absent)} in {directory} (found: {', '.join(sorted(files)) or 'none'})"
            )
        series = {s: read_candle_file(files[s]) for s in symbols}
        first_common = max(int(s.open_time_ms[0]) for s in series.values())
        step = timeframe_ms(timeframe)
        start = first_common + max(backfill_days * DAY_MS, step)
        clock = ReplayClock(start, bar_ms=step, bars_per_second=bars_per_second)
        venue = cls(series, clock)
        if start >= venue.end_ms:
            raise ReplayDataError(
                f"the candle files end before {backfill_days} days of backfill have passed; lower universe.backfill_days"
            )
        return venue

    @property
    def end_ms(self) -> int:
        """When the last bar of the shortest series closes: replay is over after that."""
        return min(int(s.open_time_ms[-1]) for s in self.series.values()) + self.step_ms

    def exhausted(self) -> bool:
        return self.clock.now_ms() >= self.end_ms

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list[Candle]:
        if timeframe != self.timeframe:
            raise ReplayDataError(f"replay data is {self.timeframe}, not {timeframe}")
        try:
            series = self.series[symbol]
        except KeyError:
            raise ReplayDataError(f"no replay data for {symbol}") from None
        # Only closed bars: open + step <= now.
        closed_before = min(until_ms, self.clock.now_ms() - self.step_ms + 1)
        lo, hi = np.searchsorted(series.open_time_ms, [since_ms, closed_before])
        return [series.candle(i) for i in range(lo, hi)]

    def opening_price(self, symbol: str, timeframe: str, open_time_ms: int) -> float | None:
        """The open of the bar forming now, as a live venue shows it from its first trade on;
        None for any other bar, and past the replay's end."""
        series = self.series.get(symbol)
        forming = bar_open(self.clock.now_ms(), self.timeframe)
        if (
            series is None
            or timeframe != self.timeframe
            or open_time_ms != forming
            or open_time_ms >= self.end_ms
        ):
            return None
        i = int(np.searchsorted(series.open_time_ms, open_time_ms))
        if i >= len(series) or int(series.open_time_ms[i]) != open_time_ms:
            return None
        return float(series.open[i])
