"""bench/latency.py's stamps: subclasses swapped onto the daemon's own objects, which only add
time stamps (perf_counter) at the points the bench measures between."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from huracan.agent.decide import DecisionService
from huracan.core.events import CandleClosed
from huracan.core.intents import OrderIntent
from huracan.daemon.service import ServiceContext
from huracan.exchange.models import OrderAck, OrderRequest
from huracan.execution.approval import ApprovedOrder
from huracan.execution.executor import Executor
from huracan.execution.order_state import ManagedOrder
from huracan.execution.service import TradingService
from huracan.execution.sim_venue import SimulatedVenue

T = TypeVar("T")


@dataclass(slots=True)
class Placement:
    at: float  # Executor.place entered: the approved order reaches the executor
    decided: bool  # asked for by the decision step on this bar (else: a rule's or the maker logic's)
    client_order_id: str = ""
    venue: float = math.nan  # just before venue.create_order


@dataclass(slots=True)
class BarTimes:
    published: float
    open_ms: int = -1
    decide_start: float = math.nan
    decide_end: float = math.nan
    placements: list[Placement] = field(default_factory=list)
    done: float = math.nan


class Probe:
    def __init__(self) -> None:
        self.bars: list[BarTimes] = []
        self.current = BarTimes(math.nan)  # until begin(): the replay's bars are not stamped
        self.done = asyncio.Event()
        self.first_start = self.last_done = math.nan

    def begin(self, open_ms: int) -> None:
        self.done.clear()
        self.current = BarTimes(time.perf_counter(), open_ms)
        self.bars.append(self.current)

    def bar_done(self, started: float, ended: float) -> None:
        if math.isnan(self.first_start):
            self.first_start = started
        self.last_done = self.current.done = ended
        self.done.set()


class TimedTrading(TradingService):
    probe: Probe

    async def on_bar(self, event: CandleClosed, ctx: ServiceContext, *, stopping: bool = False) -> None:
        started = time.perf_counter()
        await super().on_bar(event, ctx, stopping=stopping)
        self.probe.bar_done(started, time.perf_counter())


class TimedDecision(DecisionService):
    probe: Probe

    def intents_for(self, event: CandleClosed, *, greedy: bool, min_confidence: float) -> list[OrderIntent]:
        started = time.perf_counter()
        intents = super().intents_for(event, greedy=greedy, min_confidence=min_confidence)
        self.probe.current.decide_start, self.probe.current.decide_end = started, time.perf_counter()
        return intents


class TimedExecutor(Executor):
    probe: Probe

    async def place(self, approved: ApprovedOrder) -> ManagedOrder:
        now, bar, intent = time.perf_counter(), self.probe.current, approved.intent
        placement = Placement(now, intent.reason == "agent" and intent.bar_open_time_ms == bar.open_ms)
        bar.placements.append(placement)
        order = await super().place(approved)
        placement.client_order_id = order.client_order_id
        return order


class TimedVenue(SimulatedVenue):  # stamps the moment the executor calls create_order
    probe: Probe

    def create_order(self, request: OrderRequest) -> Coroutine[Any, Any, OrderAck]:
        now = time.perf_counter()
        for placement in self.probe.current.placements:
            if placement.client_order_id == request.client_order_id:
                placement.venue = now
        return super().create_order(request)


def instrument(obj: object, cls: type[T], probe: Probe) -> T:
    """The daemon's own object, given a subclass that only adds time stamps."""
    obj.__class__ = cls
    setattr(obj, "probe", probe)  # noqa: B010  # the subclasses declare it; `obj` is typed object
    return cast(T, obj)
