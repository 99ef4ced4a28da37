"""Runs the services as tasks of one loop: restarts a crashed one with bounded backoff, escalates
to a fatal stop when it keeps crashing, and stops them all within a deadline."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence

from huracan.daemon.service import FatalError, Liveness, RunningConfig, Service, ServiceContext
from huracan.logs import get_logger

log = get_logger("huracan.daemon.supervisor")


def restart_delay(crashes: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter in [0.5, 1] of the step: crashed services of the same cause
    do not restart in lockstep, and the wait never exceeds max_s."""
    step: float = min(max_s, initial_s * 2.0 ** max(0, crashes - 1))
    return step * (0.5 + rng.random() / 2)


class Supervisor:
    def __init__(self, services: Sequence[Service], config: RunningConfig, liveness: Liveness) -> None:
        self.services = list(services)
        self.config = config
        self.liveness = liveness
        self.stopping = asyncio.Event()
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
        fatal: BaseException | None = None
        try:
            done, _ = await asyncio.wait(tasks | {stop_requested}, return_when=asyncio.FIRST_COMPLETED)
            for task in done - {stop_requested}:
                fatal = fatal or task.exception()
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
            for task in tasks:
                if task.done() and not task.cancelled() and task.exception() is not None:
                    fatal = fatal or task.exception()
        finally:
            for pending in (*tasks, stop_requested):
                pending.cancel()
            await asyncio.gather(*tasks, stop_requested, return_exceptions=True)
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
            except Exception as exc:
                settings = self.config.current.daemon
                now = time.monotonic()
                crashes.append(now)
                while crashes and now - crashes[0] > settings.restart_window_s:
                    crashes.popleft()
                if len(crashes) > settings.max_restarts:
                    log.critical(
                        "service keeps crashing; stopping the daemon",
                        service=service.name,
                        crashes=len(crashes),
                        window_s=settings.restart_window_s,
                        exc_info=True,
                    )
                    raise FatalError(
                        f"service {service.name} crashed {len(crashes)} times in {settings.restart_window_s:g} s"
                    ) from exc
                delay = restart_delay(
                    len(crashes),
                    settings.restart_backoff_initial_s,
                    settings.restart_backoff_max_s,
                    self._rng,
                )
                log.error(
                    "service crashed; restarting",
                    service=service.name,
                    attempt=len(crashes),
                    restart_in_s=round(delay, 3),
                    exc_info=True,
                )
                # Backing off is supervision at work, not a stuck loop: ctx.sleep keeps the
                # watchdog fed, and the restart budget above bounds how long this can go on.
                await ctx.sleep(delay)
        self.liveness.forget(service.name)
        log.debug("service stopped", service=service.name)
