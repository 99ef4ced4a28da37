"""The pattern library: closed trades clustered by their entry embedding into patterns (similar
setups), and how each pattern's trades turned out. One pattern is one pattern_library row.

Clustering is online and leader-style. A new trade joins the pattern whose centroid is nearest,
if that centroid lies within `radius` (Euclidean, in the entry embedding's space); otherwise the
caller creates a new pattern (it takes the id from the database) with the trade's embedding as
its centroid. A centroid is the running mean of its members' embeddings: after the n-th member
e, c <- c + (e - c) / n.

DEFAULT_RADIUS comes from the real data: online clustering of 3,000 random entry states of the
bundled candles (2021 Q1, BTC/ETH/SOL 5m; embedded with the committed basis, taken in time
order) forms 327 to 354 patterns at radius 5.5 (three seeds), 23 to 27 of them with 30 trades
or more, holding 62% to 68% of the trades. 5.5 is about the 96th percentile of those states'
nearest-neighbour distances: setups that close are one pattern, the rarest 4% start their own.
(Radius 5.0 gives 476 to 499 patterns, 6.0 224 to 252; tests/test_patterns.py checks the range.)

Statistics of a pattern, over its trades (pnl_bps net of fees; None = undefined, stored NULL):
- occurrences n; wins (pnl > 0), losses (pnl < 0): a breakeven trade is neither.
- win_rate = wins / n (0 while n = 0, the column's default); avg_profit_bps = mean pnl.
- avg_hold_ms: mean hold, rounded to the millisecond; None while n = 0.
- sharpe: per trade, mean / sample std of pnl_bps, not annualised; None below 2 trades or
  when every pnl is the same (analysis/metrics.py's convention).
- max_drawdown_bps: deepest fall of the cumulative pnl_bps, trades in exit order (ties by
  trade id), from a running peak that starts at 0 before the first trade; >= 0, None while n = 0.
- profit_factor: gross profit / gross loss (metrics.profit_factor); None without a loss.
- confidence_penalty: mean of the loss analyzer's penalties over the trades that got one
  (the column's meaning: the analysed losses); 0 when none.
- reliability = n / (n + RELIABILITY_PRIOR_TRADES) x (1 - sum of penalties / n): shrinkage for
  sample size (0.5 at 10 trades, 0.75 at 30) times the mean of the trades' weights 1 - penalty
  (an unanalysed trade weighs 1), the weights the nearest-setups view gives the same trades.
  A stability term is left out: the shrinkage already discounts the noise of a small sample.
- sample_adequate: n >= MIN_ADEQUATE_SAMPLE (30).
- optimal_size_multiplier: fractional, capped Kelly mapped into the agent's 0.5..1.5 sizes
  (`kelly_size_multiplier`); None until sample_adequate.
- optimal_exit_threshold: median over the trades with a post-exit record of their best
  favourable move after entry (bps): the take-profit level the median trade reached.
  optimal_hold_ms: median time from entry to that best price. Both None without a record.

Every figure is a function of the set of trades, not of the order they were recorded in
(sums are exact, math.fsum; drawdown sorts by exit time), so a rebuild in exit order gives the
stats that live recording gave.

Rebuild at start-up: add_pattern(id, stored centroid) for every stored pattern, then for every
stored trade in exit order record(..., move_centroid=False), record_penalty, record_post_exit.
move_centroid=False counts the trade (so later live trades continue the running mean with the
right n) but leaves the stored centroid where it is: it already holds that trade. Recording is
a few appends (100,000 trades with penalties and post-exit records: 0.2 s); stats are computed
on demand from a pattern's trades and cached until its next change. Centroids are float32, as
stored (pattern_library.centroid is real[]), so a rebuilt library holds the very centroids the
live one had and both move alike afterwards.

Pure: no I/O. Not thread-safe (one event loop owns it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from huracan.analysis.metrics import profit_factor, system_quality_number
from huracan.analysis.trades import TradeFacts
from huracan.memory.embedding import EMBEDDING_DIM

DEFAULT_RADIUS = 5.5
MIN_ADEQUATE_SAMPLE = 30
RELIABILITY_PRIOR_TRADES = 10  # n0 of n / (n + n0): the trades at which reliability is half
KELLY_FRACTION = 0.5  # half Kelly: the win rate and payoff are estimates
KELLY_CAP = 0.1  # fractional Kelly at which the largest size is reached
SIZE_MIN, SIZE_MAX = 0.5, 1.5  # the agent's small and large entry sizes

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TradeOutcome:
    trade_id: int
    pnl_bps: float
    hold_ms: int
    exit_time_ms: int
    won: bool  # pnl > 0 (breakeven, pnl_bps == 0, is neither win nor loss)

    def __post_init__(self) -> None:
        if not math.isfinite(self.pnl_bps) or self.hold_ms < 0:
            raise ValueError(f"trade {self.trade_id}: pnl {self.pnl_bps} bps, hold {self.hold_ms} ms")
        if self.won != (self.pnl_bps > 0):
            raise ValueError(f"trade {self.trade_id}: won={self.won} but pnl {self.pnl_bps} bps")

    @classmethod
    def of(cls, trade: TradeFacts) -> TradeOutcome:
        return cls(
            trade.trade_id,
            trade.pnl_bps,
            trade.exit_time_ms - trade.entry_time_ms,
            trade.exit_time_ms,
            trade.won,
        )


@dataclass(frozen=True, slots=True)
class PatternStats:
    """One pattern_library row's figures. Equality leaves the centroid out (an array)."""

    pattern_id: int
    centroid: F32 = field(compare=False)
    occurrences: int
    wins: int
    losses: int
    win_rate: float
    avg_profit_bps: float
    avg_hold_ms: int | None
    sharpe: float | None
    max_drawdown_bps: float | None
    profit_factor: float | None
    reliability: float
    sample_adequate: bool
    optimal_size_multiplier: float | None
    optimal_exit_threshold: float | None
    confidence_penalty: float
    optimal_hold_ms: int | None


def kelly_fraction(wins: int, losses: int, avg_win_bps: float, avg_loss_bps: float) -> float:
    """Full Kelly f* = p - (1 - p) / b over the decisive trades (breakevens change no wealth and
    drop out of the optimum): p = wins / (wins + losses), b = average win / average loss
    (avg_loss_bps as a positive number). 1 without losses, -1 without wins (no edge)."""
    if wins == 0:
        return -1.0
    if losses == 0 or avg_loss_bps <= 0:
        return 1.0
    p = wins / (wins + losses)
    return p - (1.0 - p) * avg_loss_bps / avg_win_bps


def kelly_size_multiplier(wins: int, losses: int, avg_win_bps: float, avg_loss_bps: float) -> float:
    """SIZE_MIN + (SIZE_MAX - SIZE_MIN) x clip(KELLY_FRACTION x f*, 0, KELLY_CAP) / KELLY_CAP:
    no edge -> 0.5, a 55% win rate at even payoff (f* = 0.1, half Kelly 0.05) -> 1.0, half
    Kelly of 0.1 or more -> 1.5."""
    fraction = KELLY_FRACTION * kelly_fraction(wins, losses, avg_win_bps, avg_loss_bps)
    return SIZE_MIN + (SIZE_MAX - SIZE_MIN) * min(max(fraction, 0.0), KELLY_CAP) / KELLY_CAP


def max_drawdown_bps(pnls_in_exit_order: F64) -> float:
    """Deepest fall of the cumulative PnL from its running peak, which starts at 0."""
    curve = np.concatenate([[0.0], np.cumsum(pnls_in_exit_order)])
    return float(max(0.0, (np.maximum.accumulate(curve) - curve).max()))


@dataclass(slots=True)
class _Pattern:
    trade_ids: list[int] = field(default_factory=list)
    pnl_bps: list[float] = field(default_factory=list)
    hold_ms: list[int] = field(default_factory=list)
    exit_time_ms: list[int] = field(default_factory=list)
    penalties: dict[int, float] = field(default_factory=dict)  # trade id -> loss analyzer's penalty
    post_exit: dict[int, tuple[float, int]] = field(default_factory=dict)  # -> (best move, ms after entry)
    members: set[int] = field(default_factory=set)
    stats: PatternStats | None = None  # cached until the next change


class PatternLibrary:
    def __init__(self, *, radius: float = DEFAULT_RADIUS, dim: int = EMBEDDING_DIM) -> None:
        if not (math.isfinite(radius) and radius > 0) or dim < 1:
            raise ValueError(f"pattern library: radius {radius} must be > 0, dim {dim} >= 1")
        self.radius, self.dim = radius, dim
        self._patterns: dict[int, _Pattern] = {}
        self._row: dict[int, int] = {}  # pattern id -> row of the centroid matrix
        self._ids: list[int] = []  # row -> pattern id
        # float32 as stored (see the module docstring). Rows [0, len) in use.
        self._centroids = np.empty((16, dim), dtype=np.float32)
        self._trades: set[int] = set()  # every trade recorded: a trade belongs to one pattern

    def __len__(self) -> int:
        return len(self._ids)

    def pattern_ids(self) -> list[int]:
        return sorted(self._ids)

    def nearest_pattern(self, embedding: npt.ArrayLike) -> tuple[int, float] | None:
        """(pattern id, Euclidean distance) of the nearest centroid; None when there is none.
        Ties go to the pattern added first."""
        if not self._ids:
            return None
        e = self._vector(embedding)
        squared = ((self._centroids[: len(self._ids)].astype(np.float64) - e) ** 2).sum(axis=1)
        row = int(squared.argmin())
        return self._ids[row], math.sqrt(float(squared[row]))

    def needs_new_pattern(self, embedding: npt.ArrayLike) -> bool:
        """True when no centroid lies within the radius: the caller creates a pattern."""
        nearest = self.nearest_pattern(embedding)
        return nearest is None or nearest[1] > self.radius

    def add_pattern(self, pattern_id: int, centroid: npt.ArrayLike) -> None:
        """A pattern with no trades yet; a rebuild passes the stored centroid."""
        if pattern_id in self._patterns:
            raise ValueError(f"pattern library: pattern {pattern_id} exists already")
        vector = self._vector(centroid)
        if len(self._ids) == len(self._centroids):  # grow by doubling: amortised O(1) adds
            self._centroids = np.concatenate([self._centroids, np.empty_like(self._centroids)])
        self._centroids[len(self._ids)] = vector
        self._row[pattern_id] = len(self._ids)
        self._ids.append(pattern_id)
        self._patterns[pattern_id] = _Pattern()

    def record(
        self,
        pattern_id: int,
        outcome: TradeOutcome,
        embedding: npt.ArrayLike | None,
        *,
        move_centroid: bool = True,
    ) -> None:
        """A closed trade of the pattern. Live: the centroid moves to the running mean of its
        members. Rebuild: move_centroid=False (the stored centroid holds the trade already);
        the embedding is then not read and may be None."""
        pattern = self._pattern(pattern_id)
        if outcome.trade_id in self._trades:
            raise ValueError(f"pattern library: trade {outcome.trade_id} is recorded already")
        if move_centroid:
            if embedding is None:
                raise ValueError(f"pattern library: trade {outcome.trade_id} needs its embedding")
            e = self._vector(embedding)
            row = self._row[pattern_id]
            old = self._centroids[row].astype(np.float64)
            self._centroids[row] = old + (e - old) / (len(pattern.trade_ids) + 1)
        self._trades.add(outcome.trade_id)
        pattern.members.add(outcome.trade_id)
        pattern.trade_ids.append(outcome.trade_id)
        pattern.pnl_bps.append(outcome.pnl_bps)
        pattern.hold_ms.append(outcome.hold_ms)
        pattern.exit_time_ms.append(outcome.exit_time_ms)
        pattern.stats = None

    def record_penalty(self, pattern_id: int, trade_id: int, penalty: float) -> None:
        """The loss analyzer's confidence penalty (0..1) for one of the pattern's trades; a
        second one for the same trade replaces the first."""
        pattern = self._member(pattern_id, trade_id)
        if not (math.isfinite(penalty) and 0.0 <= penalty <= 1.0):
            raise ValueError(f"pattern library: penalty {penalty} of trade {trade_id} is not in 0..1")
        pattern.penalties[trade_id] = float(penalty)
        pattern.stats = None

    def record_post_exit(
        self, pattern_id: int, trade_id: int, best_move_bps: float, best_after_entry_ms: int
    ) -> None:
        """The trade's best favourable move after entry (bps, through the tracked post-exit
        horizon) and when it came (ms after entry); a second record replaces the first."""
        pattern = self._member(pattern_id, trade_id)
        if not math.isfinite(best_move_bps) or best_after_entry_ms < 0:
            raise ValueError(
                f"pattern library: trade {trade_id}: best move {best_move_bps} bps "
                f"{best_after_entry_ms} ms after entry"
            )
        pattern.post_exit[trade_id] = (float(best_move_bps), int(best_after_entry_ms))
        pattern.stats = None

    def centroid(self, pattern_id: int) -> F32:
        self._pattern(pattern_id)
        centroid: F32 = self._centroids[self._row[pattern_id]].copy()
        return centroid

    def history(self, pattern_id: int, before_ms: int, *, exclude: int | None = None) -> tuple[int, int]:
        """(occurrences, wins) of the pattern's trades that had exited before `before_ms`,
        without trade `exclude`: what was known of the pattern at that time."""
        pattern = self._pattern(pattern_id)
        occurrences = wins = 0
        for trade_id, pnl, exit_ms in zip(
            pattern.trade_ids, pattern.pnl_bps, pattern.exit_time_ms, strict=True
        ):
            if exit_ms < before_ms and trade_id != exclude:
                occurrences += 1
                wins += pnl > 0
        return occurrences, wins

    def stats(self, pattern_id: int) -> PatternStats:
        pattern = self._pattern(pattern_id)
        if pattern.stats is None:
            pattern.stats = _stats(pattern_id, self.centroid(pattern_id), pattern)
        return pattern.stats

    def _pattern(self, pattern_id: int) -> _Pattern:
        try:
            return self._patterns[pattern_id]
        except KeyError:
            raise KeyError(f"pattern library: no pattern {pattern_id}") from None

    def _member(self, pattern_id: int, trade_id: int) -> _Pattern:
        pattern = self._pattern(pattern_id)
        if trade_id not in pattern.members:
            raise KeyError(f"pattern library: trade {trade_id} is not recorded in pattern {pattern_id}")
        return pattern

    def _vector(self, embedding: npt.ArrayLike) -> F64:
        vector = np.asarray(embedding, dtype=np.float64)
        if vector.shape != (self.dim,) or not np.isfinite(vector).all():
            raise ValueError(
                f"pattern library: an embedding of {self.dim} finite numbers expected, got shape {vector.shape}"
            )
        return vector


def _stats(pattern_id: int, centroid: F32, pattern: _Pattern) -> PatternStats:
    n = len(pattern.trade_ids)
    pnls: list[float] = pattern.pnl_bps
    wins = sum(1 for p in pnls if p > 0)
    losses = sum(1 for p in pnls if p < 0)
    penalty_sum = math.fsum(pattern.penalties.values())
    confidence_penalty = penalty_sum / len(pattern.penalties) if pattern.penalties else 0.0
    adequate = n >= MIN_ADEQUATE_SAMPLE
    base: dict[str, Any] = {
        "pattern_id": pattern_id,
        "centroid": centroid,
        "occurrences": n,
        "wins": wins,
        "losses": losses,
        "sample_adequate": adequate,
        "confidence_penalty": confidence_penalty,
    }
    if n == 0:
        return PatternStats(
            **base,
            win_rate=0.0,
            avg_profit_bps=0.0,
            avg_hold_ms=None,
            sharpe=None,
            max_drawdown_bps=None,
            profit_factor=None,
            reliability=0.0,
            optimal_size_multiplier=None,
            optimal_exit_threshold=None,
            optimal_hold_ms=None,
        )
    sqn = system_quality_number(pnls)
    order = np.lexsort((np.asarray(pattern.trade_ids), np.asarray(pattern.exit_time_ms)))
    gross_win = math.fsum(p for p in pnls if p > 0)
    gross_loss = -math.fsum(p for p in pnls if p < 0)
    size = None
    if adequate:
        size = kelly_size_multiplier(
            wins, losses, gross_win / wins if wins else 0.0, gross_loss / losses if losses else 0.0
        )
    shrinkage = n / (n + RELIABILITY_PRIOR_TRADES)
    trust = min(1.0, max(0.0, 1.0 - penalty_sum / n))
    moves = [m for m, _ in pattern.post_exit.values()]
    times = [t for _, t in pattern.post_exit.values()]
    hold_sum = sum(pattern.hold_ms)
    return PatternStats(
        **base,
        win_rate=wins / n,
        avg_profit_bps=math.fsum(pnls) / n,
        avg_hold_ms=(2 * hold_sum + n) // (2 * n),  # exact integer mean, halves rounded up
        sharpe=None if sqn is None else sqn / math.sqrt(n),
        max_drawdown_bps=max_drawdown_bps(np.asarray(pnls, dtype=np.float64)[order]),
        profit_factor=profit_factor(pnls),
        reliability=min(1.0, max(0.0, shrinkage * trust)),
        optimal_size_multiplier=size,
        optimal_exit_threshold=float(np.median(moves)) if moves else None,
        optimal_hold_ms=round(float(np.median(times))) if times else None,
    )
