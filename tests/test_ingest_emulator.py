"""Candle ingestion through the whole real path: CandleIngest -> ExchangeAdapter -> the real
ccxt `binance` client over HTTP -> the loopback emulator, into a real PostgreSQL. The emulator
serves a gap-ridden feed (rows withheld from its candle file) and hostile klines payloads
(FaultKind.CORRUPT_KLINES); ingestion must store exactly the valid bars and report the rest."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from huracan.config.sections import ExchangeSettings
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.errors import BadResponse, ExchangeError
from huracan.market.candle_files import read_candle_file
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.market.universe import UnknownSymbols, check_universe
from huracan.market.validation import RejectReason
from huracan.memory.candles import CandleStore
from huracan.memory.database import create_pool
from huracan.testing.emulator import (
    EmulatorClock,
    EmulatorConfig,
    FaultKind,
    FaultRule,
    FaultSchedule,
    KlineCorruption,
    KlineDamage,
    RunningEmulator,
    start_emulator,
)

REPO = Path(__file__).resolve().parents[1]
SYMBOL = "BTC/USDT"
KLINES = "/api/v3/klines"
STEP = 300_000
ROWS = 700
START_BAR = 600  # market time starts when this many bars (of the file) have closed
DAY_BARS = 288


BTC_5M = BUNDLED_CANDLES_DIR / "binance_BTC-USDT_5m.csv"


def write_feed(target: Path, withheld: Collection[int] = ()) -> Path:
    """The first ROWS bars of BTC/USDT 5m, less the rows (0-based bar indices) withheld."""
    lines = BTC_5M.read_text().splitlines()[: ROWS + 1]
    kept = [lines[0]] + [line for i, line in enumerate(lines[1:]) if i not in withheld]
    (target / "binance_BTC-USDT_5m.csv").write_text("\n".join(kept) + "\n")
    return target


def settings_for(emulator: RunningEmulator) -> ExchangeSettings:
    return ExchangeSettings(
        api_url=emulator.url,
        api_key="emulator-key",
        api_secret="emulator-secret",
        request_timeout_s=2.0,
        retry_attempts=2,
        retry_cap_s=0.01,
    )


async def no_wait(_: float) -> None:
    await asyncio.sleep(0)


def adapter_for(emulator: RunningEmulator) -> ExchangeAdapter:
    return ExchangeAdapter(
        settings_for(emulator),
        enable_ccxt_rate_limit=False,
        sleep=no_wait,
        now_ms=lambda: emulator.now_ms,
    )


# Every stored bar must meet validation's rules (the table's own checks let NaN through numeric).
INVALID_BARS = """
SELECT count(*) FROM candles
WHERE NOT (open > 0 AND high > 0 AND low > 0 AND close > 0 AND volume >= 0
           AND low <= least(open, close) AND high >= greatest(open, close)
           AND 'NaN'::numeric NOT IN (open, high, low, close, volume)
           AND (extract(epoch FROM open_time) * 1000)::bigint % $1 = 0
           AND (extract(epoch FROM open_time) * 1000)::bigint + $1 <= $2)
"""


# --- a gap-ridden, partly corrupt feed ---------------------------------------------------------
WITHHELD = {100, 101, 102, 300, 640}  # bar indices of the file: the venue never had them
# Bar index -> the damage the venue does to it on every answer that holds it.
CORRUPT: dict[int, tuple[KlineCorruption, int]] = {
    150: (KlineCorruption.HIGH_BELOW_LOW, 2),
    200: (KlineCorruption.ZERO_PRICE, 1),
    250: (KlineCorruption.NEGATIVE_PRICE, 4),
    350: (KlineCorruption.NAN, 2),
    400: (KlineCorruption.TEXT, 5),  # ccxt reads "abc" as None: the adapter makes it NaN
    410: (KlineCorruption.TRUNCATED_ROW, 0),  # low, close, volume missing: NaN
    450: (KlineCorruption.MISALIGNED_TIME, 0),
    500: (KlineCorruption.NEGATIVE_VOLUME, 5),
    520: (KlineCorruption.FUTURE_TIME, 0),  # dated a year ahead: outside every window asked for
    540: (KlineCorruption.ROW_NOT_A_LIST, 0),  # no open time to read: left out by the adapter
    620: (KlineCorruption.INFINITE, 3),  # closes after the start: met by the live ingestion
}
EXPECTED_REASONS = {
    RejectReason.INCONSISTENT_RANGE: 1,
    RejectReason.NON_POSITIVE_PRICE: 2,
    RejectReason.NOT_FINITE: 4,
    RejectReason.MISALIGNED: 1,
    RejectReason.NEGATIVE_VOLUME: 1,
}


async def test_a_gap_ridden_partly_corrupt_feed_stores_exactly_the_valid_bars(
    tmp_path: Path, db_pool: asyncpg.Pool
) -> None:
    data = write_feed(tmp_path, WITHHELD)
    source = read_candle_file(BTC_5M).between(0, 2**62)
    first = int(source.open_time_ms[0])
    time_of = {i: first + i * STEP for i in range(ROWS)}
    damage = tuple(
        KlineDamage(kind, column=column, open_time_ms=time_of[i]) for i, (kind, column) in CORRUPT.items()
    )
    schedule = FaultSchedule(
        seed=1, rules=[FaultRule(FaultKind.CORRUPT_KLINES, path=KLINES, probability=1.0, damage=damage)]
    )
    emulator = await start_emulator(
        EmulatorConfig(data_dir=data, start_time_ms=time_of[START_BAR], faults=schedule)
    )
    try:
        clock = EmulatorClock(emulator)
        plan = IngestPlan((SYMBOL,), "5m", backfill_days=2, close_delay_ms=0, straggler_wait_ms=0)
        async with adapter_for(emulator) as adapter:
            ingest = CandleIngest(plan, adapter, CandleStore(db_pool), clock)
            await ingest.backfill()
            window_start = time_of[START_BAR - 2 * DAY_BARS]
            # Each corrupt bar of the window: rejected in the backfill, and again when its gap is
            # asked for once more; then the gap is known as one the venue cannot fill.
            backfilled = {r: 2 * n for r, n in EXPECTED_REASONS.items()}
            backfilled[RejectReason.NOT_FINITE] -= 2  # bar 620 is not closed yet
            assert ingest.stats.rejected == Counter({str(r): n for r, n in backfilled.items()})
            holes = sorted(
                time_of[i] for i in WITHHELD | set(CORRUPT) if window_start <= time_of[i] < emulator.now_ms
            )
            # One gap per hole, bars 100-102 being one gap.
            assert sorted(first_ms for _, first_ms, _ in ingest._unfillable) == [
                t for t in holes if t not in (time_of[101], time_of[102])
            ]
            assert ingest.stats.gaps_repaired == 0
            # Asked again, a known unfillable gap is not fetched again.
            emulator.faults.injected.clear()
            await ingest.repair_gaps(SYMBOL, window_start, emulator.now_ms)
            assert emulator.faults.injected == []

            # Live: 40 more bars close, bar 620 (corrupt) and 640 (withheld) among them.
            for _ in range(4):
                await clock.sleep_until(emulator.now_ms + 10 * STEP)
                await ingest.ingest_closed_bars()
            assert ingest.stats.rejected[RejectReason.NOT_FINITE] == 2 * 3 + 1
            end = emulator.now_ms

        bad = set(WITHHELD) | set(CORRUPT)
        expected = [i for i in range(START_BAR - 2 * DAY_BARS, ROWS) if time_of[i] < end and i not in bad]
        stored = await CandleStore(db_pool).read_series("binance", SYMBOL, "5m", 0, 2**62)
        assert [int(t) for t in stored.open_time_ms] == [time_of[i] for i in expected]
        for k, i in enumerate(expected):
            assert stored.candle(k) == source.candle(i)
        assert ingest.stats.stored == len(expected)
        assert await db_pool.fetchval(INVALID_BARS, STEP, end) == 0
    finally:
        await emulator.close()


# --- hostile payloads, fuzzed ------------------------------------------------------------------
damage_strategy = st.builds(
    KlineDamage,
    kind=st.sampled_from(KlineCorruption),
    row=st.integers(min_value=-400, max_value=400),
    column=st.integers(min_value=0, max_value=5),
)
rule_strategy = st.builds(
    FaultRule,
    kind=st.just(FaultKind.CORRUPT_KLINES),
    path=st.just(KLINES),
    probability=st.sampled_from([0.3, 0.7, 1.0]),
    damage=st.lists(damage_strategy, min_size=1, max_size=6).map(tuple),
)


class FuzzRig:
    """One emulator, one adapter and one pool on an event loop of the test's own, so that
    hypothesis (which runs sync examples) can drive them example after example."""

    def __init__(self, data: Path, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator = self.run(start_emulator(EmulatorConfig(data_dir=data)))
        self.start_ms = self.emulator.now_ms
        self.pool: asyncpg.Pool = self.run(create_pool(dsn, min_size=1, max_size=2, command_timeout=30))
        self.adapter = adapter_for(self.emulator)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.adapter.close())
        self.run(self.pool.close())
        self.run(self.emulator.close())
        self.loop.close()


@pytest.fixture
def rig(tmp_path: Path, db_dsn: str) -> Iterator[FuzzRig]:
    made = FuzzRig(write_feed(tmp_path), db_dsn)
    yield made
    made.close()


def test_hostile_klines_never_crash_ingestion_nor_get_stored(rig: FuzzRig) -> None:
    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(rules=st.lists(rule_strategy, min_size=1, max_size=2), seed=st.integers(0, 2**16))
    def example(rules: list[FaultRule], seed: int) -> None:
        rig.run(one_example(rig, rules, seed))

    example()


async def one_example(rig: FuzzRig, rules: list[FaultRule], seed: int) -> None:
    await rig.pool.execute("DELETE FROM candles")
    rig.emulator.faults = FaultSchedule(seed=seed, rules=rules)
    clock = EmulatorClock(rig.emulator)
    plan = IngestPlan((SYMBOL,), "5m", backfill_days=1, close_delay_ms=0, straggler_wait_ms=0)
    ingest = CandleIngest(plan, rig.adapter, CandleStore(rig.pool), clock)
    failure: ExchangeError | None = None
    try:
        await ingest.backfill()
        await clock.sleep_until(clock.now_ms() + 3 * STEP)
        await ingest.ingest_closed_bars()
    except ExchangeError as exc:  # our own errors only: anything else fails the example
        failure = exc
    # Garbage that no bar could be read from is BadResponse, and nothing else is raised.
    assert failure is None or isinstance(failure, BadResponse), repr(failure)
    assert await rig.pool.fetchval(INVALID_BARS, STEP, clock.now_ms()) == 0
    # Every bar stored is the venue's own bar, unchanged.
    stored = await CandleStore(rig.pool).read_series("binance", SYMBOL, "5m", 0, 2**62)
    truth = read_candle_file(BTC_5M)
    index = {int(t): i for i, t in enumerate(truth.open_time_ms[:ROWS])}
    for k in range(len(stored)):
        bar = stored.candle(k)
        assert bar == truth.candle(index[bar.open_time_ms])
        assert all(math.isfinite(v) for v in (bar.open, bar.high, bar.low, bar.close, bar.volume))
    assert ingest.stats.stored == len(stored)


# --- the universe --------------------------------------------------------------------------------
@pytest.fixture
async def plain_emulator(tmp_path: Path) -> AsyncIterator[RunningEmulator]:
    running = await start_emulator(EmulatorConfig(data_dir=write_feed(tmp_path)))
    yield running
    await running.close()


async def test_a_symbol_the_exchange_does_not_list_is_a_clear_error(plain_emulator: RunningEmulator) -> None:
    async with adapter_for(plain_emulator) as adapter:
        await check_universe(adapter, ["BTC/USDT"])
        with pytest.raises(UnknownSymbols) as caught:
            await check_universe(adapter, ["BTC/USDT", "DOGE/USDT", "ETH/BTC"])
    assert caught.value.missing == ("DOGE/USDT", "ETH/BTC")
    assert "DOGE/USDT, ETH/BTC" in str(caught.value)
    assert "binance" in str(caught.value)


async def test_an_exchange_outage_does_not_stop_ingestion(tmp_path: Path, db_pool: asyncpg.Pool) -> None:
    """5xx on every klines request, past the adapter's retries: the bar is asked for again at the
    next bar instead of the task crashing, and nothing is lost once the venue answers again."""
    data = write_feed(tmp_path)
    first = int(read_candle_file(data / "binance_BTC-USDT_5m.csv").open_time_ms[0])
    emulator = await start_emulator(EmulatorConfig(data_dir=data, start_time_ms=first + START_BAR * STEP))
    try:
        clock = EmulatorClock(emulator)
        plan = IngestPlan((SYMBOL,), "5m", backfill_days=1, close_delay_ms=0, straggler_wait_ms=0)
        async with adapter_for(emulator) as adapter:
            ingest = CandleIngest(plan, adapter, CandleStore(db_pool), clock)
            await ingest.backfill()
            stored_before = ingest.stats.stored
            emulator.faults = FaultSchedule(
                seed=2, rules=[FaultRule(FaultKind.HTTP_5XX, path=KLINES, probability=1.0, status=503)]
            )
            await clock.sleep_until(clock.now_ms() + 2 * STEP)
            assert await ingest.ingest_closed_bars() == []
            assert ingest.stats.fetch_failures == 1
            emulator.faults = FaultSchedule(seed=3, rules=[])
            await clock.sleep_until(clock.now_ms() + STEP)
            events = await ingest.ingest_closed_bars()
            assert len(events) == 3  # the two bars of the outage, then the new one
            assert ingest.stats.stored == stored_before + 3
    finally:
        await emulator.close()
