"""Does training learn what is there, and only what is there?

- A planted, persistent signal observable at close t that moves prices from open[t+1]: the agent
  must find it and beat buy-and-hold and random trading out of sample by a clear margin.
- The same signal shuffled in time (a control): the same training must then find nothing, so the
  planted test does not pass by luck or by some other edge.
- A pure random walk with costs: no significant out-of-sample profit. Its control peeks at the
  future through a feature: that agent profits massively, so the test can see a leak.
- The trained agent's evaluated PnL is the reference's PnL for the same actions.

Every market is synthetic and seeded; training is seeded, so results repeat exactly.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest

from huracan.rl.env import EnvConfig, MarketData, TradingEnv
from huracan.rl.evaluate import Evaluation, buy_and_hold, evaluate, evaluate_policy, random_valid
from huracan.rl.policy import ActorCritic
from huracan.rl.ppo import PPOConfig, train
from huracan.rl.reference import simulate

ENV = EnvConfig(n_envs=256, episode_bars=128, seed=1)  # default costs: 26 bps a round trip
PPO = PPOConfig(n_steps=32, minibatch_size=2048, epochs=4, learning_rate=1e-3, seed=0)
TRAIN_STEPS = 300_000
MARGIN = 0.01  # per 128-bar episode, of equity


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
    times = np.tile(1_609_459_200_000 + 300_000 * np.arange(close.shape[1]), (close.shape[0], 1))
    return MarketData.from_numpy(features, open_, close, times, first_valid=3)


def planted(seed: int, *, shuffled: bool = False, symbols: int = 2, n_bars: int = 8000) -> MarketData:
    """A +-1 regime that persists ~10 bars (switch probability 0.1); the regime at close t sets
    the drift of bar t+1 (8 bps against 10 bps noise), worth ~4x the round-trip cost per regime."""
    rng = np.random.default_rng(seed)
    noise = 1e-3
    switches = rng.random((symbols, n_bars)) < 0.1
    regime = np.cumprod(np.where(switches, -1.0, 1.0), axis=1)
    returns = rng.normal(0, noise, (symbols, n_bars))
    returns[:, 1:] += 8e-4 * regime[:, :-1]
    signal = rng.permuted(regime, axis=1) if shuffled else regime
    features = np.concatenate([signal[..., None], rng.normal(size=(symbols, n_bars, 3))], axis=2)
    return market(*prices(seed, returns, noise), features)


def random_walk(seed: int, *, peek: int = 0, symbols: int = 2, n_bars: int = 8000) -> MarketData:
    """40 bps per bar of pure noise; features are the last three bar returns. With `peek`, one
    more feature is the next `peek` bars' return: the look-ahead a leaky pipeline would give."""
    rng = np.random.default_rng(seed)
    noise = 4e-3
    returns = rng.normal(0, noise, (symbols, n_bars))
    open_, close = prices(seed, returns, noise)
    columns = [np.roll(returns, lag, axis=1) / noise for lag in range(3)]
    if peek:
        log_close = np.log(close)
        future = np.zeros((symbols, n_bars))
        future[:, :-peek] = (log_close[:, peek:] - log_close[:, :-peek]) / (noise * math.sqrt(peek))
        columns.append(future)
    return market(open_, close, np.stack(columns, axis=2))


def trained(market: MarketData) -> ActorCritic:
    return train(TradingEnv(market, ENV), PPO, TRAIN_STEPS).policy


def scores(policy: ActorCritic, market: MarketData) -> tuple[Evaluation, Evaluation, Evaluation]:
    return (
        evaluate_policy(policy, market, ENV, greedy=True),
        evaluate(buy_and_hold(), market, ENV),
        evaluate(random_valid(seed=0), market, ENV),
    )


@pytest.fixture(scope="module")
def planted_agent() -> ActorCritic:
    return trained(planted(seed=1))


def test_agent_finds_a_planted_signal(planted_agent: ActorCritic) -> None:
    agent, hold, random = scores(planted_agent, planted(seed=2))
    assert len(agent.episode_returns) > 100
    assert agent.mean_return > hold.mean_return + MARGIN, (agent, hold)
    assert agent.mean_return > random.mean_return + MARGIN, (agent, random)
    assert agent.t_statistic > 5
    assert 0.2 < agent.exposure < 0.8  # it times the regimes, it does not just hold
    assert agent.win_rate > 0.5


def test_control_shuffled_signal_gives_no_edge() -> None:
    """The same training with the signal shuffled in time fails the planted test's bar."""
    agent, hold, _ = scores(trained(planted(seed=1, shuffled=True)), planted(seed=2, shuffled=True))
    assert agent.mean_return < hold.mean_return + MARGIN


def test_no_profit_on_a_random_walk() -> None:
    agent, hold, random = scores(trained(random_walk(seed=1)), random_walk(seed=2))
    assert len(agent.episode_returns) > 100
    assert agent.t_statistic < 2.0, agent
    assert agent.mean_return < hold.mean_return + MARGIN
    assert random.mean_return < 0  # costs are real: trading at random loses


def test_control_a_peek_at_the_future_is_caught() -> None:
    agent, hold, _ = scores(trained(random_walk(seed=1, peek=10)), random_walk(seed=2, peek=10))
    assert agent.t_statistic > 5
    assert agent.mean_return > hold.mean_return + MARGIN


def test_evaluated_pnl_is_the_reference_pnl(planted_agent: ActorCritic) -> None:
    """Replay the trained agent's out-of-sample actions bar by bar: same PnL to 1e-9."""
    market = planted(seed=2)
    result = evaluate_policy(planted_agent, market, ENV, record=True)
    assert result.actions is not None
    assert result.symbols is not None
    assert result.starts is not None
    trades = 0
    for env, episode_return in enumerate(result.episode_returns):
        symbol, start = int(result.symbols[env]), int(result.starts[env])
        actions = [a for a in result.actions[:, env].tolist() if a >= 0]
        replay = simulate(
            market.open[symbol].tolist(),
            market.close[symbol].tolist(),
            actions,
            start,
            ENV,
            day=market.day[symbol].tolist(),
        )
        assert replay.end in ("episode_end", "drawdown", "data_end")
        assert math.isclose(replay.episode_return, episode_return, rel_tol=1e-9, abs_tol=1e-12)
        trades += replay.trades
    assert trades == result.trades > 0
