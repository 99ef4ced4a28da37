"""Configuration: pydantic-settings models, YAML layers, environment, systemd credentials, reload."""

from huracan.config.loader import ConfigError, ConfigProblem, ConfigSources, load_config
from huracan.config.reload import ConfigChange, ReloadPlan, plan_reload
from huracan.config.settings import HuracanConfig

__all__ = [
    "ConfigChange",
    "ConfigError",
    "ConfigProblem",
    "ConfigSources",
    "HuracanConfig",
    "ReloadPlan",
    "load_config",
    "plan_reload",
]
