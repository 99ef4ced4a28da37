"""What every chaos run shares: the venue settings, the candle files, and the check of the
journal against the venue's own records."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from huracan.config import HuracanConfig
from huracan.config.settings import BUNDLED_CANDLES_DIR

SYMBOLS = ("BTC/USDT", "ETH/USDT")
TIMEFRAME = "5m"
PAGE = 1000  # the venue's most orders or trades per answer


def exchange_settings(url: str) -> dict[str, Any]:
    """The emulator as a live venue: short timeouts and retries, so a run does not stall."""
    return {
        "mode": "live",
        "live_opt_in": True,
        "api_url": url,
        "api_key": "emulator-key",
        "api_secret": "emulator-secret",
        "request_timeout_s": 2.0,
        "retry_attempts": 3,
        "retry_cap_s": 0.2,
    }


def chaos_config(url: str, prefix: str = "chaos") -> HuracanConfig:
    return HuracanConfig.model_validate(
        {
            "exchange": exchange_settings(url),
            "universe": {"symbols": list(SYMBOLS)},
            "risk": {"max_open_positions": 2, "max_orders_per_minute": 10_000},
            "execution": {"reprice_after_s": 0.5, "max_reprices": 2, "client_order_prefix": prefix},
        }
    )


def chaos_data_dir(target: Path, rows: int | None = 3000) -> Path:
    """The bundled 5m files of SYMBOLS (their first `rows` bars; None: all) copied to `target`."""
    for symbol in SYMBOLS:
        name = f"binance_{symbol.replace('/', '-')}_{TIMEFRAME}.csv"
        lines = (BUNDLED_CANDLES_DIR / name).read_text().splitlines()
        kept = lines if rows is None else lines[: rows + 1]
        (target / name).write_text("\n".join(kept) + "\n")
    return target


async def _every(fetch: Any, symbol: str, from_param: str) -> list[dict[str, Any]]:
    """Every record of `symbol` that `fetch` pages through by id (an answer holds at most PAGE)."""
    found: list[dict[str, Any]] = []
    while True:
        page = await fetch(symbol, None, PAGE, {from_param: int(found[-1]["id"]) + 1 if found else 0})
        found.extend(page)
        if len(page) < PAGE:
            return found


async def venue_orders(client: Any, symbol: str) -> list[dict[str, Any]]:
    """Every order of `symbol` on the venue."""
    return await _every(client.fetch_orders, symbol, "orderId")


async def venue_trades(client: Any, symbol: str) -> list[dict[str, Any]]:
    """Every trade of ours in `symbol` on the venue."""
    return await _every(client.fetch_my_trades, symbol, "fromId")


async def verify_against_venue(
    adapter: Any, pool: asyncpg.Pool, service: Any, exchange: str
) -> dict[str, Any]:
    """The journal (after a restart's reconciliation, in `service`) against the venue's records:
    no duplicate or orphan order, every open venue order tracked as working, every venue trade
    recorded once and nothing recorded that the venue did not trade, each order's recorded fills
    adding up to what the venue executed, balances equal to the ledger of our fills, and every
    open position of the journal back in the restored book (and nothing else there)."""
    client = adapter._client  # the raw ccxt client: the checker reads the venue's own records
    journal = {
        r["client_order_id"]
        for r in await pool.fetch("SELECT client_order_id FROM orders WHERE exchange = $1", exchange)
    }
    fills = await pool.fetch(
        "SELECT f.venue_trade_id, f.quantity, o.client_order_id FROM fills f JOIN orders o ON o.id = f.order_id "
        "WHERE f.exchange = $1",
        exchange,
    )
    recorded = {r["venue_trade_id"]: r for r in fills}
    summed: dict[str, Decimal] = {}
    for r in fills:
        summed[r["client_order_id"]] = summed.get(r["client_order_id"], Decimal(0)) + r["quantity"]
    problems: list[str] = []
    venue_order_count = 0
    traded: set[str] = set()
    for symbol in SYMBOLS:
        orders = await venue_orders(client, symbol)
        venue_order_count += len(orders)
        seen: dict[str, int] = {}
        for order in orders:
            cid = str(order.get("clientOrderId"))
            seen[cid] = seen.get(cid, 0) + 1
            if cid not in journal:
                problems.append(f"orphan venue order {cid}")
            if order.get("status") == "open" and cid not in service.executor.orders:
                problems.append(f"open venue order {cid} not tracked as working")
            filled = Decimal(str(order.get("filled") or 0))
            if summed.get(cid, Decimal(0)) != filled:
                problems.append(
                    f"{cid}: journal fills {summed.get(cid, Decimal(0))}, venue executed {filled}"
                )
        problems.extend(f"duplicate venue orders for {cid}: {n}" for cid, n in seen.items() if n > 1)
        trades = await venue_trades(client, symbol)
        traded.update(str(t["id"]) for t in trades)
        problems.extend(f"untracked venue fill {t['id']}" for t in trades if str(t["id"]) not in recorded)
    if len(recorded) != len(fills):
        problems.append("a venue trade id is recorded twice")
    problems.extend(
        f"recorded fill {tid} that the venue never traded" for tid in recorded if tid not in traded
    )
    ledger = await service.executor.journal.net_base_by_symbol(
        {s: service.executor.markets[s].base for s in SYMBOLS}
    )
    journal_open = {
        r["symbol"]
        for r in await pool.fetch(
            "SELECT symbol FROM positions WHERE status = 'open' AND exchange = $1 AND mode = $2",
            exchange,
            service.executor.journal.mode,
        )
    }
    restored = set(service.executor.book.positions)
    problems.extend(
        f"{s}: open position in the journal, not in the restored book" for s in journal_open - restored
    )
    problems.extend(
        f"{s}: position in the restored book, none open in the journal" for s in restored - journal_open
    )
    balances = await adapter.fetch_balances()
    for symbol in SYMBOLS:
        base = service.executor.markets[symbol].base
        held = balances[base].total if base in balances else Decimal(0)
        if held != ledger.get(symbol, Decimal(0)):
            problems.append(
                f"{symbol}: venue holds {held}, the journal's fills {ledger.get(symbol, Decimal(0))}"
            )
    return {
        "venue_orders": venue_order_count,
        "venue_trades": len(traded),
        "journal_orders": len(journal),
        "journal_fills": len(fills),
        "problems": problems,
    }
