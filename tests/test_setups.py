"""Pattern memory as the agent sees it: zeros when empty, the weighted figures (by hand, by brute force,
exact and indexed), their bounds, and time: no exit at or after the decided close, no penalty unknown."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from huracan.agent.positions import NoPatternMemory, PatternMemoryView
from huracan.features.market import MARKET_WIDTH
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder
from huracan.memory.pattern_index import PatternIndex
from huracan.memory.setups import SUPPORT_HALF, NearestSetups

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
NOW = 10**13  # a close after every exit of these tests: the live case
HEAD = st.lists(st.floats(-5, 5), min_size=2, max_size=2)  # an embedding's first two numbers
PNL, WEIGHT = st.floats(-300, 300), st.floats(0, 1)


def identity_embedder() -> EntryEmbedder:
    """Embeds a market row as its first 16 numbers (clipped to +-5): hand-workable."""
    components = np.zeros((EMBEDDING_DIM, MARKET_WIDTH))
    components[np.arange(EMBEDDING_DIM), np.arange(EMBEDDING_DIM)] = 1.0
    return EntryEmbedder(np.zeros(MARKET_WIDTH), np.ones(MARKET_WIDTH), np.zeros(MARKET_WIDTH), components)


def market(*embeddings: np.ndarray) -> np.ndarray:
    rows = np.zeros((len(embeddings), MARKET_WIDTH))
    rows[:, :EMBEDDING_DIM] = np.stack(embeddings)
    return rows


def at(*head: float) -> np.ndarray:
    vector = np.zeros(EMBEDDING_DIM)
    vector[: len(head)] = head
    return vector


def brute_force(
    queries: np.ndarray,
    embeddings: np.ndarray,
    pnl: np.ndarray,
    weight: np.ndarray,
    k: int,
    radius: float,
    eligible: np.ndarray | None = None,
) -> np.ndarray:
    """The module docstring's formulas, one query and one neighbour at a time, on the float32
    numbers an embedding has, over the trades `eligible` (default all) with the weights given;
    a trade won when its pnl is positive."""
    won = pnl > 0
    queries = queries.astype(np.float32).astype(np.float64)
    embeddings = embeddings.astype(np.float32).astype(np.float64)
    candidates = range(len(embeddings)) if eligible is None else np.flatnonzero(eligible).tolist()
    out = np.zeros((len(queries), 3))
    for row, q in enumerate(queries):
        distances = {i: math.dist(q.tolist(), embeddings[i].tolist()) for i in candidates}
        nearest = sorted(distances, key=lambda i: distances[i])[:k]
        w = [weight[i] * math.exp(-0.5 * (distances[i] / radius) ** 2) for i in nearest]
        total = math.fsum(w)
        if total > 0:
            out[row, 0] = math.fsum(wi * won[i] for wi, i in zip(w, nearest, strict=True)) / total
            out[row, 1] = math.fsum(wi * pnl[i] for wi, i in zip(w, nearest, strict=True)) / total
            out[row, 2] = total / (total + SUPPORT_HALF)
    return out


def clustered(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2.0, (12, EMBEDDING_DIM))
    return np.clip(centres[rng.integers(12, size=n)] + rng.normal(0, 0.7, (n, EMBEDDING_DIM)), -4.9, 4.9)


def test_an_empty_memory_gives_exactly_what_no_pattern_memory_gives() -> None:
    setups = NearestSetups(EntryEmbedder.default())
    view: PatternMemoryView = setups
    rows = np.random.default_rng(0).normal(size=(3, MARKET_WIDTH))
    rows[1] = np.nan  # a cold symbol
    np.testing.assert_array_equal(
        view.nearest_setups(SYMBOLS, rows, NOW), NoPatternMemory().nearest_setups(SYMBOLS, rows, NOW)
    )
    assert len(setups) == 0
    assert len(setups.similar(at(0.0), 5)[0]) == 0
    assert setups.base_win_rate(NOW) is None


def test_one_neighbour_worked_by_hand() -> None:
    setups = NearestSetups(identity_embedder(), radius=2.0)
    setups.add_trade(7, at(0.0), 30.0, True, exit_time_ms=100)
    # The query 2 away (= the radius): w = exp(-1/2) = 0.60653; one neighbour, so the win rate
    # and profit are its own; reliability 0.60653 / (0.60653 + 5) = 0.10818.
    figures = setups.nearest_setups(["BTC/USDT"], market(at(2.0)), NOW)
    np.testing.assert_allclose(figures, [[1.0, 30.0, 0.60653066 / 5.60653066]], rtol=1e-7)
    # A second trade at distance 0 that lost 10: w = 1 and 0.60653 (the first, from 2 away).
    setups.add_trade(8, at(2.0), -10.0, False, exit_time_ms=200)
    figures = setups.nearest_setups(["BTC/USDT"], market(at(2.0)), NOW)
    w = math.exp(-0.5)
    np.testing.assert_allclose(
        figures, [[w / (1 + w), (30.0 * w - 10.0) / (1 + w), (1 + w) / (1 + w + 5)]], rtol=1e-7
    )
    # Its loss analysis halves its weight: 0.5 and 0.60653.
    setups.set_weight(8, 0.5, known_ms=300)
    figures = setups.nearest_setups(["BTC/USDT"], market(at(2.0)), NOW)
    np.testing.assert_allclose(figures[0, 0], w / (0.5 + w), rtol=1e-7)
    ids, distances = setups.similar(at(2.0), 5)
    assert ids.tolist() == [8, 7]
    np.testing.assert_allclose(distances, [0.0, 2.0], atol=1e-6)


def test_a_bar_sees_only_trades_exited_before_its_close_and_penalties_known_before_it() -> None:
    setups = NearestSetups(identity_embedder(), radius=1.0)
    setups.add_trade(1, at(0.0), 30.0, True, exit_time_ms=100)
    setups.add_trade(2, at(0.0), -10.0, False, exit_time_ms=200)
    setups.set_weight(2, 0.5, known_ms=1000)  # its loss analysed at 1000

    def figures(as_of_ms: int) -> list[float]:
        return [float(x) for x in setups.nearest_setups(["X"], market(at(0.0)), as_of_ms)[0]]

    # Closes at or before 100: nothing had exited (the trade exiting at the close is the
    # decision taken at that close).
    assert figures(50) == figures(100) == [0.0, 0.0, 0.0]
    # Trade 1 alone, at distance 0: w = 1, reliability 1 / 6.
    assert figures(101) == figures(200) == pytest.approx([1.0, 30.0, 1 / 6])
    # Both at full weight until the penalty is known: win rate 1 / 2, profit (30 - 10) / 2 = 10,
    # reliability 2 / 7. A close at 1000 itself still sees weight 1.
    assert figures(201) == figures(1000) == pytest.approx([0.5, 10.0, 2 / 7])
    # Then trade 2 at 0.5: win rate 1 / 1.5, profit (30 - 5) / 1.5 = 16.667, reliability 1.5 / 6.5.
    assert figures(1001) == pytest.approx([1 / 1.5, 25 / 1.5, 1.5 / 6.5])
    assert figures(NOW) == figures(1001)


@settings(max_examples=60, deadline=None)
@given(  # (embedding head, pnl, weight, exit, how long after it the penalty is known)
    past=st.lists(st.tuples(HEAD, PNL, WEIGHT, st.integers(0, 999), st.integers(0, 2000)), max_size=25),
    future=st.lists(st.tuples(HEAD, PNL, WEIGHT, st.integers(1000, 5000)), min_size=1, max_size=25),
    order_seed=st.integers(0, 2**31),
    k=st.integers(1, 30),
    query=HEAD,
)
def test_trades_exiting_at_or_after_the_close_never_change_its_figures(
    past: list[tuple[list[float], float, float, int, int]],
    future: list[tuple[list[float], float, float, int]],
    order_seed: int,
    k: int,
    query: list[float],
) -> None:
    close = 1000  # past trades exit before it, future ones at or after it
    known_then = NearestSetups(identity_embedder(), k=k, radius=1.0)
    for i, (head, pnl, weight, exit_ms, delay) in enumerate(past):
        known_then.add_trade(i, at(*head), pnl, pnl > 0, exit_time_ms=exit_ms)
        if exit_ms + delay < close:  # a penalty known by then
            known_then.set_weight(i, weight, known_ms=exit_ms + delay)
    # The memory a replay rebuilds: later trades anywhere among the same ones (kept in order:
    # of neighbours at exactly one distance, the first stored is taken), final weights.
    rebuilt = NearestSetups(identity_embedder(), k=k, radius=1.0)
    trades = [(i, h, p, w, e, e + d) for i, (h, p, w, e, d) in enumerate(past)]
    trades += [(100 + i, h, p, w, e, e) for i, (h, p, w, e) in enumerate(future)]
    slots = np.random.default_rng(order_seed).permutation(len(trades)) < len(past)
    order = iter(range(len(past))), iter(range(len(past), len(trades)))
    for is_past in slots.tolist():
        trade_id, head, pnl, weight, exit_ms, known_ms = trades[next(order[0] if is_past else order[1])]
        rebuilt.add_trade(trade_id, at(*head), pnl, pnl > 0, weight, exit_time_ms=exit_ms, known_ms=known_ms)
    rows = market(at(*query))
    np.testing.assert_allclose(
        rebuilt.nearest_setups(["X"], rows, close), known_then.nearest_setups(["X"], rows, close), atol=1e-9
    )
    ids_then, _ = known_then.similar(at(*query), k)
    ids, _ = rebuilt.similar(at(*query), k, before_ms=close)  # exited before the close, as the view
    assert ids.tolist() == ids_then.tolist()


@pytest.mark.parametrize("trades", [1, 7, 20, 300])
def test_the_exact_path_equals_brute_force_at_every_close(trades: int) -> None:
    rng = np.random.default_rng(trades)
    embeddings = clustered(trades, trades)
    pnl = rng.normal(5, 40, trades).round(1)
    weight = rng.choice([1.0, 0.8, 0.0, 0.3], trades)
    exits = rng.integers(0, 10_000, trades)
    known = exits + rng.integers(0, 3_000, trades)
    setups = NearestSetups(identity_embedder(), k=20, radius=1.5)
    setups.add_trades(
        1000 + np.arange(trades), embeddings, pnl, pnl > 0, weight, exit_time_ms=exits, known_ms=known
    )
    queries, names = clustered(20, 99), [f"S{i}" for i in range(20)]
    for close in (0, 1, 2_500, 5_000, 9_999, 12_000, 13_000, NOW):
        figures = setups.nearest_setups(names, market(*queries), close)
        weight_then = np.where(known < close, weight, 1.0)
        expected = brute_force(queries, embeddings, pnl, weight_then, 20, 1.5, exits < close)
        np.testing.assert_allclose(figures, expected, rtol=1e-9, atol=1e-9)
        ids, _ = setups.similar(queries[0], 20, before_ms=close)
        assert (exits[ids - 1000] <= close).all()  # similar: exited by the entry, inclusive
    # Every exit and penalty in the past, by a bar or by years: the same search, the same numbers.
    np.testing.assert_array_equal(
        setups.nearest_setups(names, market(*queries), 13_000),
        setups.nearest_setups(names, market(*queries), NOW),
    )


def test_the_index_path_probing_every_cell_equals_brute_force_and_sees_new_trades() -> None:
    rng = np.random.default_rng(3)
    embeddings = clustered(700, 4)
    pnl = rng.normal(0, 30, 700)
    weight = rng.uniform(0, 1, 700)
    exits = np.arange(700) * 10
    setups = NearestSetups(identity_embedder(), radius=2.0, exact_limit=400, probe=256)
    setups.add_trades(
        np.arange(600), embeddings[:600], pnl[:600], pnl[:600] > 0, weight[:600], exit_time_ms=exits[:600]
    )
    for i in range(600, 700):  # live, one by one: the index's tail, then its rebuild
        setups.add_trade(
            i, embeddings[i], float(pnl[i]), bool(pnl[i] > 0), float(weight[i]), exit_time_ms=int(exits[i])
        )
    assert setups._index is not None
    assert setups._index.centroids is not None
    queries = clustered(20, 5)
    names = [f"S{i}" for i in range(20)]
    figures = setups.nearest_setups(names, market(*queries), NOW)
    expected = brute_force(queries, embeddings, pnl, weight, 20, 2.0)
    np.testing.assert_allclose(figures, expected, rtol=1e-4, atol=1e-4)  # the index is float32
    ids, _ = setups.similar(queries[0], 20)
    truth = np.argsort(((embeddings - queries[0]) ** 2).sum(axis=1), kind="stable")[:20]
    assert set(ids.tolist()) == set(truth.tolist())
    # Filtered (50 or 450 eligible): exact over those (every cell probed would scan more).
    for close in (4_500, 500):
        filtered = setups.nearest_setups(names, market(*queries), close)
        expected = brute_force(queries, embeddings, pnl, weight, 20, 2.0, exits < close)
        np.testing.assert_allclose(filtered, expected, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def btc_states() -> np.ndarray:
    """Embeddings of every warm BTC/USDT entry state of the bundled 2021 Q1 5 m candles."""
    from huracan.config.settings import BUNDLED_CANDLES_DIR
    from huracan.features.market import Ohlcv, compute_market_features
    from huracan.market.candle_files import find_candle_files, read_candle_file

    series = read_candle_file(find_candle_files(BUNDLED_CANDLES_DIR, "5m")["BTC/USDT"])
    rows = compute_market_features(Ohlcv.from_series(series))
    return EntryEmbedder.default().embed(rows[np.isfinite(rows).all(axis=1)])


def test_the_filtered_index_search_finds_the_nearest_eligible_trades(
    btc_states: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """8,000 real entry states, default probe (8 of 256 cells); eligible a half, then a third
    of them (more than exact_limit and 0.31 n: the index path). Recall of the brute force's 20
    nearest eligible: at least 0.9, and no worse than the unfiltered search's over all (the
    probe widens with the share filtered out)."""
    rng = np.random.default_rng(0)
    n = 8_000
    picked = rng.choice(len(btc_states), n + 40, replace=False)
    embeddings, queries = btc_states[picked[:n]], btc_states[picked[n:]]
    exits = rng.permutation(n).astype(np.int64)  # eligibility unrelated to where a trade lies
    setups = NearestSetups(EntryEmbedder.default(), exact_limit=1_000)
    setups.add_trades(np.arange(n), embeddings, np.zeros(n), np.zeros(n, bool), exit_time_ms=exits)
    through_index: list[int] = []
    search = setups._index_before

    def counted(*args: Any) -> tuple[np.ndarray, np.ndarray]:
        through_index.append(1)
        return search(*args)

    monkeypatch.setattr(setups, "_index_before", counted)

    def recall(entry: int | None) -> float:
        eligible = np.arange(n) if entry is None else np.flatnonzero(exits <= entry)
        found = []
        for q in queries:
            ids, _ = setups.similar(q, 20, before_ms=entry)
            assert len(ids) == 20
            assert set(ids.tolist()) <= set(eligible.tolist())
            squared = ((embeddings[eligible] - q) ** 2).sum(axis=1)
            truth = eligible[np.argsort(squared, kind="stable")[:20]]
            found.append(len(set(ids.tolist()) & set(truth.tolist())) / 20)
        return float(np.mean(found))

    unfiltered = recall(None)
    for entry in (n // 2, n // 3):
        assert recall(entry) >= max(0.9, unfiltered), (entry, unfiltered)
    assert len(through_index) == 2 * len(queries)


def test_the_over_fetch_grows_until_k_eligible_are_found() -> None:
    """Asked for one candidate at first, every cell probed: each round finds too few eligible
    trades and asks for four times more, until the k nearest eligible are exactly brute force."""
    rng = np.random.default_rng(31)
    embeddings = clustered(3_000, 32)
    exits = rng.integers(0, 100, 3_000)
    setups = NearestSetups(identity_embedder(), exact_limit=500)
    setups.add_trades(np.arange(3_000), embeddings, np.ones(3_000), np.ones(3_000, bool), exit_time_ms=exits)
    queries = clustered(5, 33).astype(np.float32)
    rows, distances = setups._index_before(queries, 20, 10, probe=256, fetch=1)  # about 10% eligible
    exact_rows, exact_distances = setups._exact(queries, 20, np.flatnonzero(exits < 10))
    assert rows.tolist() == exact_rows.tolist()
    np.testing.assert_allclose(distances, exact_distances, rtol=1e-5)


def test_the_default_probe_finds_nearly_the_same_figures() -> None:
    rng = np.random.default_rng(8)
    embeddings = clustered(6000, 9)
    pnl = rng.normal(0, 30, 6000)
    setups = NearestSetups(identity_embedder(), radius=2.0)
    setups.add_trades(np.arange(6000), embeddings, pnl, pnl > 0, exit_time_ms=np.zeros(6000, np.int64))
    queries = clustered(20, 10)
    figures = setups.nearest_setups([f"S{i}" for i in range(20)], market(*queries), NOW)
    expected = brute_force(queries, embeddings, pnl, np.ones(6000), 20, 2.0)
    assert np.abs(figures[:, 0] - expected[:, 0]).mean() < 0.05
    assert np.abs(figures[:, 2] - expected[:, 2]).mean() < 0.05


def test_base_win_rate_worked_by_hand() -> None:
    setups = NearestSetups(identity_embedder())
    # Exits 300 won, 100 lost, 200 won, 200 lost; added out of order.
    setups.add_trades(
        [1, 2, 3, 4], np.zeros((4, EMBEDDING_DIM)), [5, -5, 5, -5], [True, False, True, False],
        exit_time_ms=[300, 100, 200, 200],
    )  # fmt: skip
    assert setups.base_win_rate(100) is None  # nothing had exited before 100 (strictly)
    assert setups.base_win_rate(101) == 0.0  # the loss at 100
    assert setups.base_win_rate(200) == 0.0
    assert setups.base_win_rate(201) == pytest.approx(1 / 3)  # lost, won, lost
    assert setups.base_win_rate(301) == 0.5  # 2 of 4
    # A later addition exiting earliest (a replay's trade, say) is merged in.
    setups.add_trade(5, at(0.0), 5.0, True, exit_time_ms=50)
    assert setups.base_win_rate(100) == 1.0  # the win at 50 alone
    assert setups.base_win_rate(101) == 0.5
    assert setups.base_win_rate(NOW) == 3 / 5


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=8), max_size=6),
    st.integers(-1, 55),
)
def test_base_win_rate_is_the_share_of_wins_exited_before(
    batches: list[list[tuple[int, bool]]], before_ms: int
) -> None:
    setups = NearestSetups(identity_embedder())
    seen: list[tuple[int, bool]] = []
    for batch in batches:
        ids = np.arange(len(seen), len(seen) + len(batch))
        exits, won, zeros = (
            [e for e, _ in batch],
            [w for _, w in batch],
            np.zeros((len(batch), EMBEDDING_DIM)),
        )
        setups.add_trades(ids, zeros, zeros[:, 0], won, exit_time_ms=exits)
        seen += batch
        exited = [w for e, w in seen if e < before_ms]
        expected = sum(exited) / len(exited) if exited else None
        assert setups.base_win_rate(before_ms) == expected


def test_reliability_falls_with_fewer_farther_and_penalised_neighbours() -> None:
    def reliability(n: int, distance: float, weight: float) -> float:
        setups = NearestSetups(identity_embedder(), radius=2.0)
        for i in range(n):
            setups.add_trade(i, at(0.0, 0.001 * i), 10.0, True, weight, exit_time_ms=i)
        return float(setups.nearest_setups(["X"], market(at(distance)), NOW)[0, 2])

    assert reliability(20, 0.0, 1.0) == pytest.approx(20 / 25, abs=1e-4)  # 20 perfect neighbours
    assert reliability(20, 0.0, 1.0) > reliability(5, 0.0, 1.0) > reliability(1, 0.0, 1.0)
    assert reliability(20, 0.0, 1.0) > reliability(20, 2.0, 1.0) > reliability(20, 6.0, 1.0)
    assert reliability(20, 0.0, 1.0) > reliability(20, 0.0, 0.5) > reliability(20, 0.0, 0.1)
    assert reliability(20, 0.0, 0.0) == 0.0


def test_bad_input_is_refused_naming_what() -> None:
    setups = NearestSetups(identity_embedder())
    setups.add_trade(1, at(0.0), 5.0, True, exit_time_ms=100)
    with pytest.raises(ValueError, match="added twice"):
        setups.add_trade(1, at(1.0), 5.0, True, exit_time_ms=100)
    with pytest.raises(ValueError, match="16 finite numbers"):
        setups.add_trade(2, np.zeros(3), 5.0, True, exit_time_ms=100)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        setups.add_trade(3, at(0.0), 5.0, True, weight=1.5, exit_time_ms=100)
    with pytest.raises(ValueError, match="integer Unix milliseconds"):
        setups.add_trades([4], at(0.0)[None], [5.0], [True], exit_time_ms=[100.5])
    with pytest.raises(ValueError, match="none known before its exit"):
        setups.add_trade(5, at(0.0), 5.0, True, 0.5, exit_time_ms=100, known_ms=99)
    with pytest.raises(KeyError, match="no trade 9"):
        setups.set_weight(9, 0.5, known_ms=200)
    with pytest.raises(ValueError, match="known at 99, before its exit at 100"):
        setups.set_weight(1, 0.5, known_ms=99)
    with pytest.raises(ValueError, match="3 rows of 70"):
        setups.nearest_setups(SYMBOLS, np.zeros((2, MARKET_WIDTH)), NOW)
    assert len(setups) == 1  # nothing refused was stored
    assert setups.base_win_rate(NOW) == 1.0


def test_a_rebuild_adopted_in_place_is_what_the_decision_step_reads() -> None:
    live = NearestSetups(identity_embedder(), k=7, radius=1.5)
    held: PatternMemoryView = live  # what the decision step was given at start-up
    live.add_trade(1, at(3.0), -50.0, False, exit_time_ms=10)
    fresh = live.empty_like()
    assert (fresh.k, fresh.radius, len(fresh)) == (7, 1.5, 0)
    fresh.add_trades([2, 3], np.stack([at(0.0), at(0.5)]), [20.0, 40.0], [True, True], exit_time_ms=[5, 6])
    live.adopt(fresh)
    # Two winners at distances 0 and 0.5 (w = 1 and exp(-0.5 (0.5 / 1.5)^2) = 0.94596).
    w = math.exp(-0.5 * (0.5 / 1.5) ** 2)
    figures = held.nearest_setups(["X"], market(at(0.0)), NOW)
    np.testing.assert_allclose(figures, [[1.0, (20 + 40 * w) / (1 + w), (1 + w) / (6 + w)]])
    assert len(live) == 2
    assert live.similar(at(3.0), 5)[0].tolist() == [3, 2]


@settings(max_examples=50, deadline=None)
@example(trades=[([2.25, 0.0], 1.5, 2.2250738585e-313)], query=[0.0, 5.0])  # subnormal weights
@given(
    st.lists(st.tuples(HEAD, PNL, WEIGHT), min_size=1, max_size=40),
    st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)), min_size=2, max_size=2),
)
def test_figures_stay_in_their_ranges(
    trades: list[tuple[list[float], float, float]], query: list[float]
) -> None:
    setups = NearestSetups(identity_embedder(), radius=1.0)
    for i, (head, pnl, weight) in enumerate(trades):
        setups.add_trade(i, at(*head), pnl, pnl > 0, weight, exit_time_ms=i)
    win_rate, profit, reliability = setups.nearest_setups(["X"], market(at(*query)), NOW)[0]
    assert 0.0 <= win_rate <= 1.0
    assert 0.0 <= reliability < 1.0
    pnls = [p for _, p, _ in trades]
    assert min(pnls) - 1e-6 <= profit <= max(pnls) + 1e-6 or (win_rate, profit, reliability) == (0, 0, 0)


def test_the_index_batched_search_finds_what_one_query_at_a_time_finds() -> None:
    vectors = clustered(3000, 11).astype(np.float32)
    index = PatternIndex(EMBEDDING_DIM, cells=32, probe=4, min_for_cells=1000)
    index.build(np.arange(2900), vectors[:2900])
    for i in range(2900, 3000):  # in the tail
        index.add(i, vectors[i])
    queries = clustered(20, 12).astype(np.float32)
    ids, distances = index.search_many(queries, 15)
    for row, query in enumerate(queries):
        one = index.search(query, 15)
        assert set(ids[row].tolist()) == set(one.ids.tolist())
        np.testing.assert_allclose(distances[row], one.distances, atol=1e-3)
    # Fewer stored than asked for: padded with -1 at +inf.
    small = PatternIndex(EMBEDDING_DIM)
    small.add(5, vectors[0])
    ids, distances = small.search_many(queries[:2], 3)
    assert ids.tolist() == [[5, -1, -1], [5, -1, -1]]
    assert np.isinf(distances[:, 1:]).all()


def test_the_decision_step_asks_as_of_the_bars_close() -> None:
    from huracan.agent.decide import DecisionService
    from huracan.agent.performance import PerformanceRecorder
    from huracan.agent.runner import Decisions
    from huracan.config.settings import BUNDLED_CANDLES_DIR
    from huracan.core.bus import Topic
    from huracan.core.events import CandleClosed
    from huracan.features.market import CostAssumptions
    from huracan.market.candle_files import find_candle_files, read_candle_file
    from huracan.rl.env import EnvConfig

    class Idle:  # a champion that always waits (trained on the pattern memory), and the memory asked
        version = "idle"
        uses_pattern_memory = True
        as_of: list[int] = []

        def decide(self, rows: np.ndarray, *_: object, **__: object) -> Decisions:
            return Decisions(np.zeros(len(rows), dtype=np.int64), np.ones(len(rows)))

        def deciders(self) -> list[tuple[Idle, frozenset[str], bool]]:
            return [(self, frozenset(["BTC/USDT"]), False)]

        def nearest_setups(self, symbols: Sequence[str], rows: np.ndarray, as_of_ms: int) -> np.ndarray:
            self.as_of.append(as_of_ms)
            return np.zeros((len(symbols), 3))

    idle = Idle()
    service = DecisionService(
        exchange_id="binance",
        symbols=["BTC/USDT"],
        timeframe="5m",
        candles=Topic("candle-closed"),
        store=None,  # type: ignore[arg-type]  # no priming here
        models=idle,  # type: ignore[arg-type]
        positions=None,
        patterns=idle,
        intents=asyncio.Queue(),
        cost=CostAssumptions(),
        paper_rules=EnvConfig(),
        recorder=PerformanceRecorder(Decimal("1000"), Decimal("0.8")),
    )
    bars = read_candle_file(find_candle_files(BUNDLED_CANDLES_DIR, "5m")["BTC/USDT"])
    for i in range(2):
        event = CandleClosed("5m", int(bars.open_time_ms[i]), {"BTC/USDT": bars.candle(i)})
        service.decide(event, greedy=True, min_confidence=0)
    assert idle.as_of == [int(t) + 300_000 for t in bars.open_time_ms[:2]]  # 5 m bars: open + 5 min
