"""The agent's view of pattern memory: for each symbol's market row, how the k nearest past
trades (by entry embedding) turned out. Implements huracan.agent.positions.PatternMemoryView.

For a query embedding q and its k nearest trades i (distance d_i, fewer when fewer are stored):
    w_i = weight_i x exp(-(d_i / radius)^2 / 2)
weight_i = 1 - the loss analyzer's confidence penalty of trade i (1 until analysed); the
Gaussian falls to 0.61 at the pattern library's clustering radius and 0.14 at twice it. Then
    win rate       = sum w_i won_i / sum w_i            (0..1)
    avg profit bps = sum w_i pnl_bps_i / sum w_i
    reliability    = W / (W + SUPPORT_HALF), W = sum w_i (0..1)
W is the effective number of close, trusted neighbours: reliability falls with few neighbours,
far ones and penalised ones, and reaches 20 / 25 = 0.8 with 20 perfect neighbours. With no
trade stored, or W = 0 (every neighbour fully penalised or infinitely far), the row is
[0, 0, 0]: what NoPatternMemory gives, so a daemon with no trades sees the same state.

Search: exact and batched (one matrix product for all symbols) while fewer than
EXACT_SEARCH_LIMIT trades are stored; beyond, the inverted-file index (pattern_index.py, 256
cells, INDEX_PROBE searched per query). Probing 8 cells finds about 96% of the exact 20 nearest
over 100,000 real entry states (16 cells: 99%) in about half the time; a figure averaged over
20 weighted neighbours barely moves when one of them is the 21st nearest instead.

Embeddings of stored trades must come from the same EntryEmbedder (same version) as the one
given here; a rebuild after a basis change re-embeds the stored entry features first. The
rebuild at start-up passes every stored trade to `add_trades` at once (one index build).

Pure: no I/O. Not thread-safe (one event loop owns it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from huracan.features.context import PATTERN_MEMORY_WIDTH
from huracan.features.market import MARKET_WIDTH
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder
from huracan.memory.pattern_index import PatternIndex
from huracan.memory.patterns import DEFAULT_RADIUS

DEFAULT_K = 20
EXACT_SEARCH_LIMIT = 4096  # exact: under 0.35 ms for 20 symbols up to here, and nothing to train
SUPPORT_HALF = 5.0  # effective neighbours at which reliability is one half
INDEX_CELLS = 256
INDEX_PROBE = 8

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Floats = npt.NDArray[np.floating[Any]]


class NearestSetups:
    def __init__(
        self,
        embedder: EntryEmbedder,
        *,
        k: int = DEFAULT_K,
        radius: float = DEFAULT_RADIUS,
        exact_limit: int = EXACT_SEARCH_LIMIT,
        probe: int = INDEX_PROBE,
        seed: int = 0,
    ) -> None:
        if k < 1 or not (math.isfinite(radius) and radius > 0) or exact_limit < 1:
            raise ValueError(
                f"nearest setups: k {k} >= 1, radius {radius} > 0, exact_limit {exact_limit} >= 1"
            )
        self.embedder, self.k, self.radius, self.exact_limit = embedder, k, radius, exact_limit
        self._probe, self._seed = probe, seed
        self._n = 0
        # float64 so that the exact search is the brute force it stands for. Rows [0, n) in use.
        self._embeddings = np.empty((64, EMBEDDING_DIM), dtype=np.float64)
        self._norms = np.empty(64, dtype=np.float64)
        self._trade_ids = np.empty(64, dtype=np.int64)
        self._pnl_bps = np.empty(64, dtype=np.float64)
        self._won = np.empty(64, dtype=np.float64)  # 1.0 / 0.0, to weigh directly
        self._weight = np.empty(64, dtype=np.float64)
        self._row: dict[int, int] = {}  # trade id -> row
        self._index: PatternIndex | None = None  # over rows, once exact_limit trades are stored

    def __len__(self) -> int:
        return self._n

    def add_trade(
        self, trade_id: int, embedding: npt.ArrayLike, pnl_bps: float, won: bool, weight: float = 1.0
    ) -> None:
        """One closed trade; found by the next search."""
        self.add_trades([trade_id], np.asarray(embedding)[None], [pnl_bps], [won], [weight])

    def add_trades(
        self,
        trade_ids: npt.ArrayLike,
        embeddings: npt.ArrayLike,
        pnl_bps: npt.ArrayLike,
        won: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
    ) -> None:
        """Many trades at once (the rebuild at start-up): one index build instead of many."""
        ids = np.asarray(trade_ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return
        # float32 first: the precision an embedding has (and is stored with) everywhere else.
        vectors = np.asarray(embeddings, dtype=np.float32).astype(np.float64)
        pnl = np.asarray(pnl_bps, dtype=np.float64).reshape(-1)
        flags = np.asarray(won, dtype=bool).reshape(-1)
        w = np.ones(len(ids)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        if vectors.shape != (len(ids), EMBEDDING_DIM) or not np.isfinite(vectors).all():
            raise ValueError(f"nearest setups: embeddings of {EMBEDDING_DIM} finite numbers expected")
        if not (len(pnl) == len(flags) == len(w) == len(ids)) or not np.isfinite(pnl).all():
            raise ValueError("nearest setups: one finite pnl, won flag and weight per trade expected")
        if not ((w >= 0) & (w <= 1)).all():
            raise ValueError("nearest setups: weights must lie in 0..1")
        if len(np.unique(ids)) != len(ids) or any(int(i) in self._row for i in ids.tolist()):
            raise ValueError("nearest setups: a trade is added twice")
        start, end = self._n, self._n + len(ids)
        self._reserve(end)
        self._embeddings[start:end] = vectors
        self._norms[start:end] = (vectors * vectors).sum(axis=1)
        self._trade_ids[start:end] = ids
        self._pnl_bps[start:end] = pnl
        self._won[start:end] = flags
        self._weight[start:end] = w
        self._row.update(zip(ids.tolist(), range(start, end), strict=True))
        self._n = end
        if self._index is not None and len(ids) * 8 <= len(self._index):
            for row in range(start, end):
                self._index.add(row, self._embeddings[row])
        elif end >= self.exact_limit:
            self._index = PatternIndex(
                EMBEDDING_DIM,
                cells=INDEX_CELLS,
                probe=self._probe,
                min_for_cells=self.exact_limit,
                seed=self._seed,
            )
            self._index.build(np.arange(end), self._embeddings[:end].astype(np.float32))

    def set_weight(self, trade_id: int, weight: float) -> None:
        """1 - the loss analysis' confidence penalty of the trade."""
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"nearest setups: weight {weight} of trade {trade_id} is not in 0..1")
        try:
            self._weight[self._row[trade_id]] = weight
        except KeyError:
            raise KeyError(f"nearest setups: no trade {trade_id}") from None

    def similar(self, embedding: npt.ArrayLike, k: int) -> tuple[I64, F32]:
        """Trade ids and distances of the k nearest past trades (fewer when fewer are stored),
        nearest first."""
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (EMBEDDING_DIM,) or not np.isfinite(vector).all():
            raise ValueError(f"nearest setups: an embedding of {EMBEDDING_DIM} finite numbers expected")
        rows, distances = self._search(vector[None], k)
        found = rows[0] >= 0
        return self._trade_ids[rows[0][found]], distances[0][found].astype(np.float32)

    def nearest_setups(self, symbols: Sequence[str], market_rows: npt.NDArray[np.float64]) -> F64:
        """[S, 3]: weighted win rate, weighted average pnl bps, reliability; per symbol, in the
        order given."""
        rows = np.asarray(market_rows, dtype=np.float64)
        if rows.shape != (len(symbols), MARKET_WIDTH):
            raise ValueError(
                f"nearest setups: {len(symbols)} rows of {MARKET_WIDTH} market features expected, "
                f"got shape {rows.shape}"
            )
        out = np.zeros((len(symbols), PATTERN_MEMORY_WIDTH))
        if self._n == 0 or not len(symbols):
            return out
        neighbours, distances = self._search(self.embedder.embed(rows), self.k)
        return setup_figures(
            neighbours,
            distances,
            self._won[: self._n],
            self._pnl_bps[: self._n],
            self._weight[: self._n],
            self.radius,
        )

    def _search(self, queries: F32, k: int) -> tuple[I64, Floats]:
        """Rows [Q, k'] and distances of the nearest stored trades; the index pads rows that
        found fewer than k with -1 / inf. Exact: float64 distances, the brute force's."""
        if self._index is not None:
            return self._index.search_many(queries, k)
        n = self._n
        q = queries.astype(np.float64)
        squared = self._norms[None, :n] - 2.0 * (q @ self._embeddings[:n].T) + (q * q).sum(axis=1)[:, None]
        np.maximum(squared, 0.0, out=squared)
        kept = min(k, n)
        if n > kept:
            rows = np.argpartition(squared, kept - 1, axis=1)[:, :kept]
            squared = np.take_along_axis(squared, rows, axis=1)
        else:
            rows = np.broadcast_to(np.arange(n), squared.shape)
        order = np.argsort(squared, axis=1, kind="stable")
        nearest: I64 = np.take_along_axis(rows, order, axis=1).astype(np.int64)
        distances: F64 = np.sqrt(np.take_along_axis(squared, order, axis=1))
        return nearest, distances

    def _reserve(self, size: int) -> None:
        capacity = len(self._trade_ids)
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        for name in ("_embeddings", "_norms", "_trade_ids", "_pnl_bps", "_won", "_weight"):
            old = getattr(self, name)
            grown = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            grown[: self._n] = old[: self._n]
            setattr(self, name, grown)


def setup_figures(
    neighbours: I64, distances: Floats, won: F64, pnl_bps: F64, weights: F64, radius: float
) -> F64:
    """The [Q, 3] figures of the module docstring from neighbour rows [Q, k] (-1 = none) into
    the per-trade arrays."""
    found = neighbours >= 0
    safe = np.where(found, neighbours, 0)
    scaled = np.where(found, distances.astype(np.float64) / radius, 0.0)
    w = np.where(found, weights[safe] * np.exp(-0.5 * scaled * scaled), 0.0)
    support = w.sum(axis=1)
    out = np.zeros((len(neighbours), PATTERN_MEMORY_WIDTH))
    some = support > 0
    if some.any():
        s = support[some]
        out[some, 0] = (w[some] * won[safe[some]]).sum(axis=1) / s
        out[some, 1] = (w[some] * pnl_bps[safe[some]]).sum(axis=1) / s
        out[some, 2] = s / (s + SUPPORT_HALF)
    return out
