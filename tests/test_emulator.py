"""The loopback exchange emulator against the real ccxt `binance` client (no mocks), its pure
matching engine (hypothesis), and its command line."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.exchange.urls import point_at
from huracan.market.candle_files import read_candle_file
from huracan.testing.emulator import SPOT_ONLY_OPTIONS, EmulatorConfig, RunningEmulator, start_emulator
from huracan.testing.emulator.book import synthetic_book
from huracan.testing.emulator.candles import Bar
from huracan.testing.emulator.markets import MarketRules
from huracan.testing.emulator.matching import Balance, MatchingEngine, OrderRejected, OrderRequest

REPO = Path(__file__).resolve().parents[1]
FIVE_MIN = 300_000
ROWS = 2500  # bars per symbol in the test slice: more than two pages of klines
START_BAR = 2200  # market time starts when this many bars have closed


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("candles")
    for name in ("binance_BTC-USDT_5m.csv", "binance_ETH-USDT_5m.csv"):
        lines = (BUNDLED_CANDLES_DIR / name).read_text().splitlines()[: ROWS + 1]
        (target / name).write_text("\n".join(lines) + "\n")
    return target


def start_ms(data_dir: Path) -> int:
    first = int(read_candle_file(data_dir / "binance_BTC-USDT_5m.csv").open_time_ms[0])
    return first + START_BAR * FIVE_MIN


def client(url: str, secret: str = "emulator-secret", key: str = "emulator-key") -> Any:
    exchange = ccxt.binance(
        {"apiKey": key, "secret": secret, "enableRateLimit": False, "options": dict(SPOT_ONLY_OPTIONS)}
    )
    point_at(exchange, url)
    return exchange


@pytest.fixture
async def emulator(data_dir: Path) -> AsyncIterator[RunningEmulator]:
    config = EmulatorConfig(
        data_dir=data_dir,
        start_time_ms=start_ms(data_dir),
        balances={"USDT": Decimal(100_000), "ETH": Decimal(5)},
        max_fill_share=Decimal("0.001"),
    )
    running = await start_emulator(config)
    yield running
    await running.close()


@pytest.fixture
async def exchange(emulator: RunningEmulator) -> AsyncIterator[Any]:
    ex = client(emulator.url)
    yield ex
    await ex.close()


async def test_point_at_moves_every_rest_url_to_the_emulator(
    exchange: Any, emulator: RunningEmulator
) -> None:
    for name, url in exchange.urls["api"].items():
        assert url.startswith(emulator.url + "/"), name
    assert exchange.urls["api"]["private"] == emulator.url + "/api/v3"
    with pytest.raises(ValueError, match="base_url"):
        point_at(exchange, "127.0.0.1:80")


async def test_load_markets_gives_precision_and_limits(exchange: Any, emulator: RunningEmulator) -> None:
    markets = await exchange.load_markets()
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}
    btc = markets["BTC/USDT"]
    assert btc["spot"]
    assert btc["active"]
    assert btc["precision"]["price"] == 0.01  # BTC between 10 000 and 100 000
    assert btc["precision"]["amount"] == 0.00001
    for symbol, market in markets.items():
        rules = emulator.rules[symbol.replace("/", "")]
        assert market["precision"]["price"] == float(rules.tick_size)
        assert market["precision"]["amount"] == float(rules.step_size)
        assert market["limits"]["amount"]["min"] == float(rules.min_qty)
        assert market["limits"]["price"]["min"] == float(rules.min_price)
        assert market["limits"]["cost"]["min"] == 5.0


async def test_fetch_ohlcv_paginates_over_the_closed_bars_exactly(
    exchange: Any, emulator: RunningEmulator, data_dir: Path
) -> None:
    series = read_candle_file(data_dir / "binance_BTC-USDT_5m.csv")
    expected = [
        [int(t), o, h, lo, c, v]
        for t, o, h, lo, c, v in zip(
            series.open_time_ms,
            series.open,
            series.high,
            series.low,
            series.close,
            series.volume,
            strict=True,
        )
    ][:START_BAR]
    got: list[list[float]] = []
    since = int(series.open_time_ms[0])
    pages = 0
    while True:
        page = await exchange.fetch_ohlcv("BTC/USDT", "5m", since=since, limit=1000)
        if not page:
            break
        pages += 1
        got.extend(page)
        since = int(page[-1][0]) + FIVE_MIN
    assert pages == 3
    assert got == expected  # every bar closed before now, none that has not closed
    assert got[-1][0] + FIVE_MIN <= emulator.now_ms
    # Without since: the latest bars; after advance(), one more.
    latest = await exchange.fetch_ohlcv("BTC/USDT", "5m", limit=2)
    assert latest == expected[-2:]
    emulator.advance()
    assert (await exchange.fetch_ohlcv("BTC/USDT", "5m", limit=1))[0][0] == expected[-1][0] + FIVE_MIN


async def test_coarser_intervals_are_aggregated(exchange: Any, data_dir: Path) -> None:
    series = read_candle_file(data_dir / "binance_BTC-USDT_5m.csv")
    hours = await exchange.fetch_ohlcv("BTC/USDT", "1h", since=int(series.open_time_ms[0]), limit=3)
    first_hour = series.between(hours[0][0], hours[0][0] + 3_600_000)
    assert len(first_hour) == 12
    assert hours[0][1:5] == [
        first_hour.open[0],
        float(np.max(first_hour.high)),
        float(np.min(first_hour.low)),
        first_hour.close[-1],
    ]
    assert hours[0][5] == pytest.approx(float(np.sum(first_hour.volume)))
    with pytest.raises(ccxt.BadRequest):  # finer than the file: -1120 Invalid interval
        await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=3)


async def test_ticker_book_and_balance(exchange: Any, data_dir: Path) -> None:
    series = read_candle_file(data_dir / "binance_BTC-USDT_5m.csv")
    last_close = float(series.close[START_BAR - 1])
    ticker = await exchange.fetch_ticker("BTC/USDT")
    assert ticker["last"] == last_close
    assert ticker["bid"] < last_close < ticker["ask"]
    assert (ticker["ask"] - ticker["bid"]) / last_close < 0.001
    book = await exchange.fetch_order_book("BTC/USDT", 5)
    assert len(book["bids"]) == 5
    assert len(book["asks"]) == 5
    assert book["bids"][0][0] == ticker["bid"]
    assert book["asks"][0][0] == ticker["ask"]
    assert [p for p, _ in book["asks"]] == sorted(p for p, _ in book["asks"])
    bids_asks = await exchange.fetch_bids_asks(["BTC/USDT"])
    assert bids_asks["BTC/USDT"]["bid"] == ticker["bid"]
    balance = await exchange.fetch_balance()
    assert balance["USDT"]["free"] == 100_000
    assert balance["ETH"]["total"] == 5


async def test_limit_order_rests_fills_partially_then_fully(exchange: Any, emulator: RunningEmulator) -> None:
    await exchange.load_markets()
    bid = (await exchange.fetch_ticker("BTC/USDT"))["bid"]
    price = float(exchange.price_to_precision("BTC/USDT", bid * 0.999))
    order = await exchange.create_order(
        "BTC/USDT", "limit", "buy", 1.5, price, {"clientOrderId": "huracan-limit-1"}
    )
    assert order["status"] == "open"
    assert order["filled"] == 0
    assert order["clientOrderId"] == "huracan-limit-1"
    balance = await exchange.fetch_balance()
    assert balance["USDT"]["used"] == pytest.approx(1.5 * price)
    assert [o["id"] for o in await exchange.fetch_open_orders("BTC/USDT")] == [order["id"]]

    seen: list[tuple[str, float]] = []
    for _ in range(200):
        emulator.advance()
        state = await exchange.fetch_order(order["id"], "BTC/USDT")
        if state["filled"] and (not seen or seen[-1][1] != state["filled"]):
            seen.append((state["status"], state["filled"]))
        if state["status"] == "closed":
            break
    assert seen[0][0] == "open", seen  # a partial fill first
    assert 0 < seen[0][1] < 1.5, seen
    assert seen[-1] == ("closed", 1.5)

    by_client_id = await exchange.fetch_order(None, "BTC/USDT", {"clientOrderId": "huracan-limit-1"})
    assert by_client_id["id"] == order["id"]
    assert by_client_id["status"] == "closed"
    by_orig = await exchange.fetch_order(None, "BTC/USDT", {"origClientOrderId": "huracan-limit-1"})
    assert by_orig["id"] == order["id"]
    assert await exchange.fetch_open_orders("BTC/USDT") == []

    trades = await exchange.fetch_my_trades("BTC/USDT")
    assert len(trades) == len(seen) >= 2
    assert sum(t["amount"] for t in trades) == pytest.approx(1.5)
    assert all(t["takerOrMaker"] == "maker" and t["price"] == price for t in trades)
    assert all(t["fee"]["currency"] == "BTC" for t in trades)
    assert sum(t["fee"]["cost"] for t in trades) == pytest.approx(1.5 * 0.001)
    balance = await exchange.fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(1.5 * 0.999)
    assert balance["USDT"]["total"] == pytest.approx(100_000 - 1.5 * price)
    assert balance["USDT"]["used"] == 0


async def test_cancel_by_id_and_by_client_order_id(exchange: Any) -> None:
    await exchange.load_markets()
    bid = (await exchange.fetch_ticker("ETH/USDT"))["bid"]
    price = float(exchange.price_to_precision("ETH/USDT", bid * 0.9))
    first = await exchange.create_order("ETH/USDT", "limit", "buy", 1, price, {"clientOrderId": "c-1"})
    await exchange.create_order("ETH/USDT", "limit", "buy", 1, price, {"clientOrderId": "c-2"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        await exchange.create_order("ETH/USDT", "limit", "buy", 1, price, {"clientOrderId": "c-2"})
    canceled = await exchange.cancel_order(first["id"], "ETH/USDT")
    assert canceled["status"] == "canceled"
    canceled = await exchange.cancel_order(None, "ETH/USDT", {"clientOrderId": "c-2"})
    # As on Binance, `clientOrderId` of a cancel response is the cancel request's own id.
    assert canceled["status"] == "canceled"
    assert canceled["info"]["origClientOrderId"] == "c-2"
    assert await exchange.fetch_open_orders("ETH/USDT") == []
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.cancel_order(first["id"], "ETH/USDT")
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.fetch_order("999", "ETH/USDT")
    assert (await exchange.fetch_balance())["USDT"]["free"] == 100_000


async def test_market_orders_fill_at_once_with_taker_fees(exchange: Any) -> None:
    await exchange.load_markets()
    ticker = await exchange.fetch_ticker("ETH/USDT")
    sell = await exchange.create_order("ETH/USDT", "market", "sell", 2)
    assert sell["status"] == "closed"
    assert sell["filled"] == 2
    assert sell["average"] == ticker["bid"]
    buy = await exchange.create_order("ETH/USDT", "market", "buy", 0.5)
    assert buy["status"] == "closed"
    assert buy["average"] == ticker["ask"]
    trades = await exchange.fetch_my_trades("ETH/USDT")
    assert [t["takerOrMaker"] for t in trades] == ["taker", "taker"]
    assert trades[0]["fee"] == {"currency": "USDT", "cost": pytest.approx(2 * ticker["bid"] * 0.001)}
    balance = await exchange.fetch_balance()
    assert balance["ETH"]["total"] == pytest.approx(5 - 2 + 0.5 * 0.999)
    cost = await exchange.create_order("ETH/USDT", "market", "buy", None, None, {"cost": 100})
    assert cost["cost"] == pytest.approx(100, rel=0.01)
    assert cost["status"] == "closed"


async def test_post_only_that_would_cross_is_rejected(exchange: Any) -> None:
    await exchange.load_markets()
    ticker = await exchange.fetch_ticker("BTC/USDT")
    with pytest.raises(ccxt.OrderImmediatelyFillable):
        await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, ticker["ask"], {"postOnly": True})
    resting = await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, ticker["bid"], {"postOnly": True})
    assert resting["status"] == "open"
    assert resting["postOnly"] is True


async def test_refusals_map_to_ccxt_errors(exchange: Any, emulator: RunningEmulator) -> None:
    await exchange.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        await exchange.create_order("BTC/USDT", "limit", "buy", 10, 19000)
    with pytest.raises(ccxt.InsufficientFunds):
        await exchange.create_order("BTC/USDT", "market", "sell", 1)
    with pytest.raises(ccxt.BadSymbol):  # -1121, straight at the endpoint
        await exchange.public_get_klines({"symbol": "NOPEUSDT", "interval": "5m"})
    with pytest.raises(ccxt.InvalidOrder, match="LOT_SIZE"):
        await exchange.private_post_order(
            {
                "symbol": "BTCUSDT",
                "side": "BUY",
                "type": "LIMIT",
                "timeInForce": "GTC",
                "quantity": "0.000001",
                "price": "19000",
            }
        )
    with pytest.raises(ccxt.BadRequest, match="NOTIONAL"):  # -1013 without a filter name ccxt knows
        await exchange.create_order("BTC/USDT", "limit", "buy", 0.0001, 19000)
    stale = client(emulator.url)
    stale.nonce = lambda: int(time.time() * 1000) - 60_000
    with pytest.raises(ccxt.InvalidNonce):
        await stale.fetch_balance()
    await stale.close()


@pytest.mark.parametrize(("key", "secret"), [("emulator-key", "wrong"), ("wrong-key", "emulator-secret")])
async def test_bad_credentials_are_authentication_errors(
    emulator: RunningEmulator, key: str, secret: str
) -> None:
    ex = client(emulator.url, secret=secret, key=key)
    try:
        with pytest.raises(ccxt.AuthenticationError):
            await ex.fetch_balance()
    finally:
        await ex.close()


async def test_load_markets_with_currencies_enabled(emulator: RunningEmulator) -> None:
    ex = ccxt.binance({"apiKey": "emulator-key", "secret": "emulator-secret", "enableRateLimit": False})
    ex.options["fetchMarkets"] = {"types": ["spot"]}
    point_at(ex, emulator.url)
    try:
        assert "BTC/USDT" in await ex.load_markets()
    finally:
        await ex.close()


# ---- the pure matching engine ----------------------------------------------------------------

RULES = MarketRules(
    market_id="BTCUSDT",
    base="BTC",
    quote="USDT",
    tick_size=Decimal("0.01"),
    step_size=Decimal("0.00001"),
    min_qty=Decimal("0.00001"),
    max_qty=Decimal(9000),
    min_price=Decimal("0.01"),
    max_price=Decimal(1_000_000),
    min_notional=Decimal(5),
    max_notional=Decimal(9_000_000),
)
prices = st.decimals(min_value=Decimal(100), max_value=Decimal(200), places=2)
qtys = st.decimals(min_value=Decimal("0.05"), max_value=Decimal(3), places=5)
orders = st.tuples(
    st.sampled_from(["BUY", "SELL"]),
    st.sampled_from(["LIMIT", "LIMIT_MAKER", "MARKET"]),
    st.sampled_from(["GTC", "IOC", "FOK"]),
    prices,
    qtys,
)
bars = st.tuples(
    prices, st.decimals(min_value=Decimal(0), max_value=Decimal(20), places=2), st.integers(0, 50)
)


@settings(max_examples=60, deadline=None)
@given(st.lists(orders, min_size=1, max_size=12), st.lists(bars, min_size=1, max_size=8), prices)
def test_matching_conserves_value_and_never_overfills(
    placed: list[tuple[str, str, str, Decimal, Decimal]],
    passing: list[tuple[Decimal, Decimal, int]],
    close: Decimal,
) -> None:
    engine = MatchingEngine(
        markets={"BTCUSDT": RULES},
        balances={"USDT": Balance(Decimal(1000)), "BTC": Balance(Decimal(5))},
        max_fill_share=Decimal("0.3"),
    )
    start = {a: (b.free, b.locked) for a, b in engine.balances.items()}
    book = synthetic_book(Bar(0, 1, close, close, close, close, Decimal(10)), RULES)
    for i, (side, kind, tif, price, qty) in enumerate(placed):
        crosses = price >= book.best_ask if side == "BUY" else price <= book.best_bid
        request = OrderRequest(
            "BTCUSDT", side, kind, f"c{i}", qty, None, None if kind == "MARKET" else price, tif
        )
        reason = None
        try:
            engine.place(request, book, 0)
        except OrderRejected as rejected:
            reason = rejected.msg
        if kind == "LIMIT_MAKER" and crosses:
            assert reason == "Order would immediately match and take."
    for n, (mid, spread, volume) in enumerate(passing):
        engine.on_bar(
            Bar(n, n + 1, mid, mid + spread, max(mid - spread, Decimal(1)), mid, Decimal(volume)), "BTCUSDT"
        )
    for order in engine.orders.values():
        fills = [t.qty for t in engine.trades if t.order_id == order.order_id]
        assert sum(fills, Decimal(0)) == order.executed_qty <= order.orig_qty
        assert order.locked >= 0
    # Balances equal the start plus what the trades say moved, net of their commissions.
    base_delta = sum(
        (t.qty if t.side == "BUY" else -t.qty) - (t.commission if t.commission_asset == "BTC" else 0)
        for t in engine.trades
    )
    quote_delta = sum(
        (-t.quote_qty if t.side == "BUY" else t.quote_qty)
        - (t.commission if t.commission_asset == "USDT" else 0)
        for t in engine.trades
    )
    btc, usdt = engine.balances["BTC"], engine.balances["USDT"]
    assert btc.free + btc.locked == sum(start["BTC"]) + base_delta
    assert usdt.free + usdt.locked == sum(start["USDT"]) + quote_delta
    assert min(btc.free, btc.locked, usdt.free, usdt.locked) >= 0
    # What stays locked is exactly what the open orders hold.
    held = {"BTC": Decimal(0), "USDT": Decimal(0)}
    for order in engine.open_orders():
        held["USDT" if order.side == "BUY" else "BTC"] += order.locked
    assert (btc.locked, usdt.locked) == (held["BTC"], held["USDT"])


# ---- the command line ------------------------------------------------------------------------


def test_cli_prints_its_url_and_stops_on_sigterm(data_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "huracan.testing.emulator",
            "--port",
            "0",
            "--data",
            str(data_dir),
            "--speed",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("http://127.0.0.1:"), (line, process.stderr.read() if process.stderr else "")

        async def probe() -> dict[str, Any]:
            ex = client(line)
            try:
                return dict(await ex.fetch_ticker("BTC/USDT"))
            finally:
                await ex.close()

        assert asyncio.run(probe())["symbol"] == "BTC/USDT"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
