"""Play a policy or a fixed strategy over data, one episode per window, and measure it.

Windows are non-overlapping episode_bars-long stretches of every symbol after the warm-up, run
as one batch of envs with auto-reset off; an env that ends early (drawdown, data end) freezes.
Strategies see exactly what the policy sees (observation and mask), so baselines and the agent
are measured by the same env and the same costs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from huracan.core.intents import AgentAction
from huracan.rl.env import EnvConfig, MarketData, TradingEnv
from huracan.rl.policy import ActorCritic

Strategy = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (obs [N, D], mask [N, A]) -> actions [N]


def buy_and_hold() -> Strategy:
    """Enter a normal position at the first chance and hold it to the episode's end."""

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        enter = mask[:, AgentAction.ENTER_LONG_NORMAL]
        return torch.where(enter, int(AgentAction.ENTER_LONG_NORMAL), int(AgentAction.HOLD_POSITION))

    return act


def random_valid(seed: int) -> Strategy:
    """Uniform over the valid actions, seeded: the agent must beat paying costs at random."""
    generator = torch.Generator()
    generator.manual_seed(seed)

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.multinomial(mask.float().cpu(), 1, generator=generator).squeeze(1).to(mask.device)

    return act


def policy_strategy(policy: ActorCritic, *, greedy: bool = True, seed: int = 0) -> Strategy:
    generator = torch.Generator()
    generator.manual_seed(seed)

    def act(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            dist = policy.distribution(obs, mask)
            return dist.greedy() if greedy else dist.sample(generator)

    return act


@dataclass(frozen=True, slots=True)
class Evaluation:
    episode_returns: tuple[float, ...]  # fraction, one per window
    mean_return: float
    std_return: float
    t_statistic: float  # mean / standard error; 0 when every episode returned the same
    total_return: float  # sum of episode returns: the PnL of one unit staked in every window
    trades: int  # closed round trips
    win_rate: float  # NaN without trades
    exposure: float  # fraction of steps ending long
    max_drawdown: float  # worst in any episode
    steps: int
    # With record=True: actions [steps, N] (-1 after an env ended), its symbols and starts.
    actions: torch.Tensor | None = None
    symbols: torch.Tensor | None = None
    starts: torch.Tensor | None = None


def episode_windows(data: MarketData, episode_bars: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(symbols, starts) of every whole non-overlapping window after the warm-up."""
    last = data.n_bars - episode_bars - 1
    if last < data.first_valid:
        raise ValueError(f"{data.n_bars} bars hold no {episode_bars}-bar window after bar {data.first_valid}")
    starts = torch.arange(data.first_valid, last + 1, episode_bars)
    symbols = torch.arange(data.n_symbols).repeat_interleave(len(starts))
    return symbols, starts.repeat(data.n_symbols)


def evaluate(
    strategy: Strategy,
    data: MarketData,
    env_config: EnvConfig,
    *,
    symbols: torch.Tensor | None = None,
    starts: torch.Tensor | None = None,
    record: bool = False,
) -> Evaluation:
    """Run `strategy` on the given episodes (default: episode_windows) until all have ended."""
    if symbols is None or starts is None:
        symbols, starts = episode_windows(data, env_config.episode_bars)
    config = replace(env_config, n_envs=len(starts), auto_reset=False)
    env = TradingEnv(data, config)
    obs, mask = env.reset(symbols=symbols, starts=starts)
    returns = torch.full((config.n_envs,), math.nan, dtype=torch.float64, device=env.device)
    long_steps = 0
    live_steps = 0
    max_drawdown = torch.zeros(config.n_envs, dtype=torch.float64, device=env.device)
    history: list[torch.Tensor] = []
    steps = 0
    while not bool(env.finished.all()):
        live = env.finished.logical_not()
        actions = strategy(obs, mask)
        if record:
            history.append(torch.where(live, actions, -1))
        result = env.step(actions)
        returns = torch.where(result.done, result.episode_return, returns)
        long_steps += int((env.has_position & live).sum())
        live_steps += int(live.sum())
        max_drawdown = torch.maximum(max_drawdown, env.drawdown)
        obs, mask = result.obs, result.mask
        steps += 1
    values = returns.tolist()
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    t_stat = mean / (std / math.sqrt(n)) if std > 0 else 0.0 if mean == 0 else math.copysign(math.inf, mean)
    trades = int(env.episode_trades.sum())
    return Evaluation(
        episode_returns=tuple(values),
        mean_return=mean,
        std_return=std,
        t_statistic=t_stat,
        total_return=sum(values),
        trades=trades,
        win_rate=int(env.episode_wins.sum()) / trades if trades else math.nan,
        exposure=long_steps / live_steps if live_steps else 0.0,
        max_drawdown=float(max_drawdown.max()),
        steps=steps,
        actions=torch.stack(history) if record and history else None,
        symbols=symbols if record else None,
        starts=starts if record else None,
    )


def evaluate_policy(
    policy: ActorCritic,
    data: MarketData,
    env_config: EnvConfig,
    *,
    greedy: bool = True,
    seed: int = 0,
    record: bool = False,
) -> Evaluation:
    return evaluate(policy_strategy(policy, greedy=greedy, seed=seed), data, env_config, record=record)
