"""Pattern search: p50 and p99 of a k=20 nearest-neighbour search over 100,000 patterns, the
pattern library's index (huracan/memory/pattern_index.py) against exact brute force in numpy
(the reference), and the index's recall of the exact 20. Goal: p99 <= 1 ms.

The vectors are real market states: the 70 market features of real 5m candles up to 2022 (the
bundled files, and ../shared/data/candles' 5m files where present), embedded as the pattern
library embeds a trade's entry state (huracan/memory/embedding.py, the committed 16-number
basis); the patterns and the queries are disjoint random draws of those states. Prints a
table, then one JSON line.

    .venv/bin/python bench/patterns.py [--patterns N] [--queries Q] [--probe P]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import orjson

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.features.market import Ohlcv, compute_market_features
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.memory.embedding import EMBEDDING_DIM, EntryEmbedder
from huracan.memory.pattern_index import PatternIndex
from huracan.memory.setups import INDEX_PROBE, NearestSetups

GOAL_P99_MS = 1.0
VIEW_SYMBOLS = 20
K = 20
END_2022_MS = 1_672_531_200_000
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "candles"


def market_states(wanted: int) -> np.ndarray:
    """Warm market feature rows of real 5m candles before 2023, file by file until `wanted`."""
    files = list(find_candle_files(BUNDLED_CANDLES_DIR, "5m").values())
    if SHARED.is_dir():
        files += list(find_candle_files(SHARED, "5m").values())
    rows: list[np.ndarray] = []
    total = 0
    for path in files:
        series = read_candle_file(path)
        keep = series.open_time_ms < END_2022_MS
        if keep.sum() < 1000:
            continue
        features = compute_market_features(Ohlcv.from_series(series))[keep]
        features = features[np.isfinite(features).all(axis=1)]
        rows.append(features)
        total += len(features)
        if total >= wanted:
            break
    states = np.concatenate(rows)
    if len(states) < wanted:
        raise SystemExit(f"only {len(states):,} market states in the candle files, {wanted:,} wanted")
    return states


def exact(vectors: np.ndarray, norms: np.ndarray, query: np.ndarray) -> np.ndarray:
    """The reference: every distance, then the k smallest."""
    squared = norms - 2.0 * (vectors @ query) + float(query @ query)
    nearest = np.argpartition(squared, K - 1)[:K]
    ranked: np.ndarray = nearest[np.argsort(squared[nearest])]
    return ranked


def agent_view(
    embedder: EntryEmbedder, patterns: np.ndarray, query_states: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """p50 and p99 (ms) of the decision step's pattern-memory call: the figures of the nearest
    past trades for VIEW_SYMBOLS market rows at once, every trade in the past (live)."""
    setups = NearestSetups(embedder, k=K)
    n = len(patterns)
    pnl = rng.normal(0.0, 80.0, n)
    setups.add_trades(np.arange(n), patterns, pnl, pnl > 0, exit_time_ms=np.zeros(n, dtype=np.int64))
    symbols = [f"S{i}/USDT" for i in range(VIEW_SYMBOLS)]
    times = []
    for start in range(0, len(query_states) - VIEW_SYMBOLS + 1, VIEW_SYMBOLS):
        rows = query_states[start : start + VIEW_SYMBOLS]
        t0 = time.perf_counter()
        setups.nearest_setups(symbols, rows, 1)
        times.append(time.perf_counter() - t0)
    percentiles: np.ndarray = np.percentile(np.array(times) * 1e3, [50, 99])
    return percentiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--probe", type=int, default=16, help="cells searched per query (of 256)")
    args = parser.parse_args()
    embedder = EntryEmbedder.default()
    states = market_states(args.patterns + args.queries)
    vectors = embedder.embed(states)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(vectors))
    patterns, queries = vectors[order[: args.patterns]], vectors[order[args.patterns :][: args.queries]]
    query_states = states[order[args.patterns :][: args.queries]]
    started = time.perf_counter()
    index = PatternIndex(EMBEDDING_DIM, probe=args.probe)
    index.build(np.arange(args.patterns), patterns)
    build_s = time.perf_counter() - started
    norms = (patterns * patterns).sum(axis=1)
    ours, theirs, recall = [], [], []
    for query in queries:
        t0 = time.perf_counter()
        found = index.search(query, K)
        t1 = time.perf_counter()
        truth = exact(patterns, norms, query)
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        recall.append(len(set(found.ids.tolist()) & set(truth.tolist())) / K)
    p_ours = np.percentile(np.array(ours) * 1e3, [50, 99])
    p_ref = np.percentile(np.array(theirs) * 1e3, [50, 99])
    print(
        f"k={K} over {args.patterns:,} patterns of {EMBEDDING_DIM} numbers (real market states, "
        "entry embedding), "
        f"{args.queries:,} queries; index: {index.cells} cells, {index.probe} probed; built in {build_s:.1f} s"
    )
    print(f"{'figure':<10}{'exact (reference)':>20}{'index':>10}{'ratio':>8}")
    for label, r, o in (("p50, ms", p_ref[0], p_ours[0]), ("p99, ms", p_ref[1], p_ours[1])):
        print(f"{label:<10}{r:>20.3f}{o:>10.3f}{o / r:>8.2f}")
    view = agent_view(embedder, patterns, query_states, rng)
    print(
        f"the agent's view (setups.py, {VIEW_SYMBOLS} symbols a bar, {args.patterns:,} past trades, "
        f"{INDEX_PROBE} probed): p50 {view[0]:.3f} ms, p99 {view[1]:.3f} ms"
    )
    met = bool(p_ours[1] <= GOAL_P99_MS)
    print(
        f"recall of the exact 20: {np.mean(recall):.3f}; goal p99 <= {GOAL_P99_MS} ms: {'pass' if met else 'MISS'}"
    )
    figures = {
        "bench": "patterns",
        "patterns": args.patterns,
        "queries": args.queries,
        "dim": EMBEDDING_DIM,
        "k": K,
        "p50_ms": round(float(p_ours[0]), 4),
        "p99_ms": round(float(p_ours[1]), 4),
        "exact_p50_ms": round(float(p_ref[0]), 4),
        "exact_p99_ms": round(float(p_ref[1]), 4),
        "recall_at_20": round(float(np.mean(recall)), 4),
        "build_s": round(build_s, 2),
        "cells": index.cells,
        "probe": index.probe,
        "view_symbols": VIEW_SYMBOLS,
        "view_p50_ms": round(float(view[0]), 4),
        "view_p99_ms": round(float(view[1]), 4),
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": met,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
