"""The heartbeat: proof of life in the database and in systemd's status line.

Each beat upserts `daemon_state['heartbeat']`, so `huracan status` (and an operator in psql) can
tell when the daemon was last alive, and it exercises the durable write path on every beat.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import asyncpg
import orjson

from huracan.daemon.sdnotify import Notifier
from huracan.daemon.service import ServiceContext
from huracan.logs import get_logger

log = get_logger("huracan.daemon.heartbeat")

UPSERT_STATE = """
INSERT INTO daemon_state (key, value, updated_at) VALUES ($1, $2::jsonb, now())
ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = EXCLUDED.updated_at
"""


class Heartbeat:
    name = "heartbeat"

    def __init__(self, pool: asyncpg.Pool, notifier: Notifier) -> None:
        self.pool = pool
        self.notifier = notifier
        self.started = time.monotonic()
        self.beats = 0

    async def run(self, ctx: ServiceContext) -> None:
        while True:
            await self.beat(ctx.config.current.exchange.mode, announce=not ctx.stopping.is_set())
            ctx.beat()
            if await ctx.sleep(ctx.config.current.daemon.heartbeat_interval_s):
                return

    async def beat(self, mode: str, *, announce: bool = True) -> None:
        self.beats += 1
        uptime_s = round(time.monotonic() - self.started, 3)
        value = {
            "at": datetime.now(UTC).isoformat(),
            "pid": os.getpid(),
            "uptime_s": uptime_s,
            "beats": self.beats,
            "mode": mode,
        }
        await self.pool.execute(UPSERT_STATE, "heartbeat", orjson.dumps(value).decode())
        if announce:  # once STOPPING=1 is out, a "running" status line would contradict it
            self.notifier.status(f"running: mode={mode}, up {uptime_s:.0f} s, heartbeat {self.beats}")
        log.debug("heartbeat", beats=self.beats, uptime_s=uptime_s)
