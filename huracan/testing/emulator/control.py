"""The emulator's own control routes, beside the Binance ones and unsigned (loopback only):

    GET  /emulator/clock                      -> {"start_ms", "wall0_ms", "bars_per_second", "step_ms", "now_ms"}
    POST /emulator/clock?bars_per_second=N    -> the same, after market time has been re-paced (0 freezes it)
    GET  /emulator/stats                      -> {"orders", "open_orders", "trades", "now_ms"}: the account's counts

From the first four numbers a client computes the market time of a paced emulator itself
(huracan.testing.emulator.market_time.PacedMarketClock). `now_ms` is the market time at the
answer. An emulator that is not paced (in-process, or --speed 0) answers bars_per_second 0.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from aiohttp import web

from huracan.testing.emulator.market_time import Pace, wall_ms

if TYPE_CHECKING:
    from huracan.testing.emulator.server import EmulatorState

CLOCK_PATH = "/emulator/clock"
STATS_PATH = "/emulator/stats"


def add_control_routes(app: web.Application, state: EmulatorState) -> None:
    def clock_body(pace: Pace | None) -> dict[str, Any]:
        if pace is None:
            pace = Pace(state.clock.now_ms, wall_ms(), 0.0, state.clock.step_ms)
        return {**pace.as_json(), "now_ms": state.clock.now_ms}

    async def get_clock(request: web.Request) -> web.Response:
        return web.json_response(clock_body(state.pace))

    async def set_clock(request: web.Request) -> web.Response:
        raw = request.query.get("bars_per_second", "")
        try:
            speed = float(raw)
        except ValueError:
            speed = math.nan
        if not (math.isfinite(speed) and speed >= 0):
            return web.json_response(
                {"error": f"bars_per_second must be a number >= 0, got {raw!r}"}, status=400
            )
        return web.json_response(clock_body(state.set_pace(speed)))

    async def stats(request: web.Request) -> web.Response:
        engine = state.engine
        return web.json_response(
            {
                "orders": len(engine.orders),
                "open_orders": len(engine.open_orders(None)),
                "trades": len(engine.trades),
                "now_ms": state.clock.now_ms,
            }
        )

    app.router.add_get(CLOCK_PATH, get_clock)
    app.router.add_post(CLOCK_PATH, set_clock)
    app.router.add_get(STATS_PATH, stats)
