"""The systemd units in systemd/: they parse, they carry what the daemon relies on, and they are
hardened to an exposure score of 3.0 or less.

`systemd-analyze verify` only *warns* (exit status 0) about unknown keys and unparsable values,
so `verify()` below treats any output as a failure; the broken-unit tests prove that it does.
The real ExecStart= (/opt/huracan/.venv/bin/huracan) does not exist on a build machine, and
verify refuses a missing executable, so the units are checked as copies whose huracan path is
replaced by an executable that exists here; nothing else is changed.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path

import pytest

UNIT_DIR = Path(__file__).resolve().parent.parent / "systemd"
DAEMON = "huracan.service"
RETRAIN = "huracan-retrain.service"
TIMER = "huracan-retrain.timer"
ALL_UNITS = (DAEMON, RETRAIN, TIMER)
HURACAN_BIN = "/opt/huracan/.venv/bin/huracan"
MAX_EXPOSURE = 3.0
DAEMON_SHUTDOWN_TIMEOUT_S = 20.0  # daemon.shutdown_timeout_s default

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)

Unit = dict[str, dict[str, list[str]]]


# --- a unit file parser: sections of keys, each key with every value it was given -----------------


def parse_unit(text: str) -> Unit:
    """Sections -> key -> values in order. Repeated keys accumulate (an empty value is kept as
    "", which is how systemd resets a list); comments and line continuations as systemd reads them."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line[0] in "#;"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        if section is None or "=" not in line:
            raise ValueError(f"not a unit file line: {raw!r}")
        key, _, value = line.partition("=")
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def load(name: str) -> Unit:
    return parse_unit((UNIT_DIR / name).read_text(encoding="utf-8"))


def values(unit: Unit, section: str, key: str) -> list[str]:
    return unit.get(section, {}).get(key, [])


def last(unit: Unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= is missing"
    return found[-1]


def words(unit: Unit, section: str, key: str) -> set[str]:
    """Every word of a list setting, over all its assignments."""
    return {word for value in values(unit, section, key) for word in value.split()}


def timespan_s(value: str) -> float:
    """Enough of systemd.time(7) for these units: "45s", "5min", "2h", "1h 30min", "30"."""
    factors = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    assert parts, f"not a time span: {value!r}"
    return sum(float(number) * factors[unit] for number, unit in parts)


def test_parser_keeps_repeats_resets_and_continuations() -> None:
    unit = parse_unit(
        "# comment\n[Service]\nA=1\n; other comment\nA=\nA=2\\\n  3\n\n[Install]\nWantedBy=x.target\n"
    )
    assert unit == {"Service": {"A": ["1", "", "2 3"]}, "Install": {"WantedBy": ["x.target"]}}
    with pytest.raises(ValueError, match="not a unit file line"):
        parse_unit("NoSection=1\n")


# --- what the daemon relies on -------------------------------------------------------------------


def test_units_exist() -> None:
    for name in ALL_UNITS:
        assert (UNIT_DIR / name).is_file(), name


def test_daemon_lifecycle_directives() -> None:
    unit = load(DAEMON)
    assert last(unit, "Service", "Type") == "notify"
    assert last(unit, "Service", "NotifyAccess") == "main"
    assert 0 < timespan_s(last(unit, "Service", "WatchdogSec")) <= 60
    exec_start = last(unit, "Service", "ExecStart").split()
    assert exec_start[:2] == [HURACAN_BIN, "run"]
    assert exec_start[exec_start.index("--config") + 1] == "/etc/huracan/local.yaml"
    reload = last(unit, "Service", "ExecReload").split()
    assert reload[1:] == ["-HUP", "$MAINPID"]
    assert reload[0].endswith("/kill")
    assert last(unit, "Service", "Restart") == "on-failure"
    assert timespan_s(last(unit, "Service", "RestartSec")) >= 1
    assert "78" in words(unit, "Service", "RestartPreventExitStatus"), "EX_CONFIG must not restart-loop"
    # Start-rate limits belong in [Unit]; systemd ignores them in [Service] since v230.
    assert timespan_s(last(unit, "Unit", "StartLimitIntervalSec")) > 0
    assert int(last(unit, "Unit", "StartLimitBurst")) >= 1
    assert "StartLimitIntervalSec" not in unit["Service"]
    assert last(unit, "Service", "KillSignal") == "SIGTERM"
    assert last(unit, "Service", "KillMode") == "mixed"
    assert timespan_s(last(unit, "Service", "TimeoutStopSec")) > DAEMON_SHUTDOWN_TIMEOUT_S + 10
    assert last(unit, "Install", "WantedBy") == "multi-user.target"


@pytest.mark.parametrize("name", [DAEMON, RETRAIN])
def test_identity_paths_and_secrets(name: str) -> None:
    unit = load(name)
    assert last(unit, "Service", "User") == "huracan"
    assert last(unit, "Service", "Group") == "huracan"
    assert "DynamicUser" not in unit["Service"], "the private cluster's data dir needs a stable owner"
    assert last(unit, "Service", "StateDirectory") == "huracan"
    assert last(unit, "Service", "CacheDirectory") == "huracan"
    assert last(unit, "Service", "ConfigurationDirectory") == "huracan"
    assert "HURACAN_DAEMON__STATE_DIR=/var/lib/huracan" in values(unit, "Service", "Environment")
    credentials = dict(v.split(":", 1) for v in values(unit, "Service", "LoadCredential"))
    for key in ("exchange.api_key", "exchange.api_secret"):
        assert credentials.get(key) == f"/etc/huracan/credentials/{key}"
    assert not any(
        "SECRET" in v.upper() or "API_KEY" in v.upper() for v in values(unit, "Service", "Environment")
    )
    assert last(unit, "Service", "StandardOutput") == "journal"
    assert last(unit, "Service", "SyslogIdentifier").startswith("huracan")
    # A RuntimeDirectory= shared by both units would be deleted under the daemon when retrain ends.
    assert "RuntimeDirectory" not in unit["Service"]


HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "PrivateUsers": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateMounts": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "UMask": "0077",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
}


@pytest.mark.parametrize("name", [DAEMON, RETRAIN])
@pytest.mark.parametrize(("key", "expected"), sorted(HARDENING.items()))
def test_hardening_directive(name: str, key: str, expected: str) -> None:
    assert last(load(name), "Service", key) == expected


@pytest.mark.parametrize("name", [DAEMON, RETRAIN])
def test_network_and_syscall_sandbox(name: str) -> None:
    unit = load(name)
    # Unix sockets (PostgreSQL, journald, sd_notify) and IP for the exchange; nothing else.
    assert words(unit, "Service", "RestrictAddressFamilies") == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert values(unit, "Service", "SystemCallFilter") == ["@system-service", "~@privileged @resources"]
    # PostgreSQL's LLVM JIT and PyTorch need pages that turn executable after being written.
    assert "MemoryDenyWriteExecute" not in unit["Service"]


def test_remove_ipc_only_where_it_cannot_hit_the_running_cluster() -> None:
    assert last(load(DAEMON), "Service", "RemoveIPC") == "yes"
    # Same user as the daemon: on stop it would remove the live private cluster's shared memory.
    assert "RemoveIPC" not in load(RETRAIN)["Service"]


def test_retrain_service_is_a_low_priority_oneshot_beside_the_daemon() -> None:
    unit = load(RETRAIN)
    assert last(unit, "Service", "Type") == "oneshot"
    assert last(unit, "Service", "ExecStart").split()[:2] == [HURACAN_BIN, "retrain"]
    assert timespan_s(last(unit, "Service", "TimeoutStartSec")) >= 3600
    assert int(last(unit, "Service", "Nice")) >= 10
    assert last(unit, "Service", "IOSchedulingClass") in {"idle", "best-effort"}
    assert int(last(unit, "Service", "CPUWeight")) < 100
    assert DAEMON in words(unit, "Unit", "After")
    assert DAEMON in words(unit, "Unit", "Requisite")
    assert "Install" not in unit, "started by its timer, not enabled on its own"


def test_timer_starts_retrain_daily() -> None:
    unit = load(TIMER)
    assert last(unit, "Timer", "Unit") == RETRAIN
    assert last(unit, "Timer", "Persistent") == "true"
    assert timespan_s(last(unit, "Timer", "RandomizedDelaySec")) > 0
    assert re.fullmatch(r"\*-\*-\* 0[0-5]:\d\d:\d\d UTC", last(unit, "Timer", "OnCalendar"))
    assert last(unit, "Install", "WantedBy") == "timers.target"


@needs_analyze
def test_timer_calendar_elapses_every_24_hours() -> None:
    spec = last(load(TIMER), "Timer", "OnCalendar")
    out = analyze("calendar", "--iterations=3", spec).stdout
    stamps = [
        datetime.strptime(m, "%Y-%m-%d %H:%M:%S")
        for m in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", out)
    ]
    assert len(stamps) == 3, out
    assert {b - a for a, b in itertools.pairwise(stamps)} == {timedelta(days=1)}
    assert stamps[0].strftime("%H:%M") == spec.split()[1][:5]


# --- systemd-analyze -----------------------------------------------------------------------------


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    env = {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "TZ": "UTC"}
    return subprocess.run(
        [SYSTEMD_ANALYZE, *args], capture_output=True, text=True, timeout=60, cwd=cwd, env=env, check=False
    )


def stage(directory: Path, names: Sequence[str] = ALL_UNITS) -> list[Path]:
    """Copies of the units whose huracan executable is one that exists on this machine."""
    stand_in = shutil.which("true") or "/bin/true"
    paths = []
    for name in names:
        path = directory / name
        path.write_text((UNIT_DIR / name).read_text(encoding="utf-8").replace(HURACAN_BIN, stand_in))
        paths.append(path)
    return paths


def verify(paths: Sequence[Path]) -> str | None:
    """None when systemd-analyze verify accepts the units without a word, else what it said."""
    # --man=no: no man pages in slim images; --generators=no: they need privileges.
    result = analyze("verify", "--man=no", "--generators=no", *(str(p) for p in paths), cwd=paths[0].parent)
    said = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or said:
        return f"exit status {result.returncode}: {said}"
    return None


@needs_analyze
def test_verify_accepts_the_units(tmp_path: Path) -> None:
    assert verify(stage(tmp_path)) is None


@needs_analyze
@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        (DAEMON, "[Service]\n", "[Service]\nFrobnicate=yes\n"),  # unknown key: only a warning
        (DAEMON, "Type=notify\n", "Type=notifyy\n"),  # bad value: only a warning
        (DAEMON, "WatchdogSec=30s\n", "WatchdogSec=thirty\n"),
        (RETRAIN, "ProtectSystem=strict\n", "ProtectSystem=stricter\n"),
        (TIMER, "OnCalendar=*-*-* 03:30:00 UTC\n", "OnCalendar=every day at half past three\n"),  # fatal
    ],
)
def test_verify_rejects_a_broken_unit(tmp_path: Path, name: str, old: str, new: str) -> None:
    paths = stage(tmp_path)
    target = tmp_path / name
    text = target.read_text(encoding="utf-8")
    assert old in text, f"the unit changed: update this test's {old!r}"
    target.write_text(text.replace(old, new, 1))
    assert verify(paths) is not None


@needs_analyze
def test_verify_rejects_a_missing_executable(tmp_path: Path) -> None:
    # Why stage() exists: verify checks that ExecStart= names an executable.
    (tmp_path / DAEMON).write_text((UNIT_DIR / DAEMON).read_text(encoding="utf-8"))
    if Path(HURACAN_BIN).exists():
        pytest.skip(f"{HURACAN_BIN} is installed on this machine")
    assert verify([tmp_path / DAEMON]) is not None


@needs_analyze
@pytest.mark.parametrize("name", [DAEMON, RETRAIN])
def test_security_exposure_is_low(tmp_path: Path, name: str) -> None:
    (path,) = stage(tmp_path, [name])
    result = analyze("security", "--offline=true", "--no-pager", str(path), cwd=tmp_path)
    match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
    assert match, f"no exposure level in systemd-analyze output:\n{result.stdout}\n{result.stderr}"
    assert float(match[1]) <= MAX_EXPOSURE, result.stdout
