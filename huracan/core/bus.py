"""In-process publish/subscribe between the daemon's tasks, on one event loop.

Each subscriber has its own bounded queue; publish waits for room in every queue. That is the
backpressure replay needs (it must not outrun the decision step) and, live, it makes a slow
consumer visible as a late publisher instead of an unbounded memory leak.
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

T = TypeVar("T")


class Topic(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._queues: dict[str, asyncio.Queue[T]] = {}

    def subscribe(self, subscriber: str, maxsize: int = 16) -> asyncio.Queue[T]:
        if subscriber in self._queues:
            raise ValueError(f"{subscriber!r} already subscribes to {self.name}")
        queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self._queues[subscriber] = queue
        return queue

    def unsubscribe(self, subscriber: str) -> None:
        self._queues.pop(subscriber, None)

    async def publish(self, event: T) -> None:
        for queue in list(self._queues.values()):
            await queue.put(event)

    @property
    def subscribers(self) -> list[str]:
        return list(self._queues)
