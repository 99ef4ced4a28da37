"""Candle files: CSV with a `timestamp_ms,open,high,low,close,volume` header, one bar a line,
named `<exchange>_<BASE>-<QUOTE>_<timeframe>.csv` (e.g. binance_BTC-USDT_5m.csv).

The replay venue and the exchange emulator read them; bad files get an error naming the file,
the line and what is wrong with it.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from huracan.core.candle import Candle, CandleSeries
from huracan.core.numbers import decimal_of
from huracan.core.timeframe import timeframe_ms

HEADER = ["timestamp_ms", "open", "high", "low", "close", "volume"]
_NAME = re.compile(
    r"^(?P<exchange>[a-z0-9]+)_(?P<base>[A-Z0-9]+)-(?P<quote>[A-Z0-9]+)_(?P<timeframe>\d+[mhdw])\.csv$"
)


class CandleFileError(ValueError):
    def __init__(self, path: Path, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class CandleFileName:
    exchange: str
    symbol: str  # ccxt form, BASE/QUOTE
    timeframe: str

    @classmethod
    def parse(cls, path: Path) -> CandleFileName:
        match = _NAME.match(path.name)
        if match is None:
            raise CandleFileError(path, None, "name must be <exchange>_<BASE>-<QUOTE>_<timeframe>.csv")
        return cls(match["exchange"], f"{match['base']}/{match['quote']}", match["timeframe"])

    def filename(self) -> str:
        return f"{self.exchange}_{self.symbol.replace('/', '-')}_{self.timeframe}.csv"


def read_candle_file(path: Path) -> CandleSeries:
    """Read a whole file. Every row must parse, be finite, be aligned to the timeframe and come
    after the one before; gaps are allowed (venues have outages) and left as they are."""
    name = CandleFileName.parse(path)
    step = timeframe_ms(name.timeframe)
    times: list[int] = []
    columns: list[list[float]] = [[], [], [], [], []]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CandleFileError(path, None, f"cannot read: {exc.strerror or exc}") from None
    # A byte order mark (spreadsheets write one) is allowed; stripped here so that error offsets
    # count from the start of the file.
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = data.count(b"\n", 0, offset) + 1
        raise CandleFileError(path, line, f"not UTF-8 text (byte {offset} of the file)") from None
    rows = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(rows, None)
        if header != HEADER:
            raise CandleFileError(path, 1, f"header must be {','.join(HEADER)}, found {header}")
        for row in rows:
            line = rows.line_num  # the physical line the row ends on
            if len(row) != len(HEADER):
                raise CandleFileError(path, line, f"expected {len(HEADER)} fields, found {len(row)}")
            try:
                open_time = int(row[0])
                values = [float(v) for v in row[1:]]
            except ValueError as exc:
                raise CandleFileError(path, line, f"not a number: {exc}") from None
            if not all(math.isfinite(v) for v in values):
                raise CandleFileError(path, line, "values must be finite")
            if open_time % step:
                raise CandleFileError(path, line, f"timestamp {open_time} is not aligned to {name.timeframe}")
            if times and open_time <= times[-1]:
                raise CandleFileError(path, line, f"timestamp {open_time} does not follow {times[-1]}")
            times.append(open_time)
            for column, value in zip(columns, values, strict=True):
                column.append(value)
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise CandleFileError(path, rows.line_num, f"not CSV: {exc}") from None
    return CandleSeries(
        name.exchange,
        name.symbol,
        name.timeframe,
        np.asarray(times, dtype=np.int64),
        *(np.asarray(c, dtype=np.float64) for c in columns),
    )


def find_candle_files(directory: Path, timeframe: str | None = None) -> dict[str, Path]:
    """Candle files in `directory` by symbol, optionally of one timeframe only."""
    found: dict[str, Path] = {}
    for path in sorted(directory.glob("*.csv")):
        name = CandleFileName.parse(path)
        if timeframe is None or name.timeframe == timeframe:
            if name.symbol in found:
                raise CandleFileError(
                    path, None, f"a second file for {name.symbol} (first: {found[name.symbol].name})"
                )
            found[name.symbol] = path
    return found


def append_candle_file(path: Path, candles: Sequence[Candle]) -> int:
    """Append bars to a candle file (created with its header if it does not exist or is empty),
    one line each, values as the shortest decimal that reads back as the same float, so that
    `read_candle_file` gives back exactly the bars written. Returns the number of lines written.

    The bars must be of the file's stream, aligned, and each after the one before and after the
    file's last bar; ValueError otherwise, and nothing is written. A last line without its
    newline (an append that was interrupted) is cut off first: it is incomplete."""
    name = CandleFileName.parse(path)
    step = timeframe_ms(name.timeframe)
    if not candles:
        return 0
    data = path.read_bytes() if path.exists() else b""
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with path.open("r+b") as handle:
            handle.truncate(len(data))
    last: int | None = None
    if data:
        tail = data[data.rfind(b"\n", 0, len(data) - 1) + 1 :].decode("utf-8").strip()
        if tail.split(",")[0] != HEADER[0]:
            try:
                last = int(tail.split(",")[0])
            except ValueError:
                raise CandleFileError(path, None, f"last line is not a bar: {tail[:80]!r}") from None
    lines: list[str] = [] if data else [",".join(HEADER)]
    for candle in candles:
        if (candle.exchange, candle.symbol, candle.timeframe) != (name.exchange, name.symbol, name.timeframe):
            raise ValueError(f"{path.name}: a bar of {candle.exchange} {candle.symbol} {candle.timeframe}")
        if candle.open_time_ms % step:
            raise ValueError(
                f"{path.name}: open time {candle.open_time_ms} is not aligned to {name.timeframe}"
            )
        if last is not None and candle.open_time_ms <= last:
            raise ValueError(f"{path.name}: open time {candle.open_time_ms} does not follow {last}")
        values = (candle.open, candle.high, candle.low, candle.close, candle.volume)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"{path.name}: bar {candle.open_time_ms} has a value that is not finite")
        lines.append(",".join([str(candle.open_time_ms), *(format(decimal_of(v), "f") for v in values)]))
        last = candle.open_time_ms
    with path.open("a", encoding="utf-8", newline="") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return len(candles)
