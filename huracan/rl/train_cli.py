"""`huracan train`: train a model on stored or bundled candles and register it.

Symbols, period and steps come from the `training` section of the config, each overridable by
a flag. The first model ever trained becomes the champion (training.promote_first); after that,
promotion is a decision (`huracan models promote`, or the retrain's walk-forward gate).

The pattern memory inputs are trained on what the live view would have said at each bar: the
closed trades of the candles' exchange in trade_memory, each known at the closes after its exit
and its loss analysis' penalty at the closes after the analysis horizon that follows the exit
(huracan/rl/pattern_memory.py). Without such trades they stay zeros, as in a daemon that has
not traded yet.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from huracan.config import HuracanConfig
from huracan.core.candle import CandleSeries
from huracan.core.timeframe import timeframe_ms
from huracan.exit_codes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE
from huracan.logs import get_logger
from huracan.market.download import render_bar

if TYPE_CHECKING:  # torch loads only when a model is trained, not for `huracan --help`
    import asyncpg

    from huracan.memory.embedding import EntryEmbedder
    from huracan.rl.pattern_memory import PastTrades
    from huracan.rl.ppo import IterationStats
    from huracan.rl.trainer import Features

log = get_logger("huracan.rl.train")


def add_train_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "train",
        parents=list(parents),
        help="train the agent on stored or bundled candles and register the model",
        description="Train a PPO model on the candles of the training period and register it. "
        "Defaults come from the `training` section of the config.",
    )
    parser.add_argument(
        "--symbols", metavar="LIST", help="comma-separated (default: training.symbols or the universe)"
    )
    parser.add_argument("--start", type=date.fromisoformat, metavar="DATE", help="first day, YYYY-MM-DD")
    parser.add_argument("--end", type=date.fromisoformat, metavar="DATE", help="last day, YYYY-MM-DD")
    parser.add_argument("--steps", type=int, metavar="N", help="environment steps of training")
    parser.add_argument("--envs", type=int, metavar="N", help="parallel episodes")
    parser.add_argument("--seed", type=int, metavar="N")
    parser.add_argument("--source", choices=["auto", "database", "files"], help="where the candles come from")
    parser.add_argument("--no-promote", action="store_true", help="register only, even if no champion exists")
    return parser


@dataclass(frozen=True, slots=True)
class TrainRequest:
    symbols: tuple[str, ...]
    start: date | None
    end: date | None
    steps: int
    envs: int
    seed: int
    source: str
    promote_first: bool


def request_from_args(config: HuracanConfig, args: argparse.Namespace) -> TrainRequest:
    training = config.training
    symbols = (
        tuple(s.strip() for s in args.symbols.split(",") if s.strip())
        if args.symbols
        else tuple(training.symbols or config.universe.symbols)
    )
    if not symbols:
        raise ValueError("no symbols: give --symbols or set training.symbols")
    steps = args.steps if args.steps is not None else training.total_steps
    envs = args.envs if args.envs is not None else training.n_envs
    if steps < 1 or envs < 1:
        raise ValueError("--steps and --envs must be at least 1")
    return TrainRequest(
        symbols=symbols,
        start=args.start if args.start is not None else training.start,
        end=args.end if args.end is not None else training.end,
        steps=steps,
        envs=envs,
        seed=args.seed if args.seed is not None else training.seed,
        source=args.source or training.source,
        promote_first=training.promote_first and not args.no_promote,
    )


async def read_past_trades(
    pool: asyncpg.Pool, exchange: str, until_ms: int, embedder: EntryEmbedder
) -> PastTrades:
    """The exchange's closed trades that exited before `until_ms`, embedded as the learning task
    embeds them (entry features' market part); weight 1 - the loss analysis' confidence
    penalty, known from the analysis horizon after the exit, when the analysis can run."""
    import numpy as np

    from huracan.analysis.trades import ANALYSIS_HORIZON, HORIZONS
    from huracan.features.schema import MARKET_WIDTH
    from huracan.memory.candles import ms_to_datetime
    from huracan.rl.pattern_memory import PastTrades

    rows = await pool.fetch(
        f"""
        SELECT (extract(epoch FROM t.exit_time) * 1000)::bigint, t.entry_features[1:{MARKET_WIDTH}],
               t.pnl_bps, coalesce(l.confidence_penalty, 0)
        FROM trade_memory t LEFT JOIN loss_analysis l ON l.trade_id = t.id
        WHERE t.exchange = $1 AND t.exit_time < $2 AND cardinality(t.entry_features) >= {MARKET_WIDTH}
        ORDER BY t.exit_time, t.id
        """,  # noqa: S608 (a constant width, no input)
        exchange,
        ms_to_datetime(until_ms),
    )
    if not rows:
        return PastTrades.empty()
    exits = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    return PastTrades.from_entry_features(
        embedder,
        exits,
        np.array([r[1] for r in rows], dtype=np.float64),
        np.fromiter((r[2] for r in rows), np.float64, len(rows)),
        1.0 - np.fromiter((r[3] for r in rows), np.float64, len(rows)),
        exits + HORIZONS[ANALYSIS_HORIZON],
    )


class MemoryProgress:
    """Bars of the pattern memory done: a bar redrawn on a terminal, a log line a quarter otherwise."""

    def __init__(self, stream: TextIO) -> None:
        isatty = getattr(stream, "isatty", None)
        self.tty = callable(isatty) and bool(isatty())
        self.stream = stream
        self.logged_percent = 0

    def __call__(self, done: int, total: int) -> None:
        if self.tty:
            self.stream.write(f"\r{render_bar('pattern memory', done, total)}\033[K")
            if done >= total:
                self.stream.write("\n")
            self.stream.flush()
            return
        percent = done * 100 // max(total, 1)
        if percent >= self.logged_percent + 25:
            self.logged_percent = percent
            log.info("pattern memory progress", bars=done, total=total, percent=percent)


class TrainProgress:
    """A bar redrawn in place on a terminal, a structured log line per few iterations otherwise."""

    def __init__(self, stream: TextIO, total_steps: int) -> None:
        isatty = getattr(stream, "isatty", None)
        self.tty = callable(isatty) and bool(isatty())
        self.stream = stream
        self.total = total_steps
        self.logged_percent = -10

    def __call__(self, stats: IterationStats) -> None:
        done = min(stats.env_steps, self.total)
        ret = stats.mean_episode_return
        ret_text = f"{ret * 1e4:+.1f} bps/episode" if math.isfinite(ret) else "no episode ended"
        if self.tty:
            bar = render_bar("train", done, self.total, unit="steps")
            self.stream.write(f"\r{bar}  {stats.steps_per_second:,.0f} steps/s  {ret_text}\033[K")
            self.stream.flush()
            return
        percent = done * 100 // max(self.total, 1)
        if percent >= self.logged_percent + 10 or done >= self.total:
            self.logged_percent = percent
            log.info(
                "training progress",
                steps=done,
                total=self.total,
                percent=percent,
                steps_per_second=round(stats.steps_per_second),
                mean_episode_return_bps=round(ret * 1e4, 2) if math.isfinite(ret) else None,
                entropy=round(stats.entropy, 4),
            )

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


async def _with_pattern_memory(
    features: Features, pool: asyncpg.Pool, exchange: str, timeframe: str, config: HuracanConfig, err: TextIO
) -> Features:
    from huracan.memory.embedding import EntryEmbedder

    step_ms = timeframe_ms(timeframe)
    embedder = EntryEmbedder.default()
    last_close_ms = int(features.open_time_ms[-1]) + step_ms
    trades = await read_past_trades(pool, exchange, last_close_ms, embedder)
    if not len(trades):
        log.info(
            "no closed trades of the exchange in trade_memory by the last bar: "
            "the pattern memory inputs are zeros, as before any trade",
            exchange=exchange,
        )
        return features
    started = time.perf_counter()
    features = features.with_pattern_memory(
        trades, step_ms, embedder, k=config.memory.pattern_neighbours, progress=MemoryProgress(err)
    )
    assert features.pattern_memory is not None
    log.info(
        "pattern memory from past trades, each seen from the first close after its exit",
        exchange=exchange,
        trades=len(trades),
        embedding=embedder.version,
        rows_with_neighbours=round(float((features.pattern_memory[..., 2] > 0).mean()), 4),
        seconds=round(time.perf_counter() - started, 1),
    )
    return features


async def cmd_train(
    config: HuracanConfig,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Exit 0 trained and registered; 64 bad arguments or not enough candles; 69 database
    unavailable; 70 training or registration failed."""
    from huracan.features.market import WARMUP_BARS, CostAssumptions
    from huracan.features.schema import STATE_SCHEMA
    from huracan.memory.candles import CandleStore
    from huracan.memory.database import DatabaseUnavailable, SchemaNotCurrent, open_command_pool
    from huracan.memory.migrate import MigrationError
    from huracan.rl.checkpoint import CheckpointError
    from huracan.rl.env import EnvConfig
    from huracan.rl.ppo import PPOConfig
    from huracan.rl.registry import ModelRegistry, model_dir_of
    from huracan.rl.trainer import Features, TrainSpec, train_agent
    from huracan.rl.training_data import Period, TrainingDataError, align, read_database, read_files

    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        request = request_from_args(config, args)
        period = Period.of(request.start, request.end)
    except (ValueError, TrainingDataError) as exc:
        print(f"huracan train: {exc}", file=err)
        return EX_USAGE
    timeframe = config.universe.timeframe
    training = config.training
    execution = config.execution
    min_bars = WARMUP_BARS + 4 * training.episode_bars
    try:
        pool = await open_command_pool(config.database, config.daemon.state_dir)
    except DatabaseUnavailable as exc:
        print(f"huracan train: database unavailable: {exc}", file=err)
        return EX_UNAVAILABLE
    except (SchemaNotCurrent, MigrationError) as exc:
        print(f"huracan train: {exc}", file=err)
        return EX_CONFIG
    try:
        series: dict[str, CandleSeries] = {}
        used = request.source
        if request.source in ("auto", "database"):
            series = await read_database(
                CandleStore(pool), config.exchange.id, request.symbols, timeframe, period
            )
            short = [s for s, v in series.items() if len(v) < min_bars]
            if short and request.source == "database":
                raise TrainingDataError(
                    f"the database holds fewer than {min_bars} {timeframe} bars in the period for {', '.join(short)}"
                )
            used = "database" if not short else "files"
        if used == "files":
            series = read_files(config.universe.replay_data_dir, request.symbols, timeframe, period)
        aligned = align(series, min_bars=min_bars)
        bars = len(next(iter(aligned.values())))
        print(
            f"training on {bars:,} {timeframe} bars of {', '.join(request.symbols)} from the {used} "
            f"({request.steps:,} steps, {request.envs} parallel episodes, seed {request.seed})",
            file=err,
        )
        cost = CostAssumptions(
            taker_fee_bps=execution.taker_fee_bps,
            half_spread_bps=execution.half_spread_bps,
            slippage_bps=execution.slippage_bps,
        )
        features = Features.of(aligned, cost)
        features = await _with_pattern_memory(
            features, pool, next(iter(aligned.values())).exchange, timeframe, config, err
        )
        spec = TrainSpec(
            env=EnvConfig(
                n_envs=request.envs,
                episode_bars=training.episode_bars,
                fee_bps=execution.taker_fee_bps,
                half_spread_bps=execution.half_spread_bps,
                slippage_bps=execution.slippage_bps,
                bars_per_day=max(1, 86_400_000 // timeframe_ms(timeframe)),
                seed=request.seed,
            ),
            ppo=PPOConfig(
                n_steps=training.rollout_steps, seed=request.seed, torch_threads=os.cpu_count() or 1
            ),
            total_steps=request.steps,
            holdout_fraction=training.holdout_fraction,
            cost=cost,
        )
        progress = TrainProgress(err, request.steps)
        outcome = train_agent(features, spec, progress)
        progress.finish()
        registry = ModelRegistry(pool, model_dir_of(config))
        registry.model_dir.mkdir(parents=True, exist_ok=True)
        from huracan.rl.checkpoint import save_checkpoint

        with tempfile.TemporaryDirectory(dir=registry.model_dir) as scratch:
            path = Path(scratch) / "trained.pt"
            save_checkpoint(outcome.checkpoint, path)
            record = await registry.register(
                path,
                notes=f"huracan train: {', '.join(request.symbols)} from the {used}, seed {request.seed}",
            )
        promoted = False
        if request.promote_first and await registry.active() is None:
            await registry.promote(record.version, expected_schema_hash=STATE_SCHEMA.hash)
            promoted = True
    except TrainingDataError as exc:
        print(f"huracan train: {exc}", file=err)
        return EX_USAGE
    except (CheckpointError, OSError, ValueError) as exc:
        print(f"huracan train: {type(exc).__name__}: {exc}", file=err)
        return EX_SOFTWARE
    finally:
        await pool.close()
    metrics = outcome.checkpoint.metrics
    lines = [
        f"model {record.version} registered{' and promoted to champion' if promoted else ' as a candidate'}",
        f"  trained {metrics['train_env_steps']:,.0f} steps in {outcome.seconds:.1f} s "
        f"({metrics['train_steps_per_second']:,.0f} steps/s)",
    ]
    if outcome.holdout is not None and outcome.holdout_buy_and_hold is not None:
        h, bh = outcome.holdout, outcome.holdout_buy_and_hold
        lines.append(
            f"  held-out tail ({metrics['holdout_bars']:,.0f} bars): mean episode return {h.mean_return * 1e4:+.1f} bps "
            f"(t {h.t_statistic:+.2f}, {h.trades} trades, exposure {h.exposure:.0%}); "
            f"buy-and-hold {bh.mean_return * 1e4:+.1f} bps"
        )
    print("\n".join(lines), file=out)
    return EX_OK
