"""The agent's view of pattern memory: zeros when empty, the documented weighted figures (by
hand and against brute force, on the exact path and through the index), and its bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.agent.positions import NoPatternMemory, PatternMemoryView
from huracan.features.market import MARKET_WIDTH
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder
from huracan.memory.pattern_index import PatternIndex
from huracan.memory.setups import SUPPORT_HALF, NearestSetups

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


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
    won: np.ndarray,
    weight: np.ndarray,
    k: int,
    radius: float,
) -> np.ndarray:
    """The module docstring's formulas, one query and one neighbour at a time, on the float32
    numbers an embedding has."""
    queries = queries.astype(np.float32).astype(np.float64)
    embeddings = embeddings.astype(np.float32).astype(np.float64)
    out = np.zeros((len(queries), 3))
    for row, q in enumerate(queries):
        distances = [math.dist(q.tolist(), e.tolist()) for e in embeddings]
        nearest = sorted(range(len(embeddings)), key=lambda i: distances[i])[:k]
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
        view.nearest_setups(SYMBOLS, rows), NoPatternMemory().nearest_setups(SYMBOLS, rows)
    )
    assert len(setups) == 0
    assert len(setups.similar(at(0.0), 5)[0]) == 0


def test_one_neighbour_worked_by_hand() -> None:
    setups = NearestSetups(identity_embedder(), radius=2.0)
    setups.add_trade(7, at(0.0), 30.0, True)
    # The query 2 away (= the radius): w = exp(-1/2) = 0.60653; one neighbour, so the win rate
    # and profit are its own; reliability 0.60653 / (0.60653 + 5) = 0.10818.
    figures = setups.nearest_setups(["BTC/USDT"], market(at(2.0)))
    np.testing.assert_allclose(figures, [[1.0, 30.0, 0.60653066 / 5.60653066]], rtol=1e-7)
    # A second trade at distance 0 that lost 10: w = 1 and 0.60653 (the first, from 2 away).
    setups.add_trade(8, at(2.0), -10.0, False)
    figures = setups.nearest_setups(["BTC/USDT"], market(at(2.0)))
    w = math.exp(-0.5)
    np.testing.assert_allclose(
        figures, [[w / (1 + w), (30.0 * w - 10.0) / (1 + w), (1 + w) / (1 + w + 5)]], rtol=1e-7
    )
    # Its loss analysis halves its weight: 0.5 and 0.60653.
    setups.set_weight(8, 0.5)
    figures = setups.nearest_setups(["BTC/USDT"], market(at(2.0)))
    np.testing.assert_allclose(figures[0, 0], w / (0.5 + w), rtol=1e-7)
    ids, distances = setups.similar(at(2.0), 5)
    assert ids.tolist() == [8, 7]
    np.testing.assert_allclose(distances, [0.0, 2.0], atol=1e-6)


def test_reliability_falls_with_fewer_farther_and_penalised_neighbours() -> None:
    def reliability(n: int, distance: float, weight: float) -> float:
        setups = NearestSetups(identity_embedder(), radius=2.0)
        for i in range(n):
            setups.add_trade(i, at(0.0, 0.001 * i), 10.0, True, weight)
        return float(setups.nearest_setups(["X"], market(at(distance)))[0, 2])

    assert reliability(20, 0.0, 1.0) == pytest.approx(20 / 25, abs=1e-4)  # 20 perfect neighbours
    assert reliability(20, 0.0, 1.0) > reliability(5, 0.0, 1.0) > reliability(1, 0.0, 1.0)
    assert reliability(20, 0.0, 1.0) > reliability(20, 2.0, 1.0) > reliability(20, 6.0, 1.0)
    assert reliability(20, 0.0, 1.0) > reliability(20, 0.0, 0.5) > reliability(20, 0.0, 0.1)
    assert reliability(20, 0.0, 0.0) == 0.0


@pytest.mark.parametrize("trades", [1, 7, 20, 300])
def test_the_exact_path_equals_brute_force(trades: int) -> None:
    rng = np.random.default_rng(trades)
    embeddings = clustered(trades, trades)
    pnl = rng.normal(5, 40, trades).round(1)
    weight = rng.choice([1.0, 0.8, 0.0, 0.3], trades)
    setups = NearestSetups(identity_embedder(), k=20, radius=1.5)
    for i in range(trades):
        setups.add_trade(1000 + i, embeddings[i], float(pnl[i]), bool(pnl[i] > 0), float(weight[i]))
    queries = clustered(20, 99)
    figures = setups.nearest_setups([f"S{i}" for i in range(20)], market(*queries))
    expected = brute_force(queries, embeddings, pnl, (pnl > 0).astype(float), weight, 20, 1.5)
    np.testing.assert_allclose(figures, expected, rtol=1e-9, atol=1e-9)


def test_the_index_path_probing_every_cell_equals_brute_force_and_sees_new_trades() -> None:
    rng = np.random.default_rng(3)
    embeddings = clustered(700, 4)
    pnl = rng.normal(0, 30, 700)
    weight = rng.uniform(0, 1, 700)
    setups = NearestSetups(identity_embedder(), radius=2.0, exact_limit=400, probe=256)
    setups.add_trades(np.arange(600), embeddings[:600], pnl[:600], pnl[:600] > 0, weight[:600])
    for i in range(600, 700):  # live, one by one: the index's tail, then its rebuild
        setups.add_trade(i, embeddings[i], float(pnl[i]), bool(pnl[i] > 0), float(weight[i]))
    assert setups._index is not None
    assert setups._index.centroids is not None
    queries = clustered(20, 5)
    figures = setups.nearest_setups([f"S{i}" for i in range(20)], market(*queries))
    expected = brute_force(queries, embeddings, pnl, (pnl > 0).astype(float), weight, 20, 2.0)
    np.testing.assert_allclose(figures, expected, rtol=1e-4, atol=1e-4)  # the index is float32
    ids, _ = setups.similar(queries[0], 20)
    truth = np.argsort(((embeddings - queries[0]) ** 2).sum(axis=1), kind="stable")[:20]
    assert set(ids.tolist()) == set(truth.tolist())


def test_the_default_probe_finds_nearly_the_same_figures() -> None:
    rng = np.random.default_rng(8)
    embeddings = clustered(6000, 9)
    pnl = rng.normal(0, 30, 6000)
    setups = NearestSetups(identity_embedder(), radius=2.0)
    setups.add_trades(np.arange(6000), embeddings, pnl, pnl > 0)
    queries = clustered(20, 10)
    figures = setups.nearest_setups([f"S{i}" for i in range(20)], market(*queries))
    expected = brute_force(queries, embeddings, pnl, (pnl > 0).astype(float), np.ones(6000), 20, 2.0)
    assert np.abs(figures[:, 0] - expected[:, 0]).mean() < 0.05
    assert np.abs(figures[:, 2] - expected[:, 2]).mean() < 0.05


def test_bad_input_is_refused_naming_what() -> None:
    setups = NearestSetups(identity_embedder())
    setups.add_trade(1, at(0.0), 5.0, True)
    with pytest.raises(ValueError, match="added twice"):
        setups.add_trade(1, at(1.0), 5.0, True)
    with pytest.raises(ValueError, match="16 finite numbers"):
        setups.add_trade(2, np.zeros(3), 5.0, True)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        setups.add_trade(3, at(0.0), 5.0, True, weight=1.5)
    with pytest.raises(KeyError, match="no trade 9"):
        setups.set_weight(9, 0.5)
    with pytest.raises(ValueError, match="3 rows of 70"):
        setups.nearest_setups(SYMBOLS, np.zeros((2, MARKET_WIDTH)))


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.floats(-5, 5), min_size=2, max_size=2),
            st.floats(-300, 300),
            st.floats(0, 1),
        ),
        min_size=1,
        max_size=40,
    ),
    st.lists(st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)), min_size=2, max_size=2),
)
def test_figures_stay_in_their_ranges(
    trades: list[tuple[list[float], float, float]], query: list[float]
) -> None:
    setups = NearestSetups(identity_embedder(), radius=1.0)
    for i, (head, pnl, weight) in enumerate(trades):
        setups.add_trade(i, at(*head), pnl, pnl > 0, weight)
    win_rate, profit, reliability = setups.nearest_setups(["X"], market(at(*query)))[0]
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
