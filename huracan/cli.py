"""The `huracan` command: run | migrate | verify | train | models | retrain | download | db |
halt | reduce | resume | state | report."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any

import uvloop

from huracan.analysis.report import add_report_parser, cmd_report
from huracan.config import ConfigError, ConfigSources, HuracanConfig, load_config
from huracan.daemon.app import Daemon
from huracan.exit_codes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE
from huracan.logs import configure_logging, register_secrets
from huracan.market.download import add_download_parser, cmd_download
from huracan.risk.state_cli import add_state_parsers, cmd_state
from huracan.rl.models_cli import add_models_parser, cmd_models
from huracan.rl.train_cli import add_train_parser, cmd_train


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        metavar="PATH",
        help="YAML layered over config/base.yaml (default: config/local.yaml if it exists)",
    )
    parser = argparse.ArgumentParser(prog="huracan", description="Self-learning crypto trading daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", parents=[common], help="run the daemon (replay mode by default)")
    run.add_argument("--live", action="store_true", help="allow real orders (config must say mode: live too)")
    run.add_argument(
        "--until-end",
        action="store_true",
        help="replay mode: stop when the candle data is exhausted, print a summary",
    )

    migrate = commands.add_parser("migrate", parents=[common], help="apply pending database migrations")
    migrate.add_argument("--status", action="store_true", help="list applied and pending migrations only")

    commands.add_parser("verify", parents=[common], help="check dependencies, config, database, migrations")
    commands.add_parser("retrain", parents=[common], help="retrain and validate the agent")
    add_download_parser(commands, parents=[common])
    add_train_parser(commands, parents=[common])
    add_models_parser(commands, parents=[common])
    add_state_parsers(commands, parents=[common])
    add_report_parser(commands, parents=[common])

    db = commands.add_parser("db", parents=[common], help="the private PostgreSQL cluster")
    db.add_argument(
        "action", choices=["start", "stop", "status", "dsn"], help="dsn: start it and print its DSN"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify":
        # verify reports a bad configuration as one of its checks rather than refusing to start.
        configure_logging(stream=sys.stderr)
        return _run_async(_cmd_verify(ConfigSources.default(overlay=args.config)))
    try:
        config = load_config(ConfigSources.default(overlay=args.config))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"huracan: invalid configuration ({len(exc.problems)} problem(s)); nothing started",
            file=sys.stderr,
        )
        return EX_CONFIG
    # The daemon logs to stdout (the journal); the other commands print their answer there, so
    # their logs go to stderr and `psql "$(huracan db dsn)"` works.
    configure_logging(
        level=config.logging.level,
        levels=config.logging.levels,
        fmt=config.logging.format,
        stream=sys.stdout if args.command == "run" else sys.stderr,
    )
    register_secrets(config.secrets())

    if args.command == "run":
        return _cmd_run(config, args)
    if args.command == "download":
        return _run_async(cmd_download(config, args))
    if args.command == "train":
        return _run_async(cmd_train(config, args))
    if args.command == "models":
        return _run_async(cmd_models(config, args))
    if args.command == "migrate":
        return _run_async(_cmd_migrate(config, status_only=args.status))
    if args.command in ("halt", "reduce", "resume", "state"):
        return _run_async(cmd_state(config, args))
    if args.command == "report":
        return _run_async(cmd_report(config, args))
    if args.command == "retrain":
        print(
            "huracan retrain: not available yet; walk-forward retraining arrives with the retrain issue. "
            "Nothing was changed.",
            file=sys.stderr,
        )
        return EX_UNAVAILABLE
    return _cmd_db(config, args.action)


def _run_async(coro: Coroutine[Any, Any, int]) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def _cmd_run(config: HuracanConfig, args: argparse.Namespace) -> int:
    if config.exchange.mode == "live" and not args.live:
        print("huracan: config says mode: live; real orders also need `huracan run --live`", file=sys.stderr)
        return EX_CONFIG
    if args.live and config.exchange.mode != "live":
        print(f"huracan: --live given but config says mode: {config.exchange.mode}", file=sys.stderr)
        return EX_USAGE
    if args.until_end and config.exchange.mode != "replay":
        print(
            f"huracan: --until-end is for replay mode; config says mode: {config.exchange.mode}",
            file=sys.stderr,
        )
        return EX_USAGE
    daemon = Daemon(config, ConfigSources.default(overlay=args.config), until_end=args.until_end)
    status = _run_async(daemon.run())
    if args.until_end:
        print(replay_summary(daemon))
    return status


def replay_summary(daemon: Daemon) -> str:
    from huracan.agent.decide import DecisionService
    from huracan.analysis.learning import LearningService
    from huracan.execution.service import TradingService
    from huracan.market.ingest import CandleIngest

    ingest = next((s for s in daemon.services if isinstance(s, CandleIngest)), None)
    if ingest is None:
        return "replay summary: the replay did not start"
    stats = ingest.stats
    rejected = ", ".join(f"{reason} {count}" for reason, count in stats.rejected.items()) or "none"
    lines = []
    decide = next((s for s in daemon.services if isinstance(s, DecisionService)), None)
    if decide is not None:
        lines.append(decide.summary())
    trading = next((s for s in daemon.services if isinstance(s, TradingService)), None)
    if trading is not None:
        lines.append(trading.summary())
    learning = next((s for s in daemon.services if isinstance(s, LearningService)), None)
    if learning is not None:
        lines.append(learning.summary())
    lines.append(
        f"replay summary: {len(ingest.plan.symbols)} symbols at {ingest.plan.timeframe}; "
        f"{stats.stored} bars stored, {stats.published} bar times published, "
        f"{stats.duplicates} duplicates, {stats.conflicts} conflicts, rejected: {rejected}; "
        f"gaps repaired {stats.gaps_repaired}"
    )
    return "\n".join(lines)


async def _cmd_migrate(config: HuracanConfig, *, status_only: bool) -> int:
    from huracan.memory.database import DatabaseUnavailable, configured_connection
    from huracan.memory.migrate import (
        MigrationError,
        apply_migrations,
        default_migrations_dir,
        migration_status,
    )

    directory = default_migrations_dir()
    try:
        async with configured_connection(config.database, config.daemon.state_dir) as conn:
            if not status_only:
                applied = await apply_migrations(conn, directory)
                for m in applied:
                    print(f"applied  {m.version:04d}_{m.name}")
                if not applied:
                    print("nothing to apply: the database is current")
            status = await migration_status(conn, directory)
    except DatabaseUnavailable as exc:
        print(f"huracan migrate: database unavailable: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except MigrationError as exc:
        print(f"huracan migrate: {exc}", file=sys.stderr)
        return EX_SOFTWARE
    if status_only:
        for a in status.applied:
            print(f"applied  {a.version:04d}_{a.name}  {a.applied_at:%Y-%m-%d %H:%M:%S%z}")
        for m in status.pending:
            print(f"pending  {m.version:04d}_{m.name}")
        for c in status.changed:
            print(f"CHANGED  {c}")
    return EX_OK if status.is_current or status_only else EX_SOFTWARE


async def _cmd_verify(sources: ConfigSources) -> int:
    from huracan.monitoring.verify import all_required_pass, render, run_checks

    checks = await run_checks(sources)
    print(render(checks))
    return 0 if all_required_pass(checks) else 1


def _cmd_db(config: HuracanConfig, action: str) -> int:
    from huracan.memory.cluster import ClusterError, PrivateCluster

    if config.database.dsn is not None:
        print("huracan db: database.dsn is set; the private cluster is not used", file=sys.stderr)
        return EX_USAGE if action != "status" else 0
    cluster = PrivateCluster(config.daemon.state_dir / "postgres")
    try:
        if action in ("start", "dsn"):
            cluster.ensure_started()
            dsn = cluster.dsn(config.database.name)
            print(dsn if action == "dsn" else f"private PostgreSQL running: {dsn}")
        elif action == "stop":
            was_running = cluster.is_running()
            cluster.stop()
            print("private PostgreSQL stopped" if was_running else "private PostgreSQL was not running")
        else:
            running = cluster.is_running()
            print(f"private PostgreSQL {'running' if running else 'stopped'} under {cluster.root}")
            return 0 if running else 3
    except ClusterError as exc:
        print(f"huracan db {action}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    return 0


if __name__ == "__main__":
    sys.exit(main())
