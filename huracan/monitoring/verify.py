"""`huracan verify`: is this installation ready to run? A table of checks, pass or fail each."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from huracan.config import ConfigError, ConfigSources, HuracanConfig, load_config
from huracan.memory.database import DatabaseUnavailable, configured_connection
from huracan.memory.migrate import MigrationError, default_migrations_dir, migration_status
from huracan.rl.registry import model_dir_of

# Import name -> distribution name; torch is pinned exactly (see pyproject.toml).
DEPENDENCIES = {
    "ccxt": "ccxt",
    "torch": "torch",
    "asyncpg": "asyncpg",
    "pydantic_settings": "pydantic-settings",
    "uvloop": "uvloop",
    "numpy": "numpy",
    "orjson": "orjson",
    "structlog": "structlog",
    "tenacity": "tenacity",
    "yaml": "PyYAML",
    "aiohttp": "aiohttp",
}
TORCH_VERSION = "2.13.0"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    passed: bool
    detail: str
    required: bool = True


def check_python() -> Check:
    ok = sys.version_info[:2] == (3, 11)
    return Check("python", ok, f"{sys.version.split()[0]} (3.11 required)")


def check_dependencies(import_module: Callable[[str], object] = importlib.import_module) -> Check:
    missing, found = [], []
    for module, dist in DEPENDENCIES.items():
        try:
            import_module(module)
            found.append(f"{dist} {metadata.version(dist)}")
        except (ImportError, metadata.PackageNotFoundError) as exc:
            missing.append(f"{dist} ({exc})")
    if missing:
        return Check("dependencies", False, "missing: " + "; ".join(missing) + " (run `make install`)")
    torch = metadata.version("torch").split("+")[0]
    if torch != TORCH_VERSION:
        return Check("dependencies", False, f"torch {torch} installed, {TORCH_VERSION} required")
    return Check("dependencies", True, f"{len(found)} present, torch {torch}")


def check_state_dir(state_dir: Path) -> Check:
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=state_dir, prefix=".verify-"):
            pass
    except OSError as exc:
        return Check("state directory", False, f"{state_dir}: {exc}")
    return Check("state directory", True, f"{state_dir} writable")


def check_model(model_dir: Path) -> Check:
    models = sorted(model_dir.glob("*.pt")) if model_dir.is_dir() else []
    if not models:
        return Check("model", False, f"none yet in {model_dir} (`huracan train` trains one)", required=False)
    return Check("model", True, f"{len(models)} in {model_dir}, newest {models[-1].name}", required=False)


async def check_database(config: HuracanConfig) -> list[Check]:
    where = (
        "configured DSN"
        if config.database.dsn is not None
        else f"private cluster under {config.daemon.state_dir}"
    )
    try:
        async with configured_connection(config.database, config.daemon.state_dir) as conn:
            version = await conn.fetchval("SHOW server_version")
            status = await migration_status(conn, default_migrations_dir())
    except DatabaseUnavailable as exc:
        return [Check("database", False, str(exc)), Check("migrations", False, "database unreachable")]
    except MigrationError as exc:
        return [Check("database", True, where), Check("migrations", False, str(exc))]
    pending = ", ".join(f"{m.version:04d}_{m.name}" for m in status.pending)
    changed = ", ".join(str(c) for c in status.changed)
    detail = f"{len(status.applied)} applied"
    if pending:
        detail += f"; pending: {pending} (run `make migrate`)"
    if changed:
        detail += f"; changed after applying: {changed}"
    return [
        Check("database", True, f"PostgreSQL {version}, {where}"),
        Check("migrations", status.is_current, detail),
    ]


async def run_checks(sources: ConfigSources) -> list[Check]:
    checks = [check_python(), check_dependencies()]
    try:
        config = load_config(sources)
    except ConfigError as exc:
        checks.append(Check("config", False, "; ".join(str(p) for p in exc.problems)))
        return checks
    checks.append(
        Check("config", True, f"mode={config.exchange.mode}, {len(config.universe.symbols)} symbols")
    )
    checks.append(check_state_dir(config.daemon.state_dir))
    checks.extend(await check_database(config))
    checks.append(check_model(model_dir_of(config)))
    return checks


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'CHECK'.ljust(width)}  RESULT  DETAIL"]
    for c in checks:
        result = "pass" if c.passed else ("FAIL" if c.required else "info")
        lines.append(f"{c.name.ljust(width)}  {result.ljust(6)}  {c.detail}")
    verdict = all(c.passed for c in checks if c.required)
    lines.append("ready" if verdict else "NOT READY: fix the FAIL lines above")
    return os.linesep.join(lines)


def all_required_pass(checks: list[Check]) -> bool:
    return all(c.passed for c in checks if c.required)
