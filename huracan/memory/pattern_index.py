"""The pattern library's nearest-neighbour search, in process: k nearest past setups to an
entry state's embedding, by Euclidean distance.

An inverted file over a coarse k-means quantiser: the vectors are kept sorted by their nearest
centroid ("cell"), a query measures the centroids, then only the vectors of its `probe`
nearest cells, exactly, and keeps the k nearest. Vectors added since the last build wait in a
small tail that every query scans in full; the index rebuilds itself (cells kept, vectors
re-sorted) once the tail has grown to an eighth of the sorted part. Below `min_for_cells`
vectors there are no cells: a search is exact over everything.

Pure: numpy in, numpy out. Persisting the vectors (PostgreSQL) and rebuilding at start-up are
the caller's; `build` is deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Floats = npt.NDArray[np.floating[Any]]


@dataclass(frozen=True, slots=True)
class Neighbours:
    ids: I64  # [k] nearest first
    distances: F32  # [k] Euclidean


def kmeans(vectors: F32, cells: int, *, iterations: int = 12, seed: int = 0) -> F32:
    """Lloyd's k-means from k-means++ seeds; an emptied cell is re-seeded at the point farthest
    from its centroid, so every cell stays in use."""
    rng = np.random.default_rng(seed)
    n = len(vectors)
    centroids = np.empty((cells, vectors.shape[1]), dtype=np.float32)
    centroids[0] = vectors[rng.integers(n)]
    nearest = _squared(vectors, centroids[:1])[:, 0]
    for c in range(1, cells):
        weights = nearest / nearest.sum() if nearest.sum() > 0 else None
        centroids[c] = vectors[rng.choice(n, p=weights)]
        nearest = np.minimum(nearest, _squared(vectors, centroids[c : c + 1])[:, 0])
    for _ in range(iterations):
        distances = _squared(vectors, centroids)
        assignment = distances.argmin(axis=1)
        for c in range(cells):
            members = vectors[assignment == c]
            if len(members):
                centroids[c] = members.mean(axis=0)
            else:
                centroids[c] = vectors[distances.min(axis=1).argmax()]
    return centroids


def _squared(vectors: F32, centroids: F32) -> F32:
    """[n, c] squared distances, as |v|^2 - 2 v.c + |c|^2 (clipped at 0: rounding)."""
    out = (vectors * vectors).sum(axis=1)[:, None] - 2.0 * (vectors @ centroids.T)
    out += (centroids * centroids).sum(axis=1)[None, :]
    result: F32 = np.maximum(out, 0.0)
    return result


class PatternIndex:
    def __init__(
        self, dim: int, *, cells: int = 256, probe: int = 16, min_for_cells: int = 4096, seed: int = 0
    ):
        if dim < 1 or cells < 1 or not 1 <= probe <= cells:
            raise ValueError(
                f"pattern index: dim {dim}, cells {cells}, probe {probe} (need 1 <= probe <= cells)"
            )
        self.dim, self.cells, self.probe, self.min_for_cells, self.seed = (
            dim,
            cells,
            probe,
            min_for_cells,
            seed,
        )
        self.centroids: F32 | None = None
        self._vectors = np.empty((0, dim), dtype=np.float32)  # sorted by cell
        self._norms = np.empty(0, dtype=np.float32)  # their squared norms
        self._augmented = np.empty((0, dim + 1), dtype=np.float32)  # vectors, then -norms / 2
        self._ids = np.empty(0, dtype=np.int64)
        self._offsets = np.zeros(cells + 1, dtype=np.int64)  # cell c: [offsets[c], offsets[c+1])
        self._tail: list[tuple[int, F32]] = []

    def __len__(self) -> int:
        return len(self._ids) + len(self._tail)

    def build(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> None:
        """Replace the contents: the cells trained on these vectors (when there are enough)."""
        ids_ = np.asarray(ids, dtype=np.int64)
        vectors_ = self._checked(vectors)
        if len(ids_) != len(vectors_) or len(np.unique(ids_)) != len(ids_):
            raise ValueError(f"pattern index: {len(ids_)} ids for {len(vectors_)} vectors, or repeated ids")
        self._tail = []
        self.centroids = None
        if len(vectors_) >= max(self.min_for_cells, self.cells):
            self.centroids = kmeans(vectors_, self.cells, seed=self.seed)
        self._sort(ids_, vectors_)

    def add(self, pattern_id: int, vector: npt.ArrayLike) -> None:
        """One new vector (a trade just closed); searchable at once."""
        self._tail.append((int(pattern_id), self._checked(vector)[0]))
        if len(self._tail) * 8 > max(len(self._ids), self.min_for_cells):
            ids = np.concatenate([self._ids, np.fromiter((i for i, _ in self._tail), np.int64)])
            vectors = np.concatenate([self._vectors, np.stack([v for _, v in self._tail])])
            self._tail = []
            if self.centroids is None and len(vectors) >= max(self.min_for_cells, self.cells):
                self.centroids = kmeans(vectors, self.cells, seed=self.seed)
            self._sort(ids, vectors)

    def search(self, query: npt.ArrayLike, k: int) -> Neighbours:
        """The k nearest (fewer when the index holds fewer), nearest first."""
        q = self._checked(query)[0]
        parts = self._candidates(q)
        if self._tail:
            tail_ids = np.fromiter((i for i, _ in self._tail), np.int64, len(self._tail))
            tail = np.stack([v for _, v in self._tail])
            parts.append((tail_ids, ((tail - q) ** 2).sum(axis=1)))
        if not parts:
            return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))
        ids = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        squared = np.concatenate([p[1] for p in parts]) if len(parts) > 1 else parts[0][1]
        if len(squared) > k:
            keep = np.argpartition(squared, k - 1)[:k]
            ids, squared = ids[keep], squared[keep]
        order = np.argsort(squared, kind="stable")
        return Neighbours(ids[order], np.sqrt(np.maximum(squared[order], 0.0)).astype(np.float32))

    def search_many(self, queries: npt.ArrayLike, k: int) -> tuple[I64, F32]:
        """The k nearest of each query [Q, dim] at once: ids [Q, k] and distances [Q, k], nearest
        first. A row with fewer than k found (a small index, or probed cells holding fewer) is
        padded with id -1 at distance +inf. The neighbours `search` finds query by query (up to
        rounding in near ties), cheaper: the centroid and tail distances are one product for all
        queries, and a cell costs one product [cell, dim + 1] x [dim + 1] on vectors stored with
        -|v|^2 / 2 appended (|v - q|^2 = |q|^2 - 2 (v.q - |v|^2 / 2): rank by the product)."""
        if k < 1:
            raise ValueError(f"pattern index: k {k} must be >= 1")
        q = self._checked(queries)
        n_queries = len(q)
        ids_out = np.full((n_queries, k), -1, dtype=np.int64)
        distances_out = np.full((n_queries, k), np.inf, dtype=np.float32)
        if not len(self) or not n_queries:
            return ids_out, distances_out
        augmented_q = np.hstack([q, np.ones((n_queries, 1), dtype=np.float32)])
        q_norms = (q * q).sum(axis=1)
        if self._tail:
            tail = np.stack([v for _, v in self._tail])
            tail_ids = np.fromiter((i for i, _ in self._tail), np.int64, len(self._tail))
            tail_scores = np.hstack([tail, -0.5 * (tail * tail).sum(axis=1)[:, None]]) @ augmented_q.T
        ranges: list[list[tuple[int, int]]] = [[] for _ in range(n_queries)]
        if len(self._ids) and self.centroids is not None and self.probe < self.cells:
            probed = np.argpartition(_squared(q, self.centroids), self.probe - 1, axis=1)[:, : self.probe]
            starts, ends = self._offsets[probed].tolist(), self._offsets[probed + 1].tolist()
            ranges = [
                [(a, b) for a, b in zip(s, e, strict=True) if b > a]
                for s, e in zip(starts, ends, strict=True)
            ]
        elif len(self._ids):
            ranges = [[(0, len(self._ids))] for _ in range(n_queries)]
        for row in range(n_queries):
            aq = augmented_q[row]
            scores = [self._augmented[a:b] @ aq for a, b in ranges[row]]
            ids = [self._ids[a:b] for a, b in ranges[row]]
            if self._tail:
                scores.append(tail_scores[:, row])
                ids.append(tail_ids)
            if not scores:
                continue
            score = np.concatenate(scores) if len(scores) > 1 else scores[0]
            found_ids = np.concatenate(ids) if len(ids) > 1 else ids[0]
            if len(score) > k:
                keep = np.argpartition(-score, k - 1)[:k]
                score, found_ids = score[keep], found_ids[keep]
            order = np.argsort(-score, kind="stable")
            found = len(order)
            ids_out[row, :found] = found_ids[order]
            distances_out[row, :found] = np.sqrt(np.maximum(q_norms[row] - 2.0 * score[order], 0.0))
        return ids_out, distances_out

    def _candidates(self, q: F32) -> list[tuple[I64, Floats]]:
        """(ids, squared distances) of the sorted vectors in the query's nearest cells."""
        if not len(self._ids):
            return []
        if self.centroids is None:
            ranges = [(0, len(self._ids))]
        else:
            to_cells = ((self.centroids - q) ** 2).sum(axis=1)
            nearest = (
                np.argpartition(to_cells, self.probe - 1)[: self.probe] if self.probe < self.cells else None
            )
            cells = nearest if nearest is not None else np.arange(self.cells)
            ranges = [(int(self._offsets[c]), int(self._offsets[c + 1])) for c in cells.tolist()]
        q_norm = float(q @ q)
        out: list[tuple[I64, Floats]] = []
        for start, end in ranges:
            if end > start:
                block = self._vectors[start:end]
                squared = self._norms[start:end] - 2.0 * (block @ q) + q_norm
                out.append((self._ids[start:end], squared))
        return out

    def _sort(self, ids: I64, vectors: F32) -> None:
        if self.centroids is None:
            order = np.arange(len(ids))
            counts = np.zeros(self.cells, dtype=np.int64)
            counts[0] = len(ids)
        else:
            assignment = (
                _squared(vectors, self.centroids).argmin(axis=1) if len(vectors) else np.empty(0, np.int64)
            )
            order = np.argsort(assignment, kind="stable")
            counts = np.bincount(assignment, minlength=self.cells)
        self._vectors = np.ascontiguousarray(vectors[order])
        self._norms = (self._vectors * self._vectors).sum(axis=1)
        self._augmented = np.hstack([self._vectors, -0.5 * self._norms[:, None]])  # for search_many
        self._ids = ids[order]
        self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _checked(self, vectors: npt.ArrayLike) -> F32:
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[1] != self.dim:
            raise ValueError(
                f"pattern index: vectors of {self.dim} numbers expected, got shape {array.shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError("pattern index: a vector holds NaN or infinity")
        return array
