"""Does training learn what is there, and only what is there?

- A planted, persistent signal observable at close t that moves prices from open[t+1]: the agent
  must find it and beat buy-and-hold and random trading out of sample by a clear margin.
- The same signal shuffled in time (a control): the same training must then find nothing, so the
  planted test does not pass by luck or by some other edge.
- A pure random walk with costs: no significant out-of-sample profit. Its control peeks at the
  future through a feature: that agent profits massively, so the test can see a leak.
- The trained agent's evaluated PnL is the reference's PnL for the same actions.

Every market is synthetic and seeded (huracan/rl/synthetic.py, shared with bench/ppo.py);
training is seeded, so results repeat exactly.
"""

from __future__ import annotations

import math

import pytest

from huracan.rl.env import EnvConfig, MarketData, TradingEnv
from huracan.rl.evaluate import Evaluation, buy_and_hold, evaluate, evaluate_policy, random_valid
from huracan.rl.policy import ActorCritic
from huracan.rl.ppo import PPOConfig, train
from huracan.rl.reference import simulate
from huracan.rl.synthetic import oracle_evaluation, planted, random_walk, sharpe

ENV = EnvConfig(n_envs=256, episode_bars=128, seed=1)  # default costs: 26 bps a round trip
PPO = PPOConfig(n_steps=32, minibatch_size=2048, epochs=4, learning_rate=1e-3, seed=0)
TRAIN_STEPS = 300_000
MARGIN = 0.01  # per 128-bar episode, of equity


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
    assert sharpe(agent) > 0.7 * sharpe(oracle_evaluation(planted(seed=2), ENV))  # bench/ppo.py's bar


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


def test_oracle_reads_the_planted_signal() -> None:
    """The yardstick of 'X% of the oracle Sharpe' earns what the signal promises, and only from
    the signal: on the shuffled control the same rule loses to costs."""
    market = planted(seed=2)
    oracle, hold = oracle_evaluation(market, ENV), evaluate(buy_and_hold(), market, ENV)
    assert oracle.mean_return > hold.mean_return + MARGIN
    assert 0.4 < oracle.exposure < 0.6  # the regime is up about half the time
    assert sharpe(oracle) > sharpe(hold) + 1.0
    assert sharpe(oracle_evaluation(planted(seed=2, shuffled=True), ENV)) < 0
