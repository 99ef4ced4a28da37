"""Paper books: a model's decisions filled by the canonical rules, bar by bar, equal to the
reference simulation of the same actions; and the results they add to model_performance."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import asyncpg
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.agent.paper import PaperBook, PaperTrade
from huracan.agent.performance import PerformanceRecorder
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import CandleSeries
from huracan.core.intents import ENTRY_ACTIONS, AgentAction, OrderIntent, valid_actions
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.env import EnvConfig
from huracan.rl.reference import simulate

RULES = EnvConfig(episode_bars=10**6, max_drawdown=1.0)
ETH: CandleSeries = read_candle_file(find_candle_files(BUNDLED_CANDLES_DIR, "5m")["ETH/USDT"])


def intent(symbol: str, action: AgentAction, time_ms: int) -> OrderIntent:
    return OrderIntent.from_action(
        action,
        symbol=symbol,
        bar_open_time_ms=time_ms,
        reference_price=Decimal("1"),
        model_version="m-paper",
        confidence=0.9,
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(0, len(ETH) - 400), st.lists(st.integers(0, 5), min_size=1, max_size=300))
def test_a_paper_book_fills_like_the_reference(start: int, choices: list[int]) -> None:
    # A valid action sequence: each choice picks among the actions the position allows.
    actions: list[AgentAction] = []
    held = False
    for c in choices:
        allowed = valid_actions(held)
        action = allowed[c % len(allowed)]
        actions.append(action)
        if action in ENTRY_ACTIONS:
            held = True
        elif action is AgentAction.EXIT_POSITION:
            held = False
    reference = simulate(
        ETH.open.tolist(),
        ETH.close.tolist(),
        [int(a) for a in actions],
        start,
        RULES,
        day=(ETH.open_time_ms // 86_400_000).tolist(),
    )
    book = PaperBook("m-paper", ["ETH/USDT"], RULES)
    times = ETH.open_time_ms
    trades: list[PaperTrade] = []
    for t in range(start + 1):
        book.on_bar(int(times[t]), {"ETH/USDT": ETH.candle(t)})
    for step, action in enumerate(actions, start=1):
        if action not in (AgentAction.DO_NOTHING, AgentAction.HOLD_POSITION):
            book.submit(intent("ETH/USDT", action, int(times[start + step - 1])))
        trades += book.on_bar(int(times[start + step]), {"ETH/USDT": ETH.candle(start + step)})
        account = book.accounts["ETH/USDT"]
        assert account.equity == pytest.approx(reference.bars[step].equity, rel=1e-12)
        assert account.has_position == reference.bars[step].has_position
    assert len(trades) == reference.trades
    assert sum(t.won for t in trades) == reference.wins
    for trade in trades:
        assert (trade.pnl > 0) == trade.won
        assert trade.entry_time_ms < trade.exit_time_ms
        assert trade.fees > 0


def test_a_decision_no_longer_valid_at_its_fill_is_dropped() -> None:
    book = PaperBook("m-paper", ["ETH/USDT"], RULES)
    t = ETH.open_time_ms
    book.on_bar(int(t[0]), {"ETH/USDT": ETH.candle(0)})
    book.submit(intent("ETH/USDT", AgentAction.EXIT_POSITION, int(t[0])))  # nothing to exit
    book.on_bar(int(t[1]), {"ETH/USDT": ETH.candle(1)})
    assert book.dropped == 1
    assert not book.snapshot(["ETH/USDT"]).has_position[0]
    book.submit(intent("ETH/USDT", AgentAction.ENTER_LONG_LARGE, int(t[1])))
    book.on_bar(int(t[2]), {"ETH/USDT": ETH.candle(2)})
    snap = book.snapshot(["ETH/USDT"])
    assert snap.has_position[0]
    assert snap.size_multiplier[0] == 1.5
    expected = (ETH.close[2] / (ETH.open[2] * RULES.buy_factor) - 1) * 1e4
    assert snap.unrealised_pnl_bps[0] == pytest.approx(expected)


def trade(version: str, day: date, pnl: float, bps: float) -> PaperTrade:
    exit_ms = int(np.datetime64(day.isoformat(), "ms").astype(np.int64)) + 3_600_000
    return PaperTrade(version, "ETH/USDT", exit_ms - 600_000, exit_ms, 1.0, 100.0, 101.0, pnl, 0.001, bps)


@pytest.mark.db
async def test_results_are_added_per_version_and_day_never_replaced(db_pool: asyncpg.Pool) -> None:
    recorder = PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"))
    monday, tuesday = date(2021, 3, 1), date(2021, 3, 2)
    recorder.record(
        [
            trade("m-a", monday, 0.01, 40.0),
            trade("m-a", monday, -0.005, -20.0),
            trade("m-b", monday, 0.002, 8.0),
        ]
    )
    assert await recorder.flush(db_pool) == 2
    assert await recorder.flush(db_pool) == 0  # nothing pending: nothing added twice
    recorder.record([trade("m-a", monday, 0.004, 16.0), trade("m-a", tuesday, -0.001, -4.0)])
    await recorder.flush(db_pool)
    rows = {
        (r["model_version"], r["day"]): r
        for r in await db_pool.fetch("SELECT * FROM model_performance ORDER BY model_version, day")
    }
    a = rows[("m-a", monday)]
    assert (a["trades"], a["wins"], a["losses"]) == (3, 2, 1)
    assert a["win_rate"] == pytest.approx(2 / 3)
    assert a["pnl_quote"] == Decimal("9.00000000")  # (0.01 - 0.005 + 0.004) x 1000
    assert a["pnl_account"] == Decimal("7.20000000")
    assert a["fees_quote"] == Decimal("3.00000000")
    assert a["avg_profit_bps"] == pytest.approx((40 - 20 + 16) / 3)
    assert rows[("m-a", tuesday)]["trades"] == 1
    assert rows[("m-b", monday)]["wins"] == 1
    assert "m-a: 4 paper trades, win rate 50%" in recorder.summary()


@pytest.mark.db
async def test_a_failed_flush_keeps_the_results_for_the_next(db_pool: asyncpg.Pool, db_dsn: str) -> None:
    recorder = PerformanceRecorder(equity_quote=Decimal("1000"), quote_to_account=Decimal("0.8"))
    recorder.record([trade("m-a", date(2021, 3, 1), 0.01, 40.0)])
    closed = await asyncpg.create_pool(db_dsn, min_size=1, max_size=1)
    await closed.close()
    with pytest.raises(asyncpg.InterfaceError):
        await recorder.flush(closed)
    recorder.record([trade("m-a", date(2021, 3, 1), 0.01, 40.0)])
    assert await recorder.flush(db_pool) == 1
    assert await db_pool.fetchval("SELECT trades FROM model_performance") == 2
