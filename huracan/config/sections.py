"""The configuration sections of the daemon, one pydantic model each.

Every model forbids unknown keys: a typo in a YAML file or an environment variable must be an
error, never a silently ignored setting. Defaults here are the code's; config/base.yaml repeats
them with a comment per key, and a test holds the two equal.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

PositiveSeconds = Annotated[float, Field(gt=0)]
Money = Annotated[Decimal, Field(gt=0, max_digits=20, decimal_places=8)]
Bps = Annotated[float, Field(ge=0, le=10_000)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


def _expand_user(path: Path) -> Path:
    try:
        return path.expanduser()
    except RuntimeError as exc:  # ~nosuchuser
        raise ValueError(f"cannot expand ~: {exc}") from exc


def _empty_is_unset(value: object) -> object:
    return None if value == "" else value


# A path that may start with ~; relative ones are resolved by the loader (see _resolve_paths).
LocalPath = Annotated[Path, AfterValidator(_expand_user)]
# HURACAN_DATABASE__DSN= (set but empty) means "not set", as it does for a shell.
Secret = Annotated[SecretStr | None, BeforeValidator(_empty_is_unset)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ExchangeSettings(Section):
    mode: Literal["replay", "shadow", "live"] = "replay"
    id: str = Field("binance", min_length=1, pattern=r"^[a-z0-9_]+$")
    sandbox: bool = False
    api_url: str | None = None
    api_key: Secret = None
    api_secret: Secret = None
    request_timeout_s: PositiveSeconds = 10.0
    retry_attempts: int = Field(5, ge=1, le=20)
    retry_cap_s: PositiveSeconds = 30.0
    live_opt_in: bool = False

    @field_validator("api_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @model_validator(mode="after")
    def _live_needs_keys(self) -> ExchangeSettings:
        if self.mode == "live":
            if not self.live_opt_in:
                raise ValueError("mode 'live' also needs exchange.live_opt_in: true and `huracan run --live`")
            if self.api_key is None or self.api_secret is None:
                raise ValueError("mode 'live' needs exchange.api_key and exchange.api_secret")
        return self


class UniverseSettings(Section):
    symbols: list[Annotated[str, Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")]] = Field(
        default_factory=lambda: ["BTC/USDT", "ETH/USDT", "SOL/USDT"], min_length=1
    )
    timeframe: Literal["1m", "5m", "15m", "1h", "4h", "1d"] = "5m"
    backfill_days: int = Field(30, ge=0, le=3650)
    replay_data_dir: LocalPath = Path("data/candles")
    replay_speed: float = Field(0.0, ge=0)

    @field_validator("symbols")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("symbols must be unique")
        return value


class DatabaseSettings(Section):
    dsn: Secret = None
    password: Secret = None
    name: str = Field("huracan", pattern=r"^[a-z_][a-z0-9_]*$")
    pool_min_size: int = Field(1, ge=1, le=100)
    pool_max_size: int = Field(8, ge=1, le=100)
    command_timeout_s: PositiveSeconds = 30.0
    auto_migrate: bool = True

    def dsn_value(self) -> str | None:
        return self.dsn.get_secret_value() if self.dsn is not None else None

    def password_value(self) -> str | None:
        return self.password.get_secret_value() if self.password is not None else None

    @model_validator(mode="after")
    def _pool_sizes(self) -> DatabaseSettings:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


class RiskSettings(Section):
    account_currency: str = Field("GBP", pattern=r"^[A-Z]{3,5}$")
    quote_to_account_rate: Money = Decimal("0.79")
    capital: Money = Decimal("10000")
    position_cap: Money = Decimal("5000")
    normal_position: Money = Decimal("3000")
    daily_loss_limit: Money = Decimal("500")
    max_heat_pct: float = Field(15.0, gt=0, le=100)
    circuit_breaker_loss: Money = Decimal("1000")
    daily_profit_target: Money | None = Decimal("1000")
    max_open_positions: int = Field(3, ge=1)
    max_orders_per_minute: int = Field(30, ge=1)
    price_collar_bps: Bps = 100.0
    scale_down_instead_of_reject: bool = True
    trading_day_timezone: str = "Europe/London"
    flatten_on_circuit_breaker: bool = True

    @field_validator("trading_day_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value


class AgentSettings(Section):
    model_dir: LocalPath = Path("models")
    device: Literal["cpu", "cuda"] = "cpu"
    greedy: bool = True
    min_confidence: float = Field(0.0, ge=0, le=1)
    torch_threads: int = Field(1, ge=1, le=64)
    model_check_interval_s: PositiveSeconds = 60.0
    intent_queue_size: int = Field(1000, ge=1)


class TrainingSettings(Section):
    symbols: list[str] = Field(default_factory=list)
    start: date | None = None
    end: date | None = None
    source: Literal["auto", "database", "files"] = "auto"
    total_steps: int = Field(2_000_000, ge=1)
    n_envs: int = Field(1024, ge=1)
    rollout_steps: int = Field(64, ge=1)
    episode_bars: int = Field(576, ge=2)
    holdout_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 7
    promote_first: bool = True


class ExecutionSettings(Section):
    taker_fee_bps: Bps = 10.0
    maker_fee_bps: Bps = 10.0
    slippage_bps: Bps = 2.0
    half_spread_bps: Bps = 1.0
    maker_entries: bool = True
    maker_offset_bps: Bps = 0.0
    reprice_after_s: PositiveSeconds = 10.0
    max_reprices: int = Field(3, ge=0)
    taker_fallback: bool = True
    stop_loss_bps: float = Field(150.0, gt=0, lt=10_000)  # a stop at or below 0 is no stop
    take_profit_bps: Bps = 300.0
    max_hold_bars: int = Field(48, ge=1)
    order_timeout_s: PositiveSeconds = 10.0
    signal_ttl_s: PositiveSeconds = 600.0
    max_volume_share: float = Field(0.1, gt=0, le=1)
    order_poll_interval_s: PositiveSeconds = 2.0
    reconcile_balances_interval_s: PositiveSeconds = 60.0
    unknown_venue_orders: Literal["adopt", "cancel"] = "cancel"
    client_order_prefix: str = Field("hur", pattern=r"^[a-zA-Z0-9]{1,16}$")


PostExitHours = Literal[1, 4, 24]
POST_EXIT_HOURS: tuple[PostExitHours, ...] = (1, 4, 24)


class MemorySettings(Section):
    pattern_neighbours: int = Field(20, ge=1, le=1000)
    # The tracker's horizons are the schema's (post_exit_tracking.horizon); 4 h is the one the
    # analyzers wait for, so it cannot be left out.
    post_exit_horizons_h: list[PostExitHours] = Field(default_factory=lambda: list(POST_EXIT_HOURS))
    write_batch_size: int = Field(500, ge=1)
    # How often the learning task looks for closed trades to learn from and horizons to track.
    learning_interval_s: PositiveSeconds = 5.0

    @field_validator("post_exit_horizons_h")
    @classmethod
    def _analysis_horizon_tracked(cls, hours: list[int]) -> list[int]:
        if 4 not in hours:
            raise ValueError("must include 4: the win and loss analyzers judge a trade 4 h after its exit")
        return sorted(set(hours))


class MonitoringSettings(Section):
    health_interval_s: PositiveSeconds = 30.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(0, ge=0, le=65535)
    loop_lag_warn_s: PositiveSeconds = 1.0


class DaemonSettings(Section):
    state_dir: LocalPath = Path("var")
    heartbeat_interval_s: PositiveSeconds = 10.0
    shutdown_timeout_s: PositiveSeconds = 20.0
    restart_backoff_initial_s: PositiveSeconds = 1.0
    restart_backoff_max_s: PositiveSeconds = 60.0
    max_restarts: int = Field(5, ge=0)
    restart_window_s: PositiveSeconds = 600.0
    watchdog_stale_after_s: PositiveSeconds = 30.0

    @model_validator(mode="after")
    def _backoff_order(self) -> DaemonSettings:
        if self.restart_backoff_initial_s > self.restart_backoff_max_s:
            raise ValueError("restart_backoff_initial_s must not exceed restart_backoff_max_s")
        return self


def _quiet_libraries() -> dict[str, LogLevel]:
    return {"asyncpg": "warning", "ccxt": "warning"}


class LoggingSettings(Section):
    level: LogLevel = "info"
    levels: dict[str, LogLevel] = Field(default_factory=_quiet_libraries)
    format: Literal["auto", "json", "console"] = "auto"
