"""pgvector, used when the server has it and never required.

With the `vector` extension available (and the right to create it), the entry embeddings of
`trade_memory` and the centroids of `pattern_library` get a `vector` twin column with an HNSW
index. The learning task writes both in the same statement; `prepare_pgvector` backfills rows
written before. The learning task then asks PostgreSQL for a trade's similar setups that had
exited before its entry (a filtered k-nearest query), and a user can ask psql for the trades
most like one:

    SELECT id, symbol, pnl_bps FROM trade_memory
    ORDER BY entry_embedding_vec <-> (SELECT entry_embedding_vec FROM trade_memory WHERE id = 42)
    LIMIT 20;

Without the extension (the Debian PostgreSQL 15 of these machines has none) nothing is added and
the in-process index (setups.py) answers everything. The columns are added at run time, not by a
migration, because the extension may be installed after the migrations ran. Nothing here holds
a table lock for long: the columns are added without a default (no rewrite), the backfill goes
in batches and the indexes are built CONCURRENTLY, so trading writes go on meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import asyncpg
import numpy as np
import numpy.typing as npt

from huracan.logs import get_logger
from huracan.memory.candles import ms_to_datetime
from huracan.memory.embedding import EMBEDDING_DIM

log = get_logger("huracan.memory.vectors")

# (table, vector column, real[] source, key)
_COLUMNS = (
    ("trade_memory", "entry_embedding_vec", "entry_embedding", "id"),
    ("pattern_library", "centroid_vec", "centroid", "pattern_id"),
)
BACKFILL_BATCH = 5_000
# An index build over a million rows takes minutes, not the pool's command timeout.
INDEX_TIMEOUT_S = 3_600.0


async def pgvector_available(pool: asyncpg.Pool) -> bool:
    """Whether the server offers the extension and it is (or may be) created in this database;
    False too when its columns could not be added now (the table busy: the next start tries)."""
    try:
        return await _available(pool)
    except asyncpg.LockNotAvailableError:
        log.warning("a pgvector column waits for a busy table; similarity search stays in process for now")
        return False


async def _available(pool: asyncpg.Pool) -> bool:
    if await pool.fetchval("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'") is None:
        log.info("pgvector not available on this server; similarity search stays in process")
        return False
    try:
        await pool.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except asyncpg.InsufficientPrivilegeError as exc:
        log.warning(
            "pgvector is installed but this role may not create it; continuing without", error=str(exc)
        )
        return False
    for table, column, _, _ in _COLUMNS:
        exists = await pool.fetchval(
            "SELECT 1 FROM information_schema.columns WHERE table_name = $1 AND column_name = $2",
            table,
            column,
        )
        if exists:  # ALTER would take the table's lock even to find the column there
            continue
        # Names are the constants above. No default: adding the column rewrites nothing. A
        # short lock timeout: never queue the journal's writes behind a long query.
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '2s'")
            await conn.execute(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} vector({EMBEDDING_DIM})"
            )
    return True


async def prepare_pgvector(pool: asyncpg.Pool, beat: Callable[[], None] = lambda: None) -> None:
    """Backfill the vector columns and build their HNSW indexes; idempotent and resumable (an
    interrupted concurrent build leaves an invalid index, which is dropped and built again)."""
    for table, column, source, key in _COLUMNS:
        while True:
            status = await pool.execute(
                f"""
                UPDATE {table} SET {column} = {source}::vector({EMBEDDING_DIM})
                WHERE {key} IN (SELECT {key} FROM {table} WHERE {column} IS NULL AND {source} IS NOT NULL
                                  AND cardinality({source}) = {EMBEDDING_DIM} LIMIT {BACKFILL_BATCH})
                """  # noqa: S608 (constant names only)
            )
            beat()
            if int(status.split()[-1]) < BACKFILL_BATCH:
                break
        index = f"{table}_{column}_hnsw_idx"
        valid = await pool.fetchval(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = $1",
            index,
        )
        if valid is False:
            await pool.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {index}", timeout=INDEX_TIMEOUT_S)
        if valid is not True:
            try:
                await pool.execute(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {table} USING hnsw ({column} vector_l2_ops)",
                    timeout=INDEX_TIMEOUT_S,
                )
            except asyncpg.UndefinedObjectError:  # pgvector before 0.5 has no HNSW: exact scans
                log.warning("this pgvector has no HNSW index; similarity queries scan", table=table)
        beat()
    log.info("pgvector columns and indexes ready")


async def similar_before(
    pool: asyncpg.Pool,
    embedding: npt.NDArray[np.floating],
    before_ms: int,
    k: int,
    *,
    exclude: int,
    exchange: str,
    replays_before: int = 0,
) -> list[tuple[int, bool, float, list[float]]]:
    """The k trades of `exchange` nearest to `embedding` (Euclidean) that had exited before
    `before_ms`, nearest first, without trade `exclude` and without replay trades of ids below
    `replays_before` (a replay's view leaves earlier sessions out): (id, won, pnl_bps, features)."""
    async with pool.acquire() as conn, conn.transaction():
        # HNSW filters after its candidate list: a longer list keeps k found when many of the
        # nearest exited after the entry.
        await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(max(40, 4 * k)))
        rows = await conn.fetch(
            """
            SELECT id, is_win, pnl_bps, entry_features FROM trade_memory
            WHERE exit_time < $2 AND id <> $4 AND entry_embedding_vec IS NOT NULL
              AND exchange = $5 AND NOT (mode = 'replay' AND id < $6)
            ORDER BY entry_embedding_vec <-> $1::real[]::vector LIMIT $3
            """,
            [float(x) for x in np.asarray(embedding).reshape(-1)],
            ms_to_datetime(before_ms),
            k,
            exclude,
            exchange,
            replays_before,
        )
    return [(r[0], bool(r[1]), float(r[2]), list(r[3])) for r in rows]


def vector_columns() -> Sequence[tuple[str, str]]:
    """(table, column) of the columns pgvector_available adds."""
    return [(table, column) for table, column, _, _ in _COLUMNS]
