"""pgvector when the server has it, nothing when it has not.

Debian's PostgreSQL 15 on these machines has no pgvector package, so the pgvector path runs on
a second private cluster built from the PostgreSQL 16 + pgvector binaries of the `pgserver`
wheel (a dev dependency, never imported: only its binaries are used). The rest of the suite's
cluster, without the extension, shows that nothing is required."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from test_learning import entries, insert_trades, service, store_bars

from huracan.core.candle import CandleSeries
from huracan.memory.cluster import PrivateCluster
from huracan.memory.database import create_pool
from huracan.memory.migrate import apply_migrations, default_migrations_dir
from huracan.memory.vectors import pgvector_available, prepare_pgvector, similar_before, vector_columns

pytestmark = pytest.mark.db


def _pgvector_binaries() -> Path:
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("the pgserver wheel (a dev dependency: make install) is missing")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@pytest.fixture(scope="module")
def vector_cluster(reachable_tmp: Callable[[], Path]) -> Iterator[PrivateCluster]:
    cluster = PrivateCluster(reachable_tmp() / "postgres16", binaries=_pgvector_binaries())
    cluster.ensure_started()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def vector_pool(vector_cluster: PrivateCluster) -> AsyncIterator[asyncpg.Pool]:
    admin = await asyncpg.connect(vector_cluster.dsn("postgres"))
    try:
        await admin.execute("DROP DATABASE IF EXISTS vectors WITH (FORCE)")
        await admin.execute("CREATE DATABASE vectors")
    finally:
        await admin.close()
    conn = await asyncpg.connect(vector_cluster.dsn("vectors"))
    try:
        await apply_migrations(conn, default_migrations_dir())
    finally:
        await conn.close()
    pool = await create_pool(vector_cluster.dsn("vectors"), min_size=1, max_size=4, command_timeout=60)
    try:
        yield pool
    finally:
        await pool.close()


async def _columns(pool: asyncpg.Pool) -> set[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT table_name, column_name FROM information_schema.columns WHERE column_name LIKE '%_vec'"
    )
    return {(r[0], r[1]) for r in rows}


async def test_without_the_extension_nothing_is_added(db_pool: asyncpg.Pool) -> None:
    assert await pgvector_available(db_pool) is False
    assert await _columns(db_pool) == set()


async def test_with_pgvector_the_learning_task_asks_postgres_for_similar_setups(
    vector_pool: asyncpg.Pool,
    btc: CandleSeries,
    btc_features: np.ndarray,
) -> None:
    assert await pgvector_available(vector_pool) is True
    assert await pgvector_available(vector_pool) is True  # a second start changes nothing
    assert await _columns(vector_pool) == set(vector_columns())

    await store_bars(vector_pool, btc, 0, 1400)
    ids = await insert_trades(vector_pool, btc, btc_features, entries(400, 1000, 6))
    learning = service(vector_pool)
    await learning.rebuild()
    assert learning._vectors is not None
    await learning._vectors  # the background backfill and index builds
    assert learning.pgvector
    await learning.learn_pass()

    # The learning task writes the vector twins with the real[] columns.
    same = "SELECT count(*) FROM trade_memory WHERE entry_embedding_vec::real[] = entry_embedding"
    assert await vector_pool.fetchval(same) == len(ids)
    assert (
        await vector_pool.fetchval(
            "SELECT count(*) FROM pattern_library WHERE centroid_vec IS NULL OR centroid_vec::real[] <> centroid"
        )
        == 0
    )
    indexes = await vector_pool.fetchval("SELECT count(*) FROM pg_indexes WHERE indexdef LIKE '%USING hnsw%'")
    assert indexes == 2
    explained = await vector_pool.fetchval(
        "SELECT (SELECT count(*) FROM win_analysis) + (SELECT count(*) FROM loss_analysis)"
    )
    assert explained > 0
    assert learning.stats.failed == 0

    # Rows written before the extension came are backfilled.
    await vector_pool.execute("UPDATE trade_memory SET entry_embedding_vec = NULL")
    await prepare_pgvector(vector_pool)
    assert await vector_pool.fetchval(same) == len(ids)

    # PostgreSQL's filtered k-nearest equals brute force over the trades exited by then.
    rows = await vector_pool.fetch(
        "SELECT id, entry_embedding, (extract(epoch FROM exit_time) * 1000)::bigint FROM trade_memory ORDER BY id"
    )
    trade_ids = np.array([r[0] for r in rows])
    embeddings = np.array([r[1] for r in rows], dtype=np.float64)
    exits = np.array([r[2] for r in rows])
    query_id = int(trade_ids[-5])
    query = embeddings[-5]
    before = int(exits[len(exits) // 2])
    found = await similar_before(vector_pool, query, before, 10, exclude=query_id, exchange="binance")
    eligible = (exits < before) & (trade_ids != query_id)
    distances = np.linalg.norm(embeddings[eligible] - query, axis=1)
    expected = trade_ids[eligible][np.argsort(distances, kind="stable")][:10]
    assert [f[0] for f in found] == expected.tolist()

    # A replay's view leaves earlier sessions' replay trades out (ids below its first), and
    # another exchange's trades are never its setups.
    assert (
        await similar_before(
            vector_pool,
            query,
            before,
            10,
            exclude=query_id,
            exchange="binance",
            replays_before=int(trade_ids.max()) + 1,
        )
        == []
    )
    assert await similar_before(vector_pool, query, before, 10, exclude=query_id, exchange="kraken") == []
