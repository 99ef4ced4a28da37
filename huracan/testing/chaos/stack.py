"""The worker of `--mode stack`, and the verification of every mode.

`worker`: the daemon's live trading stack (huracan.daemon.services.build_trading: risk gate,
executor, journal, reconciler over the exchange adapter and the real ccxt client) fed random
entries and exits instead of the agent's decisions. It begins as the daemon does after a crash:
the journal restored, the venue reconciled, and only then orders. With `verify` it only
reconciles and then checks the journal against the venue (venue.verify_against_venue).
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from huracan.testing.chaos.venue import SYMBOLS, TIMEFRAME, chaos_config, verify_against_venue


async def worker(
    url: str, dsn: str, seed: int, steps: int, verify: bool, prefix: str = "chaos"
) -> dict[str, Any]:
    from huracan.core.bus import Topic
    from huracan.core.clock import WallClock
    from huracan.core.events import CandleClosed
    from huracan.core.intents import AgentAction, BarDecided, OrderIntent
    from huracan.daemon.services import build_trading
    from huracan.exchange.adapter import ExchangeAdapter
    from huracan.exchange.errors import ExchangeError
    from huracan.memory.database import create_pool

    config = chaos_config(url, prefix)
    rng = random.Random(seed)
    pool = await create_pool(dsn, min_size=1, max_size=4, command_timeout=30)
    try:
        async with ExchangeAdapter(config.exchange, enable_ccxt_rate_limit=False) as adapter:
            all_markets = await adapter.load_markets()
            markets = {s: all_markets[s] for s in SYMBOLS}
            intents: asyncio.Queue[OrderIntent | BarDecided] = asyncio.Queue()
            service = build_trading(
                config,
                pool,
                venue=adapter,
                simulated=None,
                markets=markets,
                now_ms=WallClock().now_ms,
                exchange_id=adapter.exchange_id,
                symbols=SYMBOLS,
                timeframe=TIMEFRAME,
                candles=Topic[CandleClosed]("candles"),
                intents=intents,
            )
            gate, executor = service.gate, service.executor
            await gate.start()
            await service.reconciler.reconcile_at_start()
            gate.reconciled = True
            print(json.dumps({"reconciled": True, "working": len(executor.orders)}), flush=True)
            if verify:
                checked = await verify_against_venue(adapter, pool, service, adapter.exchange_id)
                # The checker's own reconciliation must have had nothing to repair: an order of
                # ours the journal never wrote, or one it closed too early, is a finding.
                report = service.reconciler.report
                if report.adopted or report.taken_back:
                    checked["problems"].append(
                        f"reconciliation repaired the journal: {report.adopted} adopted, "
                        f"{report.taken_back} taken back"
                    )
                return checked
            for step in range(steps):
                symbol = rng.choice(SYMBOLS)
                try:
                    price = (await adapter.fetch_ticker(symbol)).last
                    executor.book.last_prices[symbol] = price
                    action = AgentAction.EXIT_POSITION if rng.random() < 0.4 else AgentAction.ENTER_LONG_SMALL
                    gate.maker_entries = rng.random() < 0.5
                    await gate.handle(
                        OrderIntent.from_action(
                            action,
                            symbol=symbol,
                            bar_open_time_ms=0,
                            reference_price=price,
                            model_version="chaos",
                            confidence=0.9,
                        )
                    )
                    await executor.sync()
                    await gate.maintain_makers()
                    await executor.flush()  # as the daemon's poll does
                except ExchangeError as exc:
                    print(json.dumps({"step": step, "error": str(exc)}), flush=True)
                print(json.dumps({"step": step}), flush=True)
                await asyncio.sleep(rng.uniform(0.0, 0.05))
            return {"steps": steps}
    finally:
        await pool.close()
