"""Decision latency: one CandleClosed batch of 20 symbols through the decision step (incremental
feature update, context, one batched forward pass, masked greedy selection, OrderIntents), p50
and p99 over thousands of real bars. Goal: p99 <= 1 ms.

Reference: the same decisions made one symbol at a time (one forward pass per symbol), which is
what a per-symbol bot loop does. The bundled candles hold 3 symbols; the 20 streams are those
3 real series at different starting points (each stream is real, consecutive history).
Not part of the test suite; prints a table, then one JSON line.

    .venv/bin/python bench/inference.py [--bars N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
import orjson
import torch

from huracan.agent.decide import DecisionService
from huracan.agent.models import ModelSlots
from huracan.agent.performance import PerformanceRecorder
from huracan.agent.positions import NoPatternMemory
from huracan.agent.runner import PolicyRunner
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.bus import Topic
from huracan.core.candle import CandleSeries
from huracan.core.events import CandleClosed
from huracan.features.market import WARMUP_BARS, CostAssumptions
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH, STATE_SCHEMA
from huracan.logs import configure_logging
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.env import EnvConfig
from huracan.rl.ppo import PPOConfig, checkpoint, make_policy
from huracan.rl.trainer import Features

N_SYMBOLS = 20
GOAL_P99_MS = 1.0


class Slots(ModelSlots):
    """The champion set directly: no registry in a latency benchmark."""

    def __init__(self, symbols: Sequence[str], runner: PolicyRunner) -> None:
        self.symbols = tuple(symbols)
        self.champion = runner
        self.challenger = None


def streams(bars: int) -> dict[str, CandleSeries]:
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    sources = [read_candle_file(files[s]) for s in sorted(files)]
    need = WARMUP_BARS + bars
    out: dict[str, CandleSeries] = {}
    for k in range(N_SYMBOLS):
        src = sources[k % len(sources)]
        offset = (k // len(sources)) * 1_000
        if offset + need > len(src):
            raise SystemExit(f"--bars {bars} too many for the bundled data")
        piece = src.between(int(src.open_time_ms[offset]), int(src.open_time_ms[offset + need - 1]) + 1)
        # Same bar times for every stream, so they form one CandleClosed batch per bar.
        times = sources[0].open_time_ms[:need]
        out[f"S{k:02d}/USDT"] = CandleSeries(
            "binance",
            f"S{k:02d}/USDT",
            "5m",
            times,
            piece.open,
            piece.high,
            piece.low,
            piece.close,
            piece.volume,
        )
    return out


def build_runner(data: dict[str, CandleSeries]) -> PolicyRunner:
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(Features.of(data, CostAssumptions()).market.reshape(-1, MARKET_WIDTH))
    config = PPOConfig(seed=0)
    torch.manual_seed(0)
    saved = checkpoint(
        make_policy(STATE_SCHEMA.size, config),
        None,
        EnvConfig(),
        config,
        schema_hash=STATE_SCHEMA.hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=normaliser.state(),
    )
    return PolicyRunner(saved, "bench")


def service(symbols: tuple[str, ...], runner: PolicyRunner) -> DecisionService:
    return DecisionService(
        exchange_id="binance",
        symbols=symbols,
        timeframe="5m",
        candles=Topic("candle-closed"),
        store=None,  # type: ignore[arg-type]  # primed directly below, not from the database
        models=Slots(symbols, runner),
        positions=None,  # the champion's paper book, as the daemon runs until an executor exists
        patterns=NoPatternMemory(),
        intents=asyncio.Queue(),
        cost=CostAssumptions(),
        paper_rules=EnvConfig(),
        recorder=PerformanceRecorder(Decimal("1000"), Decimal("0.8")),
    )


def measure(data: dict[str, CandleSeries], runner: PolicyRunner, per_symbol: bool) -> np.ndarray:
    symbols = tuple(data)
    svcs = [service((s,), runner) for s in symbols] if per_symbol else [service(symbols, runner)]
    times = data[symbols[0]].open_time_ms
    for svc in svcs:
        svc.features.prime({s: data[s].between(0, int(times[WARMUP_BARS])) for s in svc.symbols})
    latencies = []
    for i in range(WARMUP_BARS, len(times)):
        event = CandleClosed("5m", int(times[i]), {s: data[s].candle(i) for s in symbols})
        started = time.perf_counter()
        for svc in svcs:
            svc.decide(event, greedy=True, min_confidence=0.0)
        latencies.append(time.perf_counter() - started)
    return np.array(latencies) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=5_000, help="bars decided after the warm-up")
    args = parser.parse_args()
    configure_logging(level="warning")
    torch.set_num_threads(1)  # as the daemon runs inference (agent.torch_threads), beside the loop
    data = streams(args.bars)
    runner = build_runner(data)
    ours = measure(data, runner, per_symbol=False)
    reference = measure(data, runner, per_symbol=True)
    p50, p99 = np.percentile(ours, [50, 99])
    r50, r99 = np.percentile(reference, [50, 99])
    print(
        f"decision for {N_SYMBOLS} symbols, {len(ours):,} bars after a {WARMUP_BARS}-bar warm-up, 1 torch thread"
    )
    print(f"{'figure':<28}{'reference (per symbol)':>24}{'huracan (batched)':>20}{'ratio':>8}")
    print(f"{'p50, ms':<28}{r50:>24.3f}{p50:>20.3f}{p50 / r50:>8.2f}")
    print(f"{'p99, ms':<28}{r99:>24.3f}{p99:>20.3f}{p99 / r99:>8.2f}")
    print(f"goal p99 <= {GOAL_P99_MS} ms: {'pass' if p99 <= GOAL_P99_MS else 'FAIL'}")
    figures = {
        "bench": "inference",
        "symbols": N_SYMBOLS,
        "bars": len(ours),
        "p50_ms": round(float(p50), 4),
        "p99_ms": round(float(p99), 4),
        "max_ms": round(float(ours.max()), 4),
        "reference_per_symbol_p50_ms": round(float(r50), 4),
        "reference_per_symbol_p99_ms": round(float(r99), 4),
        "goal_p99_ms": GOAL_P99_MS,
        "goal_met": bool(p99 <= GOAL_P99_MS),
        "torch_threads": 1,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
