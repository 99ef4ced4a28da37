"""``python -m huracan.testing.emulator --port P --data DIR``: run the emulator on its own.

Prints its URL on one line (stdout, flushed), then lets market time pass with wall time at
`--speed` bars per second (0 freezes it) until SIGTERM or SIGINT. Paced market time is a pure
function of wall time, market = start + floor((wall - wall0) x speed / 1000) x step, served at
GET /emulator/clock so that a client can compute it (market_time.PacedMarketClock).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

from huracan.testing.emulator import EmulatorConfig, start_emulator
from huracan.testing.emulator.market_time import wall_ms


def _balance(text: str) -> tuple[str, Decimal]:
    asset, _, amount = text.partition("=")
    try:
        return asset.upper(), Decimal(amount)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected ASSET=AMOUNT, e.g. USDT=100000, got {text!r}") from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m huracan.testing.emulator", description=__doc__)
    parser.add_argument("--data", type=Path, required=True, help="directory of candle CSV files")
    parser.add_argument("--port", type=int, default=0, help="TCP port (0: any free port)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--speed", type=float, default=1.0, help="bars of market time per wall second")
    parser.add_argument("--start-ms", type=int, default=None, help="market time to start at (epoch ms)")
    parser.add_argument("--api-key", default="emulator-key")
    parser.add_argument("--api-secret", default="emulator-secret")
    parser.add_argument(
        "--balance", type=_balance, action="append", default=None, help="ASSET=AMOUNT, repeatable"
    )
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    balances = dict(args.balance) if args.balance else {"USDT": Decimal(100_000)}
    config = EmulatorConfig(
        data_dir=args.data,
        api_key=args.api_key,
        api_secret=args.api_secret,
        balances=balances,
        start_time_ms=args.start_ms,
    )
    emulator = await start_emulator(config, host=args.host, port=args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    emulator.set_pace(args.speed)  # before the URL goes out: a client may ask for the pace at once
    print(emulator.url, flush=True)
    try:
        while not stop.is_set():
            # Sleep until the next bar's wall time, then move to where the pace says market time
            # is: a late wake-up catches up instead of drifting. The pace is read each time, since
            # POST /emulator/clock may change it; frozen, look again in a while.
            pace = emulator.pace
            assert pace is not None
            if pace.bars_per_second > 0:
                due = pace.wall_of_bar(pace.bars_at(wall_ms()) + 1)
                delay = min(1.0, max(0, due - wall_ms()) / 1000)
            else:
                delay = 0.2
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except TimeoutError:
                emulator.catch_up()
    finally:
        await emulator.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(serve(args))
    except (ValueError, OSError) as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
