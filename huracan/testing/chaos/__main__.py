"""``python -m huracan.testing.chaos``: the runner (default), or one of its processes (`daemon`,
`worker`). See huracan/testing/chaos/__init__.py."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

import huracan.testing.chaos as chaos


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m huracan.testing.chaos", description=chaos.__doc__)
    sub = parser.add_subparsers(dest="command")
    work = sub.add_parser(
        "worker", help="the trading stack fed random intents (--verify: reconcile and check)"
    )
    work.add_argument("--url", required=True)
    work.add_argument("--dsn", required=True)
    work.add_argument("--seed", type=int, default=0)
    work.add_argument("--steps", type=int, default=1000)
    work.add_argument("--verify", action="store_true")
    daemon = sub.add_parser("daemon", help="the whole daemon in live mode against a paced emulator")
    daemon.add_argument("--url", required=True)
    daemon.add_argument("--dsn", required=True)
    daemon.add_argument("--state-dir", type=Path, required=True, help="models and the config overlay")
    parser.add_argument("--mode", choices=("daemon", "stack"), default="daemon")
    parser.add_argument("--kills", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--speed", type=float, default=None, help="bars per second (daemon 5, stack 20)")
    parser.add_argument(
        "--keep", type=Path, default=None, help="put the daemons' logs and state here, and keep them"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "daemon":
        from huracan.testing.chaos.daemon import main_daemon

        return main_daemon(args.url, args.dsn, args.state_dir)
    if args.command == "worker":
        from huracan.logs import configure_logging
        from huracan.testing.chaos.stack import worker

        configure_logging(level="warning", stream=sys.stderr)
        result = asyncio.run(worker(args.url, args.dsn, args.seed, args.steps, args.verify))
        print(json.dumps(result, default=str), flush=True)
        return 0 if not result.get("problems") else 1
    return run_standalone(args)


def run_standalone(args: argparse.Namespace) -> int:
    """A private PostgreSQL and a temporary directory of its own; one JSON line at the end."""
    import asyncpg

    from huracan.memory.cluster import PrivateCluster
    from huracan.memory.database import ensure_database
    from huracan.memory.migrate import apply_migrations, default_migrations_dir

    with tempfile.TemporaryDirectory(prefix="huracan-chaos-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)  # noqa: S103 (the server runs as the postgres user and must enter it)
        cluster = PrivateCluster(root / "postgres")
        cluster.ensure_started()
        try:
            dsn = cluster.dsn("chaos")

            async def prepare() -> None:
                await ensure_database(dsn)
                conn = await asyncpg.connect(dsn)
                try:
                    await apply_migrations(conn, default_migrations_dir())
                finally:
                    await conn.close()

            asyncio.run(prepare())
            data = root / "candles"
            data.mkdir()
            # Daemon mode: all the bundled bars, so that the market does not run dry in a long run.
            rows = None if args.mode == "daemon" else 3000
            result = chaos.run_chaos(
                dsn,
                kills=args.kills,
                seed=args.seed,
                data_dir=chaos.chaos_data_dir(data, rows),
                mode=args.mode,
                work_dir=args.keep if args.keep is not None else root / "run",
                speed=args.speed,
                log=lambda line: print(line, flush=True),
            )
        finally:
            cluster.stop()
    if not result.ok and result.last_log:
        print(f"--- the last daemon's log (tail) ---\n{result.last_log}", file=sys.stderr)
    print(json.dumps(result.summary(), default=str))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
