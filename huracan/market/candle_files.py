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
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from huracan.core.candle import CandleSeries
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
