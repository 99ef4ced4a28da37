"""Schema migrations: the numbered SQL files of `migrations/`, applied in order, each once.

A file is applied in its own transaction and recorded in `schema_migrations` with the sha256
of its bytes. An applied file is never edited: the migrator refuses to run when one was
changed or removed, because the database would no longer match what the files say it is.
Files must not contain transaction control (BEGIN/COMMIT) or statements that cannot run in a
transaction block (CREATE INDEX CONCURRENTLY).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg

from huracan.logs import get_logger

log = get_logger(__name__)

MIGRATION_FILE = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9][a-z0-9_]*)\.sql")
# A fixed key for pg_advisory_lock, the bytes of "huracanM" as a big-endian bigint, so that
# two migrators (daemon start-up and `huracan migrate`) never interleave.
MIGRATION_LOCK_KEY = int.from_bytes(b"huracanM", "big")

CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY CHECK (version > 0),
    name       text        NOT NULL,
    checksum   text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE schema_migrations IS
    'Migrations applied by huracan migrate: version, file name, sha256 of the file, when.';
"""


class MigrationError(RuntimeError):
    """The migration files or the recorded history are inconsistent, or a file failed."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    path: Path
    checksum: str
    sql: str = field(repr=False)

    @property
    def filename(self) -> str:
        return self.path.name


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime


@dataclass(frozen=True, slots=True)
class ChangedMigration:
    """An applied migration whose file now differs (file_checksum) or is gone (None)."""

    version: int
    name: str
    applied_checksum: str
    file_checksum: str | None
    directory: Path

    @property
    def filename(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    def __str__(self) -> str:
        if self.file_checksum is None:
            return (
                f"{self.filename} was applied (sha256 {self.applied_checksum}) but is missing "
                f"from {self.directory}"
            )
        return (
            f"{self.filename} was changed after it was applied: applied sha256 "
            f"{self.applied_checksum}, file now sha256 {self.file_checksum}"
        )


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    applied: tuple[AppliedMigration, ...]
    pending: tuple[Migration, ...]
    changed: tuple[ChangedMigration, ...]

    @property
    def is_current(self) -> bool:
        return not self.pending and not self.changed


def default_migrations_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "migrations"


def load_migrations(directory: Path) -> list[Migration]:
    """The migration files in version order. Every `*.sql` file must be named `NNNN_name.sql`
    (lower case); other files (a README) are ignored."""
    if not directory.is_dir():
        raise MigrationError(f"migrations directory {directory} does not exist")
    by_version: dict[int, Migration] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix.lower() != ".sql" or path.name.startswith("."):
            continue
        match = MIGRATION_FILE.fullmatch(path.name)
        if match is None:
            raise MigrationError(
                f"{path}: migration files must be named NNNN_name.sql (four digits, then lower-case "
                f"letters, digits and underscores), e.g. 0003_pattern_indexes.sql"
            )
        version = int(match["version"])
        if version == 0:
            raise MigrationError(f"{path}: migration numbers start at 0001")
        raw = path.read_bytes()
        try:
            sql = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MigrationError(f"{path}: not UTF-8 ({exc})") from exc
        if not sql.strip():
            raise MigrationError(f"{path}: empty migration file")
        if version in by_version:
            raise MigrationError(
                f"two migrations share number {version:04d}: {by_version[version].filename} and "
                f"{path.name} in {directory}"
            )
        by_version[version] = Migration(version, match["name"], path, hashlib.sha256(raw).hexdigest(), sql)
    return [by_version[v] for v in sorted(by_version)]


async def _read_applied(conn: asyncpg.Connection) -> list[AppliedMigration]:
    # Reading must not create anything: `huracan verify` and `migrate --status` only look.
    if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NULL"):
        return []
    rows = await conn.fetch(
        "SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version"
    )
    return [AppliedMigration(r["version"], r["name"], r["checksum"], r["applied_at"]) for r in rows]


def _compare(
    migrations: list[Migration], applied: list[AppliedMigration], directory: Path
) -> MigrationStatus:
    files = {m.version: m for m in migrations}
    applied_versions = {a.version for a in applied}
    changed = tuple(
        ChangedMigration(
            a.version,
            a.name,
            a.checksum,
            files[a.version].checksum if a.version in files else None,
            directory,
        )
        for a in applied
        if a.version not in files or files[a.version].checksum != a.checksum
    )
    pending = tuple(m for m in migrations if m.version not in applied_versions)
    return MigrationStatus(applied=tuple(applied), pending=pending, changed=changed)


async def migration_status(conn: asyncpg.Connection, directory: Path) -> MigrationStatus:
    return _compare(load_migrations(directory), await _read_applied(conn), directory)


async def apply_migrations(conn: asyncpg.Connection, directory: Path) -> list[Migration]:
    """Apply the pending migrations of `directory` in order; returns those applied now (empty
    when the database was current, including when another migrator just did the work)."""
    migrations = load_migrations(directory)
    # Session-level lock on this connection: each file commits on its own, so a
    # transaction-level lock would be released after the first one.
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(CREATE_SCHEMA_MIGRATIONS)
        status = _compare(migrations, await _read_applied(conn), directory)
        if status.changed:
            problems = "; ".join(str(c) for c in status.changed)
            raise MigrationError(
                f"refusing to migrate: {problems}. An applied migration must never be edited or "
                f"removed: restore it and put the change in a new numbered file"
            )
        latest = max((a.version for a in status.applied), default=0)
        late = [m.filename for m in status.pending if m.version < latest]
        if late:
            raise MigrationError(
                f"refusing to migrate: {', '.join(late)} would apply after {latest:04d}, which is "
                f"already applied; renumber it above {latest:04d}"
            )
        for migration in status.pending:
            await _apply_one(conn, migration)
        return list(status.pending)
    finally:
        # A dead connection already lost its lock; unlocking it would only hide the real error.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)


async def _apply_one(conn: asyncpg.Connection, migration: Migration) -> None:
    try:
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
    except asyncpg.PostgresError as exc:
        where = _line_of(migration.sql, getattr(exc, "position", None))
        raise MigrationError(
            f"{migration.path}{where}: {type(exc).__name__}: {exc}; nothing of this file was applied"
        ) from exc
    log.info("migration applied", version=migration.version, name=migration.name)


def _line_of(sql: str, position: object) -> str:
    """' line N' for the 1-based character position PostgreSQL reports, when it reports one."""
    try:
        offset = int(str(position)) - 1
    except ValueError:
        return ""
    if not 0 <= offset <= len(sql):
        return ""
    return f" line {sql.count(chr(10), 0, offset) + 1}"
