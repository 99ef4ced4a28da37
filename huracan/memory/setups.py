"""The agent's view of pattern memory: for each symbol's market row, how the k nearest past
trades (by entry embedding) turned out, as known at the bar being decided. Implements
huracan.agent.positions.PatternMemoryView.

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

Time (Unix ms), so that no figure looks ahead. A replay restarts history while the memory
rebuilt from the database holds the trades of earlier runs, some exiting after the bar decided:
- nearest_setups(as_of_ms): as_of_ms is the decided bar's close; only trades with
  exit_time_ms < as_of_ms count. Strictly: a trade exiting at the close was closed by a
  decision taken at that close (filled at the next open, stamped with the same time), i.e.
  after the state being built. A trade's penalty counts only when its known_ms < as_of_ms
  (known_ms: when the loss analysis could run, its analysis horizon after the exit); before,
  weight 1. The training walk (huracan/rl/pattern_memory.py) uses the same two strict rules,
  so a model reads in training what it reads live.
- similar(before_ms) and base_win_rate(before_ms): before_ms is a trade's entry; only trades
  that had exited before it (exit_time_ms < before_ms) count: one exiting at the same instant
  was closed by the same decision step, not known to it. PostgreSQL's similar_before and the
  pattern library's history use the same rule, so the analyzers' paths agree.
Live every stored trade has exited before the bar being decided: the latest exit (and the
latest time a penalty became known) are kept, and when as_of_ms is past them the search is the
unfiltered one, at the cost it always had.

Search: exact and batched (one matrix product for all symbols) while fewer than
EXACT_SEARCH_LIMIT trades are stored; beyond, the inverted-file index (pattern_index.py, 256
cells, INDEX_PROBE searched per query). Probing 8 cells finds about 96% of the exact 20 nearest
over 100,000 real entry states (16 cells: 99%) in about half the time; a figure averaged over
20 weighted neighbours barely moves when one of them is the 21st nearest instead.
With a time filter, m of n trades eligible: an exact search over just those while m <=
exact_limit or m < 0.31 n (there a matrix product over the eligible costs less than the
widened probe below). Otherwise the index, probing n / m times INDEX_PROBE cells (the k nearest
eligible trades lie about as far as the k n / m nearest of all) and asked for 4 k n / m
candidates, then four times more, until k of them are eligible or the cells probed are
exhausted. The approximation is the index's own, over the eligible trades: the k nearest
eligible trades of the cells probed. Recall of the exact eligible 20 nearest: about 0.98 over
20,000 real entry states with half or a third eligible (unfiltered, this index finds 0.9 there).
A row may get fewer than k neighbours only if fewer than k eligible trades lie in all the
cells it probed (it then reads as less reliable). Cost over 100,000 trades, 20 symbols: at most
about 2 ms (m near 0.31 n), against 0.7 ms for the live, unfiltered search.

Embeddings of stored trades must come from the same EntryEmbedder (same version) as the one
given here; a rebuild after a basis change re-embeds the stored entry features first. The
rebuild at start-up passes every stored trade to `add_trades` at once (one index build), into
`empty_like()`, then `adopt`s it (the view the decision step holds is refilled in place).

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
# A filtered index search first asks for this many times k candidates, then this many times more.
OVERFETCH = 4
# An exact distance (one matrix product for every query) costs about a third of one the index
# measures (cell by cell, query by query): measured, 20 queries over 100,000 real entry states.
EXACT_COST_RATIO = 3
NEVER = np.iinfo(np.int64).min  # the latest exit of an empty memory: every as_of is past it

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
        self._exit_ms = np.empty(64, dtype=np.int64)
        self._known_ms = np.empty(64, dtype=np.int64)  # when the weight became known
        self._row: dict[int, int] = {}  # trade id -> row
        self._index: PatternIndex | None = None  # over rows, once exact_limit trades are stored
        # Past both, a bar needs no time filter: the live case.
        self._latest_exit_ms = int(NEVER)
        self._latest_penalty_known_ms = int(NEVER)  # of the weights below 1
        # base_win_rate's tally: exits sorted, win flags in that order, cumulative wins; holds
        # rows [0, tallied), the rest merged in at the next call.
        self._tallied = 0
        self._tally_exit_ms = np.empty(0, dtype=np.int64)
        self._tally_won = np.empty(0, dtype=np.int64)
        self._tally_wins = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return self._n

    def empty_like(self) -> NearestSetups:
        """An empty memory with the same embedder and search settings (a rebuild fills it)."""
        return NearestSetups(
            self.embedder,
            k=self.k,
            radius=self.radius,
            exact_limit=self.exact_limit,
            probe=self._probe,
            seed=self._seed,
        )

    def adopt(self, other: NearestSetups) -> None:
        """Take over other's trades and settings in place, at once: whoever holds this object
        (the decision step) reads the rebuilt memory from its next bar. other is spent."""
        if other is not self:
            vars(self).update(vars(other))

    def add_trade(
        self,
        trade_id: int,
        embedding: npt.ArrayLike,
        pnl_bps: float,
        won: bool,
        weight: float = 1.0,
        *,
        exit_time_ms: int,
        known_ms: int | None = None,
    ) -> None:
        """One closed trade; found by the next search whose bar closes after its exit. known_ms:
        when its weight became known (None: with the exit)."""
        self.add_trades(
            [trade_id],
            np.asarray(embedding)[None],
            [pnl_bps],
            [won],
            [weight],
            exit_time_ms=[exit_time_ms],
            known_ms=None if known_ms is None else [known_ms],
        )

    def add_trades(
        self,
        trade_ids: npt.ArrayLike,
        embeddings: npt.ArrayLike,
        pnl_bps: npt.ArrayLike,
        won: npt.ArrayLike,
        weights: npt.ArrayLike | None = None,
        *,
        exit_time_ms: npt.ArrayLike,
        known_ms: npt.ArrayLike | None = None,
    ) -> None:
        """Many trades at once (the rebuild at start-up): one index build instead of many.
        weights None: 1; known_ms None: each weight known with its trade's exit."""
        ids = np.asarray(trade_ids, dtype=np.int64).reshape(-1)
        if not len(ids):
            return
        # float32 first: the precision an embedding has (and is stored with) everywhere else.
        vectors = np.asarray(embeddings, dtype=np.float32).astype(np.float64)
        pnl = np.asarray(pnl_bps, dtype=np.float64).reshape(-1)
        flags = np.asarray(won, dtype=bool).reshape(-1)
        w = np.ones(len(ids)) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
        exits = _times(exit_time_ms, "exit_time_ms")
        known = exits if known_ms is None else _times(known_ms, "known_ms")
        if vectors.shape != (len(ids), EMBEDDING_DIM) or not np.isfinite(vectors).all():
            raise ValueError(f"nearest setups: embeddings of {EMBEDDING_DIM} finite numbers expected")
        if not (len(pnl) == len(flags) == len(w) == len(ids)) or not np.isfinite(pnl).all():
            raise ValueError("nearest setups: one finite pnl, won flag and weight per trade expected")
        if not ((w >= 0) & (w <= 1)).all():
            raise ValueError("nearest setups: weights must lie in 0..1")
        if not (len(exits) == len(known) == len(ids)) or (known < exits).any():
            raise ValueError(
                "nearest setups: one exit_time_ms and known_ms per trade, none known before its exit"
            )
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
        self._exit_ms[start:end] = exits
        self._known_ms[start:end] = known
        self._row.update(zip(ids.tolist(), range(start, end), strict=True))
        self._n = end
        self._latest_exit_ms = max(self._latest_exit_ms, int(exits.max()))
        if (w < 1).any():
            self._latest_penalty_known_ms = max(self._latest_penalty_known_ms, int(known[w < 1].max()))
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

    def rekey(self, old_id: int, new_id: int) -> None:
        """Give a stored trade another id (a trade handed over at its close, before the
        database gave it its id)."""
        if new_id in self._row:
            raise ValueError(f"nearest setups: trade {new_id} is stored already")
        try:
            row = self._row.pop(old_id)
        except KeyError:
            raise KeyError(f"nearest setups: no trade {old_id}") from None
        self._row[new_id] = row
        self._trade_ids[row] = new_id

    def set_weight(self, trade_id: int, weight: float, known_ms: int) -> None:
        """1 - the loss analysis' confidence penalty of the trade, known from known_ms on (a bar
        closing at or before it still sees weight 1)."""
        if not (math.isfinite(weight) and 0.0 <= weight <= 1.0):
            raise ValueError(f"nearest setups: weight {weight} of trade {trade_id} is not in 0..1")
        try:
            row = self._row[trade_id]
        except KeyError:
            raise KeyError(f"nearest setups: no trade {trade_id}") from None
        if known_ms < self._exit_ms[row]:
            raise ValueError(
                f"nearest setups: the weight of trade {trade_id} known at {known_ms}, "
                f"before its exit at {int(self._exit_ms[row])}"
            )
        self._weight[row] = weight
        self._known_ms[row] = known_ms
        if weight < 1:
            self._latest_penalty_known_ms = max(self._latest_penalty_known_ms, int(known_ms))

    def similar(self, embedding: npt.ArrayLike, k: int, before_ms: int | None = None) -> tuple[I64, F32]:
        """Trade ids and distances of the k nearest stored trades (fewer when fewer qualify),
        nearest first; before_ms: only those exited before then (exit_time_ms < before_ms)."""
        vector = np.asarray(embedding, dtype=np.float32)
        if vector.shape != (EMBEDDING_DIM,) or not np.isfinite(vector).all():
            raise ValueError(f"nearest setups: an embedding of {EMBEDDING_DIM} finite numbers expected")
        if k < 1:
            raise ValueError(f"nearest setups: k {k} must be >= 1")
        rows, distances = self.neighbours(vector[None], k, before_ms)
        found = rows[0] >= 0
        return self._trade_ids[rows[0][found]], distances[0][found].astype(np.float32)

    def base_win_rate(self, before_ms: int) -> float | None:
        """The share of wins among the stored trades exited before before_ms (exit_time_ms <
        before_ms); None when there is none. O(log n), after merging trades added since."""
        if self._tallied < self._n:
            self._tally()
        exited = int(np.searchsorted(self._tally_exit_ms, before_ms, side="left"))
        return None if exited == 0 else int(self._tally_wins[exited - 1]) / exited

    def nearest_setups(
        self, symbols: Sequence[str], market_rows: npt.NDArray[np.float64], as_of_ms: int
    ) -> F64:
        """[S, 3]: weighted win rate, weighted average pnl bps, reliability; per symbol, in the
        order given; from the trades exited before as_of_ms (the decided bar's close), each
        penalised only when its penalty was known before as_of_ms."""
        rows = np.asarray(market_rows, dtype=np.float64)
        if rows.shape != (len(symbols), MARKET_WIDTH):
            raise ValueError(
                f"nearest setups: {len(symbols)} rows of {MARKET_WIDTH} market features expected, "
                f"got shape {rows.shape}"
            )
        out = np.zeros((len(symbols), PATTERN_MEMORY_WIDTH))
        if self._n == 0 or not len(symbols):
            return out
        neighbours, distances = self.neighbours(self.embedder.embed(rows), self.k, as_of_ms)
        n = self._n
        weights = self._weight[:n]
        if as_of_ms <= self._latest_penalty_known_ms:
            weights = np.where(self._known_ms[:n] < as_of_ms, weights, 1.0)
        return setup_figures(neighbours, distances, self._won[:n], self._pnl_bps[:n], weights, self.radius)

    def neighbours(self, queries: F32, k: int, before: int | None = None) -> tuple[I64, Floats]:
        """Rows [Q, k'] and distances of the nearest stored trades that exited before `before`
        (None: all), nearest first; rows that found fewer than k' are padded with -1 / inf.
        Exact: float64 distances, the brute force's."""
        if before is None or before > self._latest_exit_ms:
            if self._index is not None:
                return self._index.search_many(queries, k)
            return self._exact(queries, k, None)
        eligible = np.flatnonzero(self._exit_ms[: self._n] < before)
        if self._index is None or len(eligible) <= self.exact_limit:
            return self._exact(queries, k, eligible)
        # The k nearest of the m eligible trades lie about as far as the k n / m nearest of all
        # n: probe n / m times the cells, over-fetch n / m times more. Exact over the eligible
        # is cheaper (and exact) unless the cells probed hold EXACT_COST_RATIO times fewer
        # vectors: for a probe of 8 in 256 cells, while m < 0.31 n.
        spread = self._n / len(eligible)
        cells = self._index.cells
        probe = min(cells, math.ceil(self._probe * spread))
        if probe * self._n * EXACT_COST_RATIO >= len(eligible) * cells:
            return self._exact(queries, k, eligible)
        return self._index_before(queries, k, before, probe, math.ceil(OVERFETCH * k * spread))

    def _exact(self, queries: F32, k: int, among: I64 | None) -> tuple[I64, F64]:
        """The brute force over rows `among` (None: all stored); [Q, min(k, candidates)]."""
        q = queries.astype(np.float64)
        if among is None:
            embeddings, norms = self._embeddings[: self._n], self._norms[: self._n]
        else:
            embeddings, norms = self._embeddings[among], self._norms[among]
        n = len(norms)
        if n == 0:
            return np.empty((len(q), 0), dtype=np.int64), np.empty((len(q), 0))
        squared = norms[None, :] - 2.0 * (q @ embeddings.T) + (q * q).sum(axis=1)[:, None]
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
        return (nearest if among is None else among[nearest]), distances

    def _index_before(self, queries: F32, k: int, before: int, probe: int, fetch: int) -> tuple[I64, Floats]:
        """The index's k nearest among the trades exited before `before`, probing `probe`
        cells: `fetch` candidates, filtered, then OVERFETCH times as many again for the queries
        still short of k whose probed cells are not exhausted."""
        assert self._index is not None
        index, usual = self._index, self._index.probe
        index.probe = probe  # for these searches only (the index has no per-call probe)
        try:
            return self._overfetched(index, queries, k, before, fetch)
        finally:
            index.probe = usual

    def _overfetched(
        self, index: PatternIndex, queries: F32, k: int, before: int, fetch: int
    ) -> tuple[I64, Floats]:
        total = len(index)
        out_rows = np.full((len(queries), k), -1, dtype=np.int64)
        out_distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        pending = np.arange(len(queries))
        fetch = min(fetch, total)
        while len(pending):
            rows, distances = index.search_many(queries[pending], fetch)
            found = rows >= 0
            eligible = found & (self._exit_ms[np.where(found, rows, 0)] < before)
            rank = np.cumsum(eligible, axis=1)  # nearest first: the first k eligible are the k nearest
            # A row padded with -1 has had every candidate of its probed cells.
            done = (rank[:, -1] >= k) | ~found[:, -1] | (fetch >= total)
            take = eligible & (rank <= k) & done[:, None]
            r, c = np.nonzero(take)
            out_rows[pending[r], rank[r, c] - 1] = rows[r, c]
            out_distances[pending[r], rank[r, c] - 1] = distances[r, c]
            pending = pending[~done]
            fetch = min(OVERFETCH * fetch, total)
        return out_rows, out_distances

    def _tally(self) -> None:
        """Merge the trades added since into base_win_rate's sorted tally: O(n) once per batch
        of additions instead of a sort."""
        new = np.arange(self._tallied, self._n)
        order = np.argsort(self._exit_ms[new], kind="stable")
        exits, wins = self._exit_ms[new][order], self._won[new][order].astype(np.int64)
        # side right: among equal exits the earlier-added stay first (the tally's order is moot).
        at = np.searchsorted(self._tally_exit_ms, exits, side="right")
        self._tally_exit_ms = np.insert(self._tally_exit_ms, at, exits)
        self._tally_won = np.insert(self._tally_won, at, wins)
        self._tally_wins = np.cumsum(self._tally_won)
        self._tallied = self._n

    def _reserve(self, size: int) -> None:
        capacity = len(self._trade_ids)
        if size <= capacity:
            return
        while capacity < size:
            capacity *= 2
        for name in (
            "_embeddings",
            "_norms",
            "_trade_ids",
            "_pnl_bps",
            "_won",
            "_weight",
            "_exit_ms",
            "_known_ms",
        ):
            old = getattr(self, name)
            grown = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            grown[: self._n] = old[: self._n]
            setattr(self, name, grown)


def _times(values: npt.ArrayLike, name: str) -> I64:
    """Unix ms as int64; a float or a missing time is refused rather than rounded."""
    array = np.asarray(values).reshape(-1)
    if array.dtype.kind not in "iu":
        raise ValueError(f"nearest setups: {name} must be integer Unix milliseconds, got {array.dtype}")
    return array.astype(np.int64)


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
        # The averages on weights relative to the row's largest: a row of tiny (subnormal)
        # weights would otherwise average with too few bits and leave the pnl range.
        relative = w[some] / w[some].max(axis=1, keepdims=True)
        total = relative.sum(axis=1)
        out[some, 0] = (relative * won[safe[some]]).sum(axis=1) / total
        out[some, 1] = (relative * pnl_bps[safe[some]]).sum(axis=1) / total
        out[some, 2] = s / (s + SUPPORT_HALF)
    return out
