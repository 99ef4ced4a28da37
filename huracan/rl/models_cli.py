"""`huracan models`: the trained models and which one trades.

    huracan models list [--json]           # every registered version, oldest first
    huracan models show VERSION [--json]
    huracan models promote VERSION         # make it the champion (the old one is retired)
    huracan models rollback [--to VERSION] # back to the previous champion (or VERSION)
    huracan models ab VERSION --share 0.3  # challenger in shadow on 30% of the symbols
    huracan models ab --stop

Every move that makes a model decide verifies its file first (sha256 and feature schema) and
changes nothing when it does not load. Exit 0 done; 64 bad arguments, unknown version or
nothing to roll back; 69 database unavailable; 70 a corrupt or other-schema model file, or a
concurrent change; 78 the database schema is not current and auto_migrate is off.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TextIO

import asyncpg

from huracan.config import HuracanConfig
from huracan.exit_codes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE
from huracan.rl.checkpoint import CheckpointError
from huracan.rl.registry import (
    ModelRecord,
    ModelRegistry,
    NothingToRollBack,
    RegistryConflict,
    RegistryError,
    UnknownModel,
    model_dir_of,
)

ACTIONS = ("list", "show", "promote", "rollback", "ab")


class ModelsCommandError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- rendering (pure) -----------------------------------------------------------------------------
def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def key_metrics(metrics: dict[str, Any]) -> str:
    """The held-out figures a promotion decision starts from, when the model has them."""

    def number(key: str) -> float | None:
        value = metrics.get(key)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None

    parts = []
    if (mean := number("holdout_mean_return")) is not None:
        parts.append(f"return {mean * 1e4:+.1f}bps")
    if (t := number("holdout_t_statistic")) is not None:
        parts.append(f"t {t:+.2f}")
    if (win := number("holdout_win_rate")) is not None:
        parts.append(f"win {win:.0%}")
    if (trades := number("holdout_trades")) is not None:
        parts.append(f"trades {trades:,.0f}")
    return " ".join(parts) or "-"


def render_table(records: Sequence[ModelRecord]) -> str:
    if not records:
        return "no models registered (huracan train registers one)"
    header = ("VERSION", "STATUS", "CREATED (UTC)", "SCHEMA", "SHARE", "METRICS")
    rows = [
        (
            r.version,
            r.status,
            _when(r.created_at),
            r.schema_hash[:12],
            "-" if r.ab_share is None else f"{r.ab_share:.0%}",
            key_metrics(r.metrics),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    lines = []
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=True)]
        lines.append("  ".join([*cells, row[-1]]))
    return "\n".join(lines)


def render_record(record: ModelRecord) -> str:
    fields = [
        ("version", record.version),
        ("status", record.status),
        ("parent", record.parent_version or "-"),
        ("schema hash", record.schema_hash),
        ("artefact", str(record.artifact_path)),
        ("sha256", record.artifact_sha256 or "-"),
        ("created", _when(record.created_at)),
        ("promoted", _when(record.promoted_at)),
        ("retired", _when(record.retired_at)),
        ("A/B share", "-" if record.ab_share is None else f"{record.ab_share:.0%}"),
        ("notes", record.notes or "-"),
    ]
    lines = [f"{name:<12} {value}" for name, value in fields]
    if record.metrics:
        lines.append("metrics")
        lines.extend(f"  {key:<34} {value}" for key, value in sorted(record.metrics.items()))
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------
def add_models_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """The `models` subcommand on `commands` (cli.build_parser's subparsers). The parents (--config)
    go on each action, so `huracan models list --config x.yaml` reads like the other commands."""
    parser = commands.add_parser(
        "models",
        help="list, promote, roll back and A/B test the trained models",
        description="The registered models of the agent and their lifecycle.",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=list(parents), help="every registered model")
    listing.add_argument("--json", action="store_true", help="a JSON array of the records on stdout")
    show = actions.add_parser("show", parents=list(parents), help="one model in full")
    show.add_argument("version", metavar="VERSION")
    show.add_argument("--json", action="store_true", help="the record as a JSON object on stdout")
    promote = actions.add_parser("promote", parents=list(parents), help="make VERSION the champion")
    promote.add_argument("version", metavar="VERSION")
    rollback = actions.add_parser(
        "rollback", parents=list(parents), help="put the previous champion (or --to VERSION) back"
    )
    rollback.add_argument("--to", dest="to_version", metavar="VERSION", help="default: the previous champion")
    ab = actions.add_parser(
        "ab", parents=list(parents), help="run VERSION as a challenger in shadow on a share of the symbols"
    )
    ab.add_argument("version", metavar="VERSION", nargs="?")
    ab.add_argument("--share", type=float, metavar="X", help="share of the symbols, 0 < X <= 1")
    ab.add_argument("--stop", action="store_true", help="end the A/B test")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    if args.action != "ab":
        return
    if args.stop:
        if args.version is not None or args.share is not None:
            raise ModelsCommandError("ab --stop takes neither a VERSION nor --share", EX_USAGE)
        return
    if args.version is None or args.share is None:
        raise ModelsCommandError("ab needs a VERSION and --share X (or --stop)", EX_USAGE)
    if not 0.0 < args.share <= 1.0:  # `not` also refuses NaN
        raise ModelsCommandError(f"--share must be above 0 and at most 1, not {args.share}", EX_USAGE)


def _expected_schema_hash() -> str:
    # Imported here: the feature schema pulls in the feature code, which `list` does not need.
    from huracan.features.schema import STATE_SCHEMA

    return STATE_SCHEMA.hash


async def _run_action(registry: ModelRegistry, args: argparse.Namespace, out: TextIO) -> None:
    action = args.action
    as_json = bool(getattr(args, "json", False))
    if action == "list":
        records = await registry.list()
        if as_json:
            print(json.dumps([r.to_json() for r in records]), file=out)
        else:
            print(render_table(records), file=out)
    elif action == "show":
        record = await registry.get(args.version)
        print(json.dumps(record.to_json()) if as_json else render_record(record), file=out)
    elif action == "promote":
        previous = await registry.active()
        await registry.promote(args.version, expected_schema_hash=_expected_schema_hash())
        was = f" (was {previous.version})" if previous and previous.version != args.version else ""
        print(f"model {args.version} is the champion{was}", file=out)
    elif action == "rollback":
        previous = await registry.active()
        await registry.rollback(to_version=args.to_version, expected_schema_hash=_expected_schema_hash())
        champion = await registry.active()
        was = f"; {previous.version} is rolled_back" if previous else ""
        print(f"rolled back: model {champion.version if champion else '?'} is the champion{was}", file=out)
    elif args.stop:
        stopped = await registry.stop_ab()
        print(
            "no A/B test was running" if stopped is None else f"A/B test of {stopped.version} stopped",
            file=out,
        )
    else:
        record = await registry.start_ab(
            args.version, share=args.share, expected_schema_hash=_expected_schema_hash()
        )
        print(f"A/B test: {record.version} decides in shadow for {args.share:.0%} of the symbols", file=out)


async def cmd_models(
    config: HuracanConfig,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """`huracan models ACTION`; the exit statuses are in the module docstring."""
    from huracan.memory.database import DatabaseUnavailable, SchemaNotCurrent, open_command_pool
    from huracan.memory.migrate import MigrationError

    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    pool = None
    try:
        _check_args(args)
        try:
            pool = await open_command_pool(config.database, config.daemon.state_dir)
        except SchemaNotCurrent as exc:
            raise ModelsCommandError(str(exc), EX_CONFIG) from None
        await _run_action(ModelRegistry(pool, model_dir_of(config)), args, out)
    except ModelsCommandError as exc:
        print(f"huracan models: {exc}", file=err)
        return exc.exit_code
    except (UnknownModel, NothingToRollBack) as exc:
        print(f"huracan models: {exc}", file=err)
        return EX_USAGE
    except RegistryConflict as exc:
        print(f"huracan models: {exc}", file=err)
        return EX_SOFTWARE
    except RegistryError as exc:
        print(f"huracan models: {exc}", file=err)
        return EX_USAGE
    except CheckpointError as exc:
        print(f"huracan models: refused, nothing changed: {exc}", file=err)
        return EX_SOFTWARE
    except DatabaseUnavailable as exc:
        print(f"huracan models: database unavailable: {exc}", file=err)
        return EX_UNAVAILABLE
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
        print(f"huracan models: database connection lost: {exc}", file=err)
        return EX_UNAVAILABLE
    except MigrationError as exc:
        print(f"huracan models: {exc}", file=err)
        return EX_SOFTWARE
    finally:
        if pool is not None:
            await pool.close()
    return EX_OK


__all__ = ["ACTIONS", "add_models_parser", "cmd_models", "key_metrics", "render_record", "render_table"]
