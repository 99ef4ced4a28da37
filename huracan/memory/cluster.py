"""The private PostgreSQL cluster: the daemon's memory when no external server is configured.

One data directory under the state directory, reachable only through a unix socket in a
private directory (no TCP), trust authentication for the socket's owner only. The server
refuses to run as root, so when we are root every server-side command runs as the `postgres`
OS user through `runuser`, and the directories it writes are handed to that user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import re
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from huracan.logs import get_logger

log = get_logger(__name__)

SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
# Debian/Ubuntu install each major version side by side here; the highest one wins.
SERVER_BINARY_SEARCH_ROOTS: tuple[Path, ...] = (Path("/usr/lib/postgresql"),)
SERVER_OS_USER = "postgres"
# sun_path is 108 bytes on Linux including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107
MISSING_BINARIES_MESSAGE = (
    "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
    "/usr/lib/postgresql/*/bin: install them, e.g. `apt-get install postgresql`, or set "
    "database.dsn / HURACAN_DATABASE__DSN to use an existing server"
)
INITDB_TIMEOUT_S = 180.0
PG_CTL_TIMEOUT_S = 90
OUTPUT_TAIL_LINES = 25
# pg_ctl status: 0 running, 3 not running, 4 no accessible data directory.
PG_CTL_STATUS_RUNNING = 0


_NOT_INHERITED = ("PG", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_")


class ClusterError(RuntimeError):
    """The private cluster could not be found, created, started or stopped."""


@dataclass(frozen=True, slots=True)
class ServerBinaries:
    bin_dir: Path

    @property
    def initdb(self) -> str:
        return str(self.bin_dir / "initdb")

    @property
    def pg_ctl(self) -> str:
        return str(self.bin_dir / "pg_ctl")


def _has_server_binaries(directory: Path) -> bool:
    return all(os.access(directory / name, os.X_OK) for name in SERVER_BINARIES)


def _major_versions(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    versions = [p for p in root.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
    return sorted(versions, key=lambda p: tuple(int(part) for part in p.name.split(".")), reverse=True)


def find_server_binaries(preferred_major: str | None = None) -> ServerBinaries:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then the highest
    /usr/lib/postgresql/<major>/bin. An existing data directory's major version is preferred
    because a server of another major version cannot open it."""
    if preferred_major is not None:
        for root in SERVER_BINARY_SEARCH_ROOTS:
            candidate = root / preferred_major / "bin"
            if _has_server_binaries(candidate):
                return ServerBinaries(candidate)
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        # /usr/local/bin often holds symlinks; pg_ctl finds postgres next to its real self.
        candidate = Path(on_path).resolve().parent
        if _has_server_binaries(candidate):
            return ServerBinaries(candidate)
    for root in SERVER_BINARY_SEARCH_ROOTS:
        for version_dir in _major_versions(root):
            if _has_server_binaries(version_dir / "bin"):
                return ServerBinaries(version_dir / "bin")
    raise ClusterError(MISSING_BINARIES_MESSAGE)


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _quote_conf(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class PrivateCluster:
    """A PostgreSQL cluster owned by the daemon: `root/data` (the cluster), `root/run` (the
    socket directory, 0700) and `root/postgres.log` (the server log)."""

    root: Path
    superuser: str = "huracan"
    # Only names the socket file (.s.PGSQL.<port>); nothing listens on TCP.
    port: int = 5432
    # The directory of initdb, pg_ctl and postgres; None: found on PATH or under /usr/lib.
    binaries: Path | None = None

    def __post_init__(self) -> None:
        # The DSN must carry an absolute socket directory whatever the caller's cwd is later.
        object.__setattr__(self, "root", Path(self.root).absolute())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def socket_path(self) -> Path:
        return self.socket_dir / f".s.PGSQL.{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def dsn(self, dbname: str) -> str:
        """A libpq URI understood by asyncpg and psql alike."""
        host = quote(str(self.socket_dir), safe="/")
        return f"postgresql://{quote(self.superuser)}@/{quote(dbname)}?host={host}&port={self.port}"

    def is_running(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        # A postmaster.pid left by a crash names a dead process: pg_ctl checks that for us.
        result = self._run(self._binaries().pg_ctl, "status", "-D", str(self.data_dir), check=False)
        return result.returncode == PG_CTL_STATUS_RUNNING

    def ensure_started(self) -> None:
        """Create the cluster on first use, start it if it is not running, reuse it if it is."""
        self._check_socket_path()
        self._binaries()  # fail on missing binaries before anything is created on disk
        self._prepare_directories()
        with self._exclusive():
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb()
            self._write_config()
            if self.is_running():
                log.debug("private cluster already running", root=str(self.root))
                return
            self._start()

    def stop(self) -> None:
        if not self.data_dir.exists():
            return
        with self._exclusive():
            if not self.is_running():
                return
            self._run(
                self._binaries().pg_ctl,
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(PG_CTL_TIMEOUT_S),
                timeout=PG_CTL_TIMEOUT_S + 10,
            )
            log.info("private cluster stopped", root=str(self.root))

    # --- internals -------------------------------------------------------------------------

    def _binaries(self) -> ServerBinaries:
        if self.binaries is not None:
            return ServerBinaries(self.binaries)
        version_file = self.data_dir / "PG_VERSION"
        try:
            preferred = version_file.read_text().strip() or None
        except OSError:
            preferred = None
        return find_server_binaries(preferred)

    def _server_user(self) -> pwd.struct_passwd | None:
        """The OS user the server runs as when that is not us (only when we are root)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise ClusterError(
                f"running as root, and PostgreSQL refuses to run as root, but there is no "
                f"'{SERVER_OS_USER}' OS user to run it as: install the postgresql package or run "
                f"huracan as an unprivileged user"
            ) from None

    def _check_socket_path(self) -> None:
        length = len(os.fsencode(self.socket_path))
        if length > MAX_SOCKET_PATH_BYTES:
            raise ClusterError(
                f"the private cluster's socket path {self.socket_path} is {length} bytes, over the "
                f"{MAX_SOCKET_PATH_BYTES}-byte limit of unix sockets: choose a shorter state directory "
                f"(daemon.state_dir) or set database.dsn to use an existing server"
            )

    def _prepare_directories(self) -> None:
        user = self._server_user()
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            for directory in (self.root, self.socket_dir):
                if user is not None:
                    os.chown(directory, user.pw_uid, user.pw_gid)
                # Whoever can reach the socket is a superuser (trust auth): keep it private.
                directory.chmod(0o700)
        except OSError as exc:
            raise ClusterError(f"cannot prepare the private cluster directory {self.root}: {exc}") from exc
        if user is not None:
            self._check_traversable(user)

    def _check_traversable(self, user: pwd.struct_passwd) -> None:
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
        for parent in reversed(self.root.parents):
            st = parent.stat()
            if st.st_uid == user.pw_uid:
                allowed = bool(st.st_mode & stat.S_IXUSR)
            elif st.st_gid in groups:
                allowed = bool(st.st_mode & stat.S_IXGRP)
            else:
                allowed = bool(st.st_mode & stat.S_IXOTH)
            if not allowed:
                raise ClusterError(
                    f"the PostgreSQL server runs as OS user '{user.pw_name}', which cannot enter "
                    f"{parent} (mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}): "
                    f"move the state directory elsewhere or allow it, e.g. `chmod o+x {parent}`"
                )

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        # The daemon and `huracan migrate` may start the cluster at the same moment; two
        # initdb or pg_ctl start runs on one directory would trip over each other.
        with (self.root / "cluster.lock").open("a") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _initdb(self) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise ClusterError(
                f"{self.data_dir} exists and is not empty but holds no PostgreSQL cluster (no "
                f"PG_VERSION): move it away so a fresh cluster can be created there"
            )
        log.info("creating private cluster", data_dir=str(self.data_dir))
        self._run(
            self._binaries().initdb,
            "-D",
            str(self.data_dir),
            "--auth=trust",
            f"--username={self.superuser}",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
            timeout=INITDB_TIMEOUT_S,
        )

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": "''",
            "port": str(self.port),
            "unix_socket_directories": _quote_conf(str(self.socket_dir)),
            "unix_socket_permissions": "0700",
            # This cluster is the product's memory: never trade durability for speed here.
            "fsync": "on",
            "synchronous_commit": "on",
            "full_page_writes": "on",
            # A small VPS shares its memory with the agent.
            "shared_buffers": "128MB",
            "max_connections": "50",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
        }
        body = "# Written by huracan on every start; edits here are overwritten.\n" + "".join(
            f"{key} = {value}\n" for key, value in settings.items()
        )
        self._write_owned(self.data_dir / "huracan.conf", body)
        main_conf = self.data_dir / "postgresql.conf"
        # `include`, not include_if_exists: without our file the server would fall back to
        # listening on localhost TCP and /var/run/postgresql, so a missing file must fail.
        include_line = "include 'huracan.conf'\n"
        text = main_conf.read_text()
        if include_line not in text:
            self._write_owned(main_conf, text.rstrip("\n") + "\n\n" + include_line)
        self._write_owned(
            self.data_dir / "pg_hba.conf",
            "# Written by huracan: the unix socket only, its directory is private (0700).\n"
            "local all all trust\n",
        )

    def _write_owned(self, path: Path, text: str) -> None:
        if path.exists() and path.read_text() == text:
            return
        path.write_text(text)
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(0o600)

    def _start(self) -> None:
        log.info("starting private cluster", root=str(self.root))
        result = self._run(
            self._binaries().pg_ctl,
            "start",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            str(PG_CTL_TIMEOUT_S),
            timeout=PG_CTL_TIMEOUT_S + 10,
            check=False,
        )
        if result.returncode != 0:
            raise self._failure(result.args, result.returncode, result.stdout)

    def _run(self, *argv: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        user = self._server_user()
        command: list[str] = list(argv)
        if user is not None:
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            command = [runuser, "-u", user.pw_name, "--", *argv]
        # PG* variables from our environment (PGDATA, PGPORT...) must not redirect the tools, and
        # the server must not talk to systemd as if it were the unit's main process (Debian's
        # postgres sends READY=1 itself when it finds NOTIFY_SOCKET).
        env = {key: value for key, value in os.environ.items() if not key.startswith(_NOT_INHERITED)}
        try:
            result = subprocess.run(
                command,
                cwd=self.root,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else exc.output
            raise self._failure(command, None, output or "", timeout=timeout) from exc
        except OSError as exc:
            raise ClusterError(f"cannot run `{shlex.join(command)}`: {exc}") from exc
        if check and result.returncode != 0:
            raise self._failure(command, result.returncode, result.stdout)
        return result

    def _failure(
        self, command: Sequence[str], returncode: int | None, output: str, *, timeout: float | None = None
    ) -> ClusterError:
        how = (
            f"timed out after {timeout:g}s"
            if timeout is not None
            else f"failed with exit status {returncode}"
        )
        message = f"`{shlex.join(command)}` {how}"
        if output.strip():
            message += f"\n{_tail(output)}"
        try:
            server_log = self.log_file.read_text(errors="replace")
        except OSError:
            server_log = ""
        if server_log.strip():
            message += f"\n--- last lines of {self.log_file} ---\n{_tail(server_log)}"
        return ClusterError(message)
