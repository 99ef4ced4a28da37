"""The private PostgreSQL cluster and the connection helpers, against real server binaries."""

from __future__ import annotations

import os
import re
import signal
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import pytest

from huracan.memory import cluster as cluster_module
from huracan.memory.cluster import ClusterError, PrivateCluster, find_server_binaries
from huracan.memory.database import (
    create_pool,
    database_name,
    ensure_database,
    quote_ident,
    resolve_dsn,
    with_database,
)

if TYPE_CHECKING:
    from conftest import TestServer


def _postmaster_pid(cluster: PrivateCluster) -> int:
    return int((cluster.data_dir / "postmaster.pid").read_text().splitlines()[0])


def _wait_until_reaped(cluster: PrivateCluster, timeout_s: float = 10.0) -> None:
    # A killed postmaster stays a zombie, alive to kill(pid, 0), until its parent reaps it.
    deadline = time.monotonic() + timeout_s
    while cluster.is_running() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def scratch_cluster(reachable_tmp: Callable[[], Path]) -> Iterator[PrivateCluster]:
    """A cluster of this module's own: these tests stop and crash it, which the session's
    shared cluster must never suffer."""
    try:
        find_server_binaries()
    except ClusterError as exc:
        pytest.skip(f"needs PostgreSQL server binaries: {exc}")
    cluster = PrivateCluster(reachable_tmp() / "postgres")
    try:
        yield cluster
    finally:
        cluster.stop()


# --- without a server ------------------------------------------------------------------------


def test_missing_binaries_give_an_install_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Simulates a machine without PostgreSQL: an empty PATH and no /usr/lib/postgresql.
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(cluster_module, "SERVER_BINARY_SEARCH_ROOTS", (tmp_path / "no-postgresql",))
    root = tmp_path / "state" / "postgres"

    with pytest.raises(ClusterError) as excinfo:
        PrivateCluster(root).ensure_started()

    message = str(excinfo.value)
    assert "initdb, pg_ctl, postgres" in message
    assert "apt-get install postgresql" in message
    assert "HURACAN_DATABASE__DSN" in message
    assert not root.exists(), "nothing is created on disk when the server cannot be run"


def test_binaries_are_found_under_the_highest_versioned_lib_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Simulates /usr/lib/postgresql with two major versions and nothing on PATH.
    for version in ("9.6", "14", "16"):
        bin_dir = tmp_path / version / "bin"
        bin_dir.mkdir(parents=True)
        for name in ("initdb", "pg_ctl", "postgres"):
            (bin_dir / name).write_text("#!/bin/sh\n")
            (bin_dir / name).chmod(0o755)
    (tmp_path / "16" / "bin" / "postgres").unlink()  # an incomplete install is skipped
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    monkeypatch.setattr(cluster_module, "SERVER_BINARY_SEARCH_ROOTS", (tmp_path,))

    assert find_server_binaries().bin_dir == tmp_path / "14" / "bin"
    assert find_server_binaries(preferred_major="9.6").bin_dir == tmp_path / "9.6" / "bin"


def test_too_long_socket_path_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    root = tmp_path / ("x" * 120) / "postgres"
    with pytest.raises(ClusterError, match=r"107-byte limit"):
        PrivateCluster(root).ensure_started()
    assert not root.exists()


def test_dsn_names_the_absolute_socket_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cluster = PrivateCluster(Path("var/postgres"), port=6543)
    assert cluster.root == tmp_path / "var" / "postgres"
    assert cluster.dsn("huracan") == (
        f"postgresql://huracan@/huracan?host={tmp_path}/var/postgres/run&port=6543"
    )
    assert cluster.socket_path.name == ".s.PGSQL.6543"


def test_stop_and_is_running_without_a_cluster_do_nothing(tmp_path: Path) -> None:
    cluster = PrivateCluster(tmp_path / "never-started")
    assert not cluster.is_running()
    cluster.stop()
    assert not cluster.root.exists()


def test_dsn_helpers() -> None:
    dsn = "postgresql://huracan@/huracan?host=/srv/h/run&port=5432"
    assert database_name(dsn) == "huracan"
    assert with_database(dsn, "postgres") == "postgresql://huracan@/postgres?host=/srv/h/run&port=5432"
    assert database_name("postgresql://u:p@db.example:5433/memory?sslmode=require") == "memory"
    assert database_name("postgresql://u@h/?dbname=other") == "other"
    assert with_database("postgresql://u@h/x?dbname=other&sslmode=require", "y") == (
        "postgresql://u@h/y?sslmode=require"
    )
    assert database_name("postgresql://u@h") is None
    assert quote_ident('we"ird') == '"we""ird"'


def test_resolve_dsn_with_a_configured_dsn_starts_nothing(tmp_path: Path) -> None:
    configured = "postgresql://trader@db.example:5432/huracan"
    assert resolve_dsn(configured, tmp_path / "state") == configured
    assert not (tmp_path / "state").exists()


# --- the cluster's life cycle ----------------------------------------------------------------


@pytest.mark.db
async def test_ensure_started_creates_a_private_socket_only_cluster(scratch_cluster: PrivateCluster) -> None:
    scratch_cluster.ensure_started()
    assert scratch_cluster.is_running()
    assert scratch_cluster.socket_path.exists()
    assert stat.S_IMODE(scratch_cluster.socket_dir.stat().st_mode) == 0o700
    if os.geteuid() == 0:
        assert scratch_cluster.socket_dir.owner() == "postgres"
        assert scratch_cluster.data_dir.owner() == "postgres"

    conn = await asyncpg.connect(scratch_cluster.dsn("postgres"), timeout=10)
    try:
        assert await conn.fetchval("SHOW listen_addresses") == ""
        assert await conn.fetchval("SHOW fsync") == "on"
        assert await conn.fetchval("SHOW server_encoding") == "UTF8"
        assert await conn.fetchval("SELECT current_user") == "huracan"
    finally:
        await conn.close()
    hba = (scratch_cluster.data_dir / "pg_hba.conf").read_text()
    assert [line for line in hba.splitlines() if line and not line.startswith("#")] == ["local all all trust"]


@pytest.mark.db
def test_second_ensure_started_reuses_the_running_server(scratch_cluster: PrivateCluster) -> None:
    scratch_cluster.ensure_started()
    pid = _postmaster_pid(scratch_cluster)
    created = (scratch_cluster.data_dir / "PG_VERSION").stat().st_mtime_ns

    # Another process (say `huracan migrate` beside the daemon) describing the same root.
    PrivateCluster(scratch_cluster.root).ensure_started()

    assert _postmaster_pid(scratch_cluster) == pid
    assert (scratch_cluster.data_dir / "PG_VERSION").stat().st_mtime_ns == created, "no second initdb"


@pytest.mark.db
async def test_stop_then_start_keeps_the_data(scratch_cluster: PrivateCluster) -> None:
    scratch_cluster.ensure_started()
    dsn = scratch_cluster.dsn("postgres")
    await _execute(dsn, "CREATE TABLE IF NOT EXISTS survives_restart (id int)")

    scratch_cluster.stop()
    assert not scratch_cluster.is_running()
    assert not (scratch_cluster.data_dir / "postmaster.pid").exists()
    scratch_cluster.stop()  # not running: a no-op, no error

    scratch_cluster.ensure_started()
    assert await _fetchval(dsn, "SELECT to_regclass('survives_restart') IS NOT NULL") is True


@pytest.mark.db
async def test_ensure_started_recovers_after_a_crash(scratch_cluster: PrivateCluster) -> None:
    scratch_cluster.ensure_started()
    dsn = scratch_cluster.dsn("postgres")
    await _execute(dsn, "CREATE TABLE IF NOT EXISTS survives_crash (id int)")
    pid = _postmaster_pid(scratch_cluster)

    os.kill(pid, signal.SIGKILL)  # a power cut, as far as PostgreSQL can tell
    _wait_until_reaped(scratch_cluster)
    assert (scratch_cluster.data_dir / "postmaster.pid").exists(), "the crash leaves a stale pid file"
    assert not scratch_cluster.is_running()

    scratch_cluster.ensure_started()

    assert _postmaster_pid(scratch_cluster) != pid
    assert await _fetchval(dsn, "SELECT to_regclass('survives_crash') IS NOT NULL") is True


@pytest.mark.db
def test_a_server_that_will_not_start_reports_command_and_log(scratch_cluster: PrivateCluster) -> None:
    scratch_cluster.ensure_started()
    scratch_cluster.stop()
    conf = scratch_cluster.data_dir / "postgresql.conf"
    original = conf.read_text()
    conf.write_text(original + "huracan_no_such_setting = 1\n")
    try:
        with pytest.raises(ClusterError) as excinfo:
            scratch_cluster.ensure_started()
        message = str(excinfo.value)
        assert "pg_ctl start" in message
        assert str(scratch_cluster.log_file) in message
        assert "huracan_no_such_setting" in message  # the server's own words, from its log
    finally:
        conf.write_text(original)
    scratch_cluster.ensure_started()
    assert scratch_cluster.is_running()


@pytest.mark.db
@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the cluster to the postgres OS user")
def test_unreachable_parent_directory_is_named(reachable_tmp: Callable[[], Path]) -> None:
    try:
        find_server_binaries()
    except ClusterError as exc:
        pytest.skip(f"needs PostgreSQL server binaries: {exc}")
    locked = reachable_tmp() / "locked"
    locked.mkdir(mode=0o700)
    with pytest.raises(ClusterError, match=rf"cannot enter {re.escape(str(locked))} .*chmod o\+x"):
        PrivateCluster(locked / "state" / "postgres").ensure_started()


# --- database.py against the session's server ------------------------------------------------


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


@pytest.mark.db
def test_resolve_dsn_without_a_dsn_reuses_the_private_cluster(pg_server: TestServer) -> None:
    if pg_server.state_dir is None or pg_server.cluster is None:
        pytest.skip("HURACAN_TEST_DSN is set: this run has no private cluster")
    pid = _postmaster_pid(pg_server.cluster)
    dsn = resolve_dsn(None, pg_server.state_dir, "memory_x")
    assert dsn == pg_server.cluster.dsn("memory_x")
    assert _postmaster_pid(pg_server.cluster) == pid


@pytest.mark.db
async def test_ensure_database_creates_a_missing_database_once(pg_server: TestServer) -> None:
    name = f"ensure_{uuid.uuid4().hex[:12]}"
    dsn = pg_server.dsn(name)
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(dsn, timeout=10)
    try:
        await ensure_database(dsn)
        await ensure_database(dsn)  # exists now: only checks that it connects
        assert await _fetchval(dsn, "SELECT current_database()") == name
    finally:
        await _execute(pg_server.admin_dsn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.mark.db
async def test_create_pool_connects_to_the_database(db_dsn: str) -> None:
    pool = await create_pool(db_dsn, min_size=1, max_size=2, command_timeout=5)
    try:
        assert await pool.fetchval("SELECT current_setting('application_name')") == "huracan"
        assert await pool.fetchval("SELECT count(*) FROM schema_migrations") >= 1
    finally:
        await pool.close()
