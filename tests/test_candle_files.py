"""Candle files: the bundled replay data, a good file, and every way a file can be bad."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.market.candle_files import (
    CandleFileError,
    CandleFileName,
    find_candle_files,
    read_candle_file,
)
from huracan.market.validation import validate_batch

REPO = Path(__file__).resolve().parent.parent
BUNDLED = BUNDLED_CANDLES_DIR
HEADER = "timestamp_ms,open,high,low,close,volume\n"
T0 = 1_609_459_200_000
STEP = 300_000
GOOD_ROWS = [
    f"{T0},28923.63,29017.5,28913.12,28975.65,182.889878\n",
    f"{T0 + STEP},28975.65,29016.31,28846.46,28866.15,156.89\n",
    f"{T0 + 3 * STEP},28866.15,28900,28800.5,28810,0\n",  # a gap before it, and zero volume
]


def bundled_sums() -> dict[str, str]:
    """file name -> sha256, from the table in data/candles/PROVENANCE.md."""
    text = (BUNDLED / "PROVENANCE.md").read_text(encoding="utf-8")
    return dict(re.findall(r"^\| (\S+\.csv) \|.*\| `([0-9a-f]{64})` \|$", text, flags=re.MULTILINE))


def write(directory: Path, text: str | bytes, name: str = "binance_BTC-USDT_5m.csv") -> Path:
    path = directory / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


# --- the bundled replay data ---------------------------------------------------------------------


def test_provenance_lists_every_bundled_file() -> None:
    sums = bundled_sums()
    assert sorted(sums) == sorted(p.name for p in BUNDLED.glob("*.csv"))
    assert sorted(sums) == ["binance_BTC-USDT_5m.csv", "binance_ETH-USDT_5m.csv", "binance_SOL-USDT_5m.csv"]


@pytest.mark.parametrize(
    "name", ["binance_BTC-USDT_5m.csv", "binance_ETH-USDT_5m.csv", "binance_SOL-USDT_5m.csv"]
)
def test_bundled_file_is_the_one_provenance_describes_and_every_bar_is_valid(name: str) -> None:
    path = BUNDLED / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == bundled_sums()[name]
    series = read_candle_file(path)
    assert (series.exchange, series.symbol, series.timeframe) == (
        "binance",
        name.split("_")[1].replace("-", "/"),
        "5m",
    )
    assert len(series) == 25_887
    assert int(series.open_time_ms[0]) == T0  # 2021-01-01 00:00 UTC
    assert int(series.open_time_ms[-1]) == 1_617_234_900_000  # 2021-03-31 23:55 UTC
    candles = [series.candle(i) for i in range(len(series))]
    verdict = validate_batch(candles, now_ms=int(series.open_time_ms[-1]) + STEP, last_accepted=None)
    assert verdict.rejected == ()
    assert len(verdict.accepted) == len(series)


def test_the_bundled_symbols_are_found_by_symbol() -> None:
    assert find_candle_files(BUNDLED, "5m") == {
        "BTC/USDT": BUNDLED / "binance_BTC-USDT_5m.csv",
        "ETH/USDT": BUNDLED / "binance_ETH-USDT_5m.csv",
        "SOL/USDT": BUNDLED / "binance_SOL-USDT_5m.csv",
    }


# --- a good file ---------------------------------------------------------------------------------


def test_a_good_file_reads_into_columns(tmp_path: Path) -> None:
    series = read_candle_file(write(tmp_path, HEADER + "".join(GOOD_ROWS)))
    assert (series.exchange, series.symbol, series.timeframe) == ("binance", "BTC/USDT", "5m")
    assert series.open_time_ms.dtype == np.int64
    assert series.open_time_ms.tolist() == [T0, T0 + STEP, T0 + 3 * STEP]
    assert series.open.tolist() == [28923.63, 28975.65, 28866.15]
    assert series.high.tolist() == [29017.5, 29016.31, 28900.0]
    assert series.low.tolist() == [28913.12, 28846.46, 28800.5]
    assert series.close.tolist() == [28975.65, 28866.15, 28810.0]
    assert series.volume.tolist() == [182.889878, 156.89, 0.0]


def test_crlf_line_ends_and_a_byte_order_mark_are_accepted(tmp_path: Path) -> None:
    text = (HEADER + "".join(GOOD_ROWS)).replace("\n", "\r\n")
    series = read_candle_file(write(tmp_path, b"\xef\xbb\xbf" + text.encode()))
    assert len(series) == 3


def test_a_header_only_file_is_an_empty_series(tmp_path: Path) -> None:
    series = read_candle_file(write(tmp_path, HEADER, name="kraken_XBT-EUR_1h.csv"))
    assert (len(series), series.exchange, series.symbol, series.timeframe) == (0, "kraken", "XBT/EUR", "1h")


def test_file_names_round_trip() -> None:
    name = CandleFileName.parse(Path("binance_SOL-USDT_15m.csv"))
    assert name == CandleFileName("binance", "SOL/USDT", "15m")
    assert name.filename() == "binance_SOL-USDT_15m.csv"


# --- every way a file can be bad: "path:line: reason" ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("", 1, "header must be timestamp_ms,open,high,low,close,volume, found None"),
        ("time,open,high,low,close,volume\n" + GOOD_ROWS[0], 1, "header must be timestamp_ms,open,high"),
        (HEADER + GOOD_ROWS[0] + f"{T0 + STEP},1,2,0.5,1\n", 3, "expected 6 fields, found 5"),
        (HEADER + GOOD_ROWS[0] + f"{T0 + STEP},1,2,0.5,1,3,4\n", 3, "expected 6 fields, found 7"),
        (HEADER + GOOD_ROWS[0] + "\n" + GOOD_ROWS[1], 3, "expected 6 fields, found 0"),
        (HEADER + f"{T0},1,2,0.5,abc,3\n", 2, "not a number: could not convert string to float: 'abc'"),
        (HEADER + f"{T0}.0,1,2,0.5,1,3\n", 2, "not a number: invalid literal for int()"),
        (HEADER + f"{T0},1,2,0.5,,3\n", 2, "not a number"),
        (HEADER + GOOD_ROWS[0] + f"{T0 + STEP},1,NaN,0.5,1,3\n", 3, "values must be finite"),
        (HEADER + f"{T0},1,2,0.5,1,inf\n", 2, "values must be finite"),
        (HEADER + f"{T0},1,2,0.5,1,-Infinity\n", 2, "values must be finite"),
        (
            HEADER + GOOD_ROWS[0] + f"{T0 + 60_000},1,2,0.5,1,3\n",
            3,
            f"timestamp {T0 + 60_000} is not aligned to 5m",
        ),
        (HEADER + GOOD_ROWS[1] + GOOD_ROWS[0], 3, f"timestamp {T0} does not follow {T0 + STEP}"),
        (HEADER + GOOD_ROWS[0] + GOOD_ROWS[0], 3, f"timestamp {T0} does not follow {T0}"),
        # A quoted field spanning lines: the line named is the one the row ends on.
        (HEADER + f'{T0},1,2,0.5,1,"3\n4"\n', 3, "not a number"),
        (HEADER + '"' + "9" * 200_000 + '"\n', 2, "not CSV: field larger than field limit"),
    ],
)
def test_a_bad_row_is_named_by_path_and_line(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(CandleFileError) as caught:
        read_candle_file(path)
    assert str(caught.value).startswith(f"{path}:{line}: {reason}")
    assert (caught.value.path, caught.value.line) == (path, line)


def test_non_utf8_text_is_named_by_line(tmp_path: Path) -> None:
    path = write(tmp_path, (HEADER + GOOD_ROWS[0]).encode() + b"\xff\xfe,1,2,3\n")
    with pytest.raises(
        CandleFileError, match=rf"^{re.escape(str(path))}:3: not UTF-8 text \(byte \d+ of the file\)$"
    ):
        read_candle_file(path)
    latin1 = write(tmp_path, HEADER.encode() + "1609459200000,1,2,0.5,1,3 ü\n".encode("latin-1"))
    with pytest.raises(CandleFileError, match=rf"^{re.escape(str(latin1))}:2: not UTF-8 text"):
        read_candle_file(latin1)


@pytest.mark.parametrize(
    "name",
    [
        "BTC-USDT_5m.csv",
        "binance_BTCUSDT_5m.csv",
        "binance_BTC-USDT_5s.csv",
        "Binance_BTC-USDT_5m.csv",
        "binance_btc-usdt_5m.csv",
        "binance_BTC-USDT_5m.CSV",
        "binance_BTC-USDT_5m.csv.bak",
    ],
)
def test_a_bad_file_name_is_named(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, HEADER + GOOD_ROWS[0], name=name)
    with pytest.raises(
        CandleFileError,
        match=rf"^{re.escape(str(path))}: name must be <exchange>_<BASE>-<QUOTE>_<timeframe>\.csv$",
    ):
        read_candle_file(path)


def test_an_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "binance_BTC-USDT_5m.csv"
    with pytest.raises(
        CandleFileError, match=rf"^{re.escape(str(missing))}: cannot read: No such file or directory$"
    ):
        read_candle_file(missing)
    directory = tmp_path / "binance_ETH-USDT_5m.csv"
    directory.mkdir()
    with pytest.raises(CandleFileError, match=rf"^{re.escape(str(directory))}: cannot read: Is a directory$"):
        read_candle_file(directory)


def test_an_unknown_timeframe_in_the_name_is_a_value_error(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER, name="binance_BTC-USDT_0m.csv")
    with pytest.raises(ValueError, match="unknown timeframe '0m'"):
        read_candle_file(path)


# --- finding files -------------------------------------------------------------------------------


def test_find_candle_files_by_symbol_and_timeframe(tmp_path: Path) -> None:
    btc5 = write(tmp_path, HEADER, "binance_BTC-USDT_5m.csv")
    btc1h = write(tmp_path, HEADER, "binance_BTC-USDT_1h.csv")
    eth5 = write(tmp_path, HEADER, "binance_ETH-USDT_5m.csv")
    (tmp_path / "PROVENANCE.md").write_text("not a candle file\n")
    assert find_candle_files(tmp_path, "5m") == {"BTC/USDT": btc5, "ETH/USDT": eth5}
    assert find_candle_files(tmp_path, "1h") == {"BTC/USDT": btc1h}
    assert find_candle_files(tmp_path, "1d") == {}
    assert find_candle_files(tmp_path / "absent", "5m") == {}


def test_two_files_for_one_symbol_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, HEADER, "binance_BTC-USDT_5m.csv")
    second = write(tmp_path, HEADER, "binance_BTC-USDT_1h.csv")
    # Without a timeframe both files name BTC/USDT.
    with pytest.raises(
        CandleFileError, match=r"a second file for BTC/USDT \(first: binance_BTC-USDT_1h.csv\)"
    ):
        find_candle_files(tmp_path)
    # Two venues for one symbol and timeframe, too.
    other = write(tmp_path, HEADER, "kraken_BTC-USDT_5m.csv")
    with pytest.raises(CandleFileError) as caught:
        find_candle_files(tmp_path, "5m")
    assert caught.value.path == other
    assert "a second file for BTC/USDT (first: binance_BTC-USDT_5m.csv)" in str(caught.value)
    assert second.exists()


def test_a_badly_named_csv_in_the_directory_is_an_error(tmp_path: Path) -> None:
    write(tmp_path, HEADER, "binance_BTC-USDT_5m.csv")
    bad = write(tmp_path, HEADER, "btc.csv")
    with pytest.raises(CandleFileError, match=rf"^{re.escape(str(bad))}: name must be"):
        find_candle_files(tmp_path, "5m")
