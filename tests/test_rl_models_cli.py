"""`huracan models` through cmd_models against PostgreSQL: list/show (table and JSON), promote,
rollback, A/B, and the exit statuses of its failures."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest
import torch

from huracan.config import ConfigSources, HuracanConfig, load_config
from huracan.exit_codes import EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE
from huracan.memory.database import create_pool
from huracan.rl import models_cli
from huracan.rl.checkpoint import Checkpoint, save_checkpoint
from huracan.rl.models_cli import add_models_parser, cmd_models, key_metrics, render_table
from huracan.rl.registry import ModelRecord, ModelRegistry, model_dir_of

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "config" / "base.yaml"
SCHEMA = "c3" * 32
OTHER_SCHEMA = "d4" * 32


def make_checkpoint(path: Path, *, seed: int, schema_hash: str) -> Path:
    generator = torch.Generator().manual_seed(seed)
    checkpoint = Checkpoint(
        schema_hash=schema_hash,
        feature_names=("ret_1", "position"),
        policy_state={"actor.weight": torch.randn(3, 2, generator=generator)},
        normaliser={"count": 1.0, "mean": [0.0], "var": [1.0]},
        config={"seed": seed},
        metrics={"holdout_mean_return": 0.0012 * seed},
    )
    save_checkpoint(checkpoint, path)
    return path


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def make_config(tmp_path: Path, dsn: str) -> HuracanConfig:
    return load_config(
        ConfigSources(
            base=BASE,
            overlay=None,
            environ={"HURACAN_DATABASE__DSN": dsn, "HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state")},
        )
    )


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="huracan")
    add_models_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["models", *argv])


async def run(config: HuracanConfig, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = await cmd_models(config, parse(list(argv)), stdout=out, stderr=err)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture
def expected_schema(monkeypatch: pytest.MonkeyPatch) -> str:
    """The CLI checks models against the running feature schema; these tests fix it to theirs."""
    monkeypatch.setattr(models_cli, "_expected_schema_hash", lambda: SCHEMA)
    return SCHEMA


async def register(
    config: HuracanConfig, tmp_path: Path, seed: int, schema_hash: str = SCHEMA
) -> ModelRecord:
    pool = await create_pool(str(config.database.dsn_value()), min_size=1, max_size=2, command_timeout=30)
    try:
        registry = ModelRegistry(pool, model_dir_of(config))
        source = make_checkpoint(tmp_path / f"trained-{seed}.pt", seed=seed, schema_hash=schema_hash)
        return await registry.register(source, notes=f"seed {seed}")
    finally:
        await pool.close()


# --- pure rendering -------------------------------------------------------------------------------
def test_key_metrics_show_the_holdout_figures_present() -> None:
    assert key_metrics({}) == "-"
    text = key_metrics({"holdout_mean_return": 0.0012, "holdout_win_rate": 0.55, "holdout_trades": 12.0})
    assert text == "return +12.0bps win 55% trades 12"
    assert key_metrics({"holdout_t_statistic": None, "holdout_trades": True}) == "-"


def test_arguments_parse_per_action() -> None:
    assert parse(["list", "--json"]).json is True
    args = parse(["ab", "m1", "--share", "0.25"])
    assert (args.action, args.version, args.share, args.stop) == ("ab", "m1", 0.25, False)
    assert parse(["rollback", "--to", "m0"]).to_version == "m0"
    with pytest.raises(SystemExit):
        parse(["promote"])


# --- against PostgreSQL ---------------------------------------------------------------------------
@pytest.mark.db
async def test_list_json_and_show(tmp_path: Path, db_dsn: str) -> None:
    config = make_config(tmp_path, db_dsn)
    status, out, err = await run(config, "list")
    assert (status, err) == (EX_OK, "")
    assert "no models registered" in out

    first = await register(config, tmp_path, 1)
    second = await register(config, tmp_path, 2)
    status, out, _ = await run(config, "list", "--json")
    assert status == EX_OK
    listed = json.loads(out)
    assert [r["version"] for r in listed] == [first.version, second.version]
    assert listed[0]["artifact_sha256"] == first.artifact_sha256
    assert listed[0]["status"] == "candidate"
    assert listed[1]["notes"] == "seed 2"

    status, out, _ = await run(config, "list")
    assert status == EX_OK
    header, *rows = out.strip().splitlines()
    assert header.split()[:2] == ["VERSION", "STATUS"]
    assert [row.split()[0] for row in rows] == [first.version, second.version]
    assert SCHEMA[:12] in rows[0]
    assert "return +12.0bps" in rows[0]

    status, out, _ = await run(config, "show", second.version, "--json")
    assert status == EX_OK
    assert json.loads(out)["version"] == second.version
    status, out, _ = await run(config, "show", second.version)
    assert status == EX_OK
    assert str(second.artifact_sha256) in out
    assert "holdout_mean_return" in out


@pytest.mark.db
async def test_promote_rollback_and_ab(tmp_path: Path, db_dsn: str, expected_schema: str) -> None:
    config = make_config(tmp_path, db_dsn)
    a, b, c = [await register(config, tmp_path, seed) for seed in (1, 2, 3)]
    assert (await run(config, "promote", a.version))[0] == EX_OK
    status, out, _ = await run(config, "promote", b.version)
    assert status == EX_OK
    assert f"was {a.version}" in out

    status, out, _ = await run(config, "ab", c.version, "--share", "0.5")
    assert status == EX_OK
    status, out, _ = await run(config, "list", "--json")
    by_version = {r["version"]: r for r in json.loads(out)}
    assert by_version[b.version]["status"] == "active"
    assert (by_version[c.version]["status"], by_version[c.version]["ab_share"]) == ("shadow", 0.5)
    assert (await run(config, "ab", "--stop"))[0] == EX_OK

    status, out, _ = await run(config, "rollback")
    assert status == EX_OK
    assert a.version in out
    status, out, _ = await run(config, "list", "--json")
    statuses = {r["version"]: r["status"] for r in json.loads(out)}
    assert statuses == {a.version: "active", b.version: "rolled_back", c.version: "candidate"}


@pytest.mark.db
async def test_error_exit_codes(tmp_path: Path, db_dsn: str, expected_schema: str) -> None:
    config = make_config(tmp_path, db_dsn)
    for argv in (("show", "m-nope"), ("promote", "m-nope"), ("rollback",)):
        status, out, err = await run(config, *argv)
        assert status == EX_USAGE, argv
        assert out == ""
        assert err.startswith("huracan models: ")
    for bad_ab in (("ab", "m1"), ("ab", "--stop", "--share", "0.5"), ("ab", "m1", "--share", "1.5")):
        assert (await run(config, *bad_ab))[0] == EX_USAGE, bad_ab

    champion = await register(config, tmp_path, 1)
    assert (await run(config, "promote", champion.version))[0] == EX_OK
    assert (await run(config, "ab", champion.version, "--share", "0.5"))[0] == EX_USAGE

    damaged = await register(config, tmp_path, 2)
    flip_bytes(damaged.artifact_path)
    status, _, err = await run(config, "promote", damaged.version)
    assert status == EX_SOFTWARE
    assert damaged.version in err
    assert "sha256" in err

    foreign = await register(config, tmp_path, 3, schema_hash=OTHER_SCHEMA)
    status, _, err = await run(config, "promote", foreign.version)
    assert status == EX_SOFTWARE
    assert "schema" in err

    status, out, _ = await run(config, "list", "--json")
    assert [r["version"] for r in json.loads(out) if r["status"] == "active"] == [champion.version]


@pytest.mark.db
async def test_promote_checks_against_the_running_feature_schema(tmp_path: Path, db_dsn: str) -> None:
    schema = pytest.importorskip("huracan.features.schema")
    config = make_config(tmp_path, db_dsn)
    current = await register(config, tmp_path, 1, schema_hash=schema.STATE_SCHEMA.hash)
    stale = await register(config, tmp_path, 2, schema_hash=OTHER_SCHEMA)
    assert (await run(config, "promote", current.version))[0] == EX_OK
    assert (await run(config, "promote", stale.version))[0] == EX_SOFTWARE


async def test_database_unavailable_exits_69(tmp_path: Path) -> None:
    config = make_config(tmp_path, "postgresql://huracan@127.0.0.1:1/huracan")
    status, out, err = await run(config, "list")
    assert status == EX_UNAVAILABLE
    assert out == ""
    assert "database unavailable" in err


def test_render_table_aligns_columns(tmp_path: Path) -> None:
    def record(version: str, status: Literal["active", "shadow"], share: float | None) -> ModelRecord:
        return ModelRecord(
            version=version,
            status=status,
            parent_version=None,
            schema_hash=SCHEMA,
            artifact_path=tmp_path / "x.pt",
            artifact_sha256=None,
            metrics={},
            notes=None,
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            promoted_at=None,
            retired_at=None,
            ab_share=share,
        )

    lines = render_table([record("m0", "active", None), record("m1-long-name", "shadow", 0.25)]).splitlines()
    assert len({line.index("CREATED") if n == 0 else line.index("2026") for n, line in enumerate(lines)}) == 1
    assert "25%" in lines[2]
    assert lines[1].split()[5] == "-", "no share outside an A/B test"
