"""The model registry: which trained models exist, which one trades, which one is A/B tested.

Artefacts are copied into the model directory as `<version>.pt` and identified by their sha256;
a row of `model_registry` records the hash, the feature schema the model was trained on and
its metrics. Every change of the champion (promote, rollback) or of the challenger (A/B) first
loads the artefact, checking hash and schema, and only then changes the rows, in one
transaction under an advisory lock: a model that cannot run never becomes active, and two
operators promoting at once cannot leave two champions (the unique partial index on
`status = 'active'` stays the last line of defence, its violation reported as RegistryConflict).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import itertools
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import asyncpg

from huracan.rl.checkpoint import ArtefactCorrupt, Checkpoint, CheckpointError, file_sha256, load_checkpoint

if TYPE_CHECKING:
    from huracan.config import HuracanConfig

Status = Literal["candidate", "shadow", "active", "retired", "rolled_back"]
# The bytes of "huracanR" as a big-endian bigint: one key for every registry transition, whichever
# process (daemon, `huracan models`, `huracan train`) makes it.
REGISTRY_LOCK_KEY = int.from_bytes(b"huracanR", "big")
# A version is also a file name: no separators, no leading dot.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_ONE_ACTIVE_INDEX = "model_registry_one_active_idx"
_ONE_SHADOW_INDEX = "model_registry_one_shadow_idx"


class RegistryError(Exception):
    """A registry operation that cannot be done as asked; the message says why."""


class UnknownModel(RegistryError):
    """No model of that version is registered."""


class NothingToRollBack(RegistryError):
    """No active model, or no earlier champion to return to."""


class InvalidRequest(RegistryError):
    """The request contradicts the registry's rules (A/B on the champion, a share out of range...)."""


class RegistryConflict(RegistryError):
    """Another process changed the registry at the same moment; looking again and retrying helps."""


@dataclass(frozen=True, slots=True)
class ModelRecord:
    version: str
    status: Status
    parent_version: str | None
    schema_hash: str
    artifact_path: Path
    artifact_sha256: str | None
    metrics: dict[str, Any]
    notes: str | None
    created_at: datetime
    promoted_at: datetime | None
    retired_at: datetime | None
    # The challenger's share of the symbols while it is in shadow; None otherwise.
    ab_share: float | None

    def to_json(self) -> dict[str, Any]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment is not None else None

        return {
            "version": self.version,
            "status": self.status,
            "parent_version": self.parent_version,
            "schema_hash": self.schema_hash,
            "artifact_path": str(self.artifact_path),
            "artifact_sha256": self.artifact_sha256,
            "metrics": dict(self.metrics),
            "notes": self.notes,
            "created_at": iso(self.created_at),
            "promoted_at": iso(self.promoted_at),
            "retired_at": iso(self.retired_at),
            "ab_share": self.ab_share,
        }


# --- pure helpers -------------------------------------------------------------------------------
def model_dir_of(config: HuracanConfig) -> Path:
    """The model directory: `agent.model_dir`, relative ones under the daemon's state dir."""
    model_dir = config.agent.model_dir
    return model_dir if model_dir.is_absolute() else config.daemon.state_dir / model_dir


def version_name(created_at: datetime, sha256: str) -> str:
    """`m20261124-112233-abcdef`: sorts by registration time (UTC), tells artefacts apart by hash."""
    return f"m{created_at.astimezone(UTC):%Y%m%d-%H%M%S}-{sha256[:6]}"


def challenger_symbols(symbols: Sequence[str], version: str, share: float) -> frozenset[str]:
    """The symbols a challenger decides for: ceil(share * n) of them (at least one when share > 0),
    ranked by a hash of (version, symbol). The same version always gets the same symbols, whatever
    their order, and a larger share only adds symbols, so a running A/B test keeps its sample."""
    universe = sorted(set(symbols))
    if not universe or not share > 0:  # `not >` also refuses NaN
        return frozenset()
    n = len(universe)
    count = min(n, max(1, math.ceil(min(share, 1.0) * n)))
    ranked = sorted(universe, key=lambda symbol: (_rank(version, symbol), symbol))
    return frozenset(ranked[:count])


def _rank(version: str, symbol: str) -> bytes:
    return hashlib.sha256(f"{version}\x1f{symbol}".encode()).digest()


def _json_safe(value: Any) -> Any:
    """jsonb has no NaN or Infinity: an undefined figure (a t-statistic of no trades) is null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _record(row: asyncpg.Record, model_dir: Path) -> ModelRecord:
    metrics = row["metrics"]
    if isinstance(metrics, str):  # no jsonb codec on the pool: asyncpg hands over the text
        metrics = json.loads(metrics)
    share = row["ab_share"]
    return ModelRecord(
        version=row["version"],
        status=cast(Status, row["status"]),
        parent_version=row["parent_version"],
        schema_hash=row["state_schema_hash"],
        # Stored relative to the model directory, so that the state dir can move.
        artifact_path=model_dir / row["artifact_path"],
        artifact_sha256=row["artifact_sha256"],
        metrics=dict(metrics),
        notes=row["notes"],
        created_at=row["created_at"],
        promoted_at=row["promoted_at"],
        retired_at=row["retired_at"],
        ab_share=float(share) if share is not None else None,
    )


def _stage_copy(source: Path, model_dir: Path) -> Path:
    """A durable copy of `source` under a temporary name in `model_dir` (same file system, so
    the final rename is atomic). CheckpointError naming `source` when it cannot be read."""
    model_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=".register-", suffix=".pt", dir=model_dir)
    staged = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as inp:
            shutil.copyfileobj(inp, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
    except FileNotFoundError:
        staged.unlink(missing_ok=True)
        raise CheckpointError(f"{source}: model file not found") from None
    except IsADirectoryError:
        staged.unlink(missing_ok=True)
        raise CheckpointError(f"{source}: is a directory, not a model file") from None
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return staged


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable; some file systems cannot open a directory, which only costs durability."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _with_version(exc: CheckpointError, version: str) -> CheckpointError:
    """The same error (SchemaMismatch stays SchemaMismatch) saying which model it is about."""
    return type(exc)(f"model {version}: {exc}")


# --- the registry -------------------------------------------------------------------------------
class ModelRegistry:
    def __init__(self, pool: asyncpg.Pool, model_dir: Path) -> None:
        self.pool = pool
        self.model_dir = model_dir

    # --- reading --------------------------------------------------------------------------------
    async def list(self) -> builtins.list[ModelRecord]:
        rows = await self.pool.fetch("SELECT * FROM model_registry ORDER BY created_at, version")
        return [_record(r, self.model_dir) for r in rows]

    async def get(self, version: str) -> ModelRecord:
        row = await self.pool.fetchrow("SELECT * FROM model_registry WHERE version = $1", version)
        if row is None:
            raise UnknownModel(f"no model {version!r} in the registry (see `huracan models list`)")
        return _record(row, self.model_dir)

    async def active(self) -> ModelRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM model_registry WHERE status = 'active'")
        return _record(row, self.model_dir) if row is not None else None

    async def challenger(self) -> ModelRecord | None:
        row = await self.pool.fetchrow("SELECT * FROM model_registry WHERE status = 'shadow'")
        return _record(row, self.model_dir) if row is not None else None

    async def load(self, record: ModelRecord, *, expected_schema_hash: str) -> Checkpoint:
        """The model's checkpoint, its bytes checked against the registered sha256 and its
        schema against the running code's. CheckpointError (or subclass) naming the version."""
        if record.artifact_sha256 is None:
            raise ArtefactCorrupt(
                f"model {record.version}: no sha256 was recorded for {record.artifact_path}, so it cannot "
                "be verified; register the file again"
            )
        try:
            return await asyncio.to_thread(
                load_checkpoint,
                record.artifact_path,
                expected_schema_hash=expected_schema_hash,
                expected_sha256=record.artifact_sha256,
            )
        except CheckpointError as exc:
            raise _with_version(exc, record.version) from None

    # --- registering ----------------------------------------------------------------------------
    async def register(
        self,
        checkpoint_path: Path,
        *,
        parent_version: str | None = None,
        metrics: Mapping[str, Any] | None = None,
        notes: str | None = None,
        version: str | None = None,
    ) -> ModelRecord:
        """Copy a checkpoint into the model directory and record it as a candidate. The copy is
        what gets loaded and hashed, so the registered hash is that of bytes known to load."""
        if version is not None and not _VERSION.match(version):
            raise InvalidRequest(
                "a version is letters, digits, '.', '_' and '-' (a file name, not starting with '.' or '-'), "
                f"not {version!r}"
            )
        staged = await asyncio.to_thread(_stage_copy, checkpoint_path, self.model_dir)
        try:
            try:
                checkpoint = await asyncio.to_thread(load_checkpoint, staged)
            except CheckpointError as exc:
                raise type(exc)(str(exc).replace(str(staged), str(checkpoint_path))) from None
            sha256 = await asyncio.to_thread(file_sha256, staged)
            created_at = datetime.now(UTC)
            merged = _json_safe({**checkpoint.metrics, **(metrics or {})})
            base = version if version is not None else version_name(created_at, sha256)
            for attempt in itertools.count(1):
                candidate = base if attempt == 1 else f"{base}-{attempt}"
                record = await self._insert(
                    candidate,
                    staged,
                    parent_version,
                    checkpoint.schema_hash,
                    sha256,
                    merged,
                    notes,
                    created_at,
                )
                if record is not None:
                    return record
                if version is not None:
                    raise InvalidRequest(f"version {version!r} is already registered")
            raise AssertionError("unreachable")
        finally:
            staged.unlink(missing_ok=True)

    async def _insert(
        self,
        version: str,
        staged: Path,
        parent_version: str | None,
        schema_hash: str,
        sha256: str,
        metrics: Any,
        notes: str | None,
        created_at: datetime,
    ) -> ModelRecord | None:
        """Insert the row and move the file into place in one transaction; None when the version
        is taken (the file then stays staged: the name belongs to the other model)."""
        target = self.model_dir / f"{version}.pt"
        moved = False
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(
                    "INSERT INTO model_registry (version, status, parent_version, state_schema_hash,"
                    " artifact_path, artifact_sha256, metrics, notes, created_at)"
                    " VALUES ($1, 'candidate', $2, $3, $4, $5, $6::jsonb, $7, $8) RETURNING *",
                    version,
                    parent_version,
                    schema_hash,
                    target.name,
                    sha256,
                    json.dumps(metrics, allow_nan=False),
                    notes,
                    created_at,
                )
                # The row holds the name: no other registration can be moving a file onto it.
                os.replace(staged, target)
                moved = True
            await asyncio.to_thread(_fsync_dir, self.model_dir)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == "model_registry_version_key":
                return None
            raise
        except asyncpg.ForeignKeyViolationError:
            raise UnknownModel(f"parent model {parent_version!r} is not in the registry") from None
        except BaseException:
            if moved:  # the row was not committed: the file would belong to nothing
                target.unlink(missing_ok=True)
            raise
        assert row is not None
        return _record(row, self.model_dir)

    # --- transitions ----------------------------------------------------------------------------
    @asynccontextmanager
    async def _transition(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction holding the registry lock until it ends."""
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", REGISTRY_LOCK_KEY)
                yield conn
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == _ONE_ACTIVE_INDEX:
                raise RegistryConflict(
                    "another model became active at the same moment (outside the registry's lock); "
                    "nothing was changed: look at `huracan models list` and retry"
                ) from exc
            if exc.constraint_name == _ONE_SHADOW_INDEX:
                raise RegistryConflict(
                    "another challenger was put in shadow at the same moment; nothing was changed: retry"
                ) from exc
            raise

    async def _locked_row(self, conn: asyncpg.Connection, version: str, verified: ModelRecord) -> ModelRecord:
        row = await conn.fetchrow("SELECT * FROM model_registry WHERE version = $1 FOR UPDATE", version)
        if row is None:
            raise UnknownModel(f"no model {version!r} in the registry (see `huracan models list`)")
        current = _record(row, self.model_dir)
        if (current.artifact_sha256, current.artifact_path) != (
            verified.artifact_sha256,
            verified.artifact_path,
        ):
            raise RegistryConflict(f"model {version}'s artefact changed while it was being verified; retry")
        return current

    async def _make_active(self, conn: asyncpg.Connection, version: str) -> ModelRecord:
        row = await conn.fetchrow(
            "UPDATE model_registry SET status = 'active', promoted_at = now(), retired_at = NULL,"
            " ab_share = NULL WHERE version = $1 RETURNING *",
            version,
        )
        assert row is not None
        return _record(row, self.model_dir)

    async def promote(self, version: str, *, expected_schema_hash: str) -> ModelRecord:
        """Make `version` the champion, retiring the current one; returns the new champion.
        Promoting the challenger ends the A/B test. Promoting the champion changes nothing."""
        record = await self.get(version)
        if record.status == "active":
            return record
        await self.load(record, expected_schema_hash=expected_schema_hash)
        async with self._transition() as conn:
            current = await self._locked_row(conn, version, record)
            if current.status == "active":
                return current
            await conn.execute(
                "UPDATE model_registry SET status = 'retired', retired_at = now() WHERE status = 'active'"
            )
            return await self._make_active(conn, version)

    async def rollback(self, *, to_version: str | None = None, expected_schema_hash: str) -> ModelRecord:
        """Take the champion out of service (rolled_back) and reinstate an earlier one: `to_version`,
        or by default the retired model promoted most recently. Returns the reinstated champion."""
        active = await self.active()
        if active is None:
            raise NothingToRollBack("no model is active: there is nothing to roll back")
        if to_version is None:
            row = await self.pool.fetchrow(
                "SELECT * FROM model_registry WHERE status = 'retired' AND promoted_at IS NOT NULL"
                " ORDER BY promoted_at DESC, created_at DESC LIMIT 1"
            )
            if row is None:
                raise NothingToRollBack(
                    f"no earlier champion to roll back to from {active.version}: no retired model was ever "
                    "active (promote a candidate instead)"
                )
            target = _record(row, self.model_dir)
        else:
            target = await self.get(to_version)
            if target.version == active.version:
                raise InvalidRequest(f"model {to_version} is the active model already")
            if target.promoted_at is None:
                raise InvalidRequest(
                    f"model {to_version} was never a champion, so it is no rollback target; "
                    f"use `huracan models promote {to_version}`"
                )
        await self.load(target, expected_schema_hash=expected_schema_hash)
        async with self._transition() as conn:
            current = await conn.fetchrow("SELECT * FROM model_registry WHERE status = 'active' FOR UPDATE")
            if current is None or current["version"] != active.version:
                raise RegistryConflict(
                    f"the champion changed from {active.version} while rolling back; nothing was changed: "
                    "look at `huracan models list` and retry"
                )
            locked_target = await self._locked_row(conn, target.version, target)
            if to_version is None and locked_target.status != "retired":
                raise RegistryConflict(f"model {target.version} changed while rolling back; retry")
            await conn.execute(
                "UPDATE model_registry SET status = 'rolled_back', retired_at = now() WHERE version = $1",
                active.version,
            )
            return await self._make_active(conn, target.version)

    async def start_ab(self, version: str, *, share: float, expected_schema_hash: str) -> ModelRecord:
        """Put `version` in shadow as the challenger for `share` of the symbols; a previous
        challenger returns to candidate."""
        if not (0.0 < share <= 1.0):  # also refuses NaN
            raise InvalidRequest(f"A/B share must be above 0 and at most 1, got {share}")
        record = await self.get(version)
        if record.status == "active":
            raise InvalidRequest(f"model {version} is the champion; an A/B challenger must be another model")
        await self.load(record, expected_schema_hash=expected_schema_hash)
        async with self._transition() as conn:
            current = await self._locked_row(conn, version, record)
            if current.status == "active":
                raise InvalidRequest(f"model {version} became the champion meanwhile; nothing was changed")
            await conn.execute(
                "UPDATE model_registry SET status = 'candidate', ab_share = NULL"
                " WHERE status = 'shadow' AND version <> $1",
                version,
            )
            row = await conn.fetchrow(
                "UPDATE model_registry SET status = 'shadow', ab_share = $2 WHERE version = $1 RETURNING *",
                version,
                share,
            )
        assert row is not None
        return _record(row, self.model_dir)

    async def stop_ab(self) -> ModelRecord | None:
        """End the A/B test: the challenger returns to candidate. None when there was none."""
        async with self._transition() as conn:
            row = await conn.fetchrow(
                "UPDATE model_registry SET status = 'candidate', ab_share = NULL"
                " WHERE status = 'shadow' RETURNING *"
            )
        return _record(row, self.model_dir) if row is not None else None
