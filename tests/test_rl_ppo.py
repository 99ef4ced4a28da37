"""Policy masking, GAE, the truncation bootstrap, determinism and checkpoints of PPO."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from huracan.core.intents import AgentAction
from huracan.rl.checkpoint import load_checkpoint, save_checkpoint
from huracan.rl.env import EnvConfig, MarketData, TradingEnv
from huracan.rl.evaluate import buy_and_hold, episode_windows, evaluate, evaluate_policy, random_valid
from huracan.rl.policy import ActorCritic, MaskedCategorical, action_masks, load_policy
from huracan.rl.ppo import (
    IterationStats,
    PPOConfig,
    Rollout,
    checkpoint,
    collect,
    compute_gae,
    config_from_checkpoint,
    make_policy,
    train,
)

FLAT = torch.tensor([True, True, True, True, False, False])
LONG = torch.tensor([False, False, False, False, True, True])


def random_walk(
    seed: int, symbols: int = 2, bars: int = 600, features: int = 5, flat: bool = False
) -> MarketData:
    rng = np.random.default_rng(seed)
    steps = np.zeros((symbols, bars)) if flat else rng.normal(0, 0.002, (symbols, bars))
    close = 100 * np.exp(np.cumsum(steps, axis=1))
    open_ = np.concatenate([close[:, :1], close[:, :-1]], axis=1)
    times = np.tile(1_609_459_200_000 + 300_000 * np.arange(bars), (symbols, 1))
    return MarketData.from_numpy(
        rng.normal(size=(symbols, bars, features)), open_, close, times, first_valid=0
    )


def test_masked_actions_have_zero_probability_and_no_entropy() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 50.0, 50.0], [9.0, 9.0, 0.0, 0.0, 0.0, 0.0]])
    dist = MaskedCategorical(logits, torch.stack([FLAT, LONG]))
    assert dist.probs[0, 4:].tolist() == [0.0, 0.0]
    assert dist.probs[1, :4].tolist() == [0.0] * 4
    assert dist.probs.sum(-1).tolist() == pytest.approx([1.0, 1.0])
    assert dist.entropy().tolist() == pytest.approx([math.log(4), math.log(2)])
    assert dist.greedy().tolist()[0] in range(4)
    assert dist.greedy().tolist()[1] in (4, 5)
    generator = torch.Generator().manual_seed(0)
    samples = torch.stack([dist.sample(generator) for _ in range(2000)])
    assert bool((samples[:, 0] < 4).all())
    assert bool((samples[:, 1] >= 4).all())
    # Sampling follows the probabilities: the four flat actions are about equally likely.
    counts = torch.bincount(samples[:, 0], minlength=6)[:4].float()
    assert bool(((counts / 2000 - 0.25).abs() < 0.05).all())


def test_policy_never_picks_an_invalid_action_and_inits_near_uniform() -> None:
    policy = make_policy(15, PPOConfig(seed=3))
    obs = torch.randn(256, 15)
    mask = torch.where(torch.rand(256, 1) < 0.5, FLAT, LONG)
    action, log_prob, value = policy.act(obs, mask, generator=torch.Generator().manual_seed(1))
    assert bool(mask.gather(1, action.unsqueeze(1)).all())
    assert action.shape == log_prob.shape == value.shape == (256,)
    valid = mask.sum(1).float()
    assert torch.allclose(log_prob, -valid.log(), atol=0.05)  # small policy head: near uniform
    greedy, _, _ = policy.act(obs, mask, greedy=True)
    assert bool(mask.gather(1, greedy.unsqueeze(1)).all())


def naive_gae(
    rewards: list[list[float]],
    values: list[list[float]],
    dones: list[list[float]],
    last: list[float],
    g: float,
    lam: float,
) -> list[list[float]]:
    steps, envs = len(rewards), len(rewards[0])
    out = [[0.0] * envs for _ in range(steps)]
    for e in range(envs):
        acc = 0.0
        for t in reversed(range(steps)):
            next_value = last[e] if t == steps - 1 else values[t + 1][e]
            alive = 1.0 - dones[t][e]
            delta = rewards[t][e] + g * next_value * alive - values[t][e]
            acc = delta + g * lam * alive * acc
            out[t][e] = acc
    return out


def test_gae_matches_a_plain_loop_and_stops_at_episode_ends() -> None:
    generator = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(7, 3, generator=generator), torch.randn(7, 3, generator=generator)
    dones = (torch.rand(7, 3, generator=generator) < 0.3).float()
    dones[2, 0] = 1.0
    last = torch.randn(3, generator=generator)
    advantages, returns = compute_gae(rewards, values, dones, last, 0.9, 0.8)
    expected = naive_gae(rewards.tolist(), values.tolist(), dones.tolist(), last.tolist(), 0.9, 0.8)
    assert torch.allclose(advantages, torch.tensor(expected), rtol=1e-5, atol=1e-6)
    assert torch.allclose(returns, advantages + values)
    # What happens after an episode end does not leak into the step that ended it.
    changed = rewards.clone()
    changed[3:, 0] += 100.0
    again, _ = compute_gae(changed, values, dones, last, 0.9, 0.8)
    assert again[2, 0] == advantages[2, 0]


def test_time_limits_bootstrap_from_the_last_state() -> None:
    """With no costs and flat prices every reward is 0, so the only reward is the bootstrap."""
    env = TradingEnv(
        random_walk(0, flat=True),
        EnvConfig(n_envs=8, episode_bars=3, fee_bps=0, half_spread_bps=0, slippage_bps=0),
    )
    config = PPOConfig(n_steps=7, gamma=0.9)
    policy = make_policy(env.observation_size, config)
    with torch.no_grad():
        policy.value_head.weight.zero_()
        policy.value_head.bias.fill_(5.0)
    rollout = Rollout.empty(7, 8, env.observation_size, 6, env.device)
    obs, mask = env.reset(stagger=True)
    collect(env, policy, config, rollout, obs, mask, torch.Generator().manual_seed(0))
    assert bool(rollout.dones.any())
    assert torch.allclose(rollout.rewards, rollout.dones * 0.9 * 5.0)


def tiny_training(seed: int, env_seed: int = 0) -> tuple[dict[str, torch.Tensor], list[IterationStats]]:
    env = TradingEnv(random_walk(1), EnvConfig(n_envs=32, episode_bars=40, seed=env_seed))
    config = PPOConfig(n_steps=16, minibatch_size=128, epochs=2, seed=seed, hidden=(16, 16))
    result = train(env, config, total_steps=32 * 16 * 3)
    return {k: v.clone() for k, v in result.policy.state_dict().items()}, result.stats


def test_training_is_bit_identical_under_a_seed() -> None:
    first, stats = tiny_training(seed=5)
    second, _ = tiny_training(seed=5)
    other, _ = tiny_training(seed=6)
    other_env, _ = tiny_training(seed=5, env_seed=1)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)
    assert not all(torch.equal(first[k], other_env[k]) for k in first)
    assert [s.iteration for s in stats] == [1, 2, 3]
    assert stats[-1].env_steps == 32 * 16 * 3
    assert all(s.steps_per_second > 0 and s.entropy > 0 and math.isfinite(s.value_loss) for s in stats)


def test_training_runs_on_its_own_thread_count_and_restores_it() -> None:
    threads = torch.get_num_threads()
    seen: list[int] = []
    env = TradingEnv(random_walk(1), EnvConfig(n_envs=8, episode_bars=40))
    train(
        env,
        PPOConfig(n_steps=4, minibatch_size=16, epochs=1, torch_threads=1),
        32,
        lambda s: seen.append(torch.get_num_threads()),
    )
    assert seen == [1]
    assert torch.get_num_threads() == threads


def test_checkpoint_round_trip_rebuilds_the_same_policy(tmp_path: Path) -> None:
    env_config = EnvConfig(n_envs=16, episode_bars=40, fee_bps=7.5)
    ppo_config = PPOConfig(n_steps=8, minibatch_size=64, hidden=(24, 12), seed=2)
    env = TradingEnv(random_walk(2, features=7), env_config)
    result = train(env, ppo_config, total_steps=128)
    saved = checkpoint(
        result.policy,
        result.optimiser,
        env_config,
        ppo_config,
        schema_hash="abc123",
        feature_names=("f0", "f1"),
        normaliser={"count": 1.0, "mean": [0.0], "var": [1.0]},
        metrics={"sharpe": 1.5},
    )
    json.dumps(saved.config)  # plain values only
    assert saved.config["network"] == {
        "observation_size": 17,
        "hidden": [24, 12],
        "n_actions": 6,
        "activation": "tanh",
        "trunk": "separate",
    }
    path = tmp_path / "model.pt"
    digest = save_checkpoint(saved, path)
    loaded = load_checkpoint(path, expected_schema_hash="abc123", expected_sha256=digest)
    policy = load_policy(loaded)
    assert config_from_checkpoint(loaded) == (env_config, ppo_config)
    obs = torch.randn(50, 17)
    mask = torch.where(torch.rand(50, 1) < 0.5, FLAT, LONG)
    with torch.no_grad():
        assert torch.equal(
            policy.distribution(obs, mask).logits, result.policy.distribution(obs, mask).logits
        )
        assert torch.equal(policy.value(obs), result.policy.value(obs))
    assert loaded.optimiser_state is not None
    assert loaded.metrics == {"sharpe": 1.5}
    broken = loaded.config | {"network": {**loaded.config["network"], "hidden": [24]}}
    with pytest.raises(RuntimeError):
        load_policy(replace(loaded, config=broken))


def test_fast_tanh_is_tanh() -> None:
    policy = ActorCritic(4, (8,))
    x = torch.linspace(-20, 20, 4001, requires_grad=True)
    y = policy.actor[1](x)
    assert torch.allclose(y, torch.tanh(x), atol=1e-6)
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert torch.allclose(grad, 1 - torch.tanh(x.detach()) ** 2, atol=1e-6)


def test_actions_enum_order_is_what_the_network_indexes() -> None:
    assert [int(a) for a in AgentAction] == list(range(ActorCritic(3).n_actions))


def test_evaluation_windows_and_baselines() -> None:
    data = random_walk(3, bars=300)
    config = EnvConfig(episode_bars=50)
    symbols, starts = episode_windows(data, 50)
    assert symbols.tolist() == [0] * 5 + [1] * 5
    assert starts.tolist() == [0, 50, 100, 150, 200] * 2
    hold = evaluate(buy_and_hold(), data, config)
    assert hold.trades == 0
    assert hold.exposure == 1.0
    assert hold.steps == 50
    assert len(hold.episode_returns) == 10
    random = evaluate(random_valid(seed=4), data, config, record=True)
    assert random.trades > 10
    assert 0 < random.exposure < 1
    assert random.actions is not None
    assert random.actions.shape == (50, 10)
    again = evaluate(random_valid(seed=4), data, config)
    assert again.episode_returns == random.episode_returns
    assert random.t_statistic == pytest.approx(random.mean_return / (random.std_return / math.sqrt(10)))
    policy = make_policy(data.n_features + 10, PPOConfig())
    sampled = [evaluate_policy(policy, data, config, greedy=False, seed=s).episode_returns for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


def test_live_masks_are_the_env_masks() -> None:
    env = TradingEnv(random_walk(4), EnvConfig(n_envs=4, episode_bars=40))
    env.reset()
    env.step(torch.tensor([0, 1, 2, 3]))
    assert torch.equal(action_masks(env.has_position), env.mask)
    policy = make_policy(env.observation_size, PPOConfig())
    obs = torch.randn(4, env.observation_size, dtype=torch.float64)  # live rows may come as float64
    probabilities = policy.action_probabilities(obs, env.mask)
    assert probabilities.dtype == torch.float32
    assert bool((probabilities[~env.mask] == 0).all())
