"""Why a losing trade lost: one `loss_analysis` row.

Every rule that matches scores REASON_WEIGHT[reason] x (0.5 + 0.5 x strength), strength 0..1
measuring how clearly it matched; the highest score is the primary reason (ties: the order of
REASON_WEIGHT), the other matches are the secondary ones, highest first. The weights are the desk's
prior on how directly each kind of evidence explains a loss; the strength lets clear evidence of a
lower-ranked reason beat faint evidence of a higher one. When nothing matches, the primary reason is
insufficient_confirmation: the trade lost and nothing at entry had confirmed it.

- costs_exceeded_move (1.0): the gross move was in the trade's favour or within FLAT_MOVE_BPS of
  flat, and the fees made it a loss. Strength 1.
- stop_too_tight (0.9): a stop-loss exit, then within the analysis horizon the price went past the
  entry by more than the round-trip fees. Strength: that recovery (beyond the fees) over the stop
  distance (or the loss, without a stop), at most 1. Needs the post-exit row.
- adverse_selection (0.8): the entry fill worse than the entry bar's typical price (H + L + C) / 3
  by more than ADVERSE_RANGE_SHARE of the bar's range, or slippage above ADVERSE_SLIPPAGE_MULTIPLE
  x the normal slippage. Strength: the larger excess over its threshold, relative, at most 1.
- stop_too_wide (0.7): the stop distance above STOP_WIDE_ATR_MULTIPLE x the average true range of
  the day before the entry (mean of the bars' true ranges, bps of their closes; at least
  MIN_ATR_BARS bars), and the loss ran to it (a stop-loss exit, or an adverse move of at least
  STOP_REACHED_SHARE of the stop). Strength: (multiple / k - 1), at most 1.
- regime_change (0.6): the exit regime differs from the entry's (both known). Strength 1.
- insufficient_confirmation (0.5): the model's confidence below LOW_CONFIDENCE, or the similar setups
  do not confirm the setup: fewer than MIN_CONFIRMING_SETUPS of them, or a mean net PnL <= 0.
  Strength: the confidence's shortfall under the threshold, relative, or 1 for no confirmation.

Severity: the worse of the loss in bps (SEVERITY_BPS) and the loss in stop distances R
(SEVERITY_R: past 1.25 R the stop did not hold). Preventable: every reason except regime_change,
which no entry rule could have known. Confidence penalty: SEVERITY_PENALTY[severity], halved when not
preventable. Adverse move: the deepest excursion against the entry within the hold window or at the
exit, bps >= 0. Misleading features: those that pointed to a win among the setups, or, with too few
setups to contrast winners and losers, those that stood out most at entry (attribution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from huracan.analysis.attribution import (
    LOW_CONFIDENCE,
    SimilarSetups,
    attribute_features,
    clamp_unit,
    regime_shift,
)
from huracan.analysis.post_exit import (
    BPS,
    PostExit,
    entry_bar_open_ms,
    extremes,
    favourable_bps,
    hold_window,
)
from huracan.analysis.trades import TradeFacts
from huracan.core.candle import CandleSeries

LOSS_REASONS: tuple[str, ...] = (
    "regime_change",
    "stop_too_tight",
    "stop_too_wide",
    "adverse_selection",
    "insufficient_confirmation",
    "costs_exceeded_move",
)
REASON_WEIGHT: dict[str, float] = {
    "costs_exceeded_move": 1.0,
    "stop_too_tight": 0.9,
    "adverse_selection": 0.8,
    "stop_too_wide": 0.7,
    "regime_change": 0.6,
    "insufficient_confirmation": 0.5,
}
FLAT_MOVE_BPS = 2.0  # a gross move this close to 0 is flat: the costs decided the sign
ADVERSE_RANGE_SHARE = 0.4  # of the range: a fill at the open of a bar that fell all the way is 2/3
NORMAL_SLIPPAGE_BPS = 4.0  # the execution config's 2 bps a fill, entry and exit
ADVERSE_SLIPPAGE_MULTIPLE = 3.0
DAY_MS = 86_400_000
MIN_ATR_BARS = 12
STOP_WIDE_ATR_MULTIPLE = 6.0  # a 5m stop beyond 6 bar ranges risks far more than the noise needs
STOP_REACHED_SHARE = 0.9
MIN_CONFIRMING_SETUPS = 5
SEVERITY_LEVELS = ("minor", "moderate", "severe", "critical")
SEVERITY_BPS = (25.0, 75.0, 200.0)  # loss below each bound: minor, moderate, severe; else critical
SEVERITY_R = (0.25, 0.75, 1.25)  # the same in stop distances
SEVERITY_PENALTY = {"minor": 0.1, "moderate": 0.25, "severe": 0.5, "critical": 0.8}
UNPREVENTABLE_PENALTY_SHARE = 0.5
PREVENTABLE = {reason: reason != "regime_change" for reason in LOSS_REASONS}
CORRECTIVE_ACTION = {
    "regime_change": "Watch the regime while in the trade: exit or tighten the stop when it leaves the entry "
    "regime, and prefer setups whose regime has been stable.",
    "stop_too_tight": "Widen the stop to the market's volatility (a few average true ranges) so that ordinary "
    "noise does not stop out a trade that then recovers.",
    "stop_too_wide": "Tighten the stop towards a few average true ranges of the day before entry: the loss ran "
    "far past the usual noise before the stop took it.",
    "adverse_selection": "Enter with a limit order or after the bar settles: the fill came at a poor price "
    "within its bar, or with slippage well above normal.",
    "insufficient_confirmation": "Require more confidence before entering: a higher model probability, or a "
    "history of similar setups with positive expectancy.",
    "costs_exceeded_move": "Skip setups whose expected move is smaller than the round-trip cost, or cut the "
    "cost (maker orders, fewer round trips).",
}

Detail = dict[str, float | str | bool | None]


@dataclass(frozen=True, slots=True)
class LossAnalysis:
    """One loss_analysis row."""

    primary_failure_reason: str
    secondary_reasons: tuple[str, ...]
    severity: str  # minor | moderate | severe | critical
    preventable: bool
    corrective_action: str
    misleading_features: tuple[str, ...]
    confidence_penalty: float  # 0..1, the pattern library lowers the setup's reliability by it
    regime_changed: bool
    stop_distance_bps: float | None
    adverse_move_bps: float | None
    detail: Detail  # the numbers each rule looked at (stored as jsonb)


def analyze_loss(
    trade: TradeFacts,
    candles: CandleSeries,
    post: PostExit | None,
    similar: SimilarSetups,
    timeframe_ms: int,
    *,
    normal_slippage_bps: float = NORMAL_SLIPPAGE_BPS,
) -> LossAnalysis:
    """Analyse a trade that did not win (pnl_bps <= 0: a breakeven trade paid for nothing)."""
    if trade.won:
        raise ValueError(f"trade {trade.trade_id} won ({trade.pnl_bps} bps): it is not a loss to analyse")
    loss_bps = -trade.pnl_bps
    stop_bps = trade.stop_distance_bps
    held = extremes(hold_window(trade, candles, timeframe_ms), trade.sign)
    adverse = max(0.0, -trade.gross_move_bps)
    if held is not None:
        adverse = max(adverse, -favourable_bps(trade.sign, trade.entry_price, held.worst_price))
    detail: Detail = {
        "pnl_bps": trade.pnl_bps,
        "gross_move_bps": trade.gross_move_bps,
        "fees_bps": trade.fees_bps,
        "slippage_bps": trade.slippage_bps,
        "exit_reason": trade.exit_reason,
        "confidence": trade.confidence,
        "adverse_move_bps": adverse,
        "post_exit_known": post is not None,
    }
    strengths: dict[str, float] = {}  # reason -> strength, for the rules that matched

    if trade.gross_move_bps >= -FLAT_MOVE_BPS and trade.pnl_bps < 0.0:
        strengths["costs_exceeded_move"] = 1.0

    if trade.exit_reason == "stop_loss" and post is not None:
        recovery = favourable_bps(trade.sign, trade.entry_price, post.best_price) - trade.fees_bps
        detail["recovery_past_entry_bps"] = recovery
        if recovery > 0.0:
            strengths["stop_too_tight"] = clamp_unit(recovery / max(stop_bps or loss_bps, 1.0))

    strengths.update(_adverse_selection(trade, candles, timeframe_ms, normal_slippage_bps, detail))

    atr = day_average_true_range_bps(candles, entry_bar_open_ms(trade, timeframe_ms))
    detail["atr_day_before_bps"] = atr
    if stop_bps is not None and atr is not None and atr > 0.0:
        multiple = stop_bps / atr
        detail["stop_atr_multiple"] = multiple
        ran_to_stop = trade.exit_reason == "stop_loss" or adverse >= STOP_REACHED_SHARE * stop_bps
        if multiple > STOP_WIDE_ATR_MULTIPLE and ran_to_stop:
            strengths["stop_too_wide"] = clamp_unit(multiple / STOP_WIDE_ATR_MULTIPLE - 1.0)

    shifted = regime_shift(trade)
    if shifted:
        strengths["regime_change"] = 1.0

    expectancy_bps = similar.expectancy_bps
    detail["similar_setups"] = len(similar)
    detail["similar_expectancy_bps"] = expectancy_bps
    unconfirmed = len(similar) < MIN_CONFIRMING_SETUPS or expectancy_bps is None or expectancy_bps <= 0.0
    if unconfirmed:
        strengths["insufficient_confirmation"] = 1.0
    elif trade.confidence is not None and trade.confidence < LOW_CONFIDENCE:
        strengths["insufficient_confirmation"] = clamp_unit(
            (LOW_CONFIDENCE - trade.confidence) / LOW_CONFIDENCE
        )

    scores = {reason: REASON_WEIGHT[reason] * (0.5 + 0.5 * s) for reason, s in strengths.items()}
    for reason, score in scores.items():
        detail[f"score_{reason}"] = score
    precedence = list(REASON_WEIGHT)
    ranked = sorted(scores, key=lambda r: (-scores[r], precedence.index(r)))
    primary = ranked[0] if ranked else "insufficient_confirmation"

    severity = loss_severity(loss_bps, stop_bps)
    preventable = PREVENTABLE[primary]
    penalty = SEVERITY_PENALTY[severity] * (1.0 if preventable else UNPREVENTABLE_PENALTY_SHARE)
    misleading = attribute_features(trade.entry_features, similar).leading()
    return LossAnalysis(
        primary_failure_reason=primary,
        secondary_reasons=tuple(ranked[1:]),
        severity=severity,
        preventable=preventable,
        corrective_action=CORRECTIVE_ACTION[primary],
        misleading_features=tuple(misleading),
        confidence_penalty=clamp_unit(penalty),
        regime_changed=bool(shifted),
        stop_distance_bps=stop_bps,
        adverse_move_bps=adverse,
        detail={key: _finite_or_none(value) for key, value in detail.items()},
    )


def loss_severity(loss_bps: float, stop_distance_bps: float | None) -> str:
    """The worse of the level of the loss in bps and in stop distances."""
    level = _level(loss_bps, SEVERITY_BPS)
    if stop_distance_bps is not None and stop_distance_bps > 0.0:
        level = max(level, _level(loss_bps / stop_distance_bps, SEVERITY_R))
    return SEVERITY_LEVELS[level]


def day_average_true_range_bps(candles: CandleSeries, before_ms: int) -> float | None:
    """Mean true range, bps of each bar's close, over the bars of the day before `before_ms`;
    None with fewer than MIN_ATR_BARS of them. The day's first bar uses the bar before it, when
    there is one, for its previous close."""
    lo, hi = np.searchsorted(candles.open_time_ms, [before_ms - DAY_MS, before_ms])
    if hi - lo < MIN_ATR_BARS:
        return None
    start = max(lo - 1, 0)
    high, low, close = candles.high[start:hi], candles.low[start:hi], candles.close[start:hi]
    previous = np.concatenate([close[:1], close[:-1]])
    true_range = np.fmax(high - low, np.fmax(np.abs(high - previous), np.abs(low - previous))) / close
    return float(np.mean(true_range[lo - start :]) * BPS)


def _adverse_selection(
    trade: TradeFacts, candles: CandleSeries, timeframe_ms: int, normal_slippage_bps: float, detail: Detail
) -> dict[str, float]:
    strength = 0.0
    matched = False
    start = entry_bar_open_ms(trade, timeframe_ms)
    bar = candles.between(start, start + timeframe_ms)
    if len(bar):
        high, low, close = float(bar.high[0]), float(bar.low[0]), float(bar.close[0])
        typical = (high + low + close) / 3.0
        detail["entry_bar_typical_price"] = typical
        if high > low:
            share = trade.sign * (trade.entry_price - typical) / (high - low)
            detail["entry_worse_than_typical_range_share"] = share
            if share > ADVERSE_RANGE_SHARE:
                matched = True
                strength = (share - ADVERSE_RANGE_SHARE) / (1.0 - ADVERSE_RANGE_SHARE)
    slippage_limit = ADVERSE_SLIPPAGE_MULTIPLE * normal_slippage_bps
    detail["slippage_limit_bps"] = slippage_limit
    if slippage_limit > 0.0 and trade.slippage_bps > slippage_limit:
        matched = True
        strength = max(strength, trade.slippage_bps / slippage_limit - 1.0)
    return {"adverse_selection": clamp_unit(strength)} if matched else {}


def _level(value: float, bounds: tuple[float, float, float]) -> int:
    return next((i for i, bound in enumerate(bounds) if value < bound), len(bounds))


def _finite_or_none(value: float | str | bool | None) -> float | str | bool | None:
    """jsonb has no NaN or infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
