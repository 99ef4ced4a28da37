"""The vectorised env: timing of fills, masks, rewards, episode ends, resets and the data helper."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from huracan.core.intents import AgentAction
from huracan.features.context import CONTEXT_WIDTH
from huracan.rl.env import EnvConfig, InvalidActionError, MarketData, TradingEnv

T0_MS = 1_609_459_200_000
BAR_MS = 300_000
NOTHING, SMALL, NORMAL, LARGE, EXIT, HOLD = (int(a) for a in AgentAction)


def market(
    open_: list[float], close: list[float] | None = None, symbols: int = 1, features: int = 2
) -> MarketData:
    """Bars where feature 0 is the bar index, so an observation says which bar it came from."""
    bars = len(open_)
    close = close if close is not None else open_
    index = np.broadcast_to(np.arange(bars, dtype=np.float64)[None, :, None], (symbols, bars, 1))
    extra = np.full((symbols, bars, features - 1), 0.5)
    times = T0_MS + BAR_MS * np.arange(bars)
    return MarketData.from_numpy(
        np.concatenate([index, extra], axis=2),
        np.tile(np.asarray(open_, dtype=np.float64), (symbols, 1)),
        np.tile(np.asarray(close, dtype=np.float64), (symbols, 1)),
        np.tile(times, (symbols, 1)),
        first_valid=0,
    )


def step(env: TradingEnv, *actions: int) -> torch.Tensor:
    return env.step(torch.tensor(actions)).reward


def test_observation_layout_and_masks() -> None:
    env = TradingEnv(market([100.0] * 20, features=3), EnvConfig(n_envs=2, episode_bars=5))
    obs, mask = env.reset(symbols=torch.tensor([0, 0]), starts=torch.tensor([3, 7]))
    assert obs.shape == (2, env.observation_size) == (2, 3 + CONTEXT_WIDTH)
    assert obs.dtype == torch.float32
    assert obs[:, 0].tolist() == [3.0, 7.0]
    flat = [True, True, True, True, False, False]
    assert mask.tolist() == [flat, flat]
    result = env.step(torch.tensor([NORMAL, NOTHING]))
    assert result.obs[:, 0].tolist() == [4.0, 8.0]  # the next bar's state
    assert result.mask.tolist() == [[False] * 4 + [True, True], flat]
    assert result.obs[:, 3 + 3].tolist() == [1.0, 0.0]  # has_position
    assert result.obs[:, 3 + 4].tolist() == [1.0, 0.0]  # size multiplier of a normal entry


def test_action_fills_at_the_next_open_never_the_deciding_bar() -> None:
    # A jump between close[1] and open[2]: the entry decided at close[1] pays the jumped price.
    env = TradingEnv(
        market([100.0, 100.0, 120.0, 120.0], [100.0, 100.0, 120.0, 120.0]),
        EnvConfig(n_envs=1, fee_bps=0.0, half_spread_bps=0.0, slippage_bps=0.0, auto_reset=False),
    )
    env.reset(symbols=torch.tensor([0]), starts=torch.tensor([1]))
    result = env.step(torch.tensor([NORMAL]))
    assert float(result.fill_price[0]) == 120.0
    assert float(result.reward[0]) == 0.0  # bought at 120, marked at 120: no gain from the jump


def test_costs_and_reward_in_bps() -> None:
    config = EnvConfig(
        n_envs=1, fee_bps=10.0, half_spread_bps=1.0, slippage_bps=2.0, position_fraction=0.5, auto_reset=False
    )
    env = TradingEnv(market([100.0, 100.0, 110.0, 110.0, 110.0]), config)
    env.reset(symbols=torch.tensor([0]), starts=torch.tensor([0]))
    entry = env.step(torch.tensor([NORMAL]))
    buy = 100.0 * 1.0003
    quantity = 0.5 / buy
    assert float(entry.fill_price[0]) == pytest.approx(buy, rel=1e-12)
    assert float(entry.fill_quantity[0]) == pytest.approx(quantity, rel=1e-12)
    assert float(entry.fill_fee[0]) == pytest.approx(0.5 * 0.001, rel=1e-12)
    equity = 1.0 - 0.5 - 0.0005 + quantity * 100.0
    assert float(entry.equity[0]) == pytest.approx(equity, rel=1e-12)
    assert float(entry.reward[0]) == pytest.approx((equity - 1.0) * 1e4, rel=1e-5)
    held = env.step(torch.tensor([HOLD]))
    assert float(held.reward[0]) == pytest.approx(quantity * 10.0 / equity * 1e4, rel=1e-5)
    assert math.isnan(float(held.fill_price[0]))
    assert float(held.fill_quantity[0]) == 0.0


def test_waiting_changes_nothing() -> None:
    env = TradingEnv(market([100.0, 90.0, 80.0, 70.0]), EnvConfig(n_envs=1, auto_reset=False))
    env.reset(symbols=torch.tensor([0]), starts=torch.tensor([0]))
    assert step(env, NOTHING).tolist() == [0.0]
    assert float(env.equity[0]) == 1.0


@pytest.mark.parametrize(
    ("first", "bad"), [(None, EXIT), (None, HOLD), (SMALL, NOTHING), (SMALL, LARGE), (None, 6), (None, -1)]
)
def test_invalid_actions_raise(first: int | None, bad: int) -> None:
    env = TradingEnv(market([100.0] * 10), EnvConfig(n_envs=2, episode_bars=5))
    env.reset(symbols=torch.tensor([0, 0]), starts=torch.tensor([0, 0]))
    if first is not None:
        step(env, first, NOTHING)
    valid_other = NOTHING
    with pytest.raises(InvalidActionError, match="env 0"):
        step(env, bad, valid_other)


def test_time_limit_ends_and_auto_resets() -> None:
    env = TradingEnv(market([100.0 + i for i in range(60)]), EnvConfig(n_envs=3, episode_bars=4, seed=7))
    env.reset(symbols=torch.zeros(3, dtype=torch.long), starts=torch.tensor([5, 10, 20]))
    step(env, NORMAL, NOTHING, NOTHING)
    for _ in range(2):
        result = env.step(torch.where(env.has_position, HOLD, NOTHING))
        assert not bool(result.done.any())
        assert bool(result.episode_return.isnan().all())
    result = env.step(torch.where(env.has_position, HOLD, NOTHING))
    assert result.done.tolist() == [True] * 3
    assert result.truncated.tolist() == [True] * 3
    assert float(result.episode_return[0]) == pytest.approx(float(result.equity[0]) - 1.0)
    assert float(result.episode_return[0]) > 0
    assert result.episode_return[1:].tolist() == [0.0, 0.0]
    # The last state of the episode is kept for bootstrapping; the new one starts flat at 1.0.
    assert result.final_obs[:, 0].tolist() == [9.0, 14.0, 24.0]
    assert not bool(env.has_position.any())
    assert env.equity.tolist() == [1.0] * 3
    assert bool(((env.bar >= 0) & (env.bar <= 60 - 4 - 1)).all())
    assert result.obs[:, 0].tolist() == env.bar.float().tolist()


def test_drawdown_terminates() -> None:
    prices = [100.0, 100.0, 90.0, 60.0, 50.0, 50.0]
    env = TradingEnv(
        market(prices), EnvConfig(n_envs=1, episode_bars=5, max_drawdown=0.1, position_fraction=0.5)
    )
    env.reset(symbols=torch.tensor([0]), starts=torch.tensor([0]))
    assert not bool(env.step(torch.tensor([LARGE])).done[0])
    result = env.step(torch.tensor([HOLD]))  # 0.75 of equity through a 10% fall: ~8%
    assert not bool(result.done[0])
    result = env.step(torch.tensor([HOLD]))
    assert bool(result.done[0])
    assert not bool(result.truncated[0])
    assert float(result.final_obs[0, 2 + 7]) == 1.0  # drawdown column saturates at 10%


def test_drawdown_penalty_charges_new_drawdown_only() -> None:
    prices = [100.0, 100.0, 90.0, 95.0, 80.0]
    plain, penalised = (
        TradingEnv(
            market(prices),
            EnvConfig(
                n_envs=1,
                drawdown_penalty=p,
                fee_bps=0.0,
                slippage_bps=0.0,
                half_spread_bps=0.0,
                auto_reset=False,
            ),
        )
        for p in (0.0, 2.0)
    )
    rewards = []
    for env in (plain, penalised):
        env.reset(symbols=torch.tensor([0]), starts=torch.tensor([0]))
        rewards.append([float(step(env, a)[0]) for a in (NORMAL, HOLD, HOLD)])
        drawdowns = env.drawdown
    quantity = 0.5 / 100.0
    dd1 = quantity * 10 / 1.0
    assert rewards[1][0] == pytest.approx(rewards[0][0])  # no drawdown yet at the entry bar
    assert rewards[1][1] == pytest.approx(rewards[0][1] - 2.0 * dd1 * 1e4, rel=1e-5)
    assert rewards[1][2] == pytest.approx(rewards[0][2], rel=1e-5)  # recovering adds no penalty
    assert float(drawdowns[0]) == pytest.approx(dd1 - quantity * 5 / 1.0)


def test_trades_and_wins_today_reset_on_a_new_day() -> None:
    bars_per_day = 288
    prices = [100.0 + 0.01 * i for i in range(bars_per_day * 2)]
    env = TradingEnv(
        market(prices),
        EnvConfig(
            n_envs=1, episode_bars=600, fee_bps=0.0, half_spread_bps=0.0, slippage_bps=0.0, auto_reset=False
        ),
    )
    env.reset(symbols=torch.tensor([0]), starts=torch.tensor([bars_per_day - 6]))
    for action in (NORMAL, EXIT, SMALL):
        obs = env.step(torch.tensor([action])).obs
    trades, win_rate = obs[0, -2:].tolist()
    assert trades == pytest.approx(0.1)
    assert win_rate == 1.0
    for action in (EXIT, NOTHING, NOTHING, NOTHING):
        obs = env.step(torch.tensor([action])).obs
    assert obs[0, -2:].tolist() == [0.0, 0.0]  # the bar index crossed into the next UTC day


def test_hold_bars_and_unrealised_pnl_in_context() -> None:
    env = TradingEnv(
        market([100.0] * 5, [100.0, 101.0, 102.0, 103.0, 104.0]),
        EnvConfig(
            n_envs=1, fee_bps=0.0, half_spread_bps=0.0, slippage_bps=0.0, bars_per_day=4, auto_reset=False
        ),
    )
    env.reset(symbols=torch.tensor([0]), starts=torch.tensor([0]))
    first = env.step(torch.tensor([SMALL])).obs[0, 2:]
    second = env.step(torch.tensor([HOLD])).obs[0, 2:]
    assert first[5].item() == pytest.approx(1.0)  # (101/100 - 1) bps / 100
    assert first[6].item() == pytest.approx(0.25)
    assert second[6].item() == pytest.approx(0.5)
    assert second[4].item() == 0.5


def test_without_auto_reset_envs_freeze_at_their_end() -> None:
    env = TradingEnv(
        market([100.0 + i for i in range(8)]), EnvConfig(n_envs=2, episode_bars=100, auto_reset=False)
    )
    env.reset(symbols=torch.tensor([0, 0]), starts=torch.tensor([4, 1]))
    step(env, NORMAL, NOTHING)
    step(env, HOLD, NOTHING)
    result = env.step(torch.tensor([HOLD, NOTHING]))  # env 0 reaches the last bar (7)
    assert result.done.tolist() == [True, False]
    assert env.finished.tolist() == [True, False]
    equity = float(env.equity[0])
    for _ in range(3):
        result = env.step(torch.tensor([EXIT, NOTHING]))  # ignored for the frozen env
        assert float(result.reward[0]) == 0.0
        assert float(result.equity[0]) == equity
    assert result.done.tolist() == [False, True]  # env 1 hit the data end three steps later
    assert env.bar.tolist() == [7, 7]


def test_random_resets_are_seeded_and_in_range() -> None:
    data = market([100.0] * 500, symbols=3)
    first, second, other = (
        TradingEnv(data, EnvConfig(n_envs=64, episode_bars=50, seed=s)) for s in (1, 1, 2)
    )
    for env in (first, second, other):
        env.reset(stagger=True)
    assert torch.equal(first.symbol, second.symbol)
    assert torch.equal(first.bar, second.bar)
    assert not torch.equal(first.bar, other.bar)
    assert set(first.symbol.tolist()) == {0, 1, 2}
    assert int(first.bar.min()) >= 0
    assert int(first.bar.max()) <= 500 - 50 - 1
    # Staggered: the first episodes end at different steps, not all together.
    ends = []
    for t in range(50):
        done = first.step(torch.zeros(64, dtype=torch.long)).done
        ends += [t] * int(done.sum())
    assert len(set(ends)) > 10


def test_market_data_from_numpy_finds_the_warm_up() -> None:
    features = np.ones((2, 30, 3))
    features[0, :5, 1] = np.nan
    features[1, :8, 2] = np.nan
    prices = np.full((2, 30), 100.0)
    times = np.tile(T0_MS + BAR_MS * np.arange(30), (2, 1))
    data = MarketData.from_numpy(features, prices, prices, times)
    assert data.first_valid == 8
    assert data.features.dtype == torch.float32
    assert not bool(data.features.isnan().any())
    assert data.day[0, 0] == T0_MS // 86_400_000
    features[0, 20, 0] = np.nan
    with pytest.raises(ValueError, match="bar 20"):
        MarketData.from_numpy(features, prices, prices, times)
    with pytest.raises(ValueError, match="no episode"):
        TradingEnv(
            MarketData.from_numpy(features[:, :20], prices[:, :20], prices[:, :20], times[:, :20]),
            EnvConfig(episode_bars=15),
        )


def test_aligned_bar_times_may_be_given_once() -> None:
    prices = np.full((2, 600), 100.0)
    times = T0_MS + BAR_MS * np.arange(600)
    data = MarketData.from_numpy(np.zeros((2, 600, 1)), prices, prices, times)
    assert data.day.shape == (2, 600)
    assert data.day[1, 288].item() == data.day[0, 0].item() + 1


def test_explicit_episodes_are_checked() -> None:
    env = TradingEnv(market([100.0] * 30), EnvConfig(n_envs=2, episode_bars=5))
    with pytest.raises(ValueError, match="start"):
        env.reset(symbols=torch.tensor([0, 0]), starts=torch.tensor([0, 29]))
    with pytest.raises(ValueError, match="symbol"):
        env.reset(symbols=torch.tensor([0, 1]), starts=torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="shape"):
        env.reset(symbols=torch.tensor([0]), starts=torch.tensor([0]))
