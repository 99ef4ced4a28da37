"""Database fixtures shared by every test that needs PostgreSQL (mark those `pytest.mark.db`).

One throwaway private cluster per test run (or the server named by HURACAN_TEST_DSN), one
template database migrated once with the real migrations, and per test a fresh database
copied from that template and dropped afterwards:

- `db_dsn`: DSN of a migrated database of the test's own (sync fixture: usable anywhere).
- `db_conn` / `db_pool`: an asyncpg connection / pool on it.
- `empty_db_dsn`: DSN of an empty database (no migrations), for migrator tests.
- `pg_server`: the server itself (its admin DSN, and the private cluster when there is one).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import numpy as np
import numpy.typing as npt
import pytest

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.candle import CandleSeries
from huracan.features.market import Ohlcv, compute_market_features
from huracan.market.candle_files import read_candle_file
from huracan.memory.cluster import ClusterError, PrivateCluster, find_server_binaries
from huracan.memory.database import MAINTENANCE_DATABASE, create_pool, quote_ident, with_database
from huracan.memory.migrate import apply_migrations, default_migrations_dir

TEMPLATE_DATABASE = "huracan_template"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TestServer:
    admin_dsn: str
    # Set when the run owns a private cluster, whose root is state_dir / "postgres" so that
    # resolve_dsn(None, state_dir) finds it running.
    cluster: PrivateCluster | None = None
    state_dir: Path | None = None

    def dsn(self, dbname: str) -> str:
        return with_database(self.admin_dsn, dbname)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion from sync code. In a thread of its own, so that neither a
    running event loop nor pytest-asyncio's current loop of this thread is touched."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        return executor.submit(asyncio.run, coro).result()


async def _admin(server: TestServer, *statements: str) -> None:
    conn = await asyncpg.connect(server.admin_dsn, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def reachable_tmp() -> Iterator[Callable[[], Path]]:
    """Makes temp directories the server can use, removed at the end of the run.

    Not tmp_path_factory: /tmp/pytest-of-root is 0700 root, and when we are root the server
    runs as the postgres OS user, which must be able to enter every parent directory."""
    made: list[Path] = []

    def make() -> Path:
        path = Path(tempfile.mkdtemp(prefix="huracan-test-"))
        path.chmod(0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server(reachable_tmp: Callable[[], Path]) -> Iterator[TestServer]:
    external = os.environ.get("HURACAN_TEST_DSN")
    if external:
        yield TestServer(external)
        return
    try:
        find_server_binaries()
    except ClusterError as exc:
        pytest.skip(f"database tests need PostgreSQL: {exc}")
    state_dir = reachable_tmp()
    cluster = PrivateCluster(state_dir / "postgres")
    try:
        cluster.ensure_started()
        yield TestServer(cluster.dsn(MAINTENANCE_DATABASE), cluster, state_dir)
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def db_template(pg_server: TestServer) -> Iterator[str]:
    """Name of a database holding the real schema; tests get copies, never this one."""
    # A shared external server may run several test sessions at once.
    name = TEMPLATE_DATABASE if pg_server.cluster else f"{TEMPLATE_DATABASE}_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        await _admin(
            pg_server,
            f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)",
            f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0",
        )
        conn = await asyncpg.connect(pg_server.dsn(name), timeout=10)
        try:
            await apply_migrations(conn, default_migrations_dir())
        finally:
            await conn.close()

    run_sync(create())
    yield name
    run_sync(_admin(pg_server, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"))


def _scratch_database(server: TestServer, template: str) -> Iterator[str]:
    name = f"test_{uuid.uuid4().hex}"
    run_sync(_admin(server, f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}"))
    try:
        yield server.dsn(name)
    finally:
        # FORCE ends sessions a failed test left open; the database must go either way.
        run_sync(_admin(server, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"))


@pytest.fixture
def db_dsn(pg_server: TestServer, db_template: str) -> Iterator[str]:
    yield from _scratch_database(pg_server, db_template)


@pytest.fixture
def empty_db_dsn(pg_server: TestServer) -> Iterator[str]:
    yield from _scratch_database(pg_server, "template0")


@pytest.fixture
async def db_conn(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(db_dsn, timeout=10)
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def db_pool(db_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(db_dsn, min_size=1, max_size=4, command_timeout=30)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture
def bundled_slice(tmp_path: Path) -> Callable[[int], Path]:
    """Makes a candle directory with the first `days` days of each bundled file (real bars,
    byte for byte), for runs that must be short."""

    def make(days: int) -> Path:
        directory = tmp_path / f"candles-{days}d"
        directory.mkdir()
        for source in BUNDLED_CANDLES_DIR.glob("*.csv"):
            lines = source.read_text().splitlines(keepends=True)
            (directory / source.name).write_text("".join(lines[: 1 + days * 288]))
        return directory

    return make


@pytest.fixture(scope="session")
def btc() -> CandleSeries:
    """The bundled BTC/USDT 5m bars (real, 2021 Q1)."""
    return read_candle_file(BUNDLED_CANDLES_DIR / "binance_BTC-USDT_5m.csv")


@pytest.fixture(scope="session")
def btc_features(btc: CandleSeries) -> npt.NDArray[np.float64]:
    """The 70 raw market features of every bar of `btc` (NaN during warm-up)."""
    features: npt.NDArray[np.float64] = compute_market_features(Ohlcv.from_series(btc))
    return features
