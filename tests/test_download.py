"""`huracan download` against the loopback emulator through the real ccxt client (no mocks):
into the database and into candle files, resume, unlisted symbols, faults, progress."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest

from huracan.config import ConfigSources, HuracanConfig, load_config
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import Candle, CandleSeries
from huracan.exit_codes import EX_CONFIG, EX_UNAVAILABLE, EX_USAGE
from huracan.market.candle_files import append_candle_file, read_candle_file
from huracan.market.download import (
    LogProgress,
    TerminalProgress,
    add_download_parser,
    cmd_download,
    parse_time,
    progress_for,
    render_bar,
)
from huracan.memory.candles import CandleStore
from huracan.testing.emulator import (
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    RunningEmulator,
    start_emulator,
)

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "config" / "base.yaml"
FIVE_MIN = 300_000
ROWS = 2000  # bars per symbol served (about 7 days)
FILES = ("binance_BTC-USDT_5m.csv", "binance_ETH-USDT_5m.csv")
SINCE_BAR, UNTIL_BAR = 300, 1500  # the window downloaded: 1,200 bars, 4 chunks of 300
CHUNK = "300"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("source")
    for name in FILES:
        lines = (BUNDLED_CANDLES_DIR / name).read_text().splitlines()[: ROWS + 1]
        (target / name).write_text("\n".join(lines) + "\n")
    return target


def source(data_dir: Path, name: str = FILES[0]) -> CandleSeries:
    return read_candle_file(data_dir / name)


def window(data_dir: Path) -> tuple[int, int]:
    first = int(source(data_dir).open_time_ms[0])
    return first + SINCE_BAR * FIVE_MIN, first + UNTIL_BAR * FIVE_MIN


def iso(time_ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


@pytest.fixture
async def emulator(data_dir: Path) -> AsyncIterator[RunningEmulator]:
    first = int(source(data_dir).open_time_ms[0])
    running = await start_emulator(EmulatorConfig(data_dir=data_dir, start_time_ms=first + ROWS * FIVE_MIN))
    yield running
    await running.close()


def make_config(
    tmp_path: Path, emulator: RunningEmulator, dsn: str | None = None, attempts: int = 4
) -> HuracanConfig:
    overlay = tmp_path / "local.yaml"
    overlay.write_text(
        "universe:\n  symbols: [BTC/USDT, ETH/USDT]\n  timeframe: 5m\n"
        f"daemon:\n  state_dir: {tmp_path / 'state'}\n"
        f"exchange:\n  api_url: {emulator.url}\n  request_timeout_s: 2.0\n"
        f"  retry_attempts: {attempts}\n  retry_cap_s: 0.2\n"
    )
    environ = {"HURACAN_EXCHANGE__API_KEY": "emulator-key", "HURACAN_EXCHANGE__API_SECRET": "emulator-secret"}
    if dsn is not None:
        environ["HURACAN_DATABASE__DSN"] = dsn
    return load_config(ConfigSources(base=BASE, overlay=overlay, environ=environ))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="huracan")
    add_download_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["download", *argv])


async def run(config: HuracanConfig, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await cmd_download(config, parse(argv), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


def window_args(data_dir: Path, *extra: str) -> list[str]:
    since, until = window(data_dir)
    return ["--since", iso(since), "--until", iso(until), "--chunk-bars", CHUNK, *extra]


def assert_series_equal(got: CandleSeries, want: CandleSeries) -> None:
    assert len(got) == len(want)
    np.testing.assert_array_equal(got.open_time_ms, want.open_time_ms)
    for column in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(got, column), getattr(want, column))


def source_lines(data_dir: Path, name: str, since: int, until: int) -> list[str]:
    lines = (data_dir / name).read_text().splitlines()
    return [lines[0]] + [line for line in lines[1:] if since <= int(line.split(",")[0]) < until]


@pytest.mark.db
async def test_download_into_the_database(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path, db_dsn: str, db_pool: asyncpg.Pool
) -> None:
    config = make_config(tmp_path, emulator, db_dsn)
    status, out, err = await run(config, window_args(data_dir))
    assert status == 0, err
    since, until = window(data_dir)
    store = CandleStore(db_pool)
    for name, symbol in zip(FILES, ("BTC/USDT", "ETH/USDT"), strict=True):
        stored = await store.read_series("binance", symbol, "5m", 0, 2**62)
        assert_series_equal(stored, source(data_dir, name).between(since, until))
    assert "BTC/USDT: 1,200 bars fetched, 1,200 stored" in out
    assert "ETH/USDT: 1,200 bars fetched, 1,200 stored" in out
    assert "rejected: none" in out
    # Again: nothing new, nothing changed.
    status, out, _ = await run(config, window_args(data_dir))
    assert status == 0
    assert "1,200 bars fetched, 0 stored (1,200 already stored, 0 conflicting)" in out


async def test_download_into_candle_files_reads_back_exactly(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    config = make_config(tmp_path, emulator)
    target = tmp_path / "out"
    status, out, err = await run(config, window_args(data_dir, "--to", "csv", "--csv-dir", str(target)))
    assert status == 0, err
    since, until = window(data_dir)
    for name in FILES:
        assert_series_equal(read_candle_file(target / name), source(data_dir, name).between(since, until))
        # The shortest decimals: the very text of the source file.
        assert (target / name).read_text().splitlines() == source_lines(data_dir, name, since, until)
    assert "1,200 written to CSV" in out


async def test_resume_appends_after_the_last_bar(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    config = make_config(tmp_path, emulator)
    target = tmp_path / "out"
    since, until = window(data_dir)
    middle = since + 500 * FIVE_MIN
    first = [
        "--since",
        iso(since),
        "--until",
        iso(middle),
        "--chunk-bars",
        CHUNK,
        "--to",
        "csv",
        "--csv-dir",
        str(target),
    ]
    assert (await run(config, first))[0] == 0
    status, out, err = await run(config, window_args(data_dir, "--to", "csv", "--csv-dir", str(target)))
    assert status == 0, err
    for name in FILES:
        assert (target / name).read_text().splitlines() == source_lines(data_dir, name, since, until)
    assert "BTC/USDT: 700 bars fetched" in out  # resumed after the file's last bar
    assert "700 written to CSV" in out


async def test_unlisted_symbols_are_refused_before_any_download(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    target = tmp_path / "out"
    config = make_config(tmp_path, emulator)
    argv = window_args(
        data_dir, "--to", "csv", "--csv-dir", str(target), "--symbols", "BTC/USDT,DOGE/USDT,XRP/USDT"
    )
    status, out, err = await run(config, argv)
    assert status == EX_USAGE
    assert "DOGE/USDT, XRP/USDT" in err
    assert "--symbols" in err
    assert not target.exists()
    assert out == ""

    overlay = tmp_path / "local.yaml"
    overlay.write_text(overlay.read_text().replace("[BTC/USDT, ETH/USDT]", "[BTC/USDT, DOGE/USDT]"))
    config = load_config(
        ConfigSources(
            base=BASE,
            overlay=overlay,
            environ={"HURACAN_EXCHANGE__API_KEY": "k", "HURACAN_EXCHANGE__API_SECRET": "s"},
        )
    )
    status, _, err = await run(config, window_args(data_dir, "--to", "csv", "--csv-dir", str(target)))
    assert status == EX_CONFIG
    assert "DOGE/USDT" in err
    assert "configuration" in err
    assert not target.exists()


async def test_a_5xx_during_the_download_is_retried(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.faults = FaultSchedule(
        seed=1, rules=[FaultRule(FaultKind.HTTP_5XX, path="/api/v3/klines", nth=(2, 3), status=503)]
    )
    config = make_config(tmp_path, emulator)
    target = tmp_path / "out"
    status, _, err = await run(config, window_args(data_dir, "--to", "csv", "--csv-dir", str(target)))
    assert status == 0, err
    assert len(emulator.faults.injected) == 2
    since, until = window(data_dir)
    for name in FILES:
        assert (target / name).read_text().splitlines() == source_lines(data_dir, name, since, until)


async def test_an_exchange_down_after_retries_exits_69_keeping_what_was_stored(
    tmp_path: Path, emulator: RunningEmulator, data_dir: Path
) -> None:
    emulator.faults = FaultSchedule(
        seed=1, rules=[FaultRule(FaultKind.HTTP_5XX, path="/api/v3/klines", nth=tuple(range(3, 40)))]
    )
    config = make_config(tmp_path, emulator, attempts=2)
    target = tmp_path / "out"
    status, out, err = await run(config, window_args(data_dir, "--to", "csv", "--csv-dir", str(target)))
    assert status == EX_UNAVAILABLE
    assert "unavailable after retries" in err
    assert "stays stored" in err
    assert "stopped early" in out
    since, _ = window(data_dir)
    name = FILES[0]
    # Two chunks of BTC/USDT came through before the exchange went down.
    assert (target / name).read_text().splitlines() == source_lines(
        data_dir, name, since, since + 600 * FIVE_MIN
    )
    assert not (target / FILES[1]).exists()


async def test_bad_arguments_exit_64(tmp_path: Path, emulator: RunningEmulator) -> None:
    config = make_config(tmp_path, emulator)
    for argv in (
        ["--since", "yesterday"],
        ["--since", "2021-01-05", "--until", "2021-01-01"],
        ["--symbols", "btc-usdt"],
    ):
        status, _, err = await run(config, argv)
        assert status == EX_USAGE, argv
        assert err.startswith("huracan download:")


def test_parse_time() -> None:
    assert parse_time("2021-01-01") == 1609459200000
    assert parse_time("2021-01-01T00:05") == 1609459500000
    assert parse_time("2021-01-01T01:05+01:00") == 1609459500000


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar() -> None:
    assert (
        render_bar("BTC/USDT 5m", 13_440, 25_920, width=10)
        == "BTC/USDT 5m [#####-----]  51% 13,440/25,920 bars"
    )
    assert render_bar("X 1h", 0, 0, width=4) == "X 1h [####] 100% 0/0 bars"
    terminal = FakeTerminal()
    progress = progress_for(terminal)
    assert isinstance(progress, TerminalProgress)
    progress.update("BTC/USDT", "5m", 300, 1200)
    progress.finish("BTC/USDT", "5m", 1200, 1200)
    text = terminal.getvalue()
    assert text.startswith("\rBTC/USDT 5m [#####---------------]  25% 300/1,200 bars")
    assert text.endswith("100% 1,200/1,200 bars\033[K\n")
    assert isinstance(progress_for(io.StringIO()), LogProgress)


def test_append_candle_file(tmp_path: Path) -> None:
    path = tmp_path / "binance_BTC-USDT_5m.csv"

    def bar(t: int, price: float = 0.1) -> Candle:
        return Candle("binance", "BTC/USDT", "5m", t * FIVE_MIN, price, price * 3, price, price * 2, 1e-7)

    assert append_candle_file(path, [bar(1), bar(2, 29000.0)]) == 2
    assert path.read_text().splitlines() == [
        "timestamp_ms,open,high,low,close,volume",
        "300000,0.1,0.30000000000000004,0.1,0.2,0.0000001",
        "600000,29000,87000,29000,58000,0.0000001",
    ]
    with pytest.raises(ValueError, match="does not follow"):
        append_candle_file(path, [bar(3), bar(2)])
    with path.open("a") as handle:
        handle.write("900000,0.1,0.3")  # an interrupted append
    assert append_candle_file(path, [bar(3)]) == 1
    series = read_candle_file(path)
    assert [series.candle(i) for i in range(len(series))] == [bar(1), bar(2, 29000.0), bar(3)]


def test_the_command_line(tmp_path: Path, data_dir: Path) -> None:
    """`python -m huracan.cli download` against the emulator run as a process, into CSV."""
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    emulator = subprocess.Popen(
        [sys.executable, "-m", "huracan.testing.emulator", "--port", str(port), "--data", str(data_dir)]
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        overlay = tmp_path / "local.yaml"
        overlay.write_text(
            f"exchange:\n  api_url: http://127.0.0.1:{port}\nuniverse:\n  symbols: [BTC/USDT, ETH/USDT]\n"
            f"daemon:\n  state_dir: {tmp_path / 'state'}\n"
        )
        since = int(source(data_dir).open_time_ms[0])
        until = since + 500 * FIVE_MIN
        result = subprocess.run(
            [
                sys.executable, "-m", "huracan.cli", "download", "--config", str(overlay),
                "--since", iso(since), "--until", iso(until), "--to", "csv", "--csv-dir", str(tmp_path / "out"),
            ],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "download progress" in result.stderr  # not a terminal: log lines
        assert "download summary" in result.stdout
        for name in FILES:
            assert (tmp_path / "out" / name).read_text().splitlines() == source_lines(
                data_dir, name, since, until
            )
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
