"""The exchange adapter with the real ccxt `binance` client over HTTP against the loopback
emulator (no mocks): markets, candles, orders, errors, retries and the unknown-outcome protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from huracan.config.sections import ExchangeSettings
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.client_ids import client_order_id
from huracan.exchange.errors import (
    AuthenticationFailed,
    BadSymbol,
    BelowMinimum,
    InsufficientFunds,
    OrderNotPlaced,
    OutcomeUnknown,
    PostOnlyWouldTake,
    RequestTimedOut,
)
from huracan.exchange.models import OrderRequest
from huracan.market.candle_files import read_candle_file
from huracan.testing.emulator import (
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    RunningEmulator,
    start_emulator,
)

REPO = Path(__file__).resolve().parents[1]
SYMBOL = "BTC/USDT"
ORDER = "/api/v3/order"
TICKER = "/api/v3/ticker/24hr"
FIVE_MIN = 300_000
ROWS = 1500
START_BAR = 1400  # market time starts when this many bars have closed: more than one klines page
TIMEOUT_S = 0.4  # the adapter's request timeout; the emulator's hangs last longer
RECV_WINDOW_MS = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("candles")
    lines = (BUNDLED_CANDLES_DIR / "binance_BTC-USDT_5m.csv").read_text().splitlines()[: ROWS + 1]
    (target / "binance_BTC-USDT_5m.csv").write_text("\n".join(lines) + "\n")
    return target


def first_bar_ms(data_dir: Path) -> int:
    return int(read_candle_file(data_dir / "binance_BTC-USDT_5m.csv").open_time_ms[0])


@pytest.fixture
async def emulator(data_dir: Path) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(
        EmulatorConfig(
            data_dir=data_dir,
            balances={"USDT": Decimal(10_000)},
            start_time_ms=first_bar_ms(data_dir) + START_BAR * FIVE_MIN,
        )
    )
    yield running
    await running.close()


def settings_for(emulator: RunningEmulator, **overrides: Any) -> ExchangeSettings:
    values: dict[str, Any] = {
        "api_url": emulator.url,
        "api_key": "emulator-key",
        "api_secret": "emulator-secret",
        "request_timeout_s": TIMEOUT_S,
        "retry_attempts": 4,
        "retry_cap_s": 1.5,
    }
    values.update(overrides)
    return ExchangeSettings(**values)


@pytest.fixture
async def adapter(emulator: RunningEmulator) -> AsyncIterator[ExchangeAdapter]:
    async with ExchangeAdapter(settings_for(emulator), recv_window_ms=RECV_WINDOW_MS) as exchange:
        await exchange.load_markets()
        yield exchange


def inject(emulator: RunningEmulator, *rules: FaultRule) -> None:
    emulator.faults = FaultSchedule(seed=3, rules=list(rules))


def record_requests(emulator: RunningEmulator) -> None:
    """A zero-latency rule on every request: `faults.injected` then lists them all."""
    inject(emulator, FaultRule(FaultKind.LATENCY, probability=1.0, latency_ms=0))


def requests(emulator: RunningEmulator, method: str = "*", path: str = "*") -> list[str]:
    return [
        f"{r.method} {r.path}"
        for r in emulator.faults.injected
        if method in ("*", r.method) and path in ("*", r.path)
    ]


def limit_buy(sequence: int, amount: str = "0.01", price: str = "15000", **extra: Any) -> OrderRequest:
    return OrderRequest(
        SYMBOL,
        "buy",
        "limit",
        Decimal(amount),
        client_order_id("t", sequence),
        price=Decimal(price),
        **extra,
    )


# --- markets and candles ------------------------------------------------------------------------
async def test_markets_carry_the_exchanges_precision_and_limits(
    adapter: ExchangeAdapter, emulator: RunningEmulator
) -> None:
    markets = await adapter.load_markets()
    assert set(markets) == {SYMBOL}
    rules, served = markets[SYMBOL], emulator.rules["BTCUSDT"]
    assert rules.market_id == "BTCUSDT"
    assert (rules.base, rules.quote, rules.active) == ("BTC", "USDT", True)
    assert rules.amount_step == served.step_size
    assert rules.tick_size == served.tick_size
    assert rules.min_amount == served.min_qty
    assert rules.min_notional == served.min_notional
    with pytest.raises(BadSymbol):
        await adapter.market("DOGE/USDT")


async def test_ohlcv_pages_through_and_equals_the_file(
    adapter: ExchangeAdapter, emulator: RunningEmulator, data_dir: Path
) -> None:
    series = read_candle_file(data_dir / "binance_BTC-USDT_5m.csv")
    since, until = int(series.open_time_ms[0]), emulator.now_ms
    record_requests(emulator)
    candles = await adapter.fetch_ohlcv(SYMBOL, "5m", since, until)
    expected = series.between(since, until)
    assert len(candles) == len(expected) == START_BAR
    assert len(requests(emulator, "GET", "/api/v3/klines")) == 2  # two pages
    for index in (0, 999, 1000, START_BAR - 1):
        assert candles[index] == expected.candle(index)
    assert [c.open_time_ms for c in candles] == sorted({c.open_time_ms for c in candles})
    assert all(c.exchange == "binance" and c.timeframe == "5m" for c in candles)
    # A window inside the history, with `until` exclusive.
    window = await adapter.fetch_ohlcv(SYMBOL, "5m", since + 10 * FIVE_MIN, since + 13 * FIVE_MIN)
    assert [c.open_time_ms for c in window] == [since + k * FIVE_MIN for k in (10, 11, 12)]


@pytest.mark.parametrize("forming", [True, False])
async def test_the_forming_bar_gives_its_open_and_is_not_a_candle(data_dir: Path, forming: bool) -> None:
    """Binance's klines end with the bar still forming: its open is the next bar's open the
    simulated venue fills market orders at (CandleClosed.next_opens); it is never a closed bar."""
    series = read_candle_file(data_dir / "binance_BTC-USDT_5m.csv")
    opened = first_bar_ms(data_dir) + START_BAR * FIVE_MIN  # market time: this bar has just opened
    config = EmulatorConfig(data_dir=data_dir, start_time_ms=opened, forming_bar=forming)
    emulator = await start_emulator(config)
    try:
        now = opened + 2_000  # as the ingest asks: a moment after the close
        async with ExchangeAdapter(settings_for(emulator), now_ms=lambda: now) as adapter:
            candles = await adapter.fetch_ohlcv(SYMBOL, "5m", opened - 3 * FIVE_MIN, now)
            assert [c.open_time_ms for c in candles] == [opened - k * FIVE_MIN for k in (3, 2, 1)]
            assert candles[-1] == series.candle(START_BAR - 1)
            expected = float(series.open[START_BAR]) if forming else None
            assert adapter.opening_price(SYMBOL, "5m", opened) == expected
            assert adapter.opening_price(SYMBOL, "5m", opened + FIVE_MIN) is None
            assert adapter.opening_price(SYMBOL, "1h", opened) is None
    finally:
        await emulator.close()


async def test_ticker_book_and_balances(adapter: ExchangeAdapter) -> None:
    ticker = await adapter.fetch_ticker(SYMBOL)
    book = await adapter.fetch_top_of_book(SYMBOL)
    assert ticker.symbol == SYMBOL
    assert isinstance(ticker.last, Decimal)
    assert book.bid < book.ask
    assert book.bid_amount > 0
    assert book.ask_amount > 0
    balances = await adapter.fetch_balances()
    assert balances["USDT"].free == Decimal(10_000)
    assert balances["USDT"].total == Decimal(10_000)


# --- orders -----------------------------------------------------------------------------------------
async def test_limit_order_round_trip_by_client_order_id(adapter: ExchangeAdapter) -> None:
    ack = await adapter.create_order(limit_buy(1, amount="0.0123456", price="15000.004"))
    assert ack.via == "response"
    order = ack.order
    assert order.client_order_id == "t-1"
    assert order.status == "open"
    assert order.amount == Decimal("0.01234")  # truncated to the lot step
    assert order.price == Decimal("15000.00")  # rounded to the tick
    assert await adapter.fetch_order(SYMBOL, client_order_id="t-1") == order
    assert await adapter.fetch_order(SYMBOL, order_id=order.id) == order
    assert [o.id for o in await adapter.fetch_open_orders(SYMBOL)] == [order.id]
    balances = await adapter.fetch_balances()
    assert balances["USDT"].used == Decimal("0.01234") * Decimal("15000.00")

    cancelled = await adapter.cancel_order(SYMBOL, client_order_id="t-1")
    assert cancelled.outcome == "canceled"
    assert cancelled.order is not None
    assert cancelled.order.status == "canceled"
    assert await adapter.fetch_open_orders(SYMBOL) == []
    # Cancelling again is an answer, not an error to retry.
    again = await adapter.cancel_order(SYMBOL, order_id=order.id)
    assert again.outcome == "already_closed"
    assert again.order is not None
    assert again.order.status == "canceled"
    missing = await adapter.cancel_order(SYMBOL, client_order_id="t-999")
    assert (missing.outcome, missing.order) == ("not_found", None)


async def test_market_order_fills_and_shows_in_my_trades(
    adapter: ExchangeAdapter, emulator: RunningEmulator
) -> None:
    since = emulator.now_ms - 1
    ack = await adapter.create_order(
        OrderRequest(
            SYMBOL, "buy", "market", Decimal("0.01"), client_order_id("t", 2), reference_price=Decimal(19000)
        )
    )
    assert ack.order.status == "closed"
    assert ack.order.filled == Decimal("0.01")
    trades = await adapter.fetch_my_trades(SYMBOL, since)
    assert len(trades) >= 1
    assert {t.order_id for t in trades} == {ack.order.id}
    assert sum(t.amount for t in trades) == Decimal("0.01")
    assert all(t.side == "buy" and t.fee is not None for t in trades)


async def test_insufficient_funds_is_a_rejection_sent_once(
    adapter: ExchangeAdapter, emulator: RunningEmulator
) -> None:
    record_requests(emulator)
    with pytest.raises(InsufficientFunds) as caught:
        await adapter.create_order(limit_buy(3, amount="1", price="15000"))
    assert "insufficient" in caught.value.reason.lower()
    assert requests(emulator, "POST", ORDER) == [f"POST {ORDER}"]
    assert await adapter.fetch_open_orders(SYMBOL) == []


async def test_post_only_that_would_take_is_refused(adapter: ExchangeAdapter) -> None:
    book = await adapter.fetch_top_of_book(SYMBOL)
    with pytest.raises(PostOnlyWouldTake):
        await adapter.create_order(limit_buy(4, price=str(book.ask + 100), post_only=True))


@pytest.mark.parametrize(
    ("amount", "price", "reason"),
    [
        ("0.000001", "15000", "rounds to 0"),
        ("0.0001", "15000", "minimum notional"),  # 1.5 USDT < 5
        ("-1", "15000", "not positive"),
    ],
)
async def test_below_the_market_minimum_is_refused_before_any_request(
    adapter: ExchangeAdapter, emulator: RunningEmulator, amount: str, price: str, reason: str
) -> None:
    record_requests(emulator)
    with pytest.raises(BelowMinimum, match=reason):
        await adapter.create_order(limit_buy(5, amount=amount, price=price))
    assert requests(emulator) == []


async def test_resubmitting_a_client_order_id_returns_the_placed_order(adapter: ExchangeAdapter) -> None:
    first = await adapter.create_order(limit_buy(6))
    second = await adapter.create_order(limit_buy(6))
    assert second.via == "lookup"
    assert second.order.id == first.order.id
    assert len(await adapter.fetch_open_orders(SYMBOL)) == 1


# --- retries --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "rule",
    [
        FaultRule(FaultKind.HTTP_429, path=TICKER, nth=(1,), retry_after_s=1),
        FaultRule(FaultKind.HTTP_5XX, path=TICKER, nth=(1,), status=503),
        FaultRule(FaultKind.HTTP_5XX, path=TICKER, nth=(1,), status=504),
        # aiohttp itself retries a GET once on a dropped kept-alive connection: two resets.
        FaultRule(FaultKind.CONNECTION_RESET, path=TICKER, nth=(1, 2)),
        FaultRule(FaultKind.TIMEOUT_BEFORE_ACCEPT, path=TICKER, nth=(1,), hang_s=5),
        FaultRule(FaultKind.MALFORMED_JSON, path=TICKER, nth=(1,)),
    ],
    ids=lambda rule: f"{rule.kind.value}-{rule.status}",
)
async def test_a_failed_read_is_retried_and_succeeds(
    adapter: ExchangeAdapter, emulator: RunningEmulator, rule: FaultRule
) -> None:
    inject(emulator, rule)
    loop_time = __import__("asyncio").get_running_loop().time
    started = loop_time()
    ticker = await adapter.fetch_ticker(SYMBOL)
    assert ticker.last > 0
    assert emulator.faults.injected_kinds() == [rule.kind] * len(rule.nth)
    if rule.kind is FaultKind.HTTP_429:
        assert loop_time() - started >= 1.0  # Retry-After honoured


async def test_bad_keys_fail_at_once_without_retries(emulator: RunningEmulator) -> None:
    settings = settings_for(emulator, api_secret="not-the-secret")
    async with ExchangeAdapter(settings, recv_window_ms=RECV_WINDOW_MS) as exchange:
        record_requests(emulator)
        with pytest.raises(AuthenticationFailed) as caught:
            await exchange.fetch_balances()
    assert requests(emulator, "GET", "/api/v3/account") == ["GET /api/v3/account"]
    assert "not-the-secret" not in str(caught.value)


async def test_errors_carry_no_signature_key_or_ccxt_traceback(
    adapter: ExchangeAdapter, emulator: RunningEmulator
) -> None:
    # A signed GET that times out: ccxt's message holds the URL with its signed query string.
    inject(emulator, FaultRule(FaultKind.HTTP_5XX, path="/api/v3/account", probability=1.0, status=504))
    with pytest.raises(RequestTimedOut) as caught:
        await adapter.fetch_balances()
    text = str(caught.value)
    assert "/api/v3/account?" in text
    assert "signature" not in text
    assert "timestamp=" not in text
    assert "emulator-key" not in text
    assert caught.value.ccxt_error == "RequestTimeout"
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


# --- the unknown-outcome protocol ---------------------------------------------------------------------
async def test_timeout_after_accept_finds_the_order_by_client_order_id(
    adapter: ExchangeAdapter, emulator: RunningEmulator
) -> None:
    inject(emulator, FaultRule(FaultKind.TIMEOUT_AFTER_ACCEPT, path=ORDER, method="POST", nth=(1,), hang_s=5))
    ack = await adapter.create_order(limit_buy(10))
    assert ack.via == "lookup"
    assert ack.order.client_order_id == "t-10"
    assert ack.order.status == "open"
    open_orders = emulator.engine.open_orders("BTCUSDT")
    assert [o.client_order_id for o in open_orders] == ["t-10"]  # exactly one: no duplicate


async def test_timeout_before_accept_resolves_to_not_placed(
    adapter: ExchangeAdapter, emulator: RunningEmulator
) -> None:
    inject(
        emulator, FaultRule(FaultKind.TIMEOUT_BEFORE_ACCEPT, path=ORDER, method="POST", nth=(1,), hang_s=5)
    )
    loop_time = __import__("asyncio").get_running_loop().time
    started = loop_time()
    with pytest.raises(OrderNotPlaced) as caught:
        await adapter.create_order(limit_buy(11))
    assert caught.value.client_order_id == "t-11"
    # It looked again only once the request could no longer be executed (recvWindow + 1 s).
    assert loop_time() - started >= TIMEOUT_S + RECV_WINDOW_MS / 1000 + 1.0
    assert emulator.engine.open_orders() == []
    # Not placed, so it may be sent again under the same id.
    assert (await adapter.create_order(limit_buy(11))).via == "response"


@pytest.mark.parametrize(
    "kind",
    [FaultKind.CONNECTION_RESET, FaultKind.MALFORMED_JSON, FaultKind.DUPLICATE_RESPONSE, FaultKind.HTTP_5XX],
)
async def test_a_lost_or_garbled_create_answer_is_resolved_by_lookup(
    adapter: ExchangeAdapter, emulator: RunningEmulator, kind: FaultKind
) -> None:
    await adapter.create_order(limit_buy(20))  # something for DUPLICATE_RESPONSE to replay
    inject(emulator, FaultRule(kind, path=ORDER, method="POST", nth=(1,)))
    if kind in (FaultKind.CONNECTION_RESET, FaultKind.HTTP_5XX):
        # The request never executed: after the settle time, "not placed".
        with pytest.raises(OrderNotPlaced):
            await adapter.create_order(limit_buy(21))
        assert [o.client_order_id for o in emulator.engine.open_orders()] == ["t-20"]
        return
    ack = await adapter.create_order(limit_buy(21))
    assert ack.via == "lookup"
    assert ack.order.client_order_id == "t-21"
    assert sorted(o.client_order_id or "" for o in emulator.engine.open_orders()) == ["t-20", "t-21"]


async def test_lookups_that_keep_failing_leave_the_outcome_unknown(emulator: RunningEmulator) -> None:
    inject(
        emulator,
        FaultRule(FaultKind.TIMEOUT_AFTER_ACCEPT, path=ORDER, method="POST", nth=(1,), hang_s=5),
        FaultRule(FaultKind.HTTP_5XX, path=ORDER, method="GET", probability=1.0),
    )
    settings = settings_for(emulator, retry_cap_s=0.2)
    async with ExchangeAdapter(settings, recv_window_ms=RECV_WINDOW_MS, lost_order_lookups=3) as adapter:
        with pytest.raises(OutcomeUnknown) as caught:
            await adapter.create_order(limit_buy(30))
        assert caught.value.client_order_id == "t-30"
        assert len(requests(emulator, "GET", ORDER)) == 3
        # Reconciliation later finds it by the same id.
        emulator.faults.clear()
        assert (await adapter.fetch_order(SYMBOL, client_order_id="t-30")).status == "open"
