"""Configuration: layering, credentials, and every error path, each reported as one line."""

from __future__ import annotations

import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from huracan.config import ConfigError, ConfigSources, HuracanConfig, load_config
from huracan.config.loader import CREDENTIAL_KEYS
from huracan.config.settings import CONFIG_DIR, REPO_ROOT
from huracan.exit_codes import EX_CONFIG
from huracan.logs import MASK

BASE = CONFIG_DIR / "base.yaml"


def load(tmp_path: Path, overlay: str | None = None, env: dict[str, str] | None = None) -> HuracanConfig:
    path = None
    if overlay is not None:
        path = tmp_path / "local.yaml"
        path.write_text(overlay)
    return load_config(ConfigSources(base=BASE, overlay=path, environ=env or {}))


def problems(tmp_path: Path, overlay: str | None = None, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, overlay, env)
    lines = [str(p) for p in caught.value.problems]
    assert str(caught.value) == "\n".join(lines)
    return lines


def test_base_yaml_states_every_default_of_the_code() -> None:
    """config/base.yaml documents the defaults; it must not drift from the models'."""
    from_file = HuracanConfig.model_validate(yaml.safe_load(BASE.read_text()))
    assert from_file == HuracanConfig.model_validate({})
    assert from_file.model_fields_set == set(HuracanConfig.model_fields)  # every section is in the file


def test_every_key_in_base_yaml_has_a_comment() -> None:
    for number, line in enumerate(BASE.read_text().splitlines(), 1):
        if re.match(r"^\s+[a-z_]+:\s*\S", line) and not line.rstrip().endswith(":"):
            assert "#" in line, f"config/base.yaml line {number} has no comment: {line!r}"


def test_layers_apply_in_order_file_then_overlay_then_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        overlay="risk:\n  position_cap: 2500\n  max_open_positions: 2\nlogging:\n  levels:\n    huracan.exchange: debug\n",
        env={"HURACAN_RISK__MAX_OPEN_POSITIONS": "7", "HURACAN_DAEMON__HEARTBEAT_INTERVAL_S": "2.5"},
    )
    assert config.risk.position_cap == Decimal("2500")  # overlay beats base
    assert config.risk.max_open_positions == 7  # environment beats overlay
    assert config.daemon.heartbeat_interval_s == 2.5  # environment beats base
    assert config.risk.daily_loss_limit == Decimal("500")  # untouched keys keep base values
    # Mappings merge key by key rather than being replaced wholesale.
    assert config.logging.levels == {"asyncpg": "warning", "ccxt": "warning", "huracan.exchange": "debug"}


def test_environment_decodes_lists_and_nested_mappings(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        env={"HURACAN_UNIVERSE__SYMBOLS": '["ETH/USDT"]', "HURACAN_LOGGING__LEVELS__ASYNCPG": "error"},
    )
    assert config.universe.symbols == ["ETH/USDT"]
    assert config.logging.levels["asyncpg"] == "error"


def test_relative_paths_resolve_against_the_checkout_and_state_dir(tmp_path: Path) -> None:
    config = load(tmp_path)
    assert config.daemon.state_dir == REPO_ROOT / "var"
    assert config.agent.model_dir == REPO_ROOT / "var" / "models"
    moved = load(tmp_path, env={"HURACAN_DAEMON__STATE_DIR": str(tmp_path / "state")})
    assert moved.agent.model_dir == tmp_path / "state" / "models"


def test_secrets_come_from_systemd_credentials_and_environment_wins(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "exchange.api_key").write_text("key-from-credential\n")
    (creds / "exchange.api_secret").write_text("secret-from-credential")
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    config = load(tmp_path, env=env)
    assert config.exchange.api_key is not None
    assert config.exchange.api_key.get_secret_value() == "key-from-credential"
    assert config.exchange.api_secret is not None
    assert config.exchange.api_secret.get_secret_value() == "secret-from-credential"
    assert "key-from-credential" not in repr(config)
    overridden = load(tmp_path, env={**env, "HURACAN_EXCHANGE__API_KEY": "key-from-env"})
    assert overridden.exchange.api_key is not None
    assert overridden.exchange.api_key.get_secret_value() == "key-from-env"
    assert {s.get_secret_value() for s in overridden.secrets()} == {"key-from-env", "secret-from-credential"}
    assert set(CREDENTIAL_KEYS) >= {"exchange.api_key", "exchange.api_secret", "database.password"}


def test_empty_credential_files_count_as_unset(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "exchange.api_key").write_text("")
    (creds / "exchange.api_secret").write_text("\n")
    config = load(tmp_path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.exchange.api_key is None
    assert config.exchange.api_secret is None


def test_unknown_key_in_a_file_is_an_error_naming_path_and_file(tmp_path: Path) -> None:
    lines = problems(tmp_path, "risk:\n  postion_cap: 100\n")
    assert lines == [
        f"config: risk.postion_cap = 100: unknown key (a typo?) (from {tmp_path / 'local.yaml'})"
    ]


def test_unknown_section_is_an_error(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "riks:\n  position_cap: 100\n")
    assert line.startswith("config: riks = {...}: unknown key")


def test_unknown_environment_variable_is_an_error(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        env={
            "HURACAN_DATABSE__DSN": "postgresql:///x",
            "HURACAN_RISK__POSITION_CAPP": "1",
            "HURACAN_RISK_POSITION_CAP": "1",
            "HURACAN_TEST_DSN": "not configuration, ignored",
        },
    )
    assert len(lines) == 3
    assert any("databse.dsn" in line and "unknown key 'databse'" in line for line in lines)
    assert any("risk.position_capp" in line and "HURACAN_RISK__POSITION_CAPP" in line for line in lines)
    assert any("two underscores" in line and "HURACAN_RISK_POSITION_CAP" in line for line in lines)


def test_environment_list_that_is_not_json_is_explained(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, env={"HURACAN_UNIVERSE__SYMBOLS": "BTC/USDT,ETH/USDT"})
    assert "universe.symbols" in line
    assert "must be JSON" in line


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        "risk:\n  position_cap: -5\n  trading_day_timezone: Mars/Olympus\n"
        "daemon:\n  shutdown_timeout_s: fast\nuniverse:\n  symbols: [btc-usdt]\n",
        env={"HURACAN_LOGGING__LEVEL": "loud"},
    )
    assert len(lines) == 5
    joined = "\n".join(lines)
    assert "risk.position_cap = -5: Input should be greater than 0" in joined
    assert "risk.trading_day_timezone = 'Mars/Olympus'" in joined
    assert "daemon.shutdown_timeout_s = 'fast'" in joined
    assert "universe.symbols.0 = 'btc-usdt'" in joined
    assert "logging.level = 'loud'" in joined
    assert "(from environment variable HURACAN_LOGGING__LEVEL)" in joined


def test_cross_field_rules_name_the_section_and_never_print_secrets(tmp_path: Path) -> None:
    lines = problems(
        tmp_path,
        "database:\n  pool_min_size: 9\n  pool_max_size: 2\n",
        env={"HURACAN_EXCHANGE__MODE": "live", "HURACAN_EXCHANGE__API_KEY": "sk-live-123456"},
    )
    joined = "\n".join(lines)
    assert "config: database = {...}" in joined
    assert "pool_min_size must not exceed pool_max_size" in joined
    assert "live_opt_in" in joined
    assert "sk-live-123456" not in joined


def test_invalid_secret_values_are_masked(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, env={"HURACAN_EXCHANGE__API_KEY__NESTED": "sk-123456"})
    assert "sk-123456" not in line
    assert MASK in line


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("risk: [1,\n", "invalid YAML: line 2, column 1"),
        ("- just\n- a list\n", "the top level must be a mapping of sections, not list"),
        ("\xff\xfe", "cannot read"),
    ],
)
def test_unreadable_or_malformed_files(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "local.yaml"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(ConfigSources(base=BASE, overlay=path, environ={}))
    (problem,) = caught.value.problems
    assert str(path) in str(problem)
    assert reason in str(problem)


def test_missing_overlay_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(ConfigSources(base=BASE, overlay=tmp_path / "absent.yaml", environ={}))


def test_empty_overlay_is_allowed(tmp_path: Path) -> None:
    assert load(tmp_path, "# nothing here\n").risk.position_cap == Decimal("5000")


def test_process_environment_outside_the_load_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HURACAN_RISK__MAX_OPEN_POSITIONS", "9")
    assert load(tmp_path).risk.max_open_positions == 3
    assert load_config(ConfigSources(base=BASE)).risk.max_open_positions == 9


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "huracan.cli", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", **(env or {})},
        timeout=60,
        check=False,
    )


def test_cli_exits_78_with_one_line_per_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("risk:\n  position_cap: 0\n  nope: 1\n")
    bad.write_text("risk:\n  position_cap: 0\n  nope: 1\nexchange:\n  api_secrett: hush-hush-42\n")
    result = run_cli("run", "--config", str(bad))
    assert result.returncode == EX_CONFIG
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"config: exchange.api_secrett = {MASK}: unknown key")
    assert lines[1].startswith("config: risk.position_cap = 0")
    assert lines[2].startswith("config: risk.nope = 1: unknown key")
    assert "3 problem(s)" in lines[3]
    assert "hush-hush-42" not in result.stderr + result.stdout


def test_cli_rejects_bad_arguments_clearly() -> None:
    result = run_cli("run", "--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr


def test_live_mode_needs_the_flag_as_well(tmp_path: Path) -> None:
    env = {
        "HURACAN_EXCHANGE__MODE": "live",
        "HURACAN_EXCHANGE__LIVE_OPT_IN": "true",
        "HURACAN_EXCHANGE__API_KEY": "k" * 16,
        "HURACAN_EXCHANGE__API_SECRET": "s" * 16,
    }
    result = run_cli("run", env=env)
    assert result.returncode == EX_CONFIG
    assert "--live" in result.stderr


def test_sections_are_immutable(tmp_path: Path) -> None:
    config = load(tmp_path)
    with pytest.raises(ValueError, match="frozen"):
        config.risk.position_cap = Decimal(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overlay", "env"),
    [
        ("exchange:\n  api_secrett: sk-live-leak-0001\n", {}),
        ("exchange:\n  apikey: sk-live-leak-0001\n", {}),
        (None, {"HURACAN_EXCHANGE__API_SECRETT": "sk-live-leak-0001"}),
        (None, {"HURACAN_DATABASE_DSN": "postgresql://u:sk-live-leak-0001@db/x"}),
        (None, {"HURACAN_EXCHANGE": '{"api_key": "sk-live-leak-0001"}'}),
        ("universe:\n  replay_data_dir: [postgresql://u:sk-live-leak-0001@db/x]\n", {}),
    ],
)
def test_misspelt_or_misplaced_secrets_are_never_printed(
    tmp_path: Path, overlay: str | None, env: dict[str, str]
) -> None:
    joined = "\n".join(problems(tmp_path, overlay, env))
    assert "sk-live-leak-0001" not in joined
    assert MASK in joined


def test_non_string_yaml_keys_are_problems_not_crashes(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, "1: x\n")
    assert line.startswith("config: 1 = ?: keys must be names")
    (line,) = problems(tmp_path, "risk:\n  2: x\n")
    assert line.startswith("config: risk.2 = ?")


def test_unreadable_credential_is_a_problem_with_its_value_masked(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "exchange.api_secret").write_bytes(b"\xffsk-live-leak-0001")
    (line,) = problems(tmp_path, env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert line == (
        f"config: exchange.api_secret = {MASK}: not UTF-8 text "
        f"(from systemd credential {creds / 'exchange.api_secret'})"
    )


def test_unknown_home_directory_is_a_problem(tmp_path: Path) -> None:
    (line,) = problems(tmp_path, env={"HURACAN_DAEMON__STATE_DIR": "~no-such-user-huracan/var"})
    assert line.startswith(
        "config: daemon.state_dir = '~no-such-user-huracan/var': Value error, cannot expand ~"
    )


def test_empty_and_null_values_from_the_environment(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        env={"HURACAN_DATABASE__DSN": "", "HURACAN_RISK__DAILY_PROFIT_TARGET": "null"},
    )
    assert config.database.dsn is None
    assert config.risk.daily_profit_target is None


def test_local_yaml_is_looked_for_at_every_load(tmp_path: Path) -> None:
    sources = ConfigSources(base=BASE, local=tmp_path / "local.yaml", environ={})
    assert load_config(sources).risk.max_open_positions == 3
    (tmp_path / "local.yaml").write_text("risk:\n  max_open_positions: 1\n")
    assert load_config(sources).risk.max_open_positions == 1
    # --config PATH replaces local.yaml rather than adding to it.
    other = tmp_path / "other.yaml"
    other.write_text("risk:\n  max_open_positions: 2\n")
    explicit = ConfigSources.default(overlay=other)
    assert explicit.layers() == [explicit.base, other]
