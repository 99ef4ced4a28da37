"""Pattern memory for training: at every bar, the nearest-setups figures the live decision step
would have read then, from the trades that had closed before that bar's close and no later one.

Live, the decision at the close of bar t reads NearestSetups.nearest_setups(..., as_of_ms=its
close) (huracan/memory/setups.py): weighted win rate, weighted average pnl bps and reliability
of the k nearest past trades by entry embedding. A bar's training row is that, with the same
embedder, k, radius and weighting (setups.setup_figures), over the trades whose exit_time_ms <
open_time_ms + step_ms (its close). Strictly before, as live: a trade exiting at the close
itself was closed by a decision taken at that close (its fill at the next open carries the
same time), after the state it would be read into was built. So no trade exiting after a bar's
state can change its row.

Weights: weight = 1 - the loss analysis' confidence penalty (1 for a win or an unanalysed trade).
Live, the penalty arrives only once the analysis horizon after the exit is known (its verdict
uses post-exit prices); `weight_known_ms` says when (NearestSetups' known_ms), and at closes up
to it the trade counts with weight 1, as live. None means the weight is known with the exit.

The walk: bars in time order, in chunks. At a chunk's first bar a NearestSetups holds the trades
known then and searches them as live (exact below `exact_limit` trades, the IVF index above:
about 96% of the exact neighbours, so above the limit a row is what an index of those trades
finds, not bit for bit what one live process with its own insertion history found). The few
trades exiting within the chunk are searched exactly, each query seeing only those exited
before its own bar's close, and the two candidate lists merge into the k nearest.

Rows: market [S, T, 70] raw features; a row holding a non-finite number (warm-up) gets
[0, 0, 0], and so does every row before the first exit (an empty memory gives zeros live too).
Times are Unix milliseconds; open_time_ms must increase strictly (aligned bars, gaps allowed).

Pure: numpy in, numpy out; CPU time only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from huracan.features.context import PATTERN_MEMORY_WIDTH
from huracan.features.market import MARKET_WIDTH
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder
from huracan.memory.patterns import DEFAULT_RADIUS
from huracan.memory.setups import DEFAULT_K, EXACT_SEARCH_LIMIT, NearestSetups, setup_figures

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

# Queries x candidate trades per chunk: bounds its distance matrices (float64, a few alive at
# once) to tens of MB however long a run of bars without an exit is.
SEARCH_CELLS = 2_000_000
# Trades exiting within one chunk, searched exactly with a per-bar mask: more per chunk means
# fewer chunks (each a fixed cost) but a wider exact search for every query.
PENDING_LIMIT = 512


@dataclass(frozen=True, slots=True)
class PastTrades:
    """Closed trades as the pattern memory knows them; one row per trade, any order."""

    exit_time_ms: I64  # [N]
    embedding: F32  # [N, EMBEDDING_DIM], from the embedder the memory is queried with
    pnl_bps: F64  # [N] net of fees
    won: Bools  # [N] as TradeFacts.won: pnl_bps > 0
    weight: F64  # [N] 1 - loss analysis' confidence penalty, 0..1
    weight_known_ms: I64 | None = None  # [N] when the weight became known; None: at the exit

    def __post_init__(self) -> None:
        exits = np.asarray(self.exit_time_ms, dtype=np.int64).reshape(-1)
        n = len(exits)
        embedding = np.asarray(self.embedding, dtype=np.float32)
        pnl = np.asarray(self.pnl_bps, dtype=np.float64).reshape(-1)
        won = np.asarray(self.won, dtype=bool).reshape(-1)
        weight = np.asarray(self.weight, dtype=np.float64).reshape(-1)
        if embedding.shape != (n, EMBEDDING_DIM) or not np.isfinite(embedding).all():
            raise ValueError(f"past trades: {n} embeddings of {EMBEDDING_DIM} finite numbers expected")
        if not len(pnl) == len(won) == len(weight) == n or not np.isfinite(pnl).all():
            raise ValueError(f"past trades: one finite pnl, won flag and weight for each of {n} exits")
        if not ((weight >= 0) & (weight <= 1)).all():
            raise ValueError("past trades: weights must lie in 0..1")
        object.__setattr__(self, "exit_time_ms", exits)
        object.__setattr__(self, "embedding", embedding)
        object.__setattr__(self, "pnl_bps", pnl)
        object.__setattr__(self, "won", won)
        object.__setattr__(self, "weight", weight)
        if self.weight_known_ms is not None:
            known = np.asarray(self.weight_known_ms, dtype=np.int64).reshape(-1)
            if len(known) != n or (known < exits).any():
                raise ValueError("past trades: one weight_known_ms per trade, none before its exit")
            object.__setattr__(self, "weight_known_ms", known)

    def __len__(self) -> int:
        return len(self.exit_time_ms)

    @classmethod
    def empty(cls) -> PastTrades:
        return cls(
            np.empty(0, np.int64),
            np.empty((0, EMBEDDING_DIM), np.float32),
            np.empty(0),
            np.empty(0, bool),
            np.empty(0),
        )

    @classmethod
    def from_entry_features(
        cls,
        embedder: EntryEmbedder,
        exit_time_ms: npt.ArrayLike,
        entry_features: npt.ArrayLike,
        pnl_bps: npt.ArrayLike,
        weight: npt.ArrayLike | None = None,
        weight_known_ms: npt.ArrayLike | None = None,
    ) -> PastTrades:
        """From trade_memory's entry state ([N, >= 70]: the raw market features first, as the
        learning task embeds them); won = pnl_bps > 0; weight None = 1."""
        features = np.asarray(entry_features, dtype=np.float64)
        pnl = np.asarray(pnl_bps, dtype=np.float64).reshape(-1)
        if features.ndim != 2 or features.shape[1] < MARKET_WIDTH or len(features) != len(pnl):
            raise ValueError(
                f"past trades: entry features [{len(pnl)}, >= {MARKET_WIDTH}] expected, got {features.shape}"
            )
        return cls(
            np.asarray(exit_time_ms, dtype=np.int64),
            embedder.embed(features[:, :MARKET_WIDTH])
            if len(features)
            else np.empty((0, EMBEDDING_DIM), np.float32),
            pnl,
            pnl > 0,
            np.ones(len(pnl)) if weight is None else np.asarray(weight, dtype=np.float64),
            None if weight_known_ms is None else np.asarray(weight_known_ms, dtype=np.int64),
        )


def point_in_time_memory(
    market: npt.NDArray[np.floating[Any]],
    open_time_ms: npt.ArrayLike,
    step_ms: int,
    trades: PastTrades,
    embedder: EntryEmbedder,
    *,
    k: int = DEFAULT_K,
    radius: float = DEFAULT_RADIUS,
    exact_limit: int = EXACT_SEARCH_LIMIT,
    progress: Callable[[int, int], None] | None = None,
) -> F32:
    """[S, T, 3] float32: win rate, average pnl bps, reliability, as the module docstring says.
    `progress(bars_done, bars)` is called after each chunk."""
    rows = np.asarray(market)
    opens = np.asarray(open_time_ms, dtype=np.int64).reshape(-1)
    if rows.ndim != 3 or rows.shape[2] != MARKET_WIDTH or rows.shape[1] != len(opens):
        raise ValueError(
            f"pattern memory: market [S, {len(opens)}, {MARKET_WIDTH}] expected, got {rows.shape}"
        )
    if step_ms < 1 or (np.diff(opens) <= 0).any():
        raise ValueError("pattern memory: step_ms >= 1 and strictly increasing bar times expected")
    n_symbols, n_bars = rows.shape[:2]
    out = np.zeros((n_symbols, n_bars, PATTERN_MEMORY_WIDTH), dtype=np.float32)
    if not len(trades) or not n_symbols or not n_bars:
        return out
    close_ms = opens + step_ms
    memory = _ExitOrder.of(trades)
    known = np.searchsorted(memory.exit_time_ms, close_ms, side="left")  # [T], exited before: a prefix
    # The queries: complete rows, bar by bar, so a run of bars is one slice of them.
    query_bar, query_symbol = np.nonzero(np.isfinite(rows).all(axis=2).T)
    first_query = np.searchsorted(query_bar, np.arange(n_bars + 1))
    # The search as live: exact below exact_limit trades, the index above.
    setups = NearestSetups(embedder, k=k, radius=radius, exact_limit=exact_limit)
    start = int(np.searchsorted(known, 0, side="right"))  # bars before any exit: zeros
    while start < n_bars:
        stored = int(known[start])
        new = np.arange(len(setups), stored)
        if len(new):
            setups.add_trades(
                new,
                memory.embedding[new],
                memory.pnl_bps[new],
                memory.won[new],
                memory.weight[new],
                exit_time_ms=memory.exit_time_ms[new],
                known_ms=memory.weight_known_ms[new],
            )
        # The chunk: bars over which at most PENDING_LIMIT more trades exit, and a bounded
        # number of queries.
        end = int(np.searchsorted(known, stored + PENDING_LIMIT, side="right"))
        most = first_query[start] + _queries_per_chunk(stored, exact_limit)
        end = max(start + 1, min(end, int(np.searchsorted(first_query, most, side="right")) - 1))
        lo, hi = int(first_query[start]), int(first_query[end])
        if hi > lo:
            bars, symbols = query_bar[lo:hi], query_symbol[lo:hi]
            queries = embedder.embed(rows[symbols, bars].astype(np.float64, copy=False))
            # Stored trades by the live search; those exiting within the chunk exactly, each
            # query seeing only the ones exited before its own bar's close.
            # (neighbours unfiltered: the live view's own search over what it holds, for the
            # neighbours rather than its figures, which here need the pending trades first.)
            stored_rows, stored_distances = setups.neighbours(queries, k)
            pending = np.arange(stored, int(known[end - 1]))
            pending_distances = _distances(queries, memory.embedding[pending])
            pending_distances[pending[None, :] >= known[bars][:, None]] = np.inf
            neighbours, distances = _nearest(
                np.hstack([stored_rows, np.broadcast_to(pending, pending_distances.shape)]),
                np.hstack([stored_distances.astype(np.float64), pending_distances]),
                k,
            )
            out[symbols, bars] = memory.figures(neighbours, distances, close_ms[bars], radius)
        start = end
        if progress is not None:
            progress(start, n_bars)
    return out


@dataclass(frozen=True, slots=True)
class _ExitOrder:
    """The trades sorted by exit; row i of the search is the i-th trade to exit. The figures'
    arrays hold every trade twice: rows [0, N) as before its loss analysis (weight 1), rows
    [N, 2N) after it (its weight)."""

    exit_time_ms: I64
    embedding: F32
    pnl_bps: F64
    won: Bools
    weight: F64
    weight_known_ms: I64
    twice_won: F64
    twice_pnl_bps: F64
    twice_weight: F64

    @classmethod
    def of(cls, trades: PastTrades) -> _ExitOrder:
        order = np.argsort(trades.exit_time_ms, kind="stable")
        exits = trades.exit_time_ms[order]
        known = exits if trades.weight_known_ms is None else trades.weight_known_ms[order]
        won = trades.won[order]
        pnl = trades.pnl_bps[order]
        return cls(
            exits,
            trades.embedding[order],
            pnl,
            won,
            trades.weight[order],
            known,
            np.concatenate([won, won]).astype(np.float64),
            np.concatenate([pnl, pnl]),
            np.concatenate([np.ones(len(order)), trades.weight[order]]),
        )

    def figures(self, neighbours: I64, distances: F64, close_ms: I64, radius: float) -> F64:
        """setup_figures with each neighbour's weight as known at its query's close."""
        found = neighbours >= 0
        safe = np.where(found, neighbours, 0)
        analysed = found & (self.weight_known_ms[safe] < close_ms[:, None])
        rows = np.where(analysed, neighbours + len(self.exit_time_ms), neighbours)
        return setup_figures(rows, distances, self.twice_won, self.twice_pnl_bps, self.twice_weight, radius)


def _distances(queries: F32, embeddings: F32) -> F64:
    """[Q, P] Euclidean, in float64 from the float32 numbers, as NearestSetups' exact search."""
    q = queries.astype(np.float64)
    e = embeddings.astype(np.float64)
    squared = (e * e).sum(axis=1)[None, :] - 2.0 * (q @ e.T) + (q * q).sum(axis=1)[:, None]
    result: F64 = np.sqrt(np.maximum(squared, 0.0))
    return result


def _nearest(rows: I64, distances: F64, k: int) -> tuple[I64, F64]:
    """The k nearest of each query's candidates, nearest first; -1 where fewer than k are
    finite (a padded index row, a trade not yet exited)."""
    if distances.shape[1] > k:
        keep = np.argpartition(distances, k - 1, axis=1)[:, :k]
        rows, distances = np.take_along_axis(rows, keep, axis=1), np.take_along_axis(distances, keep, axis=1)
    order = np.argsort(distances, axis=1, kind="stable")
    rows, distances = np.take_along_axis(rows, order, axis=1), np.take_along_axis(distances, order, axis=1)
    nearest: I64 = np.where(np.isfinite(distances), rows, -1)
    return nearest, distances


def _queries_per_chunk(stored: int, exact_limit: int) -> int:
    """Exact: the [Q, stored + pending] distances within SEARCH_CELLS. Index: its full scan of
    the unsorted tail (at most an eighth of the trades) costs [tail, Q] per call, and a call's
    fixed cost wants a thousand queries or so to spread over."""
    if stored < exact_limit:
        return max(1, SEARCH_CELLS // (stored + PENDING_LIMIT))
    return max(1024, 16 * SEARCH_CELLS // stored)
