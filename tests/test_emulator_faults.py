"""Each fault of the emulator's seeded schedule, as the real ccxt `binance` client sees it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import ccxt.async_support as ccxt
import pytest

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.exchange.urls import point_at
from huracan.testing.emulator import (
    SPOT_ONLY_OPTIONS,
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    RunningEmulator,
    start_emulator,
)

REPO = Path(__file__).resolve().parents[1]
ORDER = "/api/v3/order"
TICKER = "/api/v3/ticker/24hr"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("candles")
    lines = (BUNDLED_CANDLES_DIR / "binance_BTC-USDT_5m.csv").read_text().splitlines()[:1501]
    (target / "binance_BTC-USDT_5m.csv").write_text("\n".join(lines) + "\n")
    return target


@pytest.fixture
async def emulator(data_dir: Path) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorConfig(data_dir=data_dir, balances={"USDT": Decimal(10_000)}))
    yield running
    await running.close()


@pytest.fixture
async def exchange(emulator: RunningEmulator) -> AsyncIterator[Any]:
    ex = ccxt.binance(
        {
            "apiKey": "emulator-key",
            "secret": "emulator-secret",
            "enableRateLimit": False,
            "timeout": 400,  # ms: the timeout faults hang longer than this
            "options": dict(SPOT_ONLY_OPTIONS),
        }
    )
    point_at(ex, emulator.url)
    await ex.load_markets()
    yield ex
    await ex.close()


def inject(emulator: RunningEmulator, kind: FaultKind, path: str, method: str = "*", **extra: Any) -> None:
    rule = FaultRule(kind, path=path, method=method, **{"nth": (1,), **extra})
    emulator.faults = FaultSchedule(seed=7, rules=[rule])


async def buy(exchange: Any, client_id: str) -> Any:
    return await exchange.create_order("BTC/USDT", "limit", "buy", 0.01, 15000, {"clientOrderId": client_id})


# The mapping the adapter relies on (also in huracan.testing.emulator's docstring).
@pytest.mark.parametrize(
    ("kind", "extra", "expected"),
    [
        (FaultKind.HTTP_429, {"retry_after_s": 3}, ccxt.DDoSProtection),
        (FaultKind.HTTP_418, {"retry_after_s": 60}, ccxt.DDoSProtection),
        (FaultKind.HTTP_5XX, {"status": 503}, ccxt.ExchangeNotAvailable),
        (FaultKind.HTTP_5XX, {"status": 500}, ccxt.ExchangeNotAvailable),
        (FaultKind.HTTP_5XX, {"status": 504}, ccxt.RequestTimeout),
        # aiohttp retries a GET once when a kept-alive connection drops: it takes two resets.
        (FaultKind.CONNECTION_RESET, {"nth": (1, 2)}, ccxt.ExchangeNotAvailable),
        (FaultKind.TIMEOUT_BEFORE_ACCEPT, {"hang_s": 5}, ccxt.RequestTimeout),
        (FaultKind.TIMEOUT_AFTER_ACCEPT, {"hang_s": 5}, ccxt.RequestTimeout),
    ],
)
async def test_fault_raises_the_expected_ccxt_error(
    exchange: Any,
    emulator: RunningEmulator,
    kind: FaultKind,
    extra: dict[str, Any],
    expected: type[Exception],
) -> None:
    inject(emulator, kind, TICKER, **extra)
    with pytest.raises(expected):
        await exchange.fetch_ticker("BTC/USDT")
    assert set(emulator.faults.injected_kinds()) == {kind}
    assert (await exchange.fetch_ticker("BTC/USDT"))["symbol"] == "BTC/USDT"  # the next call is clean


async def test_one_reset_of_a_get_is_absorbed_by_aiohttps_retry(
    exchange: Any, emulator: RunningEmulator
) -> None:
    inject(emulator, FaultKind.CONNECTION_RESET, TICKER)
    assert (await exchange.fetch_ticker("BTC/USDT"))["last"] is not None
    assert emulator.faults.injected_kinds() == [FaultKind.CONNECTION_RESET]


async def test_malformed_json_is_not_caught_by_ccxt(exchange: Any, emulator: RunningEmulator) -> None:
    # A 200 whose body does not parse: ccxt hands the text to its parsers, which make garbage
    # of it or fail with plain Python errors. The adapter has to validate and re-classify.
    inject(emulator, FaultKind.MALFORMED_JSON, TICKER)
    ticker = await exchange.fetch_ticker("BTC/USDT")
    assert ticker["last"] is None
    assert ticker["bid"] is None
    inject(emulator, FaultKind.MALFORMED_JSON, "/api/v3/klines")
    rows = await exchange.fetch_ohlcv("BTC/USDT", "5m", limit=3)
    assert all(row[1] is None for row in rows)
    inject(emulator, FaultKind.MALFORMED_JSON, ORDER, "POST")
    order = await buy(exchange, "garbled-1")
    assert order["id"] is None
    assert isinstance(order["info"], str)
    inject(emulator, FaultKind.MALFORMED_JSON, "/api/v3/openOrders")
    with pytest.raises(AttributeError):
        await exchange.fetch_open_orders("BTC/USDT")
    # The order itself was placed.
    assert (await exchange.fetch_order(None, "BTC/USDT", {"clientOrderId": "garbled-1"}))["status"] == "open"


async def test_429_carries_retry_after(exchange: Any, emulator: RunningEmulator) -> None:
    inject(emulator, FaultKind.HTTP_429, TICKER, retry_after_s=3)
    exchange.enableLastResponseHeaders = True
    with pytest.raises(ccxt.DDoSProtection, match="429"):
        await exchange.fetch_ticker("BTC/USDT")
    assert exchange.last_response_headers["Retry-After"] == "3"


async def test_timeout_before_accept_places_no_order(exchange: Any, emulator: RunningEmulator) -> None:
    inject(emulator, FaultKind.TIMEOUT_BEFORE_ACCEPT, ORDER, "POST", hang_s=5)
    with pytest.raises(ccxt.RequestTimeout):
        await buy(exchange, "before-1")
    with pytest.raises(ccxt.OrderNotFound):
        await exchange.fetch_order(None, "BTC/USDT", {"clientOrderId": "before-1"})


async def test_timeout_after_accept_leaves_an_order_found_by_client_id(
    exchange: Any, emulator: RunningEmulator
) -> None:
    inject(emulator, FaultKind.TIMEOUT_AFTER_ACCEPT, ORDER, "POST", hang_s=5)
    with pytest.raises(ccxt.RequestTimeout):
        await buy(exchange, "after-1")
    found = await exchange.fetch_order(None, "BTC/USDT", {"clientOrderId": "after-1"})
    assert found["status"] == "open"
    assert found["clientOrderId"] == "after-1"
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):  # a blind retry is refused
        await buy(exchange, "after-1")


async def test_connection_reset_on_order_post(exchange: Any, emulator: RunningEmulator) -> None:
    inject(emulator, FaultKind.CONNECTION_RESET, ORDER, "POST")
    with pytest.raises(ccxt.NetworkError):
        await buy(exchange, "reset-1")
    assert await exchange.fetch_open_orders("BTC/USDT") == []


async def test_duplicate_response_replays_the_previous_body(exchange: Any, emulator: RunningEmulator) -> None:
    first = await buy(exchange, "dup-1")
    inject(emulator, FaultKind.DUPLICATE_RESPONSE, ORDER, "POST")
    second = await buy(exchange, "dup-2")
    # ccxt hands back the first order again: only the client order id tells them apart.
    assert second["id"] == first["id"]
    assert second["clientOrderId"] == "dup-1"
    assert len(await exchange.fetch_open_orders("BTC/USDT")) == 2


async def test_out_of_order_klines_are_sorted_again_by_ccxt(exchange: Any, emulator: RunningEmulator) -> None:
    clean = await exchange.fetch_ohlcv("BTC/USDT", "5m", limit=50)
    inject(emulator, FaultKind.OUT_OF_ORDER, "/api/v3/klines")
    raw = await exchange.public_get_klines({"symbol": "BTCUSDT", "interval": "5m", "limit": 50})
    assert [row[0] for row in raw] != [row[0] for row in clean]
    inject(emulator, FaultKind.OUT_OF_ORDER, "/api/v3/klines")
    assert await exchange.fetch_ohlcv("BTC/USDT", "5m", limit=50) == clean


async def test_out_of_order_single_body_is_an_older_response(
    exchange: Any, emulator: RunningEmulator
) -> None:
    first = await exchange.fetch_ticker("BTC/USDT")
    emulator.advance(12)
    second = await exchange.fetch_ticker("BTC/USDT")
    assert second["timestamp"] > first["timestamp"]
    inject(emulator, FaultKind.OUT_OF_ORDER, TICKER)
    stale = await exchange.fetch_ticker("BTC/USDT")
    assert stale["timestamp"] == first["timestamp"]


async def test_latency_delays_and_stacks(exchange: Any, emulator: RunningEmulator) -> None:
    emulator.faults = FaultSchedule(
        seed=1,
        rules=[
            FaultRule(FaultKind.LATENCY, path="/api/v3/*", latency_ms=150, nth=(1,)),
            FaultRule(FaultKind.HTTP_5XX, path=TICKER, nth=(1,)),
        ],
    )
    loop_time = __import__("asyncio").get_running_loop().time
    started = loop_time()
    with pytest.raises(ccxt.ExchangeNotAvailable):
        await exchange.fetch_ticker("BTC/USDT")
    assert loop_time() - started >= 0.15
    assert emulator.faults.injected_kinds() == [FaultKind.LATENCY, FaultKind.HTTP_5XX]


def test_schedule_is_deterministic_under_its_seed() -> None:
    def run(seed: int) -> list[tuple[int, FaultKind]]:
        schedule = FaultSchedule(
            seed=seed,
            rules=[
                FaultRule(FaultKind.HTTP_429, path="/api/v3/*", probability=0.2),
                FaultRule(
                    FaultKind.LATENCY, path="/api/v3/klines", method="GET", probability=0.5, latency_ms=5
                ),
                FaultRule(FaultKind.CONNECTION_RESET, path=ORDER, method="POST", nth=(2, 4), max_times=1),
            ],
        )
        for i in range(200):
            path, method = [(ORDER, "POST"), ("/api/v3/klines", "GET"), (TICKER, "GET")][i % 3]
            schedule.decide(method, path)
        return [(r.request_number, r.kind) for r in schedule.injected]

    assert run(42) == run(42)
    assert run(42) != run(43)
    resets = [n for n, kind in run(42) if kind is FaultKind.CONNECTION_RESET]
    assert len(resets) <= 1
    with pytest.raises(ValueError, match="probability"):
        FaultRule(FaultKind.HTTP_429, probability=1.5)
