"""The root settings model: every section of the daemon, and where its layers come from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path

from pydantic import Field, SecretStr
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
    UniverseSettings,
)

ENV_PREFIX = "HURACAN_"
ENV_DELIMITER = "__"
REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "config"

# The environment a load reads; a reload or a test passes its own instead of os.environ.
ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("huracan_config_environ", default=None)


class _ScopedEnvSource(EnvSettingsSource):
    def _load_env_vars(self) -> Mapping[str, str | None]:
        environ = ENVIRON.get()
        return parse_env_vars(os.environ if environ is None else environ, self.case_sensitive)


class HuracanConfig(BaseSettings):
    """The whole configuration. Build it with `huracan.config.load_config`, which layers the files,
    systemd credentials and the environment and turns validation errors into readable lines."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        case_sensitive=False,
        extra="forbid",
        frozen=True,
    )

    exchange: ExchangeSettings = Field(default_factory=ExchangeSettings)
    universe: UniverseSettings = Field(default_factory=UniverseSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    risk: RiskSettings = Field(default_factory=RiskSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
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
        found = [self.exchange.api_key, self.exchange.api_secret, self.database.dsn, self.database.password]
        return [s for s in found if s is not None]
