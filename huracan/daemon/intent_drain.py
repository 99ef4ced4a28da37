"""Consumer of the intent queue until the risk gate exists (the execution issue).

It places no order and simulates no fill: it counts the intents per model version and action
and logs each at debug level, so a replay shows what the agent decided. The risk gate replaces
it as the queue's only consumer.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from huracan.core.intents import OrderIntent
from huracan.daemon.service import ServiceContext
from huracan.logs import get_logger

log = get_logger("huracan.daemon.intents")


class IntentDrain:
    name = "intents"

    def __init__(self, queue: asyncio.Queue[OrderIntent]) -> None:
        self.queue = queue
        self.received: Counter[str] = Counter()
        self.shadow = 0

    async def run(self, ctx: ServiceContext) -> None:
        while not ctx.stopping.is_set():
            ctx.liveness.beat(ctx.name, quiet_for_s=1.0)
            try:
                intent = await asyncio.wait_for(self.queue.get(), timeout=1.0)
            except TimeoutError:
                continue
            self.received[intent.action.name] += 1
            self.shadow += intent.shadow
            log.debug(
                "order intent (no risk gate yet: not executed)",
                symbol=intent.symbol,
                action=intent.action.name,
                model_version=intent.model_version,
                confidence=round(intent.confidence, 4),
                shadow=intent.shadow,
            )
