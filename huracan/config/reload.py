"""What a SIGHUP changes: the keys that differ, which of them apply live, which need a restart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, SecretStr

from huracan.config.settings import HuracanConfig
from huracan.logs import MASK

# Keys (or whole sections) that the running daemon cannot change under itself: they name the
# resources opened at start-up (the database, the venue, the market data streams).
RESTART_KEYS = (
    "database",
    "daemon.state_dir",
    "exchange.mode",
    "exchange.id",
    "exchange.sandbox",
    "exchange.api_url",
    "exchange.api_key",
    "exchange.api_secret",
    "exchange.live_opt_in",
    "universe.symbols",
    "universe.timeframe",
    "universe.replay_data_dir",
    "agent.device",
    # Resolved against daemon.state_dir, which itself needs a restart; read by the model loader.
    "agent.model_dir",
    # The renderer is chosen once; levels (logging.level, logging.levels) do change live.
    "logging.format",
    "monitoring.metrics_host",
    "monitoring.metrics_port",
)


@dataclass(frozen=True, slots=True)
class ConfigChange:
    path: str
    old: str
    new: str
    needs_restart: bool


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    """The configuration to run on after a reload, and what changed to get there."""

    effective: HuracanConfig
    applied: tuple[ConfigChange, ...]
    pending_restart: tuple[ConfigChange, ...]


def needs_restart(path: str) -> bool:
    return any(path == key or path.startswith(key + ".") for key in RESTART_KEYS)


def plan_reload(running: HuracanConfig, loaded: HuracanConfig) -> ReloadPlan:
    """Keep the running values of restart-only keys; take every other change from `loaded`."""
    old, new = _flatten(running), _flatten(loaded)
    changes = [
        ConfigChange(path, _show(path, old.get(path)), _show(path, new.get(path)), needs_restart(path))
        for path in sorted(old.keys() | new.keys())
        if old.get(path) != new.get(path)
    ]
    pending = tuple(c for c in changes if c.needs_restart)
    effective = loaded
    for key in RESTART_KEYS:
        section, _, name = key.partition(".")
        kept: BaseModel = getattr(running, section)
        if name:
            kept = getattr(effective, section).model_copy(update={name: getattr(kept, name)})
        effective = effective.model_copy(update={section: kept})
    return ReloadPlan(effective, tuple(c for c in changes if not c.needs_restart), pending)


def _flatten(model: BaseModel, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            flat.update(_flatten(value, path + "."))
        elif isinstance(value, SecretStr):
            flat[path] = ("secret", value.get_secret_value())
        else:
            flat[path] = value
    return flat


def _show(path: str, value: Any) -> str:
    if isinstance(value, tuple) and value and value[0] == "secret":
        return MASK
    return "<unset>" if value is None else str(value)
