"""Runs the services as tasks of one loop: restarts a crashed one with bounded backoff, escalates
to a fatal stop when it keeps crashing, and stops them all within a deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from huracan.daemon.service import FatalError, Liveness, RunningConfig, Service, ServiceContext
from huracan.logs import get_logger

log = get_logger("huracan.daemon.supervisor")


def restart_delay(crashes: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter in [0.5, 1] of the step: crashed services of the same cause
    do not restart in lockstep, and the wait never exceeds max_s."""
    step: float = min(max_s, initial_s * 2.0 ** max(0, crashes - 1))
    return step * (0.5 + rng.random() / 2)


# After cancelling the services that outlived the shutdown timeout, how long to wait for their
# cleanup before giving up on them (and saying so).
CANCEL_GRACE_S = 2.0


class Supervisor:
    def __init__(
        self,
        services: Sequence[Service],
        config: RunningConfig,
        liveness: Liveness,
        on_fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.services = list(services)
        self.config = config
        self.liveness = liveness
        self.stopping = asyncio.Event()
        # Told at once, before the other services drain, so the daemon can say STOPPING=1.
        self.on_fatal = on_fatal
        self._rng = random.Random()

    def request_stop(self) -> None:
        self.stopping.set()

    async def serve(self, shutdown_timeout_s: Callable[[], float] | None = None) -> None:
        """Run until a stop is requested or a service fails fatally (then raise its FatalError).

        On stop: services see `stopping` and finish their in-flight work; those still running
        after the timeout (asked for when the stop begins) are cancelled.
        """
        tasks: set[asyncio.Task[object]] = {
            asyncio.create_task(self._supervise(s), name=s.name) for s in self.services
        }
        stop_requested: asyncio.Task[object] = asyncio.create_task(
            self.stopping.wait(), name="stop-requested"
        )
        try:
            done, _ = await asyncio.wait(tasks | {stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            fatal = _first_error(done - {stop_requested})
            if fatal is not None and self.on_fatal is not None:
                self.on_fatal(fatal)
            self.stopping.set()
            if shutdown_timeout_s is None:
                timeout = self.config.current.daemon.shutdown_timeout_s
            else:
                timeout = shutdown_timeout_s()
            _, late = await asyncio.wait(tasks, timeout=timeout)
            if late:
                log.error(
                    "services did not stop in time; cancelling", services=sorted(t.get_name() for t in late)
                )
            fatal = fatal or _first_error(tasks)
        finally:
            for pending in (*tasks, stop_requested):
                pending.cancel()
            _, abandoned = await asyncio.wait((*tasks, stop_requested), timeout=CANCEL_GRACE_S)
            if abandoned:
                log.error(
                    "services ignored cancellation; abandoning them",
                    services=sorted(t.get_name() for t in abandoned),
                )
        if fatal is not None:
            raise fatal

    async def _supervise(self, service: Service) -> None:
        ctx = ServiceContext(service.name, self.config, self.stopping, self.liveness)
        crashes: deque[float] = deque()
        ctx.beat()
        while not self.stopping.is_set():
            try:
                await service.run(ctx)
                if self.stopping.is_set():
                    break
                raise RuntimeError("returned without a stop request")
            except FatalError:
                log.critical("service failed fatally", service=service.name, exc_info=True)
                raise
            except asyncio.CancelledError as exc:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled: never swallow that
                # Something the service awaited was cancelled by someone else: a crash like any other.
                await self._after_crash(ctx, crashes, exc)
            except Exception as exc:
                await self._after_crash(ctx, crashes, exc)
        self.liveness.forget(service.name)
        log.debug("service stopped", service=service.name)

    async def _after_crash(self, ctx: ServiceContext, crashes: deque[float], exc: BaseException) -> None:
        """Log the crash and back off before the restart, or escalate when crashes come too often."""
        settings = self.config.current.daemon
        now = time.monotonic()
        crashes.append(now)
        while crashes and now - crashes[0] > settings.restart_window_s:
            crashes.popleft()
        if len(crashes) > settings.max_restarts:
            log.critical(
                "service keeps crashing; stopping the daemon",
                service=ctx.name,
                crashes=len(crashes),
                window_s=settings.restart_window_s,
                exc_info=exc,
            )
            raise FatalError(
                f"service {ctx.name} crashed {len(crashes)} times in {settings.restart_window_s:g} s"
            ) from exc
        delay = restart_delay(
            len(crashes), settings.restart_backoff_initial_s, settings.restart_backoff_max_s, self._rng
        )
        log.error(
            "service crashed; restarting",
            service=ctx.name,
            attempt=len(crashes),
            restart_in_s=round(delay, 3),
            exc_info=exc,
        )
        # Backing off is supervision at work, not a stuck loop: ctx.sleep accounts for the wait
        # with the watchdog, and the restart budget above bounds how long this can go on.
        await ctx.sleep(delay)


def _first_error(tasks: Iterable[asyncio.Task[object]]) -> BaseException | None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            return task.exception()
    return None
