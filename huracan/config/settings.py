"""The root settings model: every section of the daemon, and where its layers come from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from huracan.config.sections import (
    AgentSettings,
    DaemonSettings,
    DatabaseSettings,
    ExchangeSettings,
    ExecutionSettings,
    LoggingSettings,
    MemorySettings,
    MonitoringSettings,
    RiskSettings,
    TrainingSettings,
    UniverseSettings,
)

ENV_PREFIX = "HURACAN_"
ENV_DELIMITER = "__"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "config"
# The replay default's real candles (data/candles/PROVENANCE.md says where they come from).
BUNDLED_CANDLES_DIR = REPO_ROOT / "data" / "candles"

# The environment a load reads; a reload or a test passes its own instead of os.environ.
ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("huracan_config_environ", default=None)


class _ScopedEnvSource(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = ENVIRON.get()
        return parse_env_vars(
            os.environ if environ is None else environ,
            self.case_sensitive,
            self.env_ignore_empty,
            self.env_parse_none_str,
        )


class HuracanConfig(BaseSettings):
    """The whole configuration. Build it with `huracan.config.load_config`, which layers the files,
    systemd credentials and the environment and turns validation errors into readable lines."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
        # HURACAN_RISK__DAILY_PROFIT_TARGET=null sets a nullable key to null, as `null` in YAML does.
        env_parse_none_str="null",
    )

    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    universe: UniverseSettings = Field(default_factory=UniverseSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The loader hands the YAML layers and credentials in as init values; the environment
        # comes first so that it overrides them. No dotenv: systemd's EnvironmentFile does that job.
        return (_ScopedEnvSource(settings_cls), init_settings)

    def secrets(self) -> list[SecretStr]:
        """Every secret value set in this configuration, for the log redactor."""
        found = (
            getattr(getattr(self, section), key) for section, key in (p.split(".") for p in SECRET_PATHS)
        )
        return [s for s in found if s is not None]


def _secret_paths() -> frozenset[str]:
    """`section.key` of every field typed as a secret: the one list of them."""
    paths = set()
    for section, field in HuracanConfig.model_fields.items():
        model = field.annotation
        assert isinstance(model, type)
        assert issubclass(model, BaseModel)
        for key, inner in model.model_fields.items():
            if SecretStr in getattr(inner.annotation, "__args__", ()) or inner.annotation is SecretStr:
                paths.add(f"{section}.{key}")
    return frozenset(paths)


SECRET_PATHS = _secret_paths()
