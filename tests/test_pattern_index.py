"""The pattern library's in-process k-nearest search against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.memory.pattern_index import PatternIndex, kmeans


def brute_force(vectors: np.ndarray, query: np.ndarray, k: int) -> np.ndarray:
    squared = ((vectors.astype(np.float64) - query) ** 2).sum(axis=1)
    return np.argsort(squared, kind="stable")[:k]


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (40, dim))
    return (centres[rng.integers(40, size=n)] + rng.normal(0, 1, (n, dim))).astype(np.float32)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3000), k=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_searching_every_cell_is_exact(n: int, k: int, seed: int) -> None:
    vectors = clustered(n, 8, seed)
    index = PatternIndex(8, cells=16, probe=16, min_for_cells=64, seed=seed)
    index.build(np.arange(n) * 10, vectors)
    query = clustered(1, 8, seed + 1)[0]
    found = index.search(query, k)
    expected = brute_force(vectors, query, k)
    assert len(found.ids) == min(k, n)
    # the same distances (ties may order ids differently)
    exact = np.sqrt(((vectors[expected].astype(np.float64) - query) ** 2).sum(axis=1))
    np.testing.assert_allclose(found.distances, exact, rtol=1e-4, atol=1e-4)
    assert (np.diff(found.distances) >= 0).all()


def test_probing_a_few_cells_finds_nearly_all_true_neighbours() -> None:
    vectors = clustered(20_000, 16, 1)
    index = PatternIndex(16, cells=128, probe=8)
    index.build(np.arange(len(vectors)), vectors)
    queries = clustered(200, 16, 2)
    recall = np.mean(
        [
            len(set(index.search(q, 20).ids.tolist()) & set(brute_force(vectors, q, 20).tolist())) / 20
            for q in queries
        ]
    )
    assert recall >= 0.95


def test_a_pattern_added_is_found_at_once_and_after_the_rebuild_it_triggers() -> None:
    vectors = clustered(5000, 8, 3)
    index = PatternIndex(8, cells=32, probe=32, min_for_cells=1000)
    index.build(np.arange(5000), vectors)
    extra = clustered(1000, 8, 4) + 50.0  # far from everything else
    for i, v in enumerate(extra):
        index.add(10_000 + i, v)
        if i in (0, 600, 999):  # in the tail, then after the rebuild at 5000 / 8 adds
            assert index.search(v, 1).ids.tolist() == [10_000 + i]
            assert index.search(v, 1).distances[0] == pytest.approx(0.0, abs=1e-3)
    assert len(index) == 6000
    everything = np.concatenate([vectors, extra])
    rows = brute_force(everything, extra[5], 30)
    expected_ids = np.where(rows < 5000, rows, rows - 5000 + 10_000)  # the ids given to build and add
    np.testing.assert_array_equal(np.sort(index.search(extra[5], 30).ids), np.sort(expected_ids))


def test_an_empty_or_small_index_is_exact_without_cells() -> None:
    index = PatternIndex(4)
    assert len(index.search(np.zeros(4), 5).ids) == 0
    index.add(7, [1.0, 0.0, 0.0, 0.0])
    index.add(8, [0.0, 3.0, 0.0, 0.0])
    found = index.search([0.0, 0.0, 0.0, 0.0], 5)
    assert found.ids.tolist() == [7, 8]
    np.testing.assert_allclose(found.distances, [1.0, 3.0])
    assert index.centroids is None


def test_bad_vectors_are_refused_with_what_is_wrong() -> None:
    index = PatternIndex(4)
    with pytest.raises(ValueError, match="4 numbers expected"):
        index.add(1, [1.0, 2.0])
    with pytest.raises(ValueError, match="NaN"):
        index.search([np.nan, 0.0, 0.0, 0.0], 3)
    with pytest.raises(ValueError, match="repeated ids"):
        index.build([1, 1], np.zeros((2, 4)))
    with pytest.raises(ValueError, match="probe"):
        PatternIndex(4, cells=8, probe=9)


def test_kmeans_uses_every_cell_and_is_seeded() -> None:
    vectors = clustered(3000, 8, 5)
    centroids = kmeans(vectors, 64, seed=3)
    assignment = (((vectors[:, None, :] - centroids[None]) ** 2).sum(axis=2)).argmin(axis=1)
    assert len(np.unique(assignment)) == 64
    np.testing.assert_array_equal(centroids, kmeans(vectors, 64, seed=3))
