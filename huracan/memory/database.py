"""Where the memory lives (a configured server or the private cluster) and how we connect."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import asyncpg

from huracan.config.sections import DatabaseSettings
from huracan.logs import get_logger
from huracan.memory.cluster import ClusterError, PrivateCluster

log = get_logger(__name__)

# Every PostgreSQL server has it; CREATE DATABASE cannot run inside the missing database.
MAINTENANCE_DATABASE = "postgres"
CONNECT_TIMEOUT_S = 10.0
APPLICATION_NAME = "huracan"


def resolve_dsn(configured_dsn: str | None, state_dir: Path, dbname: str = "huracan") -> str:
    """The configured DSN untouched (nothing is started), or else the private cluster under
    `state_dir/postgres`, started or reused. Blocking: run it off the event loop."""
    if configured_dsn:
        return configured_dsn
    cluster = PrivateCluster(state_dir / "postgres")
    cluster.ensure_started()
    return cluster.dsn(dbname)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def database_name(dsn: str) -> str | None:
    """The database a libpq URI names, or None when it names none (libpq then uses the user)."""
    parts = urlsplit(dsn)
    for key, value in parse_qsl(parts.query):
        if key in ("dbname", "database"):
            return value
    return unquote(parts.path.lstrip("/")) or None


def with_database(dsn: str, dbname: str) -> str:
    """The same server, user and options, another database."""
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("dbname", "database")]
    # Keep '/' unescaped in query values: unix socket directories read better that way.
    new_query = urlencode(query, safe="/", quote_via=quote)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(dbname, safe=""), new_query, parts.fragment))


async def ensure_database(dsn: str, *, password: str | None = None) -> None:
    """Create the DSN's database if the server does not have it yet (the private cluster's first
    start); for a database that exists, as an external server's should, this only proves that it
    accepts connections."""
    try:
        conn = await asyncpg.connect(dsn, password=password, timeout=CONNECT_TIMEOUT_S)
    except asyncpg.InvalidCatalogNameError:
        dbname = database_name(dsn)
        if dbname is None:
            raise
    else:
        await conn.close()
        return
    maintenance = await asyncpg.connect(
        with_database(dsn, MAINTENANCE_DATABASE), password=password, timeout=CONNECT_TIMEOUT_S
    )
    try:
        await maintenance.execute(f"CREATE DATABASE {quote_ident(dbname)}")
        log.info("database created", database=dbname)
    except asyncpg.DuplicateDatabaseError:
        pass  # another process (daemon or `huracan migrate`) created it a moment ago
    finally:
        await maintenance.close()


async def create_pool(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    command_timeout: float,
    password: str | None = None,
) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        dsn,
        password=password,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout,
        timeout=CONNECT_TIMEOUT_S,
        # Lets `SELECT * FROM pg_stat_activity` in psql tell the daemon's sessions apart.
        server_settings={"application_name": APPLICATION_NAME},
    )


class DatabaseUnavailable(RuntimeError):
    """The configured database (or the private cluster) cannot be reached or started."""


# What "cannot reach the database" looks like: socket and timeout errors (OSError), a server
# that refuses (PostgresError), a broken connection (InterfaceError), a malformed DSN (ValueError),
# a private cluster that will not start (ClusterError).
_UNAVAILABLE = (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError, ClusterError)


async def prepare_database(settings: DatabaseSettings, state_dir: Path) -> str:
    """The DSN to use, with its database created if needed; starts the private cluster when no
    DSN is configured (off the event loop: initdb and pg_ctl block for seconds)."""
    try:
        dsn = await asyncio.to_thread(resolve_dsn, settings.dsn_value(), state_dir, settings.name)
        await ensure_database(dsn, password=settings.password_value())
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    return dsn


async def open_pool(settings: DatabaseSettings, dsn: str) -> asyncpg.Pool:
    try:
        return await create_pool(
            dsn,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            command_timeout=settings.command_timeout_s,
            password=settings.password_value(),
        )
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(str(exc)) from exc


class SchemaNotCurrent(RuntimeError):
    """database.auto_migrate is off and migrations are pending."""


async def open_command_pool(settings: DatabaseSettings, state_dir: Path) -> asyncpg.Pool:
    """A pool on a current schema, for the commands that read and write the memory (download,
    train, models): migrated first when database.auto_migrate is on, refused with
    SchemaNotCurrent when it is off and migrations are pending."""
    from huracan.memory.migrate import apply_migrations, default_migrations_dir, migration_status

    pool = await open_pool(settings, await prepare_database(settings, state_dir))
    try:
        async with pool.acquire() as conn:
            if settings.auto_migrate:
                await apply_migrations(conn, default_migrations_dir())
            elif not (await migration_status(conn, default_migrations_dir())).is_current:
                raise SchemaNotCurrent("the database schema is not current: run `huracan migrate`")
    except BaseException:
        await pool.close()
        raise
    return pool


@asynccontextmanager
async def configured_connection(
    settings: DatabaseSettings, state_dir: Path
) -> AsyncIterator[asyncpg.Connection]:
    """One connection to the configured database, for commands (migrate, verify)."""
    dsn = await prepare_database(settings, state_dir)
    try:
        conn = await asyncpg.connect(dsn, password=settings.password_value(), timeout=CONNECT_TIMEOUT_S)
    except _UNAVAILABLE as exc:
        raise DatabaseUnavailable(str(exc)) from exc
    try:
        yield conn
    finally:
        await conn.close()
