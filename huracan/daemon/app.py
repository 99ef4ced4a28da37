"""`huracan run`: open the resources in order, serve, and close them in reverse on the way out.

Start-up: database (private cluster or DSN) -> migrations -> services -> READY=1.
Shutdown, within daemon.shutdown_timeout_s: STOPPING=1 -> services finish their in-flight work
(no new work is started once `stopping` is set) -> the pool closes after its last write ->
logs are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from huracan.config import ConfigError, ConfigSources, HuracanConfig, load_config, plan_reload
from huracan.core.clock import Clock
from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import FatalError, Liveness, RunningConfig, Service
from huracan.daemon.services import ServiceDeps, build_services
from huracan.daemon.supervisor import Supervisor
from huracan.daemon.watchdog import Watchdog
from huracan.exchange.errors import AuthenticationFailed, BadSymbol, ExchangeError
from huracan.exchange.replay import ReplayDataError
from huracan.exit_codes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE
from huracan.logs import flush_logs, get_logger, register_secrets, set_levels
from huracan.market.universe import UnknownSymbols
from huracan.memory.cluster import ClusterError, PrivateCluster
from huracan.memory.database import DatabaseUnavailable, open_pool, prepare_database
from huracan.memory.migrate import MigrationError, apply_migrations, default_migrations_dir
from huracan.risk.rates import MixedQuoteCurrencies

log = get_logger("huracan.daemon")


ServiceFactory = Callable[[ServiceDeps, contextlib.AsyncExitStack], Awaitable[Sequence[Service]]]


class Phase(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


class Daemon:
    def __init__(
        self,
        config: HuracanConfig,
        sources: ConfigSources,
        *,
        notifier: Notifier | None = None,
        services: ServiceFactory = build_services,
        until_end: bool = False,
        clock: Clock | None = None,
    ) -> None:
        """clock: market time of shadow and live (None: the wall clock); see ServiceDeps."""
        self.clock = clock
        self.config = RunningConfig(config)
        self.sources = sources
        self.notifier = notifier or Notifier()
        self.service_factory = services
        self.until_end = until_end
        self.services: list[Service] = []
        self.liveness = Liveness()
        self.supervisor: Supervisor | None = None
        self.phase = Phase.STARTING
        self._reload_pending = False
        self._stop_deadline: float | None = None

    # --- signals -------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        if self.phase is Phase.STOPPING:
            log.info("stop already in progress", reason=reason)
            return
        self._begin_stop(f"stopping: {reason}")
        log.info("stop requested", reason=reason)
        if self.supervisor is not None:
            self.supervisor.request_stop()

    def _begin_stop(self, status: str) -> None:
        self.phase = Phase.STOPPING
        self._stop_deadline = time.monotonic() + self.config.current.daemon.shutdown_timeout_s
        self.notifier.stopping(status)

    def _on_fatal(self, error: BaseException) -> None:
        if self.phase is not Phase.STOPPING:
            self._begin_stop(f"stopping: fatal error: {error}")

    def reload(self) -> bool:
        """Re-read the configuration (SIGHUP). Applies what can change live; on any problem keeps
        running on the old configuration. Returns whether the new configuration was taken.

        While starting, the reload is deferred until start-up is done (READY=1 must not be sent
        early); while stopping there is nothing left to reconfigure."""
        if self.phase is Phase.STARTING:
            self._reload_pending = True
            log.info("reload deferred until start-up completes")
            return False
        if self.phase is Phase.STOPPING:
            log.info("reload ignored: the daemon is stopping")
            return False
        self.notifier.reloading()
        try:
            return self._reload()
        except Exception:
            # A bug in the reload path must not take the daemon down nor leave systemd in
            # "reloading": the running configuration stays in force.
            log.exception("config reload crashed; keeping the running configuration")
            return False
        finally:
            self.notifier.ready(self._status())

    def _reload(self) -> bool:
        try:
            loaded = load_config(self.sources)
        except ConfigError as exc:
            log.error(
                "config reload failed; keeping the running configuration",
                problems=[str(p) for p in exc.problems],
            )
            return False
        # Rotated secrets wait for a restart to be used, but must be redacted from now on.
        register_secrets(loaded.secrets())
        plan = plan_reload(self.config.current, loaded)
        self.config.current = plan.effective
        set_levels(plan.effective.logging.level, plan.effective.logging.levels)
        log.log(
            logging.WARNING if plan.pending_restart else logging.INFO,
            "config reloaded",
            changed=[{"key": c.path, "old": c.old, "new": c.new} for c in plan.applied],
            needs_restart=[{"key": c.path, "old": c.old, "new": c.new} for c in plan.pending_restart],
        )
        return True

    def _status(self) -> str:
        return f"running: mode={self.config.current.exchange.mode}"

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        handlers: dict[int, Callable[[], object]] = {
            signal.SIGTERM: lambda: self.request_stop("SIGTERM"),
            signal.SIGINT: lambda: self.request_stop("SIGINT"),
            signal.SIGHUP: self.reload,
        }
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        return list(handlers)

    # --- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        installed = self._install_signal_handlers(loop)
        started = time.monotonic()
        try:
            async with contextlib.AsyncExitStack() as resources:
                try:
                    pool = await self._open_database(resources)
                except DatabaseUnavailable as exc:
                    log.critical("database unavailable at start-up", error=str(exc))
                    return EX_UNAVAILABLE
                except MigrationError as exc:
                    # A deployment problem (an applied migration was edited): restarts cannot fix it.
                    log.critical("migrations refused", error=str(exc))
                    return EX_SOFTWARE
                if self.phase is Phase.STOPPING:
                    return EX_OK
                return await self._serve(pool, started, resources)
        finally:
            for signum in installed:
                loop.remove_signal_handler(signum)
            self.notifier.close()
            flush_logs()

    async def _open_database(self, resources: contextlib.AsyncExitStack) -> asyncpg.Pool:
        db = self.config.current.database
        state_dir = self.config.current.daemon.state_dir
        self.notifier.status("starting: database")
        if db.dsn is None:
            cluster = PrivateCluster(state_dir / "postgres")
            if not await asyncio.to_thread(cluster.is_running):
                # What we start we stop, after the pool has closed (the stack unwinds in
                # reverse): under systemd nothing is then left for KillMode=mixed to SIGKILL.
                # A cluster that was already running (make db-start) is left running.
                resources.push_async_callback(asyncio.to_thread, self._stop_cluster, cluster)
        dsn = await prepare_database(db, state_dir)
        pool = await open_pool(db, dsn)
        resources.push_async_callback(self._close_pool, pool)
        if db.auto_migrate:
            self.notifier.status("starting: migrations")
            async with pool.acquire() as conn:
                applied = await apply_migrations(conn, default_migrations_dir())
            if applied:
                log.info("migrations applied", versions=[m.version for m in applied])
        return pool

    async def _serve(self, pool: asyncpg.Pool, started: float, resources: contextlib.AsyncExitStack) -> int:
        deps = ServiceDeps(
            self.config.current,
            pool,
            self.notifier,
            on_replay_end=(lambda: self.request_stop("replay finished")) if self.until_end else None,
            clock=self.clock,
        )
        self.notifier.status("starting: services")
        try:
            services: list[Service] = list(await self.service_factory(deps, resources))
        except (ReplayDataError, UnknownSymbols, MixedQuoteCurrencies) as exc:
            log.critical("the market data source refuses the configuration", error=str(exc))
            return EX_CONFIG
        except (BadSymbol, AuthenticationFailed) as exc:
            log.critical("the exchange refuses the configuration", error=str(exc))
            return EX_CONFIG
        except ExchangeError as exc:
            log.critical("exchange unavailable at start-up", error=str(exc))
            return EX_UNAVAILABLE
        self.services = services
        if self.notifier.watchdog_interval_s is not None:
            services.append(Watchdog(self.notifier, self.notifier.watchdog_interval_s))
        self.supervisor = Supervisor(services, self.config, self.liveness, on_fatal=self._on_fatal)
        self.phase = Phase.RUNNING
        self.notifier.ready(self._status())
        log.info(
            "daemon started",
            mode=self.config.current.exchange.mode,
            services=[s.name for s in services],
            startup_s=round(time.monotonic() - started, 3),
            watchdog_s=self.notifier.watchdog_interval_s,
            event_loop=type(asyncio.get_running_loop()).__module__,
        )
        if self._reload_pending:
            self.reload()
        try:
            await self.supervisor.serve(shutdown_timeout_s=self._remaining_shutdown_s)
        except FatalError as exc:
            log.critical("daemon stopped after a fatal error", error=str(exc))
            return EX_SOFTWARE
        log.info("daemon stopped", uptime_s=round(time.monotonic() - started, 3))
        return EX_OK

    @staticmethod
    def _stop_cluster(cluster: PrivateCluster) -> None:
        try:
            cluster.stop()
        except ClusterError as exc:
            log.error("private PostgreSQL did not stop cleanly", error=str(exc))
        else:
            log.info("private PostgreSQL stopped", root=str(cluster.root))

    def _remaining_shutdown_s(self) -> float:
        """What is left of the one shutdown budget shared by every step (at least a second, so the
        pool gets a chance to close cleanly even when the services used it all)."""
        budget = self.config.current.daemon.shutdown_timeout_s
        if self._stop_deadline is None:
            return budget
        return max(1.0, self._stop_deadline - time.monotonic())

    async def _close_pool(self, pool: asyncpg.Pool) -> None:
        # Waits for connections in use to be released (their writes committed); terminate only
        # if that outlasts the shutdown budget.
        try:
            await asyncio.wait_for(pool.close(), timeout=self._remaining_shutdown_s())
        except TimeoutError:
            log.error("database pool did not close in time; terminating connections")
            pool.terminate()
