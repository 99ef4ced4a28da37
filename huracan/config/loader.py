"""Layered loading: config/base.yaml, then config/local.yaml or --config PATH, then systemd
credentials, then HURACAN_SECTION__KEY environment variables; the later layer wins key by key.

Every problem is reported at once, one line each, naming the key path, the value, the reason and
the layer that set it, so an operator fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_settings import SettingsError

from huracan.config.settings import (
    CONFIG_DIR,
    ENV_DELIMITER,
    ENV_PREFIX,
    ENVIRON,
    REPO_ROOT,
    SECRET_PATHS,
    HuracanConfig,
)
from huracan.logs.redact import MASK, REDACTOR

# systemd LoadCredential= names them "<section>.<key>"; only secrets may come this way.
CREDENTIAL_KEYS = tuple(sorted(SECRET_PATHS))
# A key whose name looks like a secret's has its value masked in problem lines even when it is
# misspelt (exchange.api_secrett): the value of an unknown key is not needed to fix its name.
_SECRETISH = re.compile(r"key|secret|pass|pwd|token|dsn|cred|auth", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    path: str
    value: str
    reason: str
    origin: str

    def __str__(self) -> str:
        where = f" (from {self.origin})" if self.origin else ""
        return f"config: {self.path or '<root>'} = {self.value}: {self.reason}{where}"


class ConfigError(Exception):
    """An invalid configuration; `problems` holds one entry per thing to fix."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class ConfigSources:
    """Where a configuration is read from; kept so that SIGHUP re-reads the same places.

    `overlay` is a file that must exist (--config PATH); `local` one that is used when it exists,
    checked at every load, so that a config/local.yaml created later is picked up by a reload.
    """

    base: Path = CONFIG_DIR / "base.yaml"
    overlay: Path | None = None
    local: Path | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def default(cls, overlay: Path | None = None) -> ConfigSources:
        return cls(overlay=overlay, local=None if overlay is not None else CONFIG_DIR / "local.yaml")

    def layers(self) -> list[Path]:
        extra = self.overlay if self.overlay is not None else self.local
        if extra is None or (extra is self.local and not extra.exists()):
            return [self.base]
        return [self.base, extra]


def load_config(sources: ConfigSources) -> HuracanConfig:
    """Read, layer and validate. Raises ConfigError listing every problem."""
    origins: dict[str, str] = {}
    problems: list[ConfigProblem] = []
    merged: dict[str, Any] = {}
    for path in sources.layers():
        try:
            _merge(merged, _read_yaml(path), origins, str(path), ())
        except ConfigError as exc:
            problems.extend(exc.problems)
    try:
        _merge(merged, _read_credentials(sources.environ), origins, "systemd credential", ())
    except ConfigError as exc:
        problems.extend(exc.problems)
    env_problems = _check_environment(sources.environ, origins)
    problems.extend(env_problems)
    # Leave the bad variables out so that the rest still gets validated and reported in one pass.
    bad = {p.origin.removeprefix("environment variable ") for p in env_problems}
    try:
        config = _build(merged, {k: v for k, v in sources.environ.items() if k not in bad})
    except ValidationError as exc:
        problems.extend(_problem_from(err, origins) for err in exc.errors())
    except SettingsError as exc:
        problems.append(ConfigProblem("", "?", str(exc), "environment"))
    if problems:
        raise ConfigError(problems)
    return _resolve_paths(config)


def _build(values: dict[str, Any], environ: Mapping[str, str]) -> HuracanConfig:
    token = ENVIRON.set(environ)
    try:
        return HuracanConfig(**values)
    finally:
        ENVIRON.reset(token)


def _read_yaml(path: Path) -> dict[str, Any]:
    def fail(reason: str) -> ConfigError:
        return ConfigError([ConfigProblem("", str(path), reason, "")])

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise fail(f"invalid YAML: {where}{problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise fail(f"the top level must be a mapping of sections, not {type(data).__name__}")
    bad_keys = _non_string_keys(data, ())
    if bad_keys:
        raise ConfigError(
            [
                ConfigProblem(k, "?", "keys must be names, not numbers or other values", str(path))
                for k in bad_keys
            ]
        )
    return data


def _non_string_keys(mapping: Mapping[Any, Any], prefix: tuple[str, ...]) -> list[str]:
    found = []
    for key, value in mapping.items():
        path = (*prefix, str(key))
        if not isinstance(key, str):
            found.append(".".join(path))
        elif isinstance(value, Mapping):
            found.extend(_non_string_keys(value, path))
    return found


def _read_credentials(environ: Mapping[str, str]) -> dict[str, Any]:
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return {}
    values: dict[str, Any] = {}
    problems = []
    for name in CREDENTIAL_KEYS:
        path = Path(directory) / name
        # An empty file is "not set": units ship empty placeholders for replay and shadow mode,
        # and an empty API key must not satisfy live mode's "needs api_key".
        try:
            value = path.read_text(encoding="utf-8").strip() if path.is_file() else ""
        except (OSError, UnicodeDecodeError) as exc:
            reason = (
                "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else f"cannot read: {exc.strerror}"
            )
            problems.append(ConfigProblem(name, MASK, reason, f"systemd credential {path}"))
            continue
        if value:
            section, key = name.split(".")
            values.setdefault(section, {})[key] = value
    if problems:
        raise ConfigError(problems)
    return values


def _merge(
    target: dict[str, Any],
    layer: Mapping[str, Any],
    origins: dict[str, str],
    origin: str,
    prefix: tuple[str, ...],
) -> None:
    for key, value in layer.items():
        path = (*prefix, str(key))
        if isinstance(value, Mapping):
            if not isinstance(target.get(key), dict):
                target[key] = {}
            _merge(target[key], value, origins, origin, path)
        else:
            target[key] = value
            origins[".".join(path)] = origin


def _check_environment(environ: Mapping[str, str], origins: dict[str, str]) -> list[ConfigProblem]:
    """Unknown HURACAN_* variables are errors, and each known one is recorded as a value's origin.

    pydantic-settings silently ignores variables that match no field, which would let
    HURACAN_DATABSE__DSN go unnoticed. Variables that do not start with a section name (the test
    suite's HURACAN_TEST_DSN, say) are not configuration and are left alone.
    """
    sections = HuracanConfig.model_fields
    problems = []
    for name, value in environ.items():
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        parts = rest.split(ENV_DELIMITER)
        if len(parts) == 1:
            if any(rest.startswith(s) for s in sections):
                problems.append(
                    ConfigProblem(
                        rest,
                        MASK,  # the name is wrong; its value (maybe a DSN) is not worth the risk
                        f"use {ENV_PREFIX}SECTION__KEY (two underscores)",
                        f"environment variable {name}",
                    )
                )
            continue
        path = ".".join(parts)
        reason = _unknown_path(parts) or _not_json(parts, value)
        if reason:
            problems.append(
                ConfigProblem(path, _display(path, value), reason, f"environment variable {name}")
            )
        else:
            origins[path] = f"environment variable {name}"
    return problems


def _unknown_path(parts: list[str]) -> str | None:
    model: type[BaseModel] = HuracanConfig
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            return f"unknown key {part!r}; known keys: {', '.join(sorted(fields))}"
        annotation = fields[part].annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
            continue
        # A leaf; only a mapping (logging.levels) may be addressed deeper.
        if depth + 1 < len(parts) and getattr(annotation, "__origin__", None) is not dict:
            return f"{'.'.join(parts[: depth + 1])} is not a section"
        return None
    return "names a whole section; set its keys one by one"


def _not_json(parts: list[str], value: str) -> str | None:
    """pydantic-settings decodes list and mapping values as JSON; say so plainly when one isn't."""
    section = HuracanConfig.model_fields[parts[0]].annotation
    assert isinstance(section, type)
    assert issubclass(section, BaseModel)
    annotation = section.model_fields[parts[1]].annotation
    if len(parts) == 2 and getattr(annotation, "__origin__", None) in (list, dict):
        try:
            json.loads(value)
        except ValueError:
            return 'must be JSON in the environment, e.g. ["BTC/USDT", "ETH/USDT"] or {"asyncpg": "warning"}'
    return None


def _problem_from(error: Any, origins: Mapping[str, str]) -> ConfigProblem:
    loc = [str(p) for p in error.get("loc", ())]
    path = ".".join(loc)
    reason = str(error.get("msg", "invalid"))
    if error.get("type") == "extra_forbidden":
        reason = "unknown key (a typo?)"
    return ConfigProblem(path, _display(path, error.get("input")), reason, _origin_of(path, origins))


def _origin_of(path: str, origins: Mapping[str, str]) -> str:
    """The layer that set a key; for a whole section (a cross-field check), every layer that set
    one of its keys, latest first."""
    if path in origins:
        return origins[path]
    parts = path.split(".")
    for depth in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:depth]) in origins:
            return origins[".".join(parts[:depth])]
    below = [origin for key, origin in origins.items() if key.startswith(path + ".")]
    return ", ".join(dict.fromkeys(reversed(below))) or "defaults"


def _display(path: str, value: Any) -> str:
    if isinstance(value, SecretStr) or _SECRETISH.search(path):
        return MASK
    if isinstance(value, dict):
        # A whole section failed a cross-field check; its values may hold secrets, and the
        # reason names the keys involved.
        return "{...}"
    text = repr(value) if isinstance(value, str) else str(value)
    # Registered secrets and DSN passwords, wherever they turn up.
    text = REDACTOR.redact_text(text)
    return text if len(text) <= 120 else text[:117] + "..."


def _resolve_paths(config: HuracanConfig) -> HuracanConfig:
    """Relative paths are relative to the checkout (state dir, replay data) or to the state dir
    (models), never to the working directory, which differs between a shell and systemd."""
    state_dir = _absolute(config.daemon.state_dir, REPO_ROOT)
    return config.model_copy(
        update={
            "daemon": config.daemon.model_copy(update={"state_dir": state_dir}),
            "agent": config.agent.model_copy(
                update={"model_dir": _absolute(config.agent.model_dir, state_dir)}
            ),
            "universe": config.universe.model_copy(
                update={"replay_data_dir": _absolute(config.universe.replay_data_dir, REPO_ROOT)}
            ),
        }
    )


def _absolute(path: Path, base: Path) -> Path:
    return path if path.is_absolute() else base / path
