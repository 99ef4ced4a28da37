"""Training's pattern memory: each bar's row is what the live nearest-setups view returns with
the trades closed before that bar's close (by hand, and against a fresh NearestSetups per bar),
no trade exiting later ever changes it, warm-up rows and an empty memory give zeros, the
trainer's Features carry it into the environment's MarketData, and `huracan train` reads the
trades (that one test needs PostgreSQL)."""

from __future__ import annotations

import math
from unittest import mock

import asyncpg
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_setups import at, identity_embedder

from huracan.features.market import MARKET_WIDTH
from huracan.features.normaliser import RunningNormaliser
from huracan.memory.candles import ms_to_datetime
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder
from huracan.memory.setups import SUPPORT_HALF, NearestSetups
from huracan.rl import pattern_memory
from huracan.rl.pattern_memory import PastTrades, point_in_time_memory
from huracan.rl.train_cli import read_past_trades
from huracan.rl.trainer import Features

STEP_MS = 300_000  # identity_embedder and at: test_setups.py's hand-workable embedding


def row(*head: float) -> np.ndarray:
    market_row = np.zeros(MARKET_WIDTH)
    market_row[: len(head)] = head
    return market_row


def known_then(
    market: np.ndarray,
    open_time_ms: np.ndarray,
    trades: PastTrades,
    embedder: EntryEmbedder,
    *,
    k: int,
    radius: float,
) -> np.ndarray:
    """The brute force: for every bar a fresh live view, fed the trades exited before its close
    with the weights known then, asked about the bar's complete rows."""
    out = np.zeros((*market.shape[:2], 3))
    for t, opened in enumerate(open_time_ms.tolist()):
        close = opened + STEP_MS
        exited = np.flatnonzero(trades.exit_time_ms < close)
        complete = np.isfinite(market[:, t]).all(axis=1)
        if not len(exited) or not complete.any():
            continue
        weight = trades.weight[exited]
        if trades.weight_known_ms is not None:
            weight = np.where(trades.weight_known_ms[exited] < close, weight, 1.0)
        view = NearestSetups(embedder, k=k, radius=radius, exact_limit=10**9)
        view.add_trades(
            exited,
            trades.embedding[exited],
            trades.pnl_bps[exited],
            trades.won[exited],
            weight,
            exit_time_ms=trades.exit_time_ms[exited],
        )
        out[complete, t] = view.nearest_setups(["s"] * int(complete.sum()), market[complete, t], close)
    return out


def replayed_live(
    market: np.ndarray,
    open_time_ms: np.ndarray,
    trades: PastTrades,
    embedder: EntryEmbedder,
    *,
    k: int,
    radius: float,
    exact_limit: int = 10**9,
) -> np.ndarray:
    """A replay's decision step: one live view holding every trade (later ones too, from earlier
    runs), asked at each bar's close."""
    view = NearestSetups(embedder, k=k, radius=radius, exact_limit=exact_limit)
    if len(trades):
        view.add_trades(
            np.arange(len(trades)),
            trades.embedding,
            trades.pnl_bps,
            trades.won,
            trades.weight,
            exit_time_ms=trades.exit_time_ms,
            known_ms=trades.weight_known_ms,
        )
    out = np.zeros((*market.shape[:2], 3))
    for t, opened in enumerate(open_time_ms.tolist()):
        complete = np.isfinite(market[:, t]).all(axis=1)
        if complete.any():
            rows = market[complete, t]
            out[complete, t] = view.nearest_setups(["s"] * int(complete.sum()), rows, opened + STEP_MS)
    return out


def hand_example() -> tuple[np.ndarray, np.ndarray, PastTrades]:
    """Two symbols, four bars (closes 300k, 600k, 900k, 1.2M ms), three trades:
    A at the origin, exits 250,000 (known from bar 0), +100 bps, weight 1;
    B at (1, 0), exits 600,000, at bar 1's close: decided then, so known from bar 2; -50 bps,
      penalty 0.5 known at 1,000,000 (from bar 3);
    C at (0, 2), exits 1,150,000 (known at bar 3), +30 bps.
    Symbol 0 sits at the origin; symbol 1 at (1, 0), warming up (NaN) at bar 0."""
    market = np.zeros((2, 4, MARKET_WIDTH))
    market[1, :] = row(1.0)
    market[1, 0] = np.nan
    trades = PastTrades(
        exit_time_ms=np.array([250_000, 600_000, 1_150_000]),
        embedding=np.stack([at(), at(1.0), at(0.0, 2.0)]).astype(np.float32),
        pnl_bps=np.array([100.0, -50.0, 30.0]),
        won=np.array([True, False, True]),
        weight=np.array([1.0, 0.5, 1.0]),
        weight_known_ms=np.array([250_000, 1_000_000, 1_150_000]),
    )
    return market, STEP_MS * np.arange(4), trades


def test_hand_worked_rows_follow_the_trades_known_at_each_close() -> None:
    market, opens, trades = hand_example()
    memory = point_in_time_memory(market, opens, STEP_MS, trades, identity_embedder(), k=2, radius=1.0)
    g = math.exp(-0.5)  # Gaussian weight at distance 1 = radius: 0.60653
    # Bar 0, symbol 0: A at distance 0, w = 1 -> win 1, 100 bps, reliability 1 / (1 + 5).
    assert memory[0, 0] == pytest.approx([1.0, 100.0, 1 / 6], rel=1e-6)
    assert memory[1, 0].tolist() == [0.0, 0.0, 0.0]  # warm-up row
    # Bar 1: B exits at this close (600,000), after the state was read: still A alone.
    assert memory[0, 1] == pytest.approx([1.0, 100.0, 1 / 6], rel=1e-6)
    # Symbol 1 at distance 1 from A: w = g -> reliability g / (g + 5) = 0.10818.
    assert memory[1, 1] == pytest.approx([1.0, 100.0, g / (g + SUPPORT_HALF)], rel=1e-6)
    # Bar 2: B known, its penalty not yet (weight 1). Symbol 0: A w 1, B w g; W = 1.60653:
    # win 1 / W = 0.62246, pnl (100 - 50 g) / W = 43.37, reliability W / (W + 5) = 0.24317.
    w = 1 + g
    assert memory[0, 2] == pytest.approx([1 / w, (100 - 50 * g) / w, w / (w + 5)], rel=1e-6)
    # Symbol 1: A w g, B w 1: win g / W = 0.37754, pnl (100 g - 50) / W = 6.631.
    assert memory[1, 2] == pytest.approx([g / w, (100 * g - 50) / w, w / (w + 5)], rel=1e-6)
    # Bar 3: C known but third nearest of both (k = 2); B's penalty known: weight 0.5.
    # Symbol 0: A w 1, B w 0.5 g; W = 1.30327: win 0.76730, pnl (100 - 25 g) / W = 65.096.
    w = 1 + 0.5 * g
    assert memory[0, 3] == pytest.approx([1 / w, (100 - 25 * g) / w, w / (w + 5)], rel=1e-6)
    # Symbol 1: B w 0.5 (distance 0), A w g; W = 1.10653: win g / W = 0.54814,
    # pnl (100 g - 25) / W = 32.221, reliability W / (W + 5) = 0.18120.
    w = 0.5 + g
    assert memory[1, 3] == pytest.approx([g / w, (100 * g - 25) / w, w / (w + 5)], rel=1e-6)
    assert memory.dtype == np.float32
    want = known_then(market, opens, trades, identity_embedder(), k=2, radius=1.0)
    np.testing.assert_allclose(memory, want, rtol=1e-6, atol=1e-6)
    live = replayed_live(market, opens, trades, identity_embedder(), k=2, radius=1.0)
    np.testing.assert_allclose(memory, live, rtol=1e-6, atol=1e-6)


def test_no_trades_or_no_trade_exited_yet_gives_zeros() -> None:
    market, opens, trades = hand_example()
    embedder = identity_embedder()
    empty = point_in_time_memory(market, opens, STEP_MS, PastTrades.empty(), embedder)
    assert empty.shape == (2, 4, 3)
    assert not empty.any()
    later = PastTrades(
        trades.exit_time_ms + 10**9, trades.embedding, trades.pnl_bps, trades.won, trades.weight
    )
    assert not point_in_time_memory(market, opens, STEP_MS, later, embedder).any()


def test_bad_input_is_refused() -> None:
    market, opens, trades = hand_example()
    embedder = identity_embedder()
    with pytest.raises(ValueError, match="strictly increasing"):
        point_in_time_memory(market, opens[::-1], STEP_MS, trades, embedder)
    with pytest.raises(ValueError, match="market"):
        point_in_time_memory(market[:, :3], opens, STEP_MS, trades, embedder)
    with pytest.raises(ValueError, match="before its exit"):
        PastTrades(
            trades.exit_time_ms,
            trades.embedding,
            trades.pnl_bps,
            trades.won,
            trades.weight,
            np.zeros(3, np.int64),
        )
    with pytest.raises(ValueError, match=r"0\.\.1"):
        PastTrades(
            trades.exit_time_ms, trades.embedding, trades.pnl_bps, trades.won, np.array([1.0, 1.5, 1.0])
        )


@st.composite
def histories(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, PastTrades]:
    """Up to 3 symbols x 12 bars (some warm-up NaN, gaps between bars) and up to 30 trades on a
    coarse grid of setups, exiting before, during and after the bars, often right at a close."""
    n_symbols, n_bars, n_trades = draw(st.integers(1, 3)), draw(st.integers(1, 12)), draw(st.integers(0, 30))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    gaps = rng.integers(1, 3, size=n_bars)
    opens = STEP_MS * np.cumsum(gaps)
    market = np.zeros((n_symbols, n_bars, MARKET_WIDTH))
    market[..., :3] = rng.integers(-3, 4, size=(n_symbols, n_bars, 3)) * 0.7
    market[rng.random((n_symbols, n_bars)) < 0.15] = np.nan
    exits = rng.integers(-2, 2 * int(opens[-1]) // STEP_MS + 6, size=n_trades) * (STEP_MS // 2)
    embedding = np.zeros((n_trades, EMBEDDING_DIM), np.float32)
    embedding[:, :3] = rng.integers(-3, 4, size=(n_trades, 3)) * 0.7 + rng.normal(0, 0.01, (n_trades, 3))
    pnl = rng.normal(0, 60, n_trades)
    weight = np.where(pnl > 0, 1.0, rng.uniform(0, 1, n_trades))
    trades = PastTrades(
        exits, embedding, pnl, pnl > 0, weight, exits + rng.integers(0, 8, n_trades) * (STEP_MS // 2)
    )
    return market, opens, trades


@settings(max_examples=60, deadline=None)
@given(histories(), st.integers(1, 6), st.integers(1, 5), st.integers(30, 5000))
def test_every_row_is_the_live_view_of_the_trades_known_then(
    history: tuple[np.ndarray, np.ndarray, PastTrades], k: int, pending: int, cells: int
) -> None:
    market, opens, trades = history
    embedder = identity_embedder()
    # Small chunks: many chunk boundaries, each with trades exiting inside it.
    with (
        mock.patch.object(pattern_memory, "PENDING_LIMIT", pending),
        mock.patch.object(pattern_memory, "SEARCH_CELLS", cells),
    ):
        memory = point_in_time_memory(market, opens, STEP_MS, trades, embedder, k=k, radius=1.5)
    want = known_then(market, opens, trades, embedder, k=k, radius=1.5)
    np.testing.assert_allclose(memory, want, rtol=1e-5, atol=1e-4)
    # And what a replay's decision step reads from a memory holding every trade.
    live = replayed_live(market, opens, trades, embedder, k=k, radius=1.5)
    np.testing.assert_allclose(memory, live, rtol=1e-5, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(histories(), st.data(), st.booleans())
def test_trades_exiting_after_a_bar_never_change_it(
    history: tuple[np.ndarray, np.ndarray, PastTrades], data: st.DataObject, through_index: bool
) -> None:
    market, opens, trades = history
    embedder = identity_embedder()
    t = data.draw(st.integers(0, len(opens) - 1))
    close = int(opens[t]) + STEP_MS
    n_more = data.draw(st.integers(1, 20))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    # At the close itself too: decided there, after the state was read.
    later = close + rng.integers(0, 10, size=n_more) * (STEP_MS // 2)
    more = PastTrades(
        np.concatenate([trades.exit_time_ms, later]),
        np.concatenate([trades.embedding, rng.normal(0, 2, (n_more, EMBEDDING_DIM)).astype(np.float32)]),
        np.concatenate([trades.pnl_bps, rng.normal(0, 500, n_more)]),
        np.concatenate([trades.won, rng.random(n_more) < 0.5]),
        np.concatenate([trades.weight, rng.uniform(0, 1, n_more)]),
        np.concatenate([trades.weight_known_ms, later]) if trades.weight_known_ms is not None else None,
    )
    # The index path too (no cells below 256 trades: its search is still exhaustive).
    limit = 3 if through_index else 10**9
    before = point_in_time_memory(market, opens, STEP_MS, trades, embedder, k=3, exact_limit=limit)
    after = point_in_time_memory(market, opens, STEP_MS, more, embedder, k=3, exact_limit=limit)
    # Equal up to the rounding of differently batched products (bit for bit on this machine);
    # a trade leaking into a row would move it by far more.
    np.testing.assert_allclose(after[:, : t + 1], before[:, : t + 1], rtol=1e-12, atol=1e-9)


def test_the_index_path_matches_live_on_real_embeddings() -> None:
    """Above exact_limit the stored trades are searched through the index, as live; with fewer
    than its 256 cells' worth it is exhaustive, so the rows equal the brute force."""
    embedder = EntryEmbedder.default()
    rng = np.random.default_rng(3)
    market = embedder.mean + embedder.scale * rng.normal(size=(2, 40, MARKET_WIDTH))
    opens = STEP_MS * np.arange(40)
    entries = embedder.mean + embedder.scale * rng.normal(size=(200, MARKET_WIDTH))
    pnl = rng.normal(0, 40, 200)
    exits = rng.integers(-10, 45, size=200) * STEP_MS
    trades = PastTrades.from_entry_features(embedder, exits, entries, pnl, np.where(pnl > 0, 1.0, 0.7))
    memory = point_in_time_memory(market, opens, STEP_MS, trades, embedder, exact_limit=16)
    want = known_then(market, opens, trades, embedder, k=20, radius=5.5)
    assert (want[..., 2] > 0).mean() > 0.9
    np.testing.assert_allclose(memory, want, rtol=1e-5, atol=1e-4)
    live = replayed_live(market, opens, trades, embedder, k=20, radius=5.5, exact_limit=16)
    np.testing.assert_allclose(memory, live, rtol=1e-5, atol=1e-4)


def features_of(n_bars: int, memory: np.ndarray | None) -> Features:
    rng = np.random.default_rng(0)
    market = rng.normal(size=(2, n_bars, MARKET_WIDTH))
    market[:, :3] = np.nan  # warm-up
    prices = 100 + rng.random((2, n_bars))
    return Features(("A/USDT", "B/USDT"), market, prices, prices, STEP_MS * np.arange(n_bars), memory)


def test_features_carry_the_pattern_memory_into_market_data() -> None:
    memory = np.random.default_rng(1).random((2, 12, 3)).astype(np.float32)
    features = features_of(12, memory)
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(features.market.reshape(-1, MARKET_WIDTH))
    data = features.market_data(normaliser, 2, 10)
    assert data.pattern_memory is not None
    assert torch.equal(data.pattern_memory, torch.from_numpy(memory[:, 2:10]))
    # Without one, the environment's zeros, as before.
    plain = features_of(12, None).market_data(normaliser, 2, 10)
    assert plain.pattern_memory is not None
    assert not plain.pattern_memory.any()
    with pytest.raises(ValueError, match="pattern memory has shape"):
        features_of(12, memory[:, :11])


def test_features_with_pattern_memory_compute_it_point_in_time() -> None:
    market, opens, trades = hand_example()
    features = Features(("A", "B"), market, np.ones((2, 4)), np.ones((2, 4)), opens)
    embedder = identity_embedder()
    done: list[tuple[int, int]] = []
    memory = features.with_pattern_memory(
        trades, STEP_MS, embedder, k=2, radius=1.0, progress=lambda d, n: done.append((d, n))
    ).pattern_memory
    want = point_in_time_memory(market, opens, STEP_MS, trades, embedder, k=2, radius=1.0)
    assert memory is not None
    assert np.array_equal(memory, want)
    assert done
    assert done[-1] == (4, 4)


@pytest.mark.db
async def test_train_reads_the_exchanges_trades_with_their_penalties(db_pool: asyncpg.Pool) -> None:
    """`huracan train`'s read: the exchange's trades exited before the last close, embedded from
    their entry features' market part; a loss analysis' penalty lowers the weight from the
    analysis horizon after the exit (4 h) on."""
    rng = np.random.default_rng(5)
    embedder = EntryEmbedder.default()
    entries = np.hstack(
        [embedder.mean + embedder.scale * rng.normal(size=(5, MARKET_WIDTH)), np.ones((5, 10))]
    )
    until = 1_700_000_000_000
    # exchange, exit ms, pnl bps, entry features; the last three are not read.
    trades = [
        ("binance", until - 7_200_000, 35.0, entries[0]),  # a win
        ("binance", until - 3_600_000, -20.0, entries[1]),  # a loss, analysed: penalty 0.25
        ("kraken", until - 3_600_000, 10.0, entries[2]),  # another exchange
        ("binance", until, 5.0, entries[3]),  # exits at the last close: decided there
        ("binance", until - 60_000, 5.0, entries[4][:20]),  # no market features to embed
    ]
    ids = []
    for exchange, exit_ms, pnl_bps, features in trades:
        ids.append(
            await db_pool.fetchval(
                """
                INSERT INTO trade_memory (mode, exchange, symbol, entry_time, exit_time, entry_price, exit_price,
                    quantity, size_multiplier, pnl_quote, pnl_account, pnl_bps, entry_features, exit_reason,
                    entry_regime, model_version)
                VALUES ('replay', $1, 'BTC/USDT', $2::timestamptz - interval '1 hour', $2, 100, 101, 1, 1,
                        $3::float8, $3::float8, $3::float8, $4, 'signal', 'low_vol_ranging', 'test-model')
                RETURNING id
                """,
                exchange,
                ms_to_datetime(exit_ms),
                pnl_bps,
                features.astype(np.float32).tolist(),
            )
        )
    await db_pool.execute(
        "INSERT INTO loss_analysis (trade_id, primary_failure_reason, severity, preventable, "
        "confidence_penalty, regime_changed) VALUES ($1, 'stop_too_tight', 'minor', true, 0.25, false)",
        ids[1],
    )
    read = await read_past_trades(db_pool, "binance", until, embedder)
    assert read.exit_time_ms.tolist() == [until - 7_200_000, until - 3_600_000]
    assert read.pnl_bps.tolist() == [35.0, -20.0]
    assert read.won.tolist() == [True, False]
    assert read.weight.tolist() == [1.0, 0.75]
    assert read.weight_known_ms is not None
    assert read.weight_known_ms.tolist() == [until - 7_200_000 + 14_400_000, until - 3_600_000 + 14_400_000]
    stored = entries[:2, :MARKET_WIDTH].astype(np.float32).astype(np.float64)  # real[] in the table
    np.testing.assert_array_equal(read.embedding, embedder.embed(stored))
    assert len(await read_past_trades(db_pool, "bitstamp", until, embedder)) == 0
