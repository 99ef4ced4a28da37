"""The chaos runner: the emulator in a process of its own, then kill after kill, then the check.

`daemon` mode (make chaos, tests/test_chaos.py): the whole daemon (chaos.daemon) is started and
SIGKILLed at a random point, again and again; the kill lands
- in start-up (interpreter, imports, database, markets) with probability 0.1,
- just after the services started (backfill, reconciliation, feature priming): 0.2,
- while trading, 0.1 to 4 s after the first decision could be taken: 0.7.
`stack` mode: the old worker (chaos.stack) fed random intents, killed 0.05 to 1.5 s after it
reconciled.

Then the emulator's market time is frozen (so that no resting order fills while the checker reads
the venue: the check is of one instant) and a last worker reconciles and verifies the journal
against the venue's own records (chaos.venue.verify_against_venue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from huracan.testing.chaos.venue import SYMBOLS, TIMEFRAME

STEP_MS = 300_000  # TIMEFRAME's bar
# Daemon log lines that tell how far a daemon got, in the order it gets there.
MILESTONES = (
    ("daemon started", "services started"),  # services built: backfill and reconciliation begin
    ("reconciled with the venue", "reconciled"),
    ("features primed", "trading"),  # the first bar is being decided on
)
PHASE_SHARES = (("start-up", 0.1), ("services started", 0.2), ("trading", 0.7))
DAEMON_READY_TIMEOUT_S = 90.0
LOG_TAIL_CHARS = 4000
MAX_ERROR_CHARS = 1500


@dataclass
class ChaosResult:
    mode: str
    kills: int
    verification: dict[str, Any]
    seconds: float
    killed_mid_step: int = 0  # stack mode: kills that cut a worker's output line short
    # daemon mode: where the kills landed (by the last milestone in the daemon's log) ...
    phases: dict[str, int] = field(default_factory=dict)
    kills_after_orders: int = 0  # ... how many found at least one order on the venue ...
    lives_with_orders: int = 0  # ... how many daemons placed an order before they were killed
    early_exits: list[str] = field(default_factory=list)  # daemons that ended before their kill
    # Error and critical lines of the daemons' logs (a crashed task, a refused fill, a balance
    # mismatch, a failed journal write): each is a finding, even when the final check passes.
    daemon_errors: list[str] = field(default_factory=list)
    last_log: str = ""  # the tail of the last daemon's log, for when something failed

    @property
    def ok(self) -> bool:
        v = self.verification
        return not v.get("problems") and "error" not in v and not self.early_exits and not self.daemon_errors

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "kills": self.kills, "seconds": round(self.seconds, 1)}
        if self.mode == "daemon":
            out |= {
                "phases": self.phases,
                "kills_after_orders": self.kills_after_orders,
                "lives_with_orders": self.lives_with_orders,
                "early_exits": self.early_exits,
                "daemon_errors": self.daemon_errors,
            }
        else:
            out["killed_mid_step"] = self.killed_mid_step
        return out | self.verification


def _python() -> list[str]:
    return [sys.executable, "-m", "huracan.testing.chaos"]


# --- the emulator ---------------------------------------------------------------------------------
def start_emulator(
    data_dir: Path, speed: float, start_ms: int | None = None, log: TextIO | None = None
) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        "-m",
        "huracan.testing.emulator",
        "--data",
        str(data_dir),
        "--speed",
        str(speed),
    ]
    if start_ms is not None:
        command += ["--start-ms", str(start_ms)]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=log if log is not None else subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    if not url.startswith("http"):
        process.kill()
        raise RuntimeError(f"the emulator did not start: {url!r}")
    return process, url


def control(url: str, path: str, method: str = "GET") -> dict[str, Any]:
    """One of the emulator's own routes (huracan.testing.emulator.control)."""
    request = urllib.request.Request(url + path, method=method)  # noqa: S310 (our loopback emulator)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        body: dict[str, Any] = json.loads(response.read())
        return body


def market_start_ms(data_dir: Path, history_bars: int) -> int:
    """The market time that leaves `history_bars` bars of every file before it."""
    firsts = []
    for symbol in SYMBOLS:
        path = data_dir / f"binance_{symbol.replace('/', '-')}_{TIMEFRAME}.csv"
        with path.open() as lines:
            next(lines)  # the header
            firsts.append(int(next(lines).split(",", 1)[0]))
    return max(firsts) + history_bars * STEP_MS


# --- the final check ------------------------------------------------------------------------------
def verify(url: str, dsn: str, env: dict[str, str]) -> dict[str, Any]:
    """Freeze market time, then reconcile and verify in a worker of its own (a fresh process,
    as after a crash)."""
    control(url, "/emulator/clock?bars_per_second=0", "POST")
    checked = subprocess.run(
        [*_python(), "worker", "--url", url, "--dsn", dsn, "--seed", "0", "--verify"],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    lines = [line for line in checked.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    # Only a checker that ran to its end gives a verdict; a crash prints its progress lines.
    if checked.returncode not in (0, 1) or "problems" not in result:
        return {"error": f"checker exit {checked.returncode}: {checked.stderr[-2000:]}"}
    return result


# --- stack mode -----------------------------------------------------------------------------------
def run_stack_chaos(
    dsn: str, *, kills: int, seed: int, data_dir: Path, speed: float = 20.0, log: Any = None
) -> ChaosResult:
    """Kill `kills` stack workers at random points, then verify."""
    rng = random.Random(seed)
    started = time.monotonic()
    emulator, url = start_emulator(data_dir, speed)
    mid_step = 0
    env = {**os.environ, "HURACAN_LOGGING__LEVEL": "warning"}
    try:
        for kill in range(kills):
            worker = subprocess.Popen(
                [
                    *_python(),
                    "worker",
                    "--url",
                    url,
                    "--dsn",
                    dsn,
                    "--seed",
                    str(seed * 100_003 + kill),
                    "--steps",
                    "1000",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=env,
            )
            assert worker.stdout is not None
            first = worker.stdout.readline()  # reconciled: from here on it trades
            if not first:
                worker.wait()
                raise RuntimeError(f"worker {kill} died before reconciling (exit {worker.returncode})")
            time.sleep(rng.uniform(0.05, 1.5))
            worker.send_signal(signal.SIGKILL)
            out, _ = worker.communicate()
            mid_step += int(bool(out) and not out.endswith("\n"))
            if log is not None:
                log(f"kill {kill + 1}/{kills}: after {out.count(chr(10))} lines")
        verification = verify(url, dsn, env)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    return ChaosResult("stack", kills, verification, time.monotonic() - started, killed_mid_step=mid_step)


# --- daemon mode ----------------------------------------------------------------------------------
def _reached(log_path: Path) -> str:
    text = log_path.read_text(errors="replace")
    phase = "start-up"
    for marker, name in MILESTONES:
        if f'"{marker}"' in text:
            phase = name
    return phase


def _errors(log_path: Path, run: int) -> list[str]:
    """The error and critical lines of a daemon's log, shortened."""
    found = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut short by the kill
        if isinstance(record, dict) and record.get("level") in ("error", "critical"):
            found.append(f"daemon {run}: {line[:MAX_ERROR_CHARS]}")
    return found


def _tail(log_path: Path) -> str:
    return log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:] if log_path.exists() else ""


def _wait_for(process: subprocess.Popen[bytes], log_path: Path, marker: str, timeout_s: float) -> bool:
    """Until `marker` is in the daemon's log; False when the daemon exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    needle = f'"{marker}"'
    while time.monotonic() < deadline and process.poll() is None:
        if needle in log_path.read_text(errors="replace"):
            return True
        time.sleep(0.02)
    return False


def _sleep_alive(process: subprocess.Popen[bytes], seconds: float) -> None:
    """Sleep `seconds`, or less if the process ends first."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=seconds)


async def _register_champion(url: str, dsn: str, state_dir: Path, data_dir: Path) -> None:
    from huracan.market.candle_files import find_candle_files, read_candle_file
    from huracan.memory.database import create_pool
    from huracan.testing.champion import register_biased_champion
    from huracan.testing.chaos.daemon import daemon_config

    config = daemon_config(url, dsn, state_dir)
    files = find_candle_files(data_dir, TIMEFRAME)
    series = {}
    for symbol in SYMBOLS:
        whole = read_candle_file(files[symbol])
        first = int(whole.open_time_ms[0])
        series[symbol] = whole.between(first, first + 3000 * STEP_MS)  # enough to fit the normaliser
    pool = await create_pool(dsn, min_size=1, max_size=2, command_timeout=30)
    try:
        await register_biased_champion(pool, config, series, version="chaos-biased")
    finally:
        await pool.close()


def run_daemon_chaos(
    dsn: str,
    *,
    kills: int,
    seed: int,
    data_dir: Path,
    work_dir: Path,
    speed: float = 5.0,
    log: Any = None,
) -> ChaosResult:
    """Start the paced emulator, kill `kills` whole daemons at random points, then verify."""
    from huracan.testing.chaos.daemon import BACKFILL_DAYS

    rng = random.Random(seed)
    started = time.monotonic()
    logs = work_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state_dir = work_dir / "state"
    # History before market now for the backfill (which primes the features), and some more.
    start_ms = market_start_ms(data_dir, BACKFILL_DAYS * 86_400_000 // STEP_MS + 100)
    with (logs / "emulator.log").open("w") as emulator_log:
        emulator, url = start_emulator(data_dir, speed, start_ms, emulator_log)
    env = dict(os.environ)
    result = ChaosResult("daemon", kills, {}, 0.0)
    last_log = logs / "none.log"
    try:
        asyncio.run(_register_champion(url, dsn, state_dir, data_dir))
        command = [*_python(), "daemon", "--url", url, "--dsn", dsn, "--state-dir", str(state_dir)]
        for kill in range(kills):
            last_log = logs / f"daemon-{kill:04d}.log"
            orders_before = int(control(url, "/emulator/stats")["orders"])
            with last_log.open("w") as stderr:
                daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
            target = rng.choices([p for p, _ in PHASE_SHARES], [w for _, w in PHASE_SHARES])[0]
            if target == "start-up":
                _sleep_alive(daemon, rng.uniform(0.2, 3.0))
            elif target == "services started":
                if _wait_for(daemon, last_log, "daemon started", DAEMON_READY_TIMEOUT_S):
                    _sleep_alive(daemon, rng.uniform(0.0, 0.3))
            elif _wait_for(daemon, last_log, "features primed", DAEMON_READY_TIMEOUT_S):
                _sleep_alive(daemon, rng.uniform(0.1, 4.0))
            if daemon.poll() is not None:
                result.early_exits.append(
                    f"daemon {kill} exited with {daemon.returncode} before its kill:\n{_tail(last_log)}"
                )
            daemon.send_signal(signal.SIGKILL)
            daemon.wait()
            orders_after = int(control(url, "/emulator/stats")["orders"])
            phase = _reached(last_log)
            result.daemon_errors.extend(_errors(last_log, kill))
            result.phases[phase] = result.phases.get(phase, 0) + 1
            result.kills_after_orders += orders_after > 0
            result.lives_with_orders += orders_after > orders_before
            if log is not None:
                log(f"kill {kill + 1}/{kills} in {phase}: venue orders {orders_before} -> {orders_after}")
        verification = verify(url, dsn, env)
        if "error" not in verification and verification.get("venue_orders", 0) == 0:
            verification.setdefault("problems", []).append("the daemons placed no order: nothing was tested")
        result.verification = verification
        result.last_log = _tail(last_log)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    result.seconds = time.monotonic() - started
    return result


def run_chaos(
    dsn: str,
    *,
    kills: int,
    seed: int,
    data_dir: Path,
    mode: str = "daemon",
    work_dir: Path | None = None,
    speed: float | None = None,
    log: Any = None,
) -> ChaosResult:
    if mode == "stack":
        return run_stack_chaos(dsn, kills=kills, seed=seed, data_dir=data_dir, speed=speed or 20.0, log=log)
    if work_dir is None:
        raise ValueError("daemon mode needs a work_dir for the daemons' state and logs")
    return run_daemon_chaos(
        dsn, kills=kills, seed=seed, data_dir=data_dir, work_dir=work_dir, speed=speed or 5.0, log=log
    )
