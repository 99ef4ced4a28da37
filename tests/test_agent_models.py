"""The daemon's model slots against the real registry: a promoted model is picked up, a corrupt
or foreign artefact is refused with the running model kept, an A/B challenger gets its share."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import numpy as np
import pytest
import torch

from huracan.agent.models import ModelSlots
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH, STATE_SCHEMA
from huracan.rl.checkpoint import save_checkpoint
from huracan.rl.env import EnvConfig
from huracan.rl.ppo import PPOConfig, checkpoint, make_policy
from huracan.rl.registry import ModelRegistry

pytestmark = pytest.mark.db
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "ADA/USDT", "XRP/USDT")


def model_file(path: Path, seed: int, schema_hash: str = STATE_SCHEMA.hash) -> Path:
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(np.random.default_rng(seed).normal(size=(100, MARKET_WIDTH)))
    config = PPOConfig(seed=seed)
    torch.manual_seed(seed)
    saved = checkpoint(
        make_policy(STATE_SCHEMA.size, config),
        None,
        EnvConfig(),
        config,
        schema_hash=schema_hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=normaliser.state(),
    )
    save_checkpoint(saved, path)
    return path


def champion_of(slots: ModelSlots) -> str | None:
    return slots.champion.version if slots.champion else None


async def test_slots_follow_the_registry_and_keep_a_model_that_works(
    db_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    registry = ModelRegistry(db_pool, tmp_path / "models")
    slots = ModelSlots(registry, SYMBOLS, bars_per_day=288)
    await slots.refresh()
    assert champion_of(slots) is None
    assert slots.deciders() == []

    first = await registry.register(model_file(tmp_path / "a.pt", 1))
    await registry.promote(first.version, expected_schema_hash=STATE_SCHEMA.hash)
    await slots.refresh()
    assert champion_of(slots) == first.version

    # A second model is promoted, then its file is damaged before the daemon loads it.
    second = await registry.register(model_file(tmp_path / "b.pt", 2))
    await registry.promote(second.version, expected_schema_hash=STATE_SCHEMA.hash)
    artefact = registry.model_dir / f"{second.version}.pt"
    data = bytearray(artefact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artefact.write_bytes(bytes(data))
    await slots.refresh()
    assert champion_of(slots) == first.version  # kept: the new one failed its hash
    await slots.refresh()  # refused once, quietly the next times
    assert champion_of(slots) == first.version

    # Rolled back to the first: nothing to load again, it is already running.
    await registry.rollback(to_version=first.version, expected_schema_hash=STATE_SCHEMA.hash)
    await slots.refresh()
    assert champion_of(slots) == first.version


async def test_an_ab_challenger_decides_for_its_share(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    registry = ModelRegistry(db_pool, tmp_path / "models")
    champion = await registry.register(model_file(tmp_path / "a.pt", 1))
    await registry.promote(champion.version, expected_schema_hash=STATE_SCHEMA.hash)
    challenger = await registry.register(model_file(tmp_path / "b.pt", 2))
    await registry.start_ab(challenger.version, share=0.4, expected_schema_hash=STATE_SCHEMA.hash)
    slots = ModelSlots(registry, SYMBOLS, bars_per_day=288)
    await slots.refresh()
    deciders = slots.deciders()
    assert [(r.version, len(s), shadow) for r, s, shadow in deciders] == [
        (champion.version, 5, False),
        (challenger.version, 2, True),
    ]
    await registry.stop_ab()
    await slots.refresh()
    assert [shadow for _, _, shadow in slots.deciders()] == [False]


async def test_a_model_of_another_timeframe_is_refused(db_pool: asyncpg.Pool, tmp_path: Path) -> None:
    registry = ModelRegistry(db_pool, tmp_path / "models")
    five_minute = await registry.register(model_file(tmp_path / "a.pt", 1))  # EnvConfig(): 288 bars a day
    await registry.promote(five_minute.version, expected_schema_hash=STATE_SCHEMA.hash)
    hourly = ModelSlots(registry, SYMBOLS, bars_per_day=24)
    await hourly.refresh()
    assert hourly.deciders() == []
    five_minute_slots = ModelSlots(registry, SYMBOLS, bars_per_day=288)
    await five_minute_slots.refresh()
    assert champion_of(five_minute_slots) == five_minute.version
