"""Synthetic markets whose truth is known, for the honesty tests and the PPO benchmark.

- `planted`: a persistent +-1 regime per symbol that switches with probability 0.1 a bar (so it
  lasts ~10 bars). The regime observed at close t sets the drift of bar t+1: +-8 bps against
  10 bps of noise per bar, so a whole regime is worth ~80 bps, about 3x the default round trip
  (26 bps). The regime is feature 0 of the observation, next to three columns of pure noise; the
  shuffled control permutes that column in time, keeping its distribution but not its meaning.
- `random_walk`: 40 bps of noise a bar and nothing to find; features are the last three bar
  returns. `peek` adds the next bars' return as a feature: the look-ahead of a leaky pipeline.
- The oracle knows the planted regime: long exactly while the regime says the next bar drifts
  up, flat otherwise. It is the yardstick "X% of the oracle Sharpe" is measured against; it is
  not the best possible strategy net of costs (it trades every regime, even the short ones), but
  it is what a perfect reading of the signal earns under the same env, costs and episodes.

Every market is seeded and pure numpy: the same seed gives the same bars and features.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from huracan.core.intents import AgentAction
from huracan.rl.env import EnvConfig, MarketData
from huracan.rl.evaluate import Evaluation, Strategy, evaluate

SIGNAL_COLUMN = 0  # where planted() puts the regime in the features
SWITCH_PROBABILITY = 0.1
PLANTED_DRIFT = 8e-4  # per bar, in the regime's direction
PLANTED_NOISE = 1e-3  # per bar
RANDOM_WALK_NOISE = 4e-3
FIRST_VALID = 3  # random_walk's lagged returns need 2 bars of history; planted keeps the same
START_MS = 1_609_459_200_000  # 2021-01-01, 5-minute bars
BAR_MS = 300_000


def prices(
    seed: int, returns: npt.NDArray[np.float64], noise: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(open, close) whose in-bar move is `returns`, plus a small gap between close and next open."""
    gap = np.random.default_rng(seed + 10_000).normal(0, noise / 4, returns.shape)
    close = 100 * np.exp(np.cumsum(returns + gap, axis=1))
    return close * np.exp(-returns), close


def market(
    open_: npt.NDArray[np.float64], close: npt.NDArray[np.float64], features: npt.NDArray[np.float64]
) -> MarketData:
    """MarketData of [S, T] bars on a 5-minute clock from 2021-01-01, features as given (not
    normalised: the synthetic features are already of unit scale)."""
    times = np.tile(START_MS + BAR_MS * np.arange(close.shape[1]), (close.shape[0], 1))
    return MarketData.from_numpy(features, open_, close, times, first_valid=FIRST_VALID)


def planted(seed: int, *, shuffled: bool = False, symbols: int = 2, n_bars: int = 8000) -> MarketData:
    """The planted-regime market (see the module docstring); `shuffled` is the control whose
    feature 0 no longer says anything about the next bar."""
    rng = np.random.default_rng(seed)
    switches = rng.random((symbols, n_bars)) < SWITCH_PROBABILITY
    regime = np.cumprod(np.where(switches, -1.0, 1.0), axis=1)
    returns = rng.normal(0, PLANTED_NOISE, (symbols, n_bars))
    returns[:, 1:] += PLANTED_DRIFT * regime[:, :-1]
    signal = rng.permuted(regime, axis=1) if shuffled else regime
    features = np.concatenate([signal[..., None], rng.normal(size=(symbols, n_bars, 3))], axis=2)
    return market(*prices(seed, returns, PLANTED_NOISE), features)


def random_walk(seed: int, *, peek: int = 0, symbols: int = 2, n_bars: int = 8000) -> MarketData:
    """Pure noise (see the module docstring). With `peek`, one more feature is the next `peek`
    bars' log return in units of its standard deviation."""
    rng = np.random.default_rng(seed)
    returns = rng.normal(0, RANDOM_WALK_NOISE, (symbols, n_bars))
    open_, close = prices(seed, returns, RANDOM_WALK_NOISE)
    columns = [np.roll(returns, lag, axis=1) / RANDOM_WALK_NOISE for lag in range(3)]
    if peek:
        log_close = np.log(close)
        future = np.zeros((symbols, n_bars))
        future[:, :-peek] = (log_close[:, peek:] - log_close[:, :-peek]) / (
            RANDOM_WALK_NOISE * math.sqrt(peek)
        )
        columns.append(future)
    return market(open_, close, np.stack(columns, axis=2))


def oracle() -> Strategy:
    """Long (a normal-size position) exactly while the planted regime at close t is +1, which
    means bar t+1 drifts up; flat while it is -1. It reads the regime from feature 0 of the
    observation, so it is the oracle only on an unshuffled `planted` market."""

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        up = obs[:, SIGNAL_COLUMN] > 0
        held = mask[:, AgentAction.HOLD_POSITION]
        want_long = torch.where(held, int(AgentAction.HOLD_POSITION), int(AgentAction.ENTER_LONG_NORMAL))
        want_flat = torch.where(held, int(AgentAction.EXIT_POSITION), int(AgentAction.DO_NOTHING))
        return torch.where(up, want_long, want_flat)

    return act


def oracle_evaluation(data: MarketData, env_config: EnvConfig) -> Evaluation:
    """The oracle on `data` (an unshuffled `planted` market), on evaluate()'s episode windows."""
    return evaluate(oracle(), data, env_config)


def sharpe(evaluation: Evaluation) -> float:
    """Mean over standard deviation of the episode returns (per episode, not annualised): one
    definition for the oracle and every agent, so their ratio is the figure that matters.
    0 when nothing varies and nothing is earned; +-inf for a riskless nonzero return."""
    if evaluation.std_return > 0:
        return evaluation.mean_return / evaluation.std_return
    return 0.0 if evaluation.mean_return == 0 else math.copysign(math.inf, evaluation.mean_return)
