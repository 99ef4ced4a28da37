"""Market orders filled at the next bar's open as soon as that open is known (the venue's forming
bar), instead of when the next bar closes: the same fills, the same book when the next decision
is made, and the ingest's next_opens as the venues show them.

1. the fill model: fill_at_open, then fill_on_bar over what it left, is fill_on_bar (hypothesis);
2. the simulated venue: a seeded stream of orders over real bars, one venue told each next open
   and one not, gives the same trades and order states, Decimal for Decimal (through repr);
3. the trading task: a scripted replay with every kind of exit gives the same trade memory,
   fills and positions either way, and with the next opens an entry is held before the bar
   after its decision closes;
4. the ingest: CandleClosed.next_opens from the next bar of a backlog and from the replay
   venue's forming bar; a venue that shows no forming bar, or a bad price, gives none.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, Literal

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from replay_stack import BTC, ETH, Replay, config_of, contiguous, intent, open_ms, rows, series_of
from test_fill_model import bars, orders

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import Candle
from huracan.core.events import CandleClosed
from huracan.core.intents import AgentAction, BarDecided, OrderIntent
from huracan.exchange.errors import PostOnlyWouldTake
from huracan.exchange.models import OrderRequest, Trade
from huracan.exchange.replay import ReplayVenue
from huracan.execution.fill_model import FillCosts, SimBar, SimOrder, fill_at_open, fill_on_bar
from huracan.execution.sim_venue import SimulatedVenue, replay_market_rules
from huracan.market.ingest import CandleIngest, IngestPlan
from huracan.memory.candles import CandleStore

D = Decimal
STEP = 300_000
MIDNIGHT = 6_624  # the first BTC bar of 2021-01-24


# --- 1. the fill model --------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(bar_=bars(), orders_=orders(), share=st.integers(1, 100).map(lambda x: D(x) / 100))
def test_fills_at_the_open_then_at_the_close_are_the_bars_fills(
    bar_: SimBar, orders_: list[SimOrder], share: Decimal
) -> None:
    costs = FillCosts(D(10), D(2), D(1), D(2), share)
    early = fill_at_open(orders_, bar_.open_time_ms, bar_.open, costs)
    assert all(f.liquidity == "taker" for f in early)
    taken = {f.client_order_id for f in early}
    late = fill_on_bar([o for o in orders_ if o.client_order_id not in taken], bar_, costs)
    assert all(f.liquidity == "maker" for f in late)  # every taker fill came at the open
    whole = fill_on_bar(orders_, bar_, costs)
    assert sorted(early + late, key=lambda f: f.client_order_id) == sorted(
        whole, key=lambda f: f.client_order_id
    )


# --- 2. the simulated venue ---------------------------------------------------------------------


async def test_a_venue_told_the_next_open_trades_as_one_that_waits_for_the_close() -> None:
    """Random orders on real BTC bars (market, marketable and resting limits, post-only), placed
    after each bar's close; `early` hears the next bar's open before it closes, `late` does not.
    Once both have had a bar's close they hold the same trades and open orders."""
    series = series_of(BTC)
    markets = replay_market_rules({BTC: series})
    costs = FillCosts(D(10), D(2), D(1), D(2), D("0.05"))
    now = [0]
    early, late = (SimulatedVenue("binance", markets, costs, lambda: now[0]) for _ in range(2))
    traded: tuple[list[Trade], list[Trade]] = ([], [])
    rng = random.Random(11)
    first = 4_000
    for i in range(first, first + 400):
        candle = series.candle(i)
        now[0] = candle.open_time_ms + STEP
        traded[0].extend(early.on_bar(candle))
        traded[1].extend(late.on_bar(candle))
        assert repr(sorted(traded[0], key=lambda t: t.id)) == repr(sorted(traded[1], key=lambda t: t.id))
        assert repr(await early.fetch_open_orders(BTC)) == repr(await late.fetch_open_orders(BTC))
        close = D(repr(candle.close))
        for k in range(rng.randrange(0, 4)):
            kind: Literal["market", "limit"] = rng.choice(("market", "limit", "limit"))
            price = (close * (1 + D(rng.randrange(-40, 41)) / 10_000)).quantize(D("0.01"))
            request = OrderRequest(
                BTC, rng.choice(("buy", "sell")), kind, D(rng.randrange(1, 300)) / 1000, f"o{i}-{k}",
                price=price if kind == "limit" else None,
                post_only=kind == "limit" and rng.random() < 0.5, reference_price=close,
            )  # fmt: skip
            try:
                acks = [await early.create_order(request), await late.create_order(request)]
            except PostOnlyWouldTake:  # refused by both: they see the same close
                continue
            assert acks[0].order == acks[1].order
        following = series.candle(i + 1)
        taken = early.on_open(BTC, following.open_time_ms, following.open)
        assert all(t.taker_or_maker == "taker" and t.timestamp_ms == following.open_time_ms for t in taken)
        traded[0].extend(taken)
    assert sum(t.taker_or_maker == "taker" for t in traded[0]) > 100
    assert sum(t.taker_or_maker == "maker" for t in traded[0]) > 20


# --- 3. the trading task ------------------------------------------------------------------------


def scripted(first: int, last: int) -> dict[int, AgentAction]:
    """Enter when flat on most bars, exit by signal now and then: the engine's stop-loss,
    take-profit and time exits (tight in the config below) do the rest."""
    rng = random.Random(5)
    actions = (AgentAction.ENTER_LONG_NORMAL, AgentAction.ENTER_LONG_SMALL, AgentAction.EXIT_POSITION)
    decided = {i: rng.choice(actions) for i in range(first, last) if rng.random() < 0.6}
    # In two bars before midnight, out by signal on the bar before it: the exit fills at
    # midnight's open, which the next trading day's tally counts.
    decided[MIDNIGHT - 3] = decided[MIDNIGHT - 2] = AgentAction.ENTER_LONG_NORMAL
    decided[MIDNIGHT - 1] = AgentAction.EXIT_POSITION
    return decided


Seen = tuple[Any, ...]


# Taker entries; or maker entries (post-only, re-priced, taken as a fallback) with a daily loss
# limit and a circuit breaker tight enough to halt trading inside the window.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "taker": ({}, {}),
    "maker_breaker": (
        {"maker_entries": True, "reprice_after_s": 300.0, "max_reprices": 1},
        {"daily_loss_limit": "8", "circuit_breaker_loss": "12"},
    ),
}


async def replay(
    db_pool: asyncpg.Pool, *, next_opens: bool, first: int, last: int, variant: str = "taker"
) -> dict[str, list[Seen]]:
    """The trades, fills and the book as each decision saw it, of a scripted replay over BTC and
    ETH with tight exits."""
    decisions = scripted(first, last)
    execution, risk = VARIANTS[variant]
    config = config_of(
        symbols=(BTC, ETH),
        execution={"stop_loss_bps": 40.0, "take_profit_bps": 60.0, "max_hold_bars": 5, **execution},
        risk=risk,
    )
    replay = Replay.build(config, db_pool, start=first, next_opens=next_opens)
    await replay.start()
    book = replay.service.executor.book
    seen: list[Seen] = []
    entered: dict[int, list[str]] = {}

    def decide(i: int) -> Sequence[OrderIntent]:
        # What the agent's context is made of, as the decision on bar i reads it.
        held = tuple(
            (s, p.quantity, p.opened_ms, p.hold_bars, p.stop_price, p.last_price)
            for s, p in sorted(book.positions.items())
        )
        seen.append(
            (
                i,
                held,
                book.today.day,
                book.today.trades,
                book.today.wins,
                book.realised_total_quote,
                book.max_drawdown,
            )
        )
        action = decisions.get(i)
        if action is None:
            return ()
        exiting = action is AgentAction.EXIT_POSITION
        chosen = [s for s in (BTC, ETH) if (s in book.positions) == exiting]
        entered[i] = [] if exiting else chosen
        return tuple(intent(action, s, i) for s in chosen)

    for i in range(first, last + 1):
        await replay.bar(i, decide)
        if next_opens and variant == "taker":  # its entries are held while bar i + 1 is forming
            for symbol in entered.get(i, []):
                assert book.positions[symbol].opened_ms == open_ms(BTC, i + 1), (i, symbol)
    denied = replay.service.gate.stats.denied
    assert denied.keys() <= {"exit_in_progress"} if variant == "taker" else "halted" in denied
    memory = await rows(
        db_pool,
        "SELECT symbol, entry_time, exit_time, entry_price, exit_price, quantity, pnl_quote, fees_quote, "
        "exit_reason FROM trade_memory ORDER BY exit_time, symbol",
    )
    fills = await rows(
        db_pool,
        "SELECT side, price, quantity, fee, liquidity, filled_at FROM fills ORDER BY filled_at, price",
    )
    return {"memory": [tuple(r) for r in memory], "fills": [tuple(r) for r in fills], "seen": seen}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
async def test_a_replay_trades_the_same_with_the_next_opens(db_pool: asyncpg.Pool, variant: str) -> None:
    first, last = MIDNIGHT - 60, MIDNIGHT + 60
    assert contiguous((BTC, ETH), first, last + 1)
    waited = await replay(db_pool, next_opens=False, first=first, last=last, variant=variant)
    await db_pool.execute(
        "TRUNCATE fills, trade_memory, positions, orders, risk_events RESTART IDENTITY CASCADE"
    )
    told = await replay(db_pool, next_opens=True, first=first, last=last, variant=variant)
    if variant == "taker":
        assert {r[-1] for r in waited["memory"]} >= {"stop_loss", "take_profit", "time_exit", "signal"}
        assert len(waited["memory"]) >= 15
        midnight = [r for r in waited["memory"] if r[2].timestamp() * 1000 == open_ms(BTC, MIDNIGHT)]
        assert midnight
        assert midnight[0][-1] == "signal"
    else:
        assert len(waited["memory"]) >= 3  # before the breaker halted new entries
        assert "maker" in {f[-2] for f in waited["fills"]}
    assert told["seen"] == waited["seen"]  # the same book at every decision
    # The last bar's orders fill only where its next open was told (bar last + 1 never comes).
    after = [open_ms(BTC, last + 1)]
    assert [f for f in told["fills"] if f[-1].timestamp() * 1000 not in after] == waited["fills"]
    assert [r for r in told["memory"] if r[2].timestamp() * 1000 not in after] == waited["memory"]


async def test_a_late_decision_leaves_its_orders_to_the_next_bars_close(db_pool: asyncpg.Pool) -> None:
    """Shadow waits for the decision step only so long: a bar whose marker did not come is not
    filled at the next open, so the late step still decides on this bar's book."""
    first = 6_500
    replay = Replay.build(config_of(), db_pool, start=first, next_opens=True)
    await replay.start()
    service = replay.service
    service.decision_wait_s = 0.05
    opened = open_ms(BTC, first)
    replay.clock.now = opened + STEP
    following = float(series_of(BTC).open[first + 1])
    event = CandleClosed("5m", opened, {BTC: series_of(BTC).candle(first)}, next_opens={BTC: following})
    handling = asyncio.create_task(service.on_bar(event, replay.ctx))
    await service.positions_ready(opened)
    await service.intents.put(intent(AgentAction.ENTER_LONG_NORMAL, BTC, first))
    await asyncio.wait_for(handling, 5)  # the bar moves on at the deadline, without its marker
    assert BTC not in replay.book_positions
    assert len(service.executor.orders) == 1  # the entry works on
    await service.intents.put(BarDecided(opened))  # the late marker, skipped by the next bar
    await replay.bar(first + 1)
    assert replay.book_positions[BTC].opened_ms == open_ms(BTC, first + 1)


# --- 4. the ingest ------------------------------------------------------------------------------


class NoFormingBar:
    """A venue whose klines stop at the last closed bar, or show a forming bar with a bad open."""

    def __init__(self, venue: ReplayVenue, opening: float | None) -> None:
        self.venue, self.opening = venue, opening
        self.exchange_id = venue.exchange_id

    async def fetch_ohlcv(self, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list[Candle]:
        return await self.venue.fetch_ohlcv(symbol, timeframe, since_ms, until_ms)

    def opening_price(self, symbol: str, timeframe: str, open_time_ms: int) -> float | None:
        return self.opening


@pytest.mark.db
async def test_ingest_publishes_the_next_bars_open_where_it_is_known(db_pool: asyncpg.Pool) -> None:
    symbols = (BTC, ETH)
    venue = ReplayVenue.from_directory(BUNDLED_CANDLES_DIR, symbols, "5m", backfill_days=1)
    plan = IngestPlan(symbols, "5m", 1, close_delay_ms=0, straggler_wait_ms=0)
    ingest = CandleIngest(plan, venue, CandleStore(db_pool), venue.clock)
    await ingest.backfill()
    start = venue.clock.now_ms()
    await venue.clock.sleep_until(start + 3 * STEP)  # a backlog of three bars
    events = await ingest.ingest_closed_bars()
    assert [e.open_time_ms for e in events] == [start, start + STEP, start + 2 * STEP]
    for event in events:
        opened = event.open_time_ms + STEP
        assert opened <= venue.clock.now_ms()  # the last one's next bar is forming now
        for symbol in symbols:
            i = int(series_of(symbol).open_time_ms.searchsorted(opened))
            assert event.next_opens[symbol] == float(series_of(symbol).open[i])
    for symbol in symbols:  # nothing is told of a bar that has not opened
        assert venue.opening_price(symbol, "5m", events[-1].open_time_ms + 2 * STEP) is None
    for opening in (None, math.nan, -1.0, 0.0):
        quiet = CandleIngest(plan, NoFormingBar(venue, opening), CandleStore(db_pool), venue.clock)
        await quiet.backfill()
        await venue.clock.sleep_until(venue.clock.now_ms() + STEP)
        (event,) = await quiet.ingest_closed_bars()
        assert event.next_opens == {}, opening
    # Past the replay's end there is no next bar, even where a longer file has one.
    await venue.clock.sleep_until(venue.end_ms)
    assert all(venue.opening_price(s, "5m", venue.end_ms) is None for s in symbols)
    assert venue.opening_price(BTC, "5m", venue.end_ms - STEP) is None  # it has closed: no longer forming
