"""Why a winning trade won and how well: one `win_analysis` row.

Evidence:
- the pattern: the trade's pattern in the library, counting only its trades that had exited by
  the entry (so the judged win does not vouch for itself), or, without one, its similar setups:
  how often it occurred, its win rate, and the one-sided binomial p-value of its wins against the
  base win rate (attribution.edge_p_value);
- the features that carried the win (attribution.attribute_features: pointed to a win among the
  setups, or stood out when the setups are too few to contrast);
- the regime: aligned when the exit regime is the entry's (None when either is unknown);
- entry quality: where the entry fill sits from the worst (0) to the best (1) price of the hold
  window: (highest high - entry) / (highest high - lowest low) for a long, mirrored for a short;
  exit quality likewise, (exit - lowest low) / (highest high - lowest low) for a long, over the hold
  window and the tracked post-exit window. Clamped to 0..1 (a fill can lie outside the bars by its
  slippage); None for a window without a range;
- the move captured: gross move / the favourable move from the entry to the best post-exit price
  (at least the gross move itself), and the missed profit, both from the post-exit row.

Win quality, first match wins:
1. MARGINAL: the net profit is below the fees paid or below MARGINAL_NET_BPS. It paid for its
   costs by a hair: nothing about edge or exit is learnt from it.
2. LUCKY: no significant edge (no setups, or p-value above EDGE_P_VALUE_MAX), the model's confidence
   below LOW_CONFIDENCE, or the regime changed during the trade. A win not earned by the setup
   must not reinforce it; a missed move, if any, still shows in missed_profit_bps and exit_quality.
3. EARLY_EXIT: (post-exit known) the trade captured less than EARLY_EXIT_CAPTURE of the move and the
   missed profit exceeds both the exit's cost (fees / 2) and EARLY_EXIT_MIN_MISSED_BPS.
4. OPTIMAL: otherwise.

Skill score (0 = luck, 1 = the setup did what the model expected): 0.5 x (1 - p) + 0.25 x confidence
+ 0.25 x regime aligned (1/0); with no setups the edge part is 0 (no evidence is no skill), an unknown
confidence or regime counts 0.5 (neither for nor against).
Confidence boost: skill score x BOOST_BY_QUALITY[win quality] (luck and marginal wins boost nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from huracan.analysis.attribution import (
    LOW_CONFIDENCE,
    SimilarSetups,
    attribute_features,
    clamp_unit,
    edge_p_value,
    regime_shift,
)
from huracan.analysis.post_exit import Extremes, PostExit, extremes, favourable_bps, hold_window
from huracan.analysis.trades import TradeFacts
from huracan.core.candle import CandleSeries

MARGINAL_NET_BPS = 5.0  # a net win below this is noise against the spread and fees
EDGE_P_VALUE_MAX = 0.10  # the setups' wins count as an edge at this significance or better
EARLY_EXIT_CAPTURE = 0.5  # captured less than half the move
EARLY_EXIT_MIN_MISSED_BPS = 10.0
SKILL_WEIGHT_EDGE, SKILL_WEIGHT_CONFIDENCE, SKILL_WEIGHT_REGIME = 0.5, 0.25, 0.25
BOOST_BY_QUALITY = {"OPTIMAL": 1.0, "EARLY_EXIT": 0.5, "LUCKY": 0.0, "MARGINAL": 0.0}
WIN_QUALITIES = ("OPTIMAL", "EARLY_EXIT", "LUCKY", "MARGINAL")


@dataclass(frozen=True, slots=True)
class WinAnalysis:
    """One win_analysis row (with the columns of migration 0007)."""

    win_quality: str  # OPTIMAL | EARLY_EXIT | LUCKY | MARGINAL
    captured_move_ratio: float | None  # >= 0
    missed_profit_bps: float | None  # >= 0
    skill_score: float  # 0..1
    regime_aligned: bool | None
    contributing_features: dict[str, float]
    confidence_boost: float  # 0..1
    lessons: str
    pattern_occurrences: int
    pattern_win_rate: float | None
    edge_p_value: float | None  # 0..1
    entry_quality: float | None  # 0..1
    exit_quality: float | None  # 0..1


def analyze_win(
    trade: TradeFacts,
    candles: CandleSeries,
    post: PostExit | None,
    similar: SimilarSetups,
    base_win_rate: float,
    timeframe_ms: int,
    pattern: tuple[int, int] | None = None,
) -> WinAnalysis:
    """Judge a won trade (pnl_bps > 0) against its hold window, its post-exit row (None: not yet
    tracked) and its similar setups; `base_win_rate` is the win rate the edge is tested against;
    `pattern`: (occurrences, wins) of its pattern's trades exited by its entry (None: the similar
    setups stand for the pattern)."""
    if not trade.won:
        raise ValueError(
            f"trade {trade.trade_id} did not win ({trade.pnl_bps} bps): it is not a win to analyse"
        )
    held = extremes(hold_window(trade, candles, timeframe_ms), trade.sign)
    entry_quality = None
    if held is not None:  # the best price to exit at is the worst to enter at: the direction flips
        entry_quality = price_quality(-trade.sign, trade.entry_price, held.best_price, held.worst_price)
    exit_quality = _exit_quality(trade, held, post)
    captured, missed = _captured_and_missed(trade, post)
    occurrences, pattern_wins = pattern if pattern is not None else (len(similar), similar.wins)
    p_value = edge_p_value(pattern_wins, occurrences, base_win_rate)
    shifted = regime_shift(trade)
    aligned = None if shifted is None else not shifted

    luck = []  # why the win may not have been earned
    if p_value is None or p_value > EDGE_P_VALUE_MAX:
        luck.append("no significant edge")
    if trade.confidence is not None and trade.confidence < LOW_CONFIDENCE:
        luck.append(f"confidence {trade.confidence:.2f} under {LOW_CONFIDENCE}")
    if aligned is False:
        luck.append(f"the regime changed from {trade.entry_regime} to {trade.exit_regime}")

    if trade.pnl_bps < max(trade.fees_bps, MARGINAL_NET_BPS):
        quality = "MARGINAL"
    elif luck:
        quality = "LUCKY"
    elif (
        captured is not None
        and missed is not None
        and captured < EARLY_EXIT_CAPTURE
        and missed > max(trade.fees_bps / 2.0, EARLY_EXIT_MIN_MISSED_BPS)
    ):
        quality = "EARLY_EXIT"
    else:
        quality = "OPTIMAL"

    skill = (
        SKILL_WEIGHT_EDGE * (0.0 if p_value is None else 1.0 - p_value)
        + SKILL_WEIGHT_CONFIDENCE * (0.5 if trade.confidence is None else clamp_unit(trade.confidence))
        + SKILL_WEIGHT_REGIME * (0.5 if aligned is None else float(aligned))
    )
    skill = clamp_unit(skill)
    features = attribute_features(trade.entry_features, similar).leading()
    return WinAnalysis(
        win_quality=quality,
        captured_move_ratio=captured,
        missed_profit_bps=missed,
        skill_score=skill,
        regime_aligned=aligned,
        contributing_features=features,
        confidence_boost=clamp_unit(skill * BOOST_BY_QUALITY[quality]),
        lessons=_lessons(
            trade,
            quality,
            ("trades of its pattern" if pattern is not None else "similar setups", occurrences, pattern_wins),
            p_value,
            luck,
            captured,
            missed,
            features,
        ),
        pattern_occurrences=occurrences,
        pattern_win_rate=pattern_wins / occurrences if occurrences else None,
        edge_p_value=p_value,
        entry_quality=entry_quality,
        exit_quality=exit_quality,
    )


def price_quality(sign: float, price: float, worst: float, best: float) -> float | None:
    """Where `price` sits from `worst` (0) to `best` (1) for a trade of direction `sign`, clamped;
    None when the two are the same price."""
    span = sign * (best - worst)
    if span <= 0.0:
        return None
    return clamp_unit(sign * (price - worst) / span)


def _exit_quality(trade: TradeFacts, held: Extremes | None, post: PostExit | None) -> float | None:
    candidates: list[tuple[float, float]] = []  # (best, worst) per window
    if held is not None:
        candidates.append((held.best_price, held.worst_price))
    if post is not None:
        candidates.append((post.best_price, post.worst_price))
    if not candidates:
        return None
    best = max((b for b, _ in candidates), key=lambda p: trade.sign * p)
    worst = min((w for _, w in candidates), key=lambda p: trade.sign * p)
    return price_quality(trade.sign, trade.exit_price, worst, best)


def _captured_and_missed(trade: TradeFacts, post: PostExit | None) -> tuple[float | None, float | None]:
    if post is None:
        return None, None
    gross = trade.gross_move_bps
    available = max(gross, favourable_bps(trade.sign, trade.entry_price, post.best_price))
    captured = max(0.0, gross / available) if available > 0.0 else None
    return captured, post.missed_profit_bps


def _lessons(
    trade: TradeFacts,
    quality: str,
    evidence: tuple[str, int, int],
    p_value: float | None,
    luck: list[str],
    captured: float | None,
    missed: float | None,
    features: dict[str, float],
) -> str:
    parts = [f"{quality} win of {trade.pnl_bps:.1f} bps net ({trade.fees_bps:.1f} bps fees)."]
    name, occurrences, wins = evidence
    if not occurrences or p_value is None:
        parts.append(f"No {name} before it: the edge is unproven.")
    else:
        verdict = "an edge" if p_value <= EDGE_P_VALUE_MAX else "no significant edge"
        parts.append(f"{occurrences} {name} won {wins / occurrences:.0%} (p = {p_value:.3f}): {verdict}.")
    if quality == "LUCKY":
        parts.append("Lucky: " + "; ".join(luck) + ".")
    if captured is not None and missed is not None:
        parts.append(f"Captured {captured:.0%} of the move; {missed:.1f} bps more was there after the exit.")
    if features:
        parts.append("Carried by " + ", ".join(features) + ".")
    return " ".join(parts)
