"""Training a model from candles: features, a normaliser fitted on the training bars only,
PPO in the vectorised environment, an out-of-sample report on the held-out tail, and a
checkpoint that carries everything needed to run it (weights, normaliser, schema, config).

The pattern memory inputs of the state (win rate, average profit, reliability of the nearest
past setups) are what the live view would have said at each bar's close, from the trades closed
before it (huracan/rl/pattern_memory.py); Features without them give zeros, as a daemon with no trades.

Pure but for CPU time: the caller (`huracan train`) reads the candles and past trades and
registers the result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch

from huracan.core.candle import CandleSeries
from huracan.features.context import PATTERN_MEMORY_WIDTH
from huracan.features.market import DEFAULT_COST, WARMUP_BARS, CostAssumptions, Ohlcv, compute_market_features
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH, STATE_SCHEMA
from huracan.memory.embedding import EntryEmbedder
from huracan.memory.patterns import DEFAULT_RADIUS
from huracan.memory.setups import DEFAULT_K
from huracan.rl.checkpoint import Checkpoint
from huracan.rl.env import EnvConfig, MarketData, TradingEnv
from huracan.rl.evaluate import Evaluation, buy_and_hold, evaluate, evaluate_policy
from huracan.rl.pattern_memory import PastTrades, point_in_time_memory
from huracan.rl.ppo import IterationStats, PPOConfig, checkpoint, train


@dataclass(frozen=True, slots=True)
class TrainSpec:
    env: EnvConfig
    ppo: PPOConfig
    total_steps: int
    holdout_fraction: float = 0.2
    cost: CostAssumptions = DEFAULT_COST


@dataclass(frozen=True, slots=True)
class Features:
    """Raw market features of aligned symbols and the bars they came from."""

    symbols: tuple[str, ...]
    market: npt.NDArray[np.float64]  # [S, T, MARKET_WIDTH], NaN during warm-up
    open: npt.NDArray[np.float64]  # [S, T]
    close: npt.NDArray[np.float64]
    open_time_ms: npt.NDArray[np.int64]  # [T]
    # [S, T, 3] point-in-time pattern memory (pattern_memory.py); None: zeros, no trades known.
    pattern_memory: npt.NDArray[np.float32] | None = None

    def __post_init__(self) -> None:
        if self.pattern_memory is not None:
            expected = (*self.open.shape, PATTERN_MEMORY_WIDTH)
            if self.pattern_memory.shape != expected:
                raise ValueError(f"pattern memory has shape {self.pattern_memory.shape}, bars say {expected}")

    @classmethod
    def of(cls, series: Mapping[str, CandleSeries], cost: CostAssumptions) -> Features:
        symbols = tuple(series)
        ohlcv = Ohlcv.stack([series[s] for s in symbols])
        return cls(
            symbols,
            compute_market_features(ohlcv, cost),
            ohlcv.open,
            ohlcv.close,
            series[symbols[0]].open_time_ms,
        )

    @property
    def n_bars(self) -> int:
        return int(self.open.shape[1])

    def with_pattern_memory(
        self,
        trades: PastTrades,
        step_ms: int,
        embedder: EntryEmbedder,
        *,
        k: int = DEFAULT_K,
        radius: float = DEFAULT_RADIUS,
        progress: Callable[[int, int], None] | None = None,
    ) -> Features:
        """The same bars with each one's pattern memory as known at its close (step_ms after
        its open): only trades that had exited before it count."""
        memory = point_in_time_memory(
            self.market, self.open_time_ms, step_ms, trades, embedder, k=k, radius=radius, progress=progress
        )
        return replace(self, pattern_memory=memory)

    def market_data(self, normaliser: RunningNormaliser, start: int, end: int) -> MarketData:
        """Bars [start, end) for the environment, features normalised with `normaliser`."""
        raw = self.market[:, start:end]
        warm = np.asarray(np.isfinite(raw).all(axis=(0, 2)))
        first_valid = int(np.flatnonzero(warm)[0]) if warm.any() else 0
        if not warm[first_valid:].all():  # normalising would turn the NaN into the mean: refuse
            bad = start + first_valid + int(np.flatnonzero(~warm[first_valid:])[0])
            raise ValueError(f"market features are not finite at bar {bad}, after the warm-up")
        normalised = normaliser.normalise(raw)
        return MarketData.from_numpy(
            normalised,
            self.open[:, start:end],
            self.close[:, start:end],
            self.open_time_ms[start:end],
            first_valid=first_valid,
            pattern_memory=None if self.pattern_memory is None else self.pattern_memory[:, start:end],
        )


@dataclass(frozen=True, slots=True)
class TrainOutcome:
    checkpoint: Checkpoint
    stats: list[IterationStats]
    seconds: float
    holdout: Evaluation | None
    holdout_buy_and_hold: Evaluation | None


def split_index(n_bars: int, holdout_fraction: float, episode_bars: int) -> int:
    """First bar of the held-out tail; the tail must hold at least one whole episode."""
    if holdout_fraction <= 0:
        return n_bars
    split = int(n_bars * (1.0 - holdout_fraction))
    if n_bars - split < episode_bars + 2 or split - WARMUP_BARS < episode_bars + 2:
        raise ValueError(
            f"{n_bars} bars are too few to hold out {holdout_fraction:.0%} and still train on "
            f"{episode_bars}-bar episodes after a {WARMUP_BARS}-bar warm-up"
        )
    return split


def train_agent(
    features: Features, spec: TrainSpec, progress: Callable[[IterationStats], None] | None = None
) -> TrainOutcome:
    if features.market.shape[2] != MARKET_WIDTH:
        raise ValueError(
            f"features have {features.market.shape[2]} market columns, the schema {MARKET_WIDTH}"
        )
    split = split_index(features.n_bars, spec.holdout_fraction, spec.env.episode_bars)
    normaliser = RunningNormaliser(MARKET_WIDTH)
    # Fitted on the training bars only: the held-out tail must not leak into the scaling.
    normaliser.update(features.market[:, :split].reshape(-1, MARKET_WIDTH))
    train_data = features.market_data(normaliser, 0, split)
    started = time.perf_counter()
    result = train(TradingEnv(train_data, spec.env), spec.ppo, spec.total_steps, progress)
    seconds = time.perf_counter() - started
    holdout = holdout_bh = None
    metrics: dict[str, float] = {
        "train_env_steps": float(result.env_steps),
        "train_seconds": seconds,
        "train_steps_per_second": result.steps_per_second,
        "train_bars": float(split),
    }
    if split < features.n_bars:
        holdout_data = features.market_data(normaliser, split, features.n_bars)
        eval_config = replace(spec.env, episode_bars=min(spec.env.episode_bars, holdout_data.n_bars - 2))
        holdout = evaluate_policy(result.policy, holdout_data, eval_config)
        holdout_bh = evaluate(buy_and_hold(), holdout_data, eval_config)
        metrics |= {
            "holdout_bars": float(features.n_bars - split),
            "holdout_mean_return": holdout.mean_return,
            "holdout_t_statistic": _finite(holdout.t_statistic),
            "holdout_trades": float(holdout.trades),
            "holdout_win_rate": _finite(holdout.win_rate),
            "holdout_exposure": holdout.exposure,
            "holdout_max_drawdown": holdout.max_drawdown,
            "holdout_buy_and_hold_mean_return": holdout_bh.mean_return,
        }
    saved = checkpoint(
        result.policy,
        result.optimiser,
        spec.env,
        spec.ppo,
        schema_hash=STATE_SCHEMA.hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=normaliser.state(),
        metrics=metrics,
    )
    extra = {
        "symbols": list(features.symbols),
        "first_bar_ms": int(features.open_time_ms[0]),
        "last_bar_ms": int(features.open_time_ms[-1]),
        "holdout_from_ms": int(features.open_time_ms[split]) if split < features.n_bars else None,
        # Share of the training rows with a past trade near enough to count (reliability > 0):
        # 0 when the model learned with the zeros a daemon without trades sees.
        "pattern_memory_rows": _pattern_memory_share(features.pattern_memory, split),
        "cost": {
            "taker_fee_bps": spec.cost.taker_fee_bps,
            "half_spread_bps": spec.cost.half_spread_bps,
            "slippage_bps": spec.cost.slippage_bps,
        },
        "torch": str(torch.__version__),  # TorchVersion is not a plain str: weights_only refuses it
    }
    saved = replace(saved, config={**saved.config, "training": extra})
    return TrainOutcome(saved, result.stats, seconds, holdout, holdout_bh)


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _pattern_memory_share(memory: npt.NDArray[np.float32] | None, split: int) -> float:
    if memory is None or split == 0:
        return 0.0
    return round(float((memory[:, :split, 2] > 0).mean()), 4)
