"""The model registry against PostgreSQL with real checkpoint files: registration, promotion,
rollback, A/B tests, refusing corrupt or foreign artefacts, concurrent promotes; and the
challenger's symbol draw."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import asyncpg
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from huracan.rl.checkpoint import (
    ArtefactCorrupt,
    Checkpoint,
    CheckpointError,
    SchemaMismatch,
    save_checkpoint,
)
from huracan.rl.registry import (
    ModelRegistry,
    NothingToRollBack,
    RegistryError,
    UnknownModel,
    challenger_symbols,
    version_name,
)

SCHEMA = "a1" * 32
OTHER_SCHEMA = "b2" * 32


def make_checkpoint(path: Path, *, seed: int, schema_hash: str = SCHEMA, **metrics: float) -> Path:
    generator = torch.Generator().manual_seed(seed)
    checkpoint = Checkpoint(
        schema_hash=schema_hash,
        feature_names=("ret_1", "ret_12", "position"),
        policy_state={
            "actor.weight": torch.randn(4, 3, generator=generator),
            "actor.bias": torch.zeros(4),
            "critic.weight": torch.randn(1, 3, generator=generator),
        },
        normaliser={"count": 10.0, "mean": [0.0, 0.0], "var": [1.0, 1.0]},
        config={"network": {"hidden": [8]}, "seed": seed},
        metrics={"holdout_mean_return": 0.0012 * seed, **metrics},
    )
    save_checkpoint(checkpoint, path)
    return path


@pytest.fixture
def registry(db_pool: asyncpg.Pool, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(db_pool, tmp_path / "models")


async def register(registry: ModelRegistry, tmp_path: Path, seed: int, **kwargs: object) -> str:
    source = make_checkpoint(tmp_path / f"trained-{seed}.pt", seed=seed)
    record = await registry.register(source, **kwargs)  # type: ignore[arg-type]
    return record.version


async def actives(pool: asyncpg.Pool) -> list[str]:
    return [
        r["version"] for r in await pool.fetch("SELECT version FROM model_registry WHERE status = 'active'")
    ]


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# --- pure helpers ---------------------------------------------------------------------------------
def test_version_names_sort_by_time_and_carry_the_hash() -> None:
    from datetime import UTC, datetime

    early = version_name(datetime(2026, 11, 24, 11, 22, 33, tzinfo=UTC), "abcdef0123" + "0" * 54)
    late = version_name(datetime(2026, 11, 24, 11, 22, 34, tzinfo=UTC), "000000" + "0" * 58)
    assert early == "m20261124-112233-abcdef"
    assert early < late


symbol_lists = st.lists(
    st.from_regex(r"[A-Z]{2,5}/USDT", fullmatch=True), min_size=0, max_size=30, unique=True
)
shares = st.floats(min_value=1e-6, max_value=1.0)


@given(symbols=symbol_lists, version=st.text(min_size=1, max_size=20), share=shares)
def test_challenger_symbols_size_and_membership(symbols: list[str], version: str, share: float) -> None:
    chosen = challenger_symbols(symbols, version, share)
    assert chosen <= set(symbols)
    if symbols:
        assert len(chosen) == max(1, math.ceil(share * len(symbols)))
    else:
        assert chosen == frozenset()


@given(symbols=symbol_lists, version=st.text(min_size=1, max_size=20), share=shares, data=st.data())
def test_challenger_symbols_do_not_depend_on_order(
    symbols: list[str], version: str, share: float, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(symbols))
    assert challenger_symbols(shuffled, version, share) == challenger_symbols(symbols, version, share)


@given(symbols=symbol_lists, version=st.text(min_size=1, max_size=20), low=shares, high=shares)
def test_a_larger_share_keeps_the_symbols_of_a_smaller_one(
    symbols: list[str], version: str, low: float, high: float
) -> None:
    low, high = min(low, high), max(low, high)
    assert challenger_symbols(symbols, version, low) <= challenger_symbols(symbols, version, high)


def test_challenger_symbols_depend_on_the_version_and_zero_share_is_none() -> None:
    symbols = [f"C{i}/USDT" for i in range(40)]
    draws = {challenger_symbols(symbols, f"m{i}", 0.25) for i in range(5)}
    assert len(draws) > 1, "another challenger gets another draw of symbols"
    assert challenger_symbols(symbols, "m1", 0.0) == frozenset()
    assert challenger_symbols(symbols, "m1", 1.0) == frozenset(symbols)


# --- registration and reading ---------------------------------------------------------------------
@pytest.mark.db
async def test_register_copies_the_artefact_and_records_it(registry: ModelRegistry, tmp_path: Path) -> None:
    source = make_checkpoint(tmp_path / "trained.pt", seed=3, holdout_trades=7.0)
    record = await registry.register(source, metrics={"gate": 1.0}, notes="first")
    assert record.status == "candidate"
    assert record.schema_hash == SCHEMA
    assert record.artifact_path == registry.model_dir / f"{record.version}.pt"
    assert record.artifact_path.read_bytes() == source.read_bytes()
    assert record.metrics == {
        "holdout_mean_return": pytest.approx(0.0036),
        "holdout_trades": 7.0,
        "gate": 1.0,
    }
    assert record.notes == "first"
    assert record.version.startswith("m")
    assert record.artifact_sha256 is not None
    assert record.version.endswith(record.artifact_sha256[:6])

    source.unlink()  # the registry's copy is what counts
    loaded = await registry.load(record, expected_schema_hash=SCHEMA)
    assert loaded.config["seed"] == 3

    child = await registry.register(
        make_checkpoint(tmp_path / "child.pt", seed=4), parent_version=record.version, version="custom-1"
    )
    assert child.parent_version == record.version
    assert child.version == "custom-1"
    assert [r.version for r in await registry.list()] == [record.version, "custom-1"]
    assert await registry.get("custom-1") == child
    assert await registry.active() is None
    assert await registry.challenger() is None
    as_json = json.loads(json.dumps(child.to_json()))
    assert as_json["version"] == "custom-1"
    assert as_json["created_at"] == child.created_at.isoformat()


@pytest.mark.db
async def test_register_refuses_unreadable_files_duplicates_and_unknowns(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        await registry.register(junk)
    assert await registry.list() == []
    with pytest.raises(UnknownModel):
        await registry.get("m-nope")
    with pytest.raises(UnknownModel):
        await register(registry, tmp_path, 1, parent_version="m-nope")
    await register(registry, tmp_path, 1, version="v1")
    with pytest.raises(RegistryError, match="v1"):
        await register(registry, tmp_path, 2, version="v1")
    assert [r.version for r in await registry.list()] == ["v1"]
    with pytest.raises(RegistryError, match="evil"):
        await register(registry, tmp_path, 2, version="../evil")
    # The same file twice in one second gets a second, distinct version.
    twice = make_checkpoint(tmp_path / "twice.pt", seed=9)
    first, second = await registry.register(twice), await registry.register(twice)
    assert first.version != second.version
    assert first.artifact_sha256 == second.artifact_sha256


# --- promotion and rollback -----------------------------------------------------------------------
@pytest.mark.db
async def test_promote_retires_the_previous_champion(registry: ModelRegistry, tmp_path: Path) -> None:
    a = await register(registry, tmp_path, 1)
    b = await register(registry, tmp_path, 2)
    await registry.promote(a, expected_schema_hash=SCHEMA)
    promoted = await registry.get(a)
    assert promoted.status == "active"
    assert promoted.promoted_at is not None
    await registry.promote(a, expected_schema_hash=SCHEMA)
    assert (await registry.get(a)).promoted_at == promoted.promoted_at, (
        "promoting the champion changes nothing"
    )
    await registry.promote(b, expected_schema_hash=SCHEMA)
    assert await actives(registry.pool) == [b]
    old = await registry.get(a)
    assert old.status == "retired"
    assert old.retired_at is not None
    assert await actives(registry.pool) == [b]
    with pytest.raises(UnknownModel):
        await registry.promote("m-nope", expected_schema_hash=SCHEMA)


@pytest.mark.db
async def test_rollback_to_the_previous_and_to_an_explicit_version(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    a, b, c = [await register(registry, tmp_path, seed) for seed in (1, 2, 3)]
    with pytest.raises(NothingToRollBack, match="no model is active"):
        await registry.rollback(expected_schema_hash=SCHEMA)
    await registry.promote(a, expected_schema_hash=SCHEMA)
    with pytest.raises(NothingToRollBack, match="no earlier champion"):
        await registry.rollback(expected_schema_hash=SCHEMA)
    await registry.promote(b, expected_schema_hash=SCHEMA)
    await registry.promote(c, expected_schema_hash=SCHEMA)

    await registry.rollback(expected_schema_hash=SCHEMA)
    assert await actives(registry.pool) == [b]
    assert (await registry.get(c)).status == "rolled_back"
    await registry.rollback(expected_schema_hash=SCHEMA)
    assert await actives(registry.pool) == [a]
    assert (await registry.get(b)).status == "rolled_back"
    with pytest.raises(NothingToRollBack):
        await registry.rollback(expected_schema_hash=SCHEMA)

    await registry.rollback(to_version=c, expected_schema_hash=SCHEMA)
    assert await actives(registry.pool) == [c]
    assert (await registry.get(a)).status == "rolled_back"
    never = await register(registry, tmp_path, 4)
    with pytest.raises(RegistryError, match="never"):
        await registry.rollback(to_version=never, expected_schema_hash=SCHEMA)
    with pytest.raises(RegistryError, match="already"):
        await registry.rollback(to_version=c, expected_schema_hash=SCHEMA)


@pytest.mark.db
async def test_a_corrupt_artefact_is_refused_and_the_champion_stays(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    champion = await register(registry, tmp_path, 1)
    await registry.promote(champion, expected_schema_hash=SCHEMA)
    damaged = await registry.get(await register(registry, tmp_path, 2))
    flip_bytes(damaged.artifact_path)
    with pytest.raises(ArtefactCorrupt, match=damaged.version):
        await registry.load(damaged, expected_schema_hash=SCHEMA)
    with pytest.raises(ArtefactCorrupt):
        await registry.promote(damaged.version, expected_schema_hash=SCHEMA)
    with pytest.raises(ArtefactCorrupt):
        await registry.start_ab(damaged.version, share=0.5, expected_schema_hash=SCHEMA)
    assert await actives(registry.pool) == [champion]
    assert (await registry.get(damaged.version)).status == "candidate"

    # A rollback target with a damaged file is refused before the champion is touched.
    await registry.promote(await register(registry, tmp_path, 3), expected_schema_hash=SCHEMA)
    flip_bytes((await registry.get(champion)).artifact_path)
    with pytest.raises(ArtefactCorrupt):
        await registry.rollback(expected_schema_hash=SCHEMA)
    assert champion not in await actives(registry.pool)
    (await registry.get(champion)).artifact_path.unlink()
    with pytest.raises(CheckpointError, match=champion):
        await registry.rollback(to_version=champion, expected_schema_hash=SCHEMA)


@pytest.mark.db
async def test_a_model_of_another_schema_is_refused(registry: ModelRegistry, tmp_path: Path) -> None:
    champion = await register(registry, tmp_path, 1)
    await registry.promote(champion, expected_schema_hash=SCHEMA)
    foreign = await registry.register(make_checkpoint(tmp_path / "f.pt", seed=2, schema_hash=OTHER_SCHEMA))
    assert foreign.schema_hash == OTHER_SCHEMA
    with pytest.raises(SchemaMismatch, match=foreign.version):
        await registry.promote(foreign.version, expected_schema_hash=SCHEMA)
    with pytest.raises(SchemaMismatch):
        await registry.load(foreign, expected_schema_hash=SCHEMA)
    assert await actives(registry.pool) == [champion]
    # The same file is fine for a build computing its schema.
    await registry.promote(foreign.version, expected_schema_hash=OTHER_SCHEMA)
    assert await actives(registry.pool) == [foreign.version]


@pytest.mark.db
async def test_concurrent_promotes_leave_one_champion(registry: ModelRegistry, tmp_path: Path) -> None:
    versions = [await register(registry, tmp_path, seed) for seed in (1, 2, 3, 4)]
    results = await asyncio.gather(
        *(registry.promote(v, expected_schema_hash=SCHEMA) for v in versions), return_exceptions=True
    )
    assert not [r for r in results if isinstance(r, BaseException)]
    active = await actives(registry.pool)
    assert len(active) == 1
    assert active[0] in versions
    statuses = sorted(r.status for r in await registry.list())
    assert statuses == ["active", "retired", "retired", "retired"]


@pytest.mark.db
async def test_the_unique_index_still_guards_one_champion(db_pool: asyncpg.Pool) -> None:
    insert = "INSERT INTO model_registry (version, status, state_schema_hash, artifact_path) VALUES ($1, $2, 'h', 'f')"
    await db_pool.execute(insert, "x1", "active")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_pool.execute(insert, "x2", "active")
    await db_pool.execute(insert, "s1", "shadow")
    with pytest.raises(asyncpg.UniqueViolationError):
        await db_pool.execute(insert, "s2", "shadow")
    with pytest.raises(asyncpg.CheckViolationError, match="ab_share"):
        await db_pool.execute("UPDATE model_registry SET ab_share = 0.5 WHERE version = 'x1'")
    with pytest.raises(asyncpg.CheckViolationError, match="ab_share"):
        await db_pool.execute("UPDATE model_registry SET ab_share = 1.5 WHERE version = 's1'")


# --- A/B tests -------------------------------------------------------------------------------------
@pytest.mark.db
async def test_ab_start_replace_stop_and_share_validation(registry: ModelRegistry, tmp_path: Path) -> None:
    champion, x, y = [await register(registry, tmp_path, seed) for seed in (1, 2, 3)]
    await registry.promote(champion, expected_schema_hash=SCHEMA)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(RegistryError, match="share"):
            await registry.start_ab(x, share=bad, expected_schema_hash=SCHEMA)
    with pytest.raises(RegistryError, match="champion"):
        await registry.start_ab(champion, share=0.5, expected_schema_hash=SCHEMA)
    assert await registry.challenger() is None

    started = await registry.start_ab(x, share=0.3, expected_schema_hash=SCHEMA)
    assert started.status == "shadow"
    assert started.ab_share == pytest.approx(0.3)
    assert (await registry.challenger()) == started
    await registry.start_ab(y, share=1.0, expected_schema_hash=SCHEMA)
    challenger = await registry.challenger()
    assert challenger is not None
    assert challenger.version == y
    replaced = await registry.get(x)
    assert replaced.status == "candidate"
    assert replaced.ab_share is None

    stopped = await registry.stop_ab()
    assert stopped is not None
    assert stopped.version == y
    assert stopped.status == "candidate"
    assert await registry.challenger() is None
    assert await registry.stop_ab() is None

    # Promoting the challenger ends the A/B test.
    await registry.start_ab(x, share=0.5, expected_schema_hash=SCHEMA)
    await registry.promote(x, expected_schema_hash=SCHEMA)
    assert (await registry.get(x)).ab_share is None
    assert await registry.challenger() is None
    assert await actives(registry.pool) == [x]
