"""What a reload applies and what it leaves for a restart (the pure part of SIGHUP)."""

from __future__ import annotations

from pathlib import Path

from huracan.config import ConfigSources, HuracanConfig, load_config, plan_reload
from huracan.config.reload import RESTART_KEYS, needs_restart
from huracan.logs import MASK


def config(**env: str) -> HuracanConfig:
    return load_config(ConfigSources(environ={f"HURACAN_{k}": v for k, v in env.items()}))


def test_live_keys_apply_and_restart_keys_keep_their_running_values(tmp_path: Path) -> None:
    running = config(DAEMON__STATE_DIR=str(tmp_path / "a"))
    loaded = config(
        DAEMON__STATE_DIR=str(tmp_path / "b"),
        DAEMON__HEARTBEAT_INTERVAL_S="3",
        LOGGING__LEVEL="debug",
        LOGGING__FORMAT="console",
        DATABASE__POOL_MAX_SIZE="3",
        UNIVERSE__SYMBOLS='["BTC/USDT"]',
        RISK__POSITION_CAP="1234",
    )
    plan = plan_reload(running, loaded)
    effective = plan.effective
    # Applied.
    assert effective.daemon.heartbeat_interval_s == 3
    assert effective.logging.level == "debug"
    assert str(effective.risk.position_cap) == "1234"
    # Kept until a restart, including what is derived from a kept key.
    assert effective.daemon.state_dir == tmp_path / "a"
    assert effective.agent.model_dir == tmp_path / "a" / "models"
    assert effective.logging.format == "auto"
    assert effective.database.pool_max_size == 8
    assert effective.universe.symbols == running.universe.symbols
    assert {c.path for c in plan.applied} == {
        "daemon.heartbeat_interval_s",
        "logging.level",
        "risk.position_cap",
    }
    assert {c.path for c in plan.pending_restart} == {
        "daemon.state_dir",
        "agent.model_dir",
        "logging.format",
        "database.pool_max_size",
        "universe.symbols",
    }


def test_nothing_changed_means_an_empty_plan() -> None:
    running = config()
    plan = plan_reload(running, config())
    assert plan.applied == ()
    assert plan.pending_restart == ()
    assert plan.effective == running


def test_secret_changes_are_shown_masked() -> None:
    plan = plan_reload(config(EXCHANGE__API_KEY="old-key-1234"), config(EXCHANGE__API_KEY="new-key-5678"))
    (change,) = plan.pending_restart
    assert (change.path, change.old, change.new) == ("exchange.api_key", MASK, MASK)
    assert plan.effective.exchange.api_key is not None
    assert plan.effective.exchange.api_key.get_secret_value() == "old-key-1234"


def test_restart_keys_name_real_settings() -> None:
    flat = config().model_dump()
    for key in RESTART_KEYS:
        section, _, name = key.partition(".")
        assert section in flat, key
        assert not name or name in flat[section], key
    assert needs_restart("database.dsn")  # a whole section
    assert not needs_restart("databases.x")
