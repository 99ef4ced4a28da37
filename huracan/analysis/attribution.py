"""The evidence both trade analyzers weigh: the trade's similar setups (past closed trades whose
entries looked like this one's, exited before it), the significance of their edge, which market
features pointed to a win, and whether the regime held.

Feature attribution. Over the similar setups' 70 raw market features at entry, each feature j gets
    d_j = (mean of the winners - mean of the losers) / s_j       the setups' standardised contrast
    z_j = (the trade's value - mean of all setups) / s_j          the trade's own deviation
    score_j = d_j x z_j
with s_j the sample standard deviation over all the setups. score_j > 0 when the trade deviated
the way the winners did: the feature pointed to a win (it carried a win; on a loss it misled).
That needs at least MIN_CONTRAST_GROUP winners and as many losers; with fewer, the score falls
back to z_j itself (method "deviation": what stood out at entry, signed), and with fewer than
MIN_DEVIATION_POPULATION setups nothing is attributed (method "none"). A non-finite value (a
warm-up NaN) leaves its feature out of that row's statistics; a feature without a spread scores 0.

Edge. The one-sided exact binomial test of the setups' wins against a base win rate:
P(X >= wins) for X ~ Binomial(occurrences, base), summed in log space. Low = the setups won more
often than the base rate explains (skill), high = luck. None without setups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from huracan.analysis.metrics import expectancy
from huracan.analysis.trades import TradeFacts
from huracan.features.market import MARKET_FEATURES

MIN_CONTRAST_GROUP = 3  # winners and losers each, for the winners-against-losers contrast
MIN_DEVIATION_POPULATION = 2  # setups, for a standard deviation to measure the trade against
TOP_FEATURES = 5  # features reported per trade
MIN_CONTRAST_SCORE = 0.1  # d x z: e.g. a small effect (d = 0.2) at half a deviation
MIN_DEVIATION_Z = 1.0  # a feature stands out when a whole deviation away from the setups
UNKNOWN_REGIME = "unknown"  # huracan.features.market.regime_names before the warm-up
# The model's probability of its entry action below this is low: a flat book has four actions open
# (do nothing and three entry sizes), so a uniform policy gives each 0.25.
LOW_CONFIDENCE = 0.4


@dataclass(frozen=True, slots=True)
class SimilarSetups:
    """Past closed trades like this one (its nearest setups, exited before it)."""

    won: npt.NDArray[np.bool_]  # [n]
    pnl_bps: npt.NDArray[np.float64]  # [n]
    features: npt.NDArray[np.float64]  # [n, 70] raw market features at their entries

    def __post_init__(self) -> None:
        n = len(self.won)
        if (
            self.won.ndim != 1
            or self.pnl_bps.shape != (n,)
            or self.features.ndim != 2
            or len(self.features) != n
        ):
            raise ValueError(
                f"similar setups need won [n], pnl_bps [n] and features [n, width]; got {self.won.shape}, "
                f"{self.pnl_bps.shape} and {self.features.shape}"
            )

    @classmethod
    def empty(cls, width: int = 70) -> SimilarSetups:
        return cls(np.zeros(0, np.bool_), np.zeros(0, np.float64), np.zeros((0, width), np.float64))

    @classmethod
    def of(cls, rows: Sequence[tuple[bool, float, Sequence[float]]], width: int = 70) -> SimilarSetups:
        """From (won, pnl_bps, entry state) rows; the state's first `width` numbers are kept."""
        if not rows:
            return cls.empty(width)
        return cls(
            np.asarray([r[0] for r in rows], dtype=bool),
            np.asarray([r[1] for r in rows], dtype=np.float64),
            np.asarray([list(r[2])[:width] for r in rows], dtype=np.float64),
        )

    def __len__(self) -> int:
        return len(self.won)

    @property
    def wins(self) -> int:
        return int(np.count_nonzero(self.won))

    @property
    def win_rate(self) -> float | None:
        return self.wins / len(self) if len(self) else None

    @property
    def expectancy_bps(self) -> float | None:
        """Mean net PnL of the setups (metrics.expectancy), None without setups."""
        return expectancy(self.pnl_bps.tolist())


def edge_p_value(wins: int, occurrences: int, base_win_rate: float) -> float | None:
    """One-sided exact binomial p-value of `wins` out of `occurrences` against `base_win_rate`."""
    if not 0 <= wins <= occurrences:
        raise ValueError(f"wins must be within 0..occurrences, got {wins} of {occurrences}")
    if not 0.0 <= base_win_rate <= 1.0:
        raise ValueError(f"base_win_rate must be within 0..1, got {base_win_rate}")
    if occurrences == 0:
        return None
    if wins == 0 or base_win_rate == 1.0:
        return 1.0  # X >= 0 always; and at a base of 1 every trade wins
    if base_win_rate == 0.0:
        return 0.0  # a single win is impossible by chance
    log_p, log_q = math.log(base_win_rate), math.log1p(-base_win_rate)
    terms = [
        math.lgamma(occurrences + 1)
        - math.lgamma(i + 1)
        - math.lgamma(occurrences - i + 1)
        + i * log_p
        + (occurrences - i) * log_q
        for i in range(wins, occurrences + 1)
    ]
    top = max(terms)
    tail = math.exp(top) * math.fsum(math.exp(t - top) for t in terms)
    return min(1.0, max(0.0, tail))


def clamp_unit(value: float) -> float:
    """`value` within 0..1, for the shares and scores the tables check to lie in it."""
    return min(1.0, max(0.0, value))


def regime_shift(trade: TradeFacts) -> bool | None:
    """Whether the regime at exit differs from the one at entry; None when either is not known."""
    if trade.exit_regime is None or UNKNOWN_REGIME in (trade.entry_regime, trade.exit_regime):
        return None
    return trade.exit_regime != trade.entry_regime


@dataclass(frozen=True, slots=True)
class FeatureAttribution:
    """A score per market feature: method 'contrast' (d x z, > 0 = pointed to a win),
    'deviation' (z, signed: what stood out) or 'none' (all 0)."""

    names: tuple[str, ...]
    scores: npt.NDArray[np.float64]
    method: str

    def leading(self, limit: int = TOP_FEATURES) -> dict[str, float]:
        """The strongest features, strongest first: scores above MIN_CONTRAST_SCORE for a contrast,
        |z| of at least MIN_DEVIATION_Z for a deviation."""
        if self.method == "contrast":
            strength, floor = self.scores, MIN_CONTRAST_SCORE
        elif self.method == "deviation":
            strength, floor = np.abs(self.scores), MIN_DEVIATION_Z
        else:
            return {}
        order = np.argsort(-strength, kind="stable")[:limit]
        return {self.names[j]: float(self.scores[j]) for j in order.tolist() if strength[j] >= floor}


def attribute_features(trade_features: npt.NDArray[np.float64], similar: SimilarSetups) -> FeatureAttribution:
    """Score the trade's market features (the first `width` of `trade_features`) against its setups."""
    width = similar.features.shape[1]
    if len(trade_features) < width:
        raise ValueError(f"the trade has {len(trade_features)} entry features, its setups {width}")
    names = MARKET_FEATURES if width == len(MARKET_FEATURES) else tuple(f"feature_{j}" for j in range(width))
    own = np.asarray(trade_features[:width], dtype=np.float64)
    rows = np.asarray(similar.features, dtype=np.float64)
    mean, std, count = _column_stats(rows, np.ones(len(rows), np.bool_))
    usable = np.isfinite(own) & (count >= MIN_DEVIATION_POPULATION) & (std > 0.0)
    safe_std = np.where(usable, std, 1.0)
    z = np.where(usable, (np.where(usable, own, 0.0) - mean) / safe_std, 0.0)
    if similar.wins >= MIN_CONTRAST_GROUP and len(similar) - similar.wins >= MIN_CONTRAST_GROUP:
        win_mean, _, win_count = _column_stats(rows, similar.won)
        loss_mean, _, loss_count = _column_stats(rows, ~similar.won)
        contrasted = usable & (win_count >= MIN_CONTRAST_GROUP) & (loss_count >= MIN_CONTRAST_GROUP)
        d = np.where(contrasted, (win_mean - loss_mean) / safe_std, 0.0)
        return FeatureAttribution(names, d * z, "contrast")
    if usable.any():
        return FeatureAttribution(names, z, "deviation")
    return FeatureAttribution(names, np.zeros(width), "none")


def _column_stats(
    rows: npt.NDArray[np.float64], selected: npt.NDArray[np.bool_]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Per column over the selected rows' finite values: mean, sample std, count. The std is 0
    unless the values differ (identical values leave rounding noise, not a spread, in it)."""
    mask = np.isfinite(rows) & selected[:, None]
    values = np.where(mask, rows, 0.0)
    count = mask.sum(axis=0)
    mean = values.sum(axis=0) / np.maximum(count, 1)
    squares = np.where(mask, (values - mean) ** 2, 0.0).sum(axis=0)
    std = np.sqrt(squares / np.maximum(count - 1, 1))
    spread = np.where(mask, rows, -np.inf).max(axis=0, initial=-np.inf) > np.where(mask, rows, np.inf).min(
        axis=0, initial=np.inf
    )
    return mean, np.where(spread, std, 0.0), count.astype(np.int64)
