"""A champion model for runs that need the daemon to trade, not to trade well (chaos runs,
benchmarks): an untrained policy whose head is biased to enter when flat and now and then to
exit when long, sampled (agent.greedy: false). What matters there is the order path it drives.

    series = {s: read_candle_file(path) for s, path in ...}
    await register_biased_champion(pool, config, series)   # then start the daemon on `config`
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import asyncpg
import torch

from huracan.config import HuracanConfig
from huracan.core.candle import CandleSeries
from huracan.features.market import CostAssumptions
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH, STATE_SCHEMA
from huracan.rl.checkpoint import save_checkpoint
from huracan.rl.env import EnvConfig
from huracan.rl.ppo import PPOConfig, checkpoint, make_policy
from huracan.rl.registry import ModelRecord, ModelRegistry, model_dir_of
from huracan.rl.trainer import Features

# Policy head bias, by AgentAction (DO_NOTHING, ENTER_LONG_SMALL, _NORMAL, _LARGE, EXIT_POSITION,
# HOLD_POSITION): flat -> ENTER_LONG_SMALL with p ~0.87; long -> EXIT with p ~0.1.
HEAD_BIAS = (0.0, 3.0, 0.0, 0.0, -2.2, 0.0)


def save_biased_model(
    series: Mapping[str, CandleSeries], path: Path, *, bars_per_day: int = 288, pattern_memory: bool = False
) -> Path:
    """Write the biased, untrained checkpoint to `path`. The normaliser is fitted on the market
    features of `series` (aligned bar times), so the inputs the daemon feeds it are in range.
    pattern_memory: declared trained on the pattern memory, so the daemon feeds it the real
    figures (its untrained weights then make its decisions depend on them: tests of that path)."""
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(Features.of(series, CostAssumptions()).market.reshape(-1, MARKET_WIDTH))
    config = PPOConfig(seed=0)
    policy = make_policy(STATE_SCHEMA.size, config)
    with torch.no_grad():
        policy.policy_head.bias.copy_(torch.tensor(HEAD_BIAS))
    saved = checkpoint(
        policy,
        None,
        EnvConfig(bars_per_day=bars_per_day),
        config,
        schema_hash=STATE_SCHEMA.hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=normaliser.state(),
    )
    if pattern_memory:
        saved = replace(saved, config={**saved.config, "training": {"pattern_memory_rows": 1.0}})
    save_checkpoint(saved, path)
    return path


async def register_biased_champion(
    pool: asyncpg.Pool,
    config: HuracanConfig,
    series: Mapping[str, CandleSeries],
    *,
    version: str = "biased-untrained",
    bars_per_day: int = 288,
    pattern_memory: bool = False,
) -> ModelRecord:
    """Save the biased model into the model directory of `config`, register it and make it the
    champion: a daemon started on `config` (and this database) decides with it."""
    model_dir = model_dir_of(config)
    model_dir.mkdir(parents=True, exist_ok=True)
    path = save_biased_model(
        series, model_dir.parent / f"{version}.pt", bars_per_day=bars_per_day, pattern_memory=pattern_memory
    )
    registry = ModelRegistry(pool, model_dir)
    record = await registry.register(
        path, version=version, notes="huracan.testing.champion: biased, untrained"
    )
    return await registry.promote(record.version, expected_schema_hash=STATE_SCHEMA.hash)
