"""pgvector, used when the server has it and never required.

With the `vector` extension available (and the right to create it), the entry embeddings of
`trade_memory` and the centroids of `pattern_library` get a `vector` twin: a generated column
computed by PostgreSQL from the `real[]` column, so no write path changes and the two can never
disagree, with an HNSW index. The learning task then asks PostgreSQL for a losing or winning
trade's similar setups that had exited before its entry (a filtered k-nearest query), and a user
can ask psql for the trades most like one:

    SELECT id, symbol, pnl_bps FROM trade_memory
    ORDER BY entry_embedding_vec <-> (SELECT entry_embedding_vec FROM trade_memory WHERE id = 42)
    LIMIT 20;

Without the extension (the Debian PostgreSQL 15 of these machines has none) nothing is added and
the in-process index (setups.py) answers everything. The columns are added at run time, not by a
migration, because the extension may be installed on the server after the migrations ran; adding
a generated column rewrites the table once, under its lock, at the learning task's start-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
import numpy as np
import numpy.typing as npt

from huracan.logs import get_logger
from huracan.memory.candles import ms_to_datetime
from huracan.memory.embedding import EMBEDDING_DIM

log = get_logger("huracan.memory.vectors")

_COLUMNS = (
    ("trade_memory", "entry_embedding_vec", "entry_embedding"),
    ("pattern_library", "centroid_vec", "centroid"),
)


async def enable_pgvector(pool: asyncpg.Pool) -> bool:
    """Create the extension and the vector columns and indexes if the server offers pgvector;
    True when they are in place. Idempotent; never raises for a server without pgvector."""
    available = await pool.fetchval(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
    )
    if available is None:
        log.info("pgvector not available on this server; similarity search stays in process")
        return False
    async with pool.acquire() as conn:
        try:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except asyncpg.InsufficientPrivilegeError as exc:
            log.warning(
                "pgvector is installed but this role may not create it; continuing without", error=str(exc)
            )
            return False
        for table, column, source in _COLUMNS:
            # Table and column names are the constants above; the dimension is ours.
            await conn.execute(
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} vector({EMBEDDING_DIM}) "
                f"GENERATED ALWAYS AS (CASE WHEN cardinality({source}) = {EMBEDDING_DIM} "
                f"THEN {source}::vector({EMBEDDING_DIM}) END) STORED"
            )
            try:
                await conn.execute(
                    f"CREATE INDEX IF NOT EXISTS {table}_{column}_hnsw_idx ON {table} USING hnsw ({column} vector_l2_ops)"
                )
            except asyncpg.UndefinedObjectError:  # pgvector before 0.5 has no HNSW: exact scans
                log.warning("this pgvector has no HNSW index; similarity queries scan", table=table)
    log.info("pgvector in use for similarity queries", version=available)
    return True


async def similar_before(
    pool: asyncpg.Pool, embedding: npt.NDArray[np.floating], before_ms: int, k: int, *, exclude: int
) -> list[tuple[int, bool, float, list[float]]]:
    """The k trades nearest to `embedding` (Euclidean) that had exited by `before_ms`, nearest
    first, without trade `exclude`: (id, won, pnl_bps, entry_features)."""
    async with pool.acquire() as conn, conn.transaction():
        # HNSW filters after its candidate list: a longer list keeps k found when many of the
        # nearest exited after the entry.
        await conn.execute("SELECT set_config('hnsw.ef_search', $1, true)", str(max(40, 4 * k)))
        rows = await conn.fetch(
            """
            SELECT id, is_win, pnl_bps, entry_features FROM trade_memory
            WHERE exit_time <= $2 AND id <> $4 AND entry_embedding_vec IS NOT NULL
            ORDER BY entry_embedding_vec <-> $1::real[]::vector LIMIT $3
            """,
            [float(x) for x in np.asarray(embedding).reshape(-1)],
            ms_to_datetime(before_ms),
            k,
            exclude,
        )
    return [(r[0], bool(r[1]), float(r[2]), list(r[3])) for r in rows]


def vector_columns() -> Sequence[tuple[str, str]]:
    """(table, column) of the columns enable_pgvector adds."""
    return [(table, column) for table, column, _ in _COLUMNS]
