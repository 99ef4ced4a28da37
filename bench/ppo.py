"""PPO training throughput: ours (huracan/rl/ppo.py on the vectorised TradingEnv) against
stable-baselines3 PPO on the same environment and the same network, in one run.

- Environment: the bundled real candles (BTC/ETH/SOL 5m), the 70 market features built and
  normalised as `huracan train` does (training split only), plus the 10 context features: an
  80-wide state, 6 actions, the default costs. SB3 gets it as a gymnasium env (TradingGymEnv: a
  TradingEnv of one episode), k of them in a DummyVecEnv for k SB3 envs. Plain SB3 PPO cannot
  mask actions, so an invalid action becomes the no-op of the current state (flat: DO_NOTHING;
  long: HOLD_POSITION); the share of such actions is reported. Rewards are the env's bps times
  our PPO's reward_scale (0.01): the reward our PPO learns from, so neither critic is handicapped.
- Network: separate actor and critic trunks of (64, 64) tanh for both (SB3: net_arch
  dict(pi=[64, 64], vf=[64, 64]), nn.Tanh), orthogonal init, Adam eps 1e-5; checked by parameter
  shapes. torch.set_num_threads(2) for both; SB3 on the CPU.
- Throughput = environment steps per second, rollout and update together, of the median timed
  rollout (the first, start-up, untimed): (a) ours at our best settings against SB3 at its defaults; (b) both at
  identical hyperparameters. The SB3 env wrapper's own step rate is printed too: it bounds SB3.
- Learning race on the planted-signal market (huracan/rl/synthetic.py): train ours (best settings)
  and SB3 (defaults) on seed 1; after an update, at most every 0.5 s of training, evaluate the
  greedy policy on seed 2 (out of sample) with huracan.rl.evaluate (SB3's actions through the same
  no-op mapping); Sharpe = mean / std of the
  episode returns, the oracle's included. Reported: training wall time (evaluation excluded, and
  reported separately) until the Sharpe first reaches 70% of the oracle's, or null if SB3 does
  not within its budget. Speed that does not learn does not count.

Prints readable lines, then one JSON line with every figure. Not part of the test suite.

    .venv/bin/python bench/ppo.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, SupportsFloat

import gymnasium
import numpy as np
import numpy.typing as npt
import orjson
import stable_baselines3
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.intents import ACTION_COUNT, AgentAction
from huracan.features.context import CONTEXT_WIDTH
from huracan.features.market import WARMUP_BARS, CostAssumptions
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.env import EnvConfig, MarketData, TradingEnv
from huracan.rl.evaluate import Strategy, evaluate, policy_strategy
from huracan.rl.ppo import IterationStats, PPOConfig, make_policy, train
from huracan.rl.synthetic import oracle_evaluation, planted, sharpe
from huracan.rl.trainer import Features, split_index
from huracan.rl.training_data import align

GOAL_RATIO = 50.0
TARGET_FRACTION = 0.7  # of the oracle Sharpe
THREADS = 2
STEADY_SPREAD = 1.25  # median over mean rate above this: some iterations were slowed
BUSY_LOAD = 0.7  # load average before we start: something else is running
EVAL_EVERY_S = 0.5  # of training time, at the first update after it
HOLDOUT_FRACTION = 0.2  # TrainSpec's default: the normaliser sees the training bars only
RACE_ENV = EnvConfig(episode_bars=128, seed=1)  # the honesty test's episodes and costs
# Tuned on this machine: against PPOConfig's defaults (4 epochs of 8192) two epochs of 16,384
# double the steps/s and also reach the race's target in about half the wall time.
OURS_BEST = PPOConfig(epochs=2, minibatch_size=16384)  # x 2048 envs x 64 steps, lr 1e-3
BEST_ENVS = 2048
SB3_NET = {"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh}
SB3_NAMES = {  # PPOConfig's name -> SB3's, for every hyperparameter both have
    "learning_rate": "learning_rate",
    "n_steps": "n_steps",
    "minibatch_size": "batch_size",
    "epochs": "n_epochs",
    "gamma": "gamma",
    "gae_lambda": "gae_lambda",
    "clip_range": "clip_range",
    "entropy_coef": "ent_coef",
    "value_coef": "vf_coef",
    "max_grad_norm": "max_grad_norm",
}
SB3_DEFAULTS = {name: inspect.signature(PPO).parameters[name].default for name in SB3_NAMES.values()}
IDENTICAL_ENVS = 8
# SB3's values where it has them (ent_coef: ours, 0.01, SB3's is 0); the same for both.
OURS_IDENTICAL = PPOConfig(n_steps=256, epochs=10, minibatch_size=64, learning_rate=3e-4, entropy_coef=0.01)
SB3_IDENTICAL = {sb3: getattr(OURS_IDENTICAL, ours) for ours, sb3 in SB3_NAMES.items()}


@dataclass(frozen=True, slots=True)
class Budget:
    ours_seconds: float  # of timed training per throughput figure
    sb3_rollouts: int  # timed, after one untimed
    wrapper_steps: int
    race_ours_s: float  # cap on training time
    race_sb3_s: float


FULL = Budget(ours_seconds=20.0, sb3_rollouts=15, wrapper_steps=20_000, race_ours_s=120.0, race_sb3_s=240.0)
QUICK = Budget(ours_seconds=4.0, sb3_rollouts=2, wrapper_steps=3_000, race_ours_s=30.0, race_sb3_s=15.0)


def no_op_if_invalid(actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What an unmasked policy's action means to the env: itself if valid, else the state's no-op."""
    valid = mask.gather(1, actions.long().unsqueeze(1)).squeeze(1)
    no_op = torch.where(mask[:, AgentAction.HOLD_POSITION], int(AgentAction.HOLD_POSITION), 0)
    return torch.where(valid, actions.long(), no_op)


class TradingGymEnv(gymnasium.Env[npt.NDArray[np.float32], np.int64]):
    """One TradingEnv episode at a time as a gymnasium env: the same observations, fills, costs,
    episode ends (drawdown = terminated; time limit and data end = truncated) and episode draws.
    The TradingEnv auto-resets; the new episode's first state is kept for the next reset()."""

    def __init__(self, data: MarketData, config: EnvConfig, reward_scale: float) -> None:
        self.env = TradingEnv(data, replace(config, n_envs=1, auto_reset=True))
        self.reward_scale = reward_scale
        size = self.env.observation_size
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self.action_space = gymnasium.spaces.Discrete(ACTION_COUNT)
        self._next: torch.Tensor | None = None
        self.steps = 0
        self.invalid = 0  # actions turned into the no-op

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[npt.NDArray[np.float32], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._next is None:
            obs, _ = self.env.reset(seed=seed)
        else:
            obs = self._next
        self._next = None
        return obs[0].numpy(), {}

    def step(
        self, action: np.int64
    ) -> tuple[npt.NDArray[np.float32], SupportsFloat, bool, bool, dict[str, Any]]:
        chosen = torch.tensor([int(action)])
        executed = no_op_if_invalid(chosen, self.env.mask)
        self.steps += 1
        self.invalid += int(executed[0] != chosen[0])
        result = self.env.step(executed)
        obs = result.obs
        if bool(result.done[0]):
            self._next, obs = result.obs, result.final_obs
        truncated = bool(result.truncated[0])
        terminated = bool(result.done[0]) and not truncated
        return obs[0].numpy(), float(result.reward[0]) * self.reward_scale, terminated, truncated, {}


def vec_env(data: MarketData, config: EnvConfig, n_envs: int) -> DummyVecEnv:
    def maker(seed: int) -> Callable[[], gymnasium.Env[npt.NDArray[np.float32], np.int64]]:
        return lambda: TradingGymEnv(data, replace(config, seed=seed), OURS_BEST.reward_scale)

    return DummyVecEnv([maker(config.seed + i) for i in range(n_envs)])


def sb3_model(env: DummyVecEnv, settings: dict[str, Any], seed: int = 0) -> PPO:
    return PPO("MlpPolicy", env, policy_kwargs=SB3_NET, device="cpu", seed=seed, verbose=0, **settings)


def invalid_share(env: DummyVecEnv) -> float:
    wrappers = [e for e in env.envs if isinstance(e, TradingGymEnv)]
    steps = sum(w.steps for w in wrappers)
    return sum(w.invalid for w in wrappers) / steps if steps else 0.0


def check_same_network(data: MarketData, env_config: EnvConfig) -> int:
    """Both networks have the same parameters in the same shapes, or the comparison is void."""
    theirs = sb3_model(vec_env(data, env_config, 1), SB3_DEFAULTS).policy
    ours = make_policy(data.n_features + CONTEXT_WIDTH, OURS_BEST)
    ours_shapes = sorted(tuple(p.shape) for p in ours.parameters())
    theirs_shapes = sorted(tuple(p.shape) for p in theirs.parameters())
    if ours_shapes != theirs_shapes:
        raise RuntimeError(f"networks differ: ours {ours_shapes}, SB3 {theirs_shapes}")
    return sum(p.numel() for p in ours.parameters())


def candle_market(env_config: EnvConfig) -> tuple[MarketData, tuple[str, ...]]:
    """The training split of the bundled candles, as `huracan train` prepares it."""
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    symbols = tuple(sorted(files))
    series = align(
        {s: read_candle_file(files[s]) for s in symbols}, min_bars=WARMUP_BARS + 4 * env_config.episode_bars
    )
    cost = CostAssumptions(
        taker_fee_bps=env_config.fee_bps,
        half_spread_bps=env_config.half_spread_bps,
        slippage_bps=env_config.slippage_bps,
    )
    features = Features.of(series, cost)
    split = split_index(features.n_bars, HOLDOUT_FRACTION, env_config.episode_bars)
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(features.market[:, :split].reshape(-1, MARKET_WIDTH))
    return features.market_data(normaliser, 0, split), symbols


class _Stop(Exception):
    """Raised from train()'s progress callback: the measurement has what it needs."""


@dataclass(frozen=True, slots=True)
class Rate:
    """Timed iterations (rollout + update) of `steps` env steps each. The figure is the median
    iteration's rate: other work on a shared 2-core machine slows some iterations, not the code."""

    steps: int  # per iteration
    seconds: tuple[float, ...]

    @property
    def per_second(self) -> float:
        return self.steps / statistics.median(self.seconds)

    @property
    def mean_per_second(self) -> float:
        return self.steps * len(self.seconds) / sum(self.seconds)

    @property
    def steady(self) -> bool:
        """Iterations of one config take about the same time unless something else ran."""
        return self.per_second <= STEADY_SPREAD * self.mean_per_second


def ours_rate(data: MarketData, env_config: EnvConfig, config: PPOConfig, seconds: float) -> Rate:
    """Iterations after the first, until `seconds` of them are timed (train()'s own timing:
    rollout + GAE + update, nothing else)."""
    timed: list[IterationStats] = []

    def progress(stats: IterationStats) -> None:
        if stats.iteration > 1:
            timed.append(stats)
        if sum(s.rollout_seconds + s.update_seconds for s in timed) >= seconds:
            raise _Stop

    with contextlib.suppress(_Stop):
        train(TradingEnv(data, env_config), config, 10**12, progress)
    return Rate(
        config.n_steps * env_config.n_envs, tuple(s.rollout_seconds + s.update_seconds for s in timed)
    )


def sb3_rate(
    data: MarketData, env_config: EnvConfig, n_envs: int, settings: dict[str, Any], rollouts: int
) -> Rate:
    """One untimed rollout + update, then `rollouts` timed ones (learn() of exactly one each)."""
    torch.set_num_threads(THREADS)
    model = sb3_model(vec_env(data, env_config, n_envs), settings)
    per_rollout = int(settings["n_steps"]) * n_envs
    model.learn(per_rollout)
    seconds: list[float] = []
    for _ in range(rollouts):
        started = time.perf_counter()
        model.learn(per_rollout, reset_num_timesteps=False)
        seconds.append(time.perf_counter() - started)
    return Rate(per_rollout, tuple(seconds))


def wrapper_rate(data: MarketData, env_config: EnvConfig, steps: int) -> Rate:
    """The gymnasium wrapper alone, random actions: the most SB3 could do on this env."""
    env = TradingGymEnv(data, env_config, 1.0)
    env.reset(seed=0)
    draws = np.random.default_rng(0).integers(0, ACTION_COUNT, steps)
    started = time.perf_counter()
    for action in draws:
        _, _, terminated, truncated, _ = env.step(np.int64(action))
        if terminated or truncated:
            env.reset()
    return Rate(steps, (time.perf_counter() - started,))


@dataclass(slots=True)
class Race:
    """Training time (evaluation excluded) and Sharpe at each evaluation, until the target."""

    target: float
    budget_s: float
    train_s: float = 0.0
    eval_s: float = 0.0
    steps: int = 0
    reached_s: float | None = None
    reached_steps: int | None = None
    last_eval_at: float = -math.inf
    curve: list[tuple[float, float]] | None = None

    @property
    def best_sharpe(self) -> float:
        return max((value for _, value in self.curve or []), default=math.nan)

    def due(self) -> bool:
        return self.train_s - self.last_eval_at >= EVAL_EVERY_S

    def score(self, strategy: Strategy, data: MarketData) -> bool:
        """Evaluate out of sample; True when the target is reached (or the budget spent)."""
        started = time.perf_counter()
        value = sharpe(evaluate(strategy, data, RACE_ENV))
        self.eval_s += time.perf_counter() - started
        self.last_eval_at = self.train_s
        self.curve = [*(self.curve or []), (round(self.train_s, 2), round(value, 3))]
        if value >= self.target and self.reached_s is None:
            self.reached_s, self.reached_steps = self.train_s, self.steps
        return self.reached_s is not None or self.train_s >= self.budget_s


def race_ours(train_data: MarketData, eval_data: MarketData, target: float, budget_s: float) -> Race:
    race = Race(target, budget_s)
    env_config = replace(RACE_ENV, n_envs=BEST_ENVS)
    env = TradingEnv(train_data, env_config)
    policy = make_policy(env.observation_size, OURS_BEST)
    strategy = policy_strategy(policy, greedy=True)
    started = time.perf_counter()

    def progress(stats: IterationStats) -> None:
        race.train_s = time.perf_counter() - started - race.eval_s
        race.steps = stats.env_steps
        if race.due() and race.score(strategy, eval_data):
            raise _Stop
        if race.train_s >= budget_s:
            raise _Stop

    with contextlib.suppress(_Stop):
        train(env, OURS_BEST, 10**12, progress, policy=policy)
    return race


def race_sb3(
    train_data: MarketData, eval_data: MarketData, target: float, budget_s: float
) -> tuple[Race, float]:
    race = Race(target, budget_s)
    torch.set_num_threads(THREADS)
    env = vec_env(train_data, RACE_ENV, 1)
    model = sb3_model(env, SB3_DEFAULTS)
    per_rollout = int(SB3_DEFAULTS["n_steps"])

    def strategy(obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        actions, _ = model.predict(obs.numpy(), deterministic=True)
        return no_op_if_invalid(torch.as_tensor(actions), mask)

    started = time.perf_counter()
    while race.train_s < budget_s:
        model.learn(per_rollout, reset_num_timesteps=race.steps == 0)
        race.train_s = time.perf_counter() - started - race.eval_s
        race.steps = model.num_timesteps
        if race.due() and race.score(strategy, eval_data):
            break
    return race, invalid_share(env)


def line(label: str, ours: float, theirs: float) -> str:
    return f"{label:44}{ours:>14,.0f}{theirs:>14,.0f}{ours / theirs:>10.1f}x"


def reached(race: Race) -> str:
    if race.reached_s is None:
        return f"not reached in {race.budget_s:.0f} s of training"
    return f"reached in {race.reached_s:.1f} s ({race.reached_steps:,} steps; evaluation {race.eval_s:.1f} s more)"


def race_figures(name: str, race: Race) -> dict[str, float | int | None]:
    return {
        f"{name}_seconds_to_target": None if race.reached_s is None else round(race.reached_s, 2),
        f"{name}_steps_to_target": race.reached_steps,
        f"{name}_eval_seconds": round(race.eval_s, 2),
        f"{name}_best_sharpe": round(race.best_sharpe, 4),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller budgets: a smoke run, < 2 min")
    args = parser.parse_args(argv)
    budget = QUICK if args.quick else FULL
    started = time.perf_counter()
    load_start = os.getloadavg()
    torch.set_num_threads(THREADS)

    best_env = EnvConfig(n_envs=BEST_ENVS, seed=0)
    loading = time.perf_counter()
    data, symbols = candle_market(best_env)
    load_s = time.perf_counter() - loading
    params = check_same_network(data, best_env)
    print(
        f"real candles: {', '.join(symbols)} 5m, {data.n_bars:,} bars (training split) x {data.n_features} "
        f"features + {CONTEXT_WIDTH} context = {data.n_features + CONTEXT_WIDTH} state; built in {load_s:.1f} s"
    )
    print(
        f"network: separate actor/critic trunks (64, 64) tanh, {params:,} parameters, same shapes in both; "
        f"torch threads {THREADS}, {os.cpu_count()} CPUs, load {load_start[0]:.2f}"
    )
    print("SB3 cannot mask: an invalid action is executed as the no-op (flat: DO_NOTHING; long: HOLD)")

    wrapper = wrapper_rate(data, best_env, budget.wrapper_steps)
    best_ours = ours_rate(data, best_env, OURS_BEST, budget.ours_seconds)
    best_sb3 = sb3_rate(data, best_env, 1, SB3_DEFAULTS, budget.sb3_rollouts)
    identical_env = replace(best_env, n_envs=IDENTICAL_ENVS)
    same_ours = ours_rate(data, identical_env, OURS_IDENTICAL, budget.ours_seconds)
    same_sb3 = sb3_rate(data, identical_env, IDENTICAL_ENVS, SB3_IDENTICAL, budget.sb3_rollouts)

    train_market, eval_market = planted(seed=1), planted(seed=2)
    oracle = sharpe(oracle_evaluation(eval_market, RACE_ENV))
    target = TARGET_FRACTION * oracle
    ours_race = race_ours(train_market, eval_market, target, budget.race_ours_s)
    sb3_race, sb3_invalid = race_sb3(train_market, eval_market, target, budget.race_sb3_s)
    load_end = os.getloadavg()

    rates = (best_ours, best_sb3, same_ours, same_sb3)
    disturbed = load_start[0] > BUSY_LOAD or not all(r.steady for r in rates)
    best_ratio = best_ours.per_second / best_sb3.per_second
    same_ratio = same_ours.per_second / same_sb3.per_second
    print(f"\n{'steps/s (rollout + update), median rollout':44}{'huracan':>14}{'SB3':>14}{'ratio':>11}")
    print(line("(a) ours best vs SB3 defaults", best_ours.per_second, best_sb3.per_second))
    print(line("(b) identical hyperparameters", same_ours.per_second, same_sb3.per_second))
    print(f"{'SB3 env wrapper alone (random actions)':44}{'':>14}{wrapper.per_second:>14,.0f}")
    print(
        f"goal: >= {GOAL_RATIO:.0f}x at our best settings: {'pass' if best_ratio >= GOAL_RATIO else 'MISS'}"
    )
    print(
        f"\nplanted signal, out of sample: oracle Sharpe {oracle:.3f}, target {TARGET_FRACTION:.0%} = {target:.3f}"
    )
    print(f"  huracan (best settings): {reached(ours_race)}")
    print(f"  SB3 (defaults):          {reached(sb3_race)}")
    print(f"  best Sharpe seen: huracan {ours_race.best_sharpe:.3f}, SB3 {sb3_race.best_sharpe:.3f}")
    print(
        f"  SB3 actions turned into the no-op (invalid): {sb3_invalid:.1%}; load at the end {load_end[0]:.2f}"
    )

    named = {
        "best_ours": best_ours,
        "best_sb3": best_sb3,
        "identical_ours": same_ours,
        "identical_sb3": same_sb3,
    }
    result: dict[str, Any] = {
        "quick": args.quick,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": THREADS,
        "load_average_start": round(load_start[0], 2),
        "load_average_end": round(load_end[0], 2),
        "disturbed": disturbed,
        "state_width": data.n_features + CONTEXT_WIDTH,
        "network_parameters": params,
        **{f"{name}_steps_per_s": round(rate.per_second) for name, rate in named.items()},
        "best_ratio": round(best_ratio, 2),
        "identical_ratio": round(same_ratio, 2),
        "throughput_statistic": "median over timed rollouts (each rollout + its update)",
        **{f"{name}_mean_steps_per_s": round(rate.mean_per_second) for name, rate in named.items()},
        "timed_steps": {name: rate.steps * len(rate.seconds) for name, rate in named.items()},
        "sb3_wrapper_env_steps_per_s": round(wrapper.per_second),
        "goal_ratio": GOAL_RATIO,
        "goal_met": best_ratio >= GOAL_RATIO,
        "oracle_sharpe": round(oracle, 4),
        "target_sharpe": round(target, 4),
        **race_figures("ours", ours_race),
        **race_figures("sb3", sb3_race),
        "sb3_budget_s": budget.race_sb3_s,
        "sb3_invalid_action_share": round(sb3_invalid, 4),
        "settings": {
            "best_ours": asdict(OURS_BEST) | {"n_envs": BEST_ENVS},
            "best_sb3": SB3_DEFAULTS | {"n_envs": 1},
            "identical_ours": asdict(OURS_IDENTICAL) | {"n_envs": IDENTICAL_ENVS},
            "identical_sb3": SB3_IDENTICAL | {"n_envs": IDENTICAL_ENVS},
            "race_env": asdict(RACE_ENV),
            "eval_every_s": EVAL_EVERY_S,
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if disturbed:
        print(
            f"WARNING: the figures look disturbed (load {load_start[0]:.2f} at the start, or uneven "
            "rollout times); re-run on a quiet machine"
        )
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
