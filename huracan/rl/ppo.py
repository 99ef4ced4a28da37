"""PPO for the trading env: rollouts of N envs x n_steps, GAE, clipped minibatch updates.

Choices worth knowing:
- Time limits and the data end are not terminal states: the observation gives the agent no
  clock, so a reset there is not a consequence of anything it did. Their reward gets
  gamma * V(last state) added (the stable-baselines3 treatment); a drawdown stop is terminal.
- Rewards are scaled by reward_scale (bps -> ~percent) so that the value loss does not dominate
  the clipped gradient norm and drown the policy gradient.
- Deterministic under a seed: the network is initialised under the seed, sampling and minibatch
  order use generators of their own, and the env is re-seeded from its config at the start. A run
  repeats bit for bit with the same seeds, data and thread count.
- The defaults are tuned for ~2,048 envs x 64 steps on a 2-core CPU: about 0.1 s of rollout and
  0.6 s of update per 131k env steps (~200k steps/s with the 80-wide state), which learns the
  planted-signal test to its optimum in ~30 iterations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from huracan.rl.checkpoint import Checkpoint
from huracan.rl.env import EnvConfig, TradingEnv
from huracan.rl.policy import ActorCritic


@dataclass(frozen=True, slots=True)
class PPOConfig:
    n_steps: int = 64  # per env per rollout
    epochs: int = 4
    minibatch_size: int = 8192
    learning_rate: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    entropy_coef: float = 0.01
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalise_advantages: bool = True
    reward_scale: float = 0.01  # rewards are bps; x0.01 makes returns O(1) for the critic
    hidden: tuple[int, ...] = (64, 64)
    seed: int = 0
    torch_threads: int = 2  # set for the run and restored after; results repeat per thread count

    def __post_init__(self) -> None:
        if min(self.n_steps, self.epochs, self.minibatch_size, self.torch_threads) < 1:
            raise ValueError("n_steps, epochs, minibatch_size and torch_threads must be >= 1")
        if not (0 < self.gamma <= 1 and 0 <= self.gae_lambda <= 1):
            raise ValueError("gamma must be in (0, 1] and gae_lambda in [0, 1]")


@dataclass(frozen=True, slots=True)
class IterationStats:
    iteration: int
    env_steps: int  # total so far
    steps_per_second: float  # this iteration, rollout + update
    rollout_seconds: float
    update_seconds: float
    episodes: int  # ended in this rollout
    mean_episode_return: float  # fraction; NaN when no episode ended
    entropy: float
    policy_loss: float
    value_loss: float
    approx_kl: float
    clip_fraction: float
    explained_variance: float


@dataclass(slots=True)
class TrainResult:
    policy: ActorCritic
    optimiser: torch.optim.Adam
    stats: list[IterationStats] = field(default_factory=list)
    env_steps: int = 0
    seconds: float = 0.0

    @property
    def steps_per_second(self) -> float:
        return self.env_steps / self.seconds if self.seconds > 0 else 0.0


@dataclass(slots=True)
class Rollout:
    obs: torch.Tensor  # [n_steps, N, D]
    masks: torch.Tensor  # [n_steps, N, A] bool
    actions: torch.Tensor  # [n_steps, N]
    log_probs: torch.Tensor
    values: torch.Tensor
    rewards: torch.Tensor  # scaled, truncation bootstrap included
    dones: torch.Tensor  # float: 1 where the step ended the episode

    @classmethod
    def empty(cls, n_steps: int, n_envs: int, obs_size: int, n_actions: int, device: torch.device) -> Rollout:
        def f32(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, dtype=torch.float32, device=device)

        return cls(
            obs=f32(n_steps, n_envs, obs_size),
            masks=torch.zeros(n_steps, n_envs, n_actions, dtype=torch.bool, device=device),
            actions=torch.zeros(n_steps, n_envs, dtype=torch.long, device=device),
            log_probs=f32(n_steps, n_envs),
            values=f32(n_steps, n_envs),
            rewards=f32(n_steps, n_envs),
            dones=f32(n_steps, n_envs),
        )


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, returns), [T, N]. dones[t] = 1 when step t ended the episode, so values[t+1]
    belongs to the next one and is not bootstrapped through."""
    advantages = torch.zeros_like(rewards)
    running = torch.zeros_like(last_value)
    next_value = last_value
    for t in range(rewards.shape[0] - 1, -1, -1):
        carry = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * carry - values[t]
        running = delta + gamma * gae_lambda * carry * running
        advantages[t] = running
        next_value = values[t]
    return advantages, advantages + values


def make_policy(observation_size: int, config: PPOConfig) -> ActorCritic:
    """The network initialised under the config's seed, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return ActorCritic(observation_size, config.hidden)


def collect(
    env: TradingEnv,
    policy: ActorCritic,
    config: PPOConfig,
    rollout: Rollout,
    obs: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[float]]:
    """Fill `rollout`; returns the next (obs, mask), the value of that obs and ended episodes' returns."""
    finished: list[torch.Tensor] = []
    with torch.inference_mode():
        for t in range(config.n_steps):
            action, log_prob, value = policy.act(obs, mask, generator=generator)
            rollout.obs[t] = obs
            rollout.masks[t] = mask
            rollout.actions[t] = action
            rollout.log_probs[t] = log_prob
            rollout.values[t] = value
            result = env.step(action)
            reward = result.reward * config.reward_scale
            if bool(result.done.any()):
                truncated = result.truncated.nonzero().squeeze(1)
                if truncated.numel():
                    tail = policy.value(result.final_obs.index_select(0, truncated))
                    reward = reward.index_add(0, truncated, config.gamma * tail)
                finished.append(result.episode_return[result.done])
            rollout.rewards[t] = reward
            rollout.dones[t] = result.done
            obs, mask = result.obs, result.mask
        last_value = policy.value(obs)
    returns = torch.cat(finished).tolist() if finished else []
    return obs, mask, last_value, returns


def _explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    variance = float(target.var())
    return float("nan") if variance == 0 else 1.0 - float((target - predicted).var()) / variance


def update(
    policy: ActorCritic,
    optimiser: torch.optim.Optimizer,
    config: PPOConfig,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    generator: torch.Generator,
) -> dict[str, float]:
    obs = rollout.obs.flatten(0, 1)
    masks = rollout.masks.flatten(0, 1)
    actions = rollout.actions.flatten()
    old_log_probs = rollout.log_probs.flatten()
    advantages = advantages.flatten()
    returns = returns.flatten()
    batch = obs.shape[0]
    size = min(config.minibatch_size, batch)
    totals = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clip_fraction": 0.0}
    count = 0
    for _ in range(config.epochs):
        order = torch.randperm(batch, generator=generator, device=obs.device)
        for begin in range(0, batch - size + 1, size):
            idx = order[begin : begin + size]
            log_prob, entropy, value = policy.evaluate_actions(obs[idx], masks[idx], actions[idx])
            adv = advantages[idx]
            if config.normalise_advantages:
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
            log_ratio = log_prob - old_log_probs[idx]
            ratio = log_ratio.exp()
            clipped = ratio.clamp(1.0 - config.clip_range, 1.0 + config.clip_range)
            policy_loss = -torch.minimum(ratio * adv, clipped * adv).mean()
            value_loss = 0.5 * (value - returns[idx]).pow(2).mean()
            entropy_mean = entropy.mean()
            loss = policy_loss + config.value_coef * value_loss - config.entropy_coef * entropy_mean
            optimiser.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimiser.step()
            with torch.no_grad():
                totals["policy_loss"] += float(policy_loss)
                totals["value_loss"] += float(value_loss)
                totals["entropy"] += float(entropy_mean)
                totals["approx_kl"] += float(((ratio - 1.0) - log_ratio).mean())
                totals["clip_fraction"] += float(((ratio - 1.0).abs() > config.clip_range).float().mean())
            count += 1
    return {k: v / max(count, 1) for k, v in totals.items()}


def train(
    env: TradingEnv,
    config: PPOConfig,
    total_steps: int,
    progress: Callable[[IterationStats], None] | None = None,
    *,
    policy: ActorCritic | None = None,
    optimiser: torch.optim.Adam | None = None,
) -> TrainResult:
    """Train for at least `total_steps` env steps (whole rollouts of n_envs x n_steps). A policy
    and optimiser may be passed to continue training; otherwise they start from the seed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        return _train(env, config, total_steps, progress, policy, optimiser)
    finally:
        torch.set_num_threads(threads)


def _train(
    env: TradingEnv,
    config: PPOConfig,
    total_steps: int,
    progress: Callable[[IterationStats], None] | None,
    policy: ActorCritic | None,
    optimiser: torch.optim.Adam | None,
) -> TrainResult:
    if not env.config.auto_reset:
        raise ValueError("training needs an env with auto_reset: a frozen env stops producing experience")
    device = env.device
    policy = policy if policy is not None else make_policy(env.observation_size, config).to(device)
    if optimiser is None:
        optimiser = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    sampling = torch.Generator(device=device)
    sampling.manual_seed(config.seed)
    shuffling = torch.Generator(device=device)
    shuffling.manual_seed(config.seed + 1)
    result = TrainResult(policy, optimiser)
    obs, mask = env.reset(seed=env.config.seed, stagger=True)
    rollout = Rollout.empty(config.n_steps, env.n_envs, env.observation_size, policy.n_actions, device)
    per_iteration = config.n_steps * env.n_envs
    iterations = max(1, -(-total_steps // per_iteration))
    for iteration in range(1, iterations + 1):
        started = time.perf_counter()
        policy.eval()
        obs, mask, last_value, episode_returns = collect(env, policy, config, rollout, obs, mask, sampling)
        advantages, returns = compute_gae(
            rollout.rewards, rollout.values, rollout.dones, last_value, config.gamma, config.gae_lambda
        )
        collected = time.perf_counter()
        policy.train()
        losses = update(policy, optimiser, config, rollout, advantages, returns, shuffling)
        finished = time.perf_counter()
        result.env_steps += per_iteration
        result.seconds += finished - started
        stats = IterationStats(
            iteration=iteration,
            env_steps=result.env_steps,
            steps_per_second=per_iteration / (finished - started),
            rollout_seconds=collected - started,
            update_seconds=finished - collected,
            episodes=len(episode_returns),
            mean_episode_return=sum(episode_returns) / len(episode_returns)
            if episode_returns
            else float("nan"),
            explained_variance=_explained_variance(rollout.values.flatten(), returns.flatten()),
            **losses,
        )
        result.stats.append(stats)
        if progress is not None:
            progress(stats)
    policy.eval()
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def checkpoint(
    policy: ActorCritic,
    optimiser: torch.optim.Optimizer | None,
    env_config: EnvConfig,
    ppo_config: PPOConfig,
    *,
    schema_hash: str,
    feature_names: tuple[str, ...],
    normaliser: dict[str, Any],
    metrics: dict[str, float] | None = None,
) -> Checkpoint:
    """A Checkpoint of plain values: config = {"network", "env", "ppo"}; tensors copied to CPU."""
    return Checkpoint(
        schema_hash=schema_hash,
        feature_names=tuple(feature_names),
        policy_state={k: v.detach().to("cpu").clone() for k, v in policy.state_dict().items()},
        normaliser=normaliser,
        config={
            "network": _plain(policy.shape()),
            "env": _plain(asdict(env_config)),
            "ppo": _plain(asdict(ppo_config)),
        },
        optimiser_state=optimiser.state_dict() if optimiser is not None else None,
        metrics=dict(metrics or {}),
    )


def config_from_checkpoint(saved: Checkpoint) -> tuple[EnvConfig, PPOConfig]:
    """The EnvConfig and PPOConfig a checkpoint was trained with."""
    ppo = dict(saved.config["ppo"])
    ppo["hidden"] = tuple(ppo["hidden"])
    return EnvConfig(**saved.config["env"]), PPOConfig(**ppo)
