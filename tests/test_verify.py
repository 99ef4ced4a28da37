"""`huracan verify`: every check against a real database, and the ways each one fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from huracan.config import ConfigSources
from huracan.memory.migrate import default_migrations_dir
from huracan.monitoring.verify import (
    Check,
    all_required_pass,
    check_dependencies,
    check_model,
    check_state_dir,
    render,
    run_checks,
)


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


@pytest.mark.db
async def test_a_ready_installation_passes_every_required_check(db_dsn: str, tmp_path: Path) -> None:
    sources = ConfigSources(
        environ={"HURACAN_DATABASE__DSN": db_dsn, "HURACAN_DAEMON__STATE_DIR": str(tmp_path)}
    )
    checks = by_name(await run_checks(sources))
    assert [n for n, c in checks.items() if c.required and not c.passed] == []
    assert checks["database"].detail.startswith("PostgreSQL 15")
    migrations = len(list(default_migrations_dir().glob("*.sql")))
    assert checks["migrations"].detail.startswith(f"{migrations} applied")
    assert not checks["model"].passed
    assert not checks["model"].required
    assert "none yet" in checks["model"].detail
    assert render(list(checks.values())).endswith("ready")


@pytest.mark.db
async def test_pending_migrations_fail_the_check(empty_db_dsn: str, tmp_path: Path) -> None:
    sources = ConfigSources(
        environ={"HURACAN_DATABASE__DSN": empty_db_dsn, "HURACAN_DAEMON__STATE_DIR": str(tmp_path)}
    )
    checks = await run_checks(sources)
    migrations = by_name(checks)["migrations"]
    assert not migrations.passed
    assert "pending: 0001_market_data" in migrations.detail
    assert "make migrate" in migrations.detail
    assert not all_required_pass(checks)


@pytest.mark.db
async def test_an_edited_migration_is_reported(db_dsn: str, tmp_path: Path) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 1")
    finally:
        await conn.close()
    sources = ConfigSources(
        environ={"HURACAN_DATABASE__DSN": db_dsn, "HURACAN_DAEMON__STATE_DIR": str(tmp_path)}
    )
    migrations = by_name(await run_checks(sources))["migrations"]
    assert not migrations.passed
    assert "changed after applying" in migrations.detail


async def test_an_unreachable_database_fails_both_database_checks(tmp_path: Path) -> None:
    sources = ConfigSources(
        environ={
            "HURACAN_DATABASE__DSN": f"postgresql://nobody@/x?host={tmp_path}&port=1",
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path),
        }
    )
    checks = by_name(await run_checks(sources))
    assert not checks["database"].passed
    assert checks["migrations"].detail == "database unreachable"


async def test_an_invalid_config_is_a_failed_check_not_a_crash(tmp_path: Path) -> None:
    checks = await run_checks(ConfigSources(environ={"HURACAN_RISK__POSITION_CAP": "-1"}))
    config = by_name(checks)["config"]
    assert not config.passed
    assert "risk.position_cap = '-1'" in config.detail
    assert "NOT READY" in render(checks)


def test_missing_dependency_and_wrong_torch_are_named() -> None:
    def no_uvloop(name: str) -> object:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return object()

    check = check_dependencies(no_uvloop)
    assert not check.passed
    assert "uvloop" in check.detail
    assert "make install" in check.detail


def test_state_dir_and_model_checks(tmp_path: Path) -> None:
    assert check_state_dir(tmp_path / "new").passed
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    assert not check_state_dir(blocked).passed
    models = tmp_path / "models"
    models.mkdir()
    (models / "ppo-0001.pt").write_bytes(b"")
    model = check_model(models)
    assert model.passed
    assert "ppo-0001.pt" in model.detail


def test_cli_exit_status_follows_the_verdict(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "huracan.cli", "verify"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "HURACAN_DATABASE__DSN": f"postgresql://nobody@/x?host={tmp_path}&port=1",
            "HURACAN_DAEMON__STATE_DIR": str(tmp_path),
        },
    )
    assert result.returncode == 1
    assert "database" in result.stdout
    assert result.stdout.rstrip().endswith("NOT READY: fix the FAIL lines above")
