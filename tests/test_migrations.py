"""The migrator: file rules, applying in order once, refusing edited or missing history, racing."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from huracan.memory.migrate import (
    MigrationError,
    apply_migrations,
    default_migrations_dir,
    load_migrations,
    migration_status,
)

EXPECTED_TABLES = {
    "trade_memory",
    "post_exit_tracking",
    "win_analysis",
    "loss_analysis",
    "pattern_library",
    "model_performance",
    "candles",
    "orders",
    "fills",
    "positions",
    "model_registry",
    "risk_events",
    "health_events",
    "daemon_state",
    "schema_migrations",
}


def _write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


def _copy_real_migrations(target: Path) -> Path:
    shutil.copytree(default_migrations_dir(), target)
    return target


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r["tablename"] for r in rows}


# --- the files -------------------------------------------------------------------------------


def test_the_real_migrations_load_in_order() -> None:
    migrations = load_migrations(default_migrations_dir())
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert len(migrations) >= 2
    for m in migrations:
        assert m.filename == f"{m.version:04d}_{m.name}.sql"
        assert m.checksum == hashlib.sha256(m.path.read_bytes()).hexdigest()
        assert "BEGIN" not in m.sql.upper().split(), "each file already runs in its own transaction"


@pytest.mark.parametrize(
    "bad_name",
    [
        "1_candles.sql",
        "0001-candles.sql",
        "0001_Candles.sql",
        "00001_candles.sql",
        "0001_.sql",
        "candles.sql",
    ],
)
def test_badly_named_files_are_refused(tmp_path: Path, bad_name: str) -> None:
    _write(tmp_path, {"0001_ok.sql": "SELECT 1;", bad_name: "SELECT 2;"})
    with pytest.raises(MigrationError, match=rf"{bad_name}: migration files must be named NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_duplicate_numbers_name_both_files(tmp_path: Path) -> None:
    _write(tmp_path, {"0001_candles.sql": "SELECT 1;", "0001_orders.sql": "SELECT 2;"})
    with pytest.raises(MigrationError, match=r"0001_candles\.sql and 0001_orders\.sql"):
        load_migrations(tmp_path)


def test_empty_file_number_zero_and_missing_directory_are_refused(tmp_path: Path) -> None:
    _write(tmp_path / "empty", {"0001_nothing.sql": "  \n"})
    with pytest.raises(MigrationError, match=r"0001_nothing\.sql: empty"):
        load_migrations(tmp_path / "empty")
    _write(tmp_path / "zero", {"0000_zero.sql": "SELECT 1;"})
    with pytest.raises(MigrationError, match="start at 0001"):
        load_migrations(tmp_path / "zero")
    with pytest.raises(MigrationError, match="does not exist"):
        load_migrations(tmp_path / "absent")


def test_other_files_are_ignored(tmp_path: Path) -> None:
    _write(tmp_path, {"0002_b.sql": "SELECT 2;", "0001_a.sql": "SELECT 1;", "README.md": "notes"})
    assert [m.filename for m in load_migrations(tmp_path)] == ["0001_a.sql", "0002_b.sql"]


# --- against PostgreSQL ----------------------------------------------------------------------


@pytest.mark.db
async def test_fresh_apply_creates_every_table_and_rerun_is_a_no_op(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        applied = await apply_migrations(conn, default_migrations_dir())
        assert [m.version for m in applied] == [m.version for m in load_migrations(default_migrations_dir())]
        assert await _tables(conn) == EXPECTED_TABLES
        recorded = await conn.fetch("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        assert [(r["version"], r["name"], r["checksum"]) for r in recorded] == [
            (m.version, m.name, m.checksum) for m in applied
        ]

        assert await apply_migrations(conn, default_migrations_dir()) == []
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(applied)
        assert (await migration_status(conn, default_migrations_dir())).is_current
    finally:
        await conn.close()


@pytest.mark.db
async def test_an_edited_applied_file_is_refused(empty_db_dsn: str, tmp_path: Path) -> None:
    directory = _copy_real_migrations(tmp_path / "migrations")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await apply_migrations(conn, directory)
        edited = directory / "0002_orders_and_positions.sql"
        old = hashlib.sha256(edited.read_bytes()).hexdigest()
        edited.write_text(edited.read_text() + "\nCREATE INDEX orders_symbol_idx ON orders (symbol);\n")
        new = hashlib.sha256(edited.read_bytes()).hexdigest()
        _write(directory, {"0099_later.sql": "CREATE TABLE later (id int);"})

        with pytest.raises(MigrationError) as excinfo:
            await apply_migrations(conn, directory)

        message = str(excinfo.value)
        assert "0002_orders_and_positions.sql" in message
        assert old in message
        assert new in message
        assert "later" not in await _tables(conn), "nothing is applied past a changed file"
        status = await migration_status(conn, directory)
        assert [c.version for c in status.changed] == [2]
        assert not status.is_current
    finally:
        await conn.close()


@pytest.mark.db
async def test_a_missing_applied_file_is_refused(empty_db_dsn: str, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);", "0002_b.sql": "SELECT 1;"})
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await apply_migrations(conn, directory)
        (directory / "0002_b.sql").unlink()
        with pytest.raises(MigrationError, match=r"0002_b\.sql was applied .* but is missing from"):
            await apply_migrations(conn, directory)
        status = await migration_status(conn, directory)
        assert [(c.version, c.file_checksum) for c in status.changed] == [(2, None)]
    finally:
        await conn.close()


@pytest.mark.db
async def test_status_lists_applied_and_pending(empty_db_dsn: str, tmp_path: Path) -> None:
    directory = _write(tmp_path / "m", {"0001_a.sql": "CREATE TABLE a (id int);"})
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        before = await migration_status(conn, directory)
        assert [m.version for m in before.pending] == [1]
        assert before.applied == ()
        assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None, "status only reads"

        await apply_migrations(conn, directory)
        _write(directory, {"0002_b.sql": "CREATE TABLE b (id int);", "0003_c.sql": "SELECT 1;"})
        status = await migration_status(conn, directory)
        assert [(a.version, a.name) for a in status.applied] == [(1, "a")]
        assert status.applied[0].applied_at.tzinfo is not None
        assert [m.filename for m in status.pending] == ["0002_b.sql", "0003_c.sql"]
        assert status.changed == ()
        assert not status.is_current

        assert [m.version for m in await apply_migrations(conn, directory)] == [2, 3]
        assert (await migration_status(conn, directory)).is_current
    finally:
        await conn.close()


@pytest.mark.db
async def test_a_failing_file_applies_nothing_of_itself(empty_db_dsn: str, tmp_path: Path) -> None:
    directory = _write(
        tmp_path / "m",
        {
            "0001_a.sql": "CREATE TABLE a (id int);",
            "0002_broken.sql": "CREATE TABLE b (id int);\n\nCREATE TABLE c (id nosuchtype);\n",
        },
    )
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(MigrationError, match=r"0002_broken\.sql line 3: .*nosuchtype"):
            await apply_migrations(conn, directory)
        assert {"a", "schema_migrations"} == await _tables(conn)
        assert await conn.fetchval("SELECT array_agg(version) FROM schema_migrations") == [1]
        # The lock was released: a fixed file applies from the same connection.
        _write(directory, {"0002_broken.sql": "CREATE TABLE b (id int);"})
        assert [m.version for m in await apply_migrations(conn, directory)] == [2]
    finally:
        await conn.close()


@pytest.mark.db
async def test_a_new_file_numbered_below_the_applied_ones_is_refused(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    directory = _write(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 3;"})
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await apply_migrations(conn, directory)
        _write(directory, {"0002_b.sql": "SELECT 2;"})
        with pytest.raises(MigrationError, match=r"0002_b\.sql would apply after 0003"):
            await apply_migrations(conn, directory)
    finally:
        await conn.close()


@pytest.mark.db
async def test_two_concurrent_migrators_apply_each_version_once(empty_db_dsn: str) -> None:
    first, second = await asyncio.gather(asyncpg.connect(empty_db_dsn), asyncpg.connect(empty_db_dsn))
    try:
        results = await asyncio.gather(
            apply_migrations(first, default_migrations_dir()),
            apply_migrations(second, default_migrations_dir()),
        )
        expected = [m.version for m in load_migrations(default_migrations_dir())]
        # One did all the work; the other waited on the advisory lock and found nothing to do.
        assert sorted(([m.version for m in r] for r in results), key=len) == [[], expected]
        versions = await first.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in versions] == expected
    finally:
        await asyncio.gather(first.close(), second.close())
