"""The decision step: each CandleClosed batch becomes features, one batched forward pass per
model, and OrderIntents on the intent queue.

Market features advance on every bar whether or not a model is loaded, so a model promoted
while the daemon runs decides at once, on warm features. At start-up (on the first bar) the
features are primed from the stored candles before it, so a restart does not wait a day for
the feature windows to fill.

Every deciding model version also has a paper book (huracan/agent/paper.py): its decisions
filled by the canonical rules at the next bar's open. The champion's context (has position,
unrealised PnL, ...) is the executor's position book, read once the book has taken the bar;
an A/B challenger's is its paper book. Closed paper trades go to `model_performance` per
version and day.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import torch

from huracan.agent.models import ModelSlots
from huracan.agent.paper import PaperBook
from huracan.agent.performance import PerformanceRecorder
from huracan.agent.positions import PatternMemoryView, PositionSnapshot, PositionView
from huracan.core.bus import Topic
from huracan.core.events import CandleClosed
from huracan.core.intents import ENTRY_ACTIONS, AgentAction, BarDecided, OrderIntent
from huracan.core.timeframe import timeframe_ms
from huracan.daemon.service import ServiceContext
from huracan.features.context import context_features
from huracan.features.incremental import IncrementalFeatures
from huracan.features.market import WARMUP_BARS, CostAssumptions, regime_name
from huracan.logs import get_logger
from huracan.memory.candles import CandleStore
from huracan.rl.env import EnvConfig

log = get_logger("huracan.agent.decide")

DAY_MS = 86_400_000
# Bars read back at start-up: the windows need WARMUP_BARS; the EMAs (longest span 144) need
# more to forget where they started, (1 - 2/145)^1360 < 1e-8, so live matches training.
PRIME_BARS = 4 * WARMUP_BARS
FLUSH_INTERVAL_S = 10.0


@dataclass(slots=True)
class DecisionStats:
    bars: int = 0
    decisions: int = 0  # symbol-model pairs decided
    cold: int = 0  # symbol-bars skipped because the features were not warm
    dropped_at_stop: int = 0  # intents of the last bars that found the queue full while stopping
    intents: Counter[str] = field(default_factory=Counter)  # by "version:ACTION"
    latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))

    def latency_percentiles_ms(self) -> tuple[float, float]:
        if not self.latency_s:
            return (float("nan"), float("nan"))
        p50, p99 = np.percentile(np.fromiter(self.latency_s, float), [50, 99])
        return (float(p50) * 1e3, float(p99) * 1e3)


class DecisionService:
    name = "decide"

    def __init__(
        self,
        *,
        exchange_id: str,
        symbols: Sequence[str],
        timeframe: str,
        candles: Topic[CandleClosed],
        store: CandleStore,
        models: ModelSlots,
        positions: PositionView | None,
        patterns: PatternMemoryView,
        intents: asyncio.Queue[OrderIntent | BarDecided],
        cost: CostAssumptions,
        paper_rules: EnvConfig,
        recorder: PerformanceRecorder,
        seed: int = 0,
        positions_ready: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """positions: the champion's position book (the executor's); None: the champion's paper
        book stands in. positions_ready(t): waits until the book has taken bar t's fills, so a
        decision on bar t sees the position as the training environment would."""
        self.exchange_id = exchange_id
        self.symbols = tuple(symbols)
        self.timeframe = timeframe
        self.step_ms = timeframe_ms(timeframe)
        # Subscribed here, not in run(), so no bar published before the task starts is missed.
        self.inbox = candles.subscribe(self.name, maxsize=64)
        self.store = store
        self.models = models
        self.positions = positions
        self.patterns = patterns
        self.intents = intents
        self.features = IncrementalFeatures(self.symbols, cost)
        self.paper_rules = paper_rules
        self.recorder = recorder
        self.positions_ready = positions_ready
        self.books: dict[str, PaperBook] = {}
        self.primed = False
        self.stats = DecisionStats()
        self.generator = torch.Generator().manual_seed(seed)
        self._index = {s: i for i, s in enumerate(self.symbols)}

    async def run(self, ctx: ServiceContext) -> None:
        torch.set_num_threads(ctx.config.current.agent.torch_threads)
        await self.models.refresh()
        next_check = time.monotonic() + ctx.config.current.agent.model_check_interval_s
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        try:
            await self._loop(ctx, next_check, next_flush)
            # Bars already published are decided before stopping (at most the inbox's 64), so
            # the end of a replay is not cut short by the stop request it triggers.
            while not self.inbox.empty():
                await self.on_bar(self.inbox.get_nowait(), ctx, stopping=True)
        finally:
            await self.recorder.flush(self.store.pool)

    async def _loop(self, ctx: ServiceContext, next_check: float, next_flush: float) -> None:
        while not ctx.stopping.is_set():
            timeout = max(0.05, min(5.0, next_check - time.monotonic()))
            ctx.liveness.beat(ctx.name, quiet_for_s=timeout)
            try:
                event = await asyncio.wait_for(self.inbox.get(), timeout=timeout)
            except TimeoutError:
                event = None
            if event is not None:
                await self.on_bar(event, ctx)
            if time.monotonic() >= next_check:
                await self.models.refresh()
                next_check = time.monotonic() + ctx.config.current.agent.model_check_interval_s
            if time.monotonic() >= next_flush:
                await self.recorder.flush(self.store.pool)
                next_flush = time.monotonic() + FLUSH_INTERVAL_S
            ctx.beat()

    async def on_bar(self, event: CandleClosed, ctx: ServiceContext, *, stopping: bool = False) -> None:
        if not self.primed:
            await self.prime(event.open_time_ms)
        if self.positions_ready is not None and not stopping:
            await self.positions_ready(event.open_time_ms)
        agent = ctx.config.current.agent
        decided: list[OrderIntent | BarDecided] = [BarDecided(event.open_time_ms)]
        try:
            decided[:0] = self.decide(event, greedy=agent.greedy, min_confidence=agent.min_confidence)
        except Exception:
            # The trading task waits for this bar's marker: it goes out even when deciding
            # failed, so a crash here cannot hold the bar stream (replay) or the exits (live).
            if not self.intents.full():
                self.intents.put_nowait(decided[0])
            raise
        for item in decided:
            if not stopping:
                await self.intents.put(item)  # a full queue holds the bar stream back: backpressure
            elif self.intents.full():  # its consumer may be gone: never block a shutdown
                self.stats.dropped_at_stop += isinstance(item, OrderIntent)
            else:
                self.intents.put_nowait(item)

    async def prime(self, first_open_ms: int) -> None:
        """Load the stored bars before the first live bar into the feature windows."""
        start = first_open_ms - PRIME_BARS * self.step_ms
        history = {
            s: await self.store.read_series(self.exchange_id, s, self.timeframe, start, first_open_ms)
            for s in self.symbols
        }
        self.features.prime(history)
        self.primed = True
        log.info("features primed", bars={s: len(h) for s, h in history.items()}, warmup_bars=WARMUP_BARS)

    def summary(self) -> str:
        """One line for the end of a replay: who decided how much, and what they wanted."""
        champion = self.models.champion.version if self.models.champion else None
        if champion is None and not self.stats.decisions:
            return "agent: no champion model, nothing decided (train one: huracan train)"
        p50, p99 = self.stats.latency_percentiles_ms()
        wanted = ", ".join(f"{k} {n}" for k, n in sorted(self.stats.intents.items())) or "none"
        return (
            f"agent: champion {champion}; {self.stats.decisions} decisions over {self.stats.bars} bars "
            f"({self.stats.cold} symbol-bars before warm-up); intents: {wanted}; "
            f"decision p50 {p50:.3f} ms, p99 {p99:.3f} ms; paper results: {self.recorder.summary()}"
        )

    def decide(self, event: CandleClosed, *, greedy: bool, min_confidence: float) -> list[OrderIntent]:
        """Features for the bar, then each model's decisions for its symbols. Pure but for the
        feature windows it advances and the stats."""
        started = time.perf_counter()
        self.stats.bars += 1
        rows = self.features.push(event.open_time_ms, event.candles)
        warm = self.features.warm_mask
        deciders = self.models.deciders()
        self._paper_bar(event, {runner.version for runner, _, _ in deciders})
        if not deciders:
            return []
        pattern_memory = torch.from_numpy(self.patterns.nearest_setups(self.symbols, rows)).float()
        intents: list[OrderIntent] = []
        for runner, symbols, shadow in deciders:
            chosen = [
                self._index[s]
                for s in self.symbols
                if s in symbols and s in event.candles and warm[self._index[s]]
            ]
            self.stats.cold += sum(1 for s in symbols if s in event.candles and not warm[self._index[s]])
            if not chosen:
                continue
            book = self.books[runner.version]
            view: PositionView = book if shadow or self.positions is None else self.positions
            snapshot = view.snapshot(self.symbols)
            has_position = torch.from_numpy(snapshot.has_position)
            context = self._context(snapshot, has_position, pattern_memory)
            index = torch.tensor(chosen)
            decisions = runner.decide(
                rows[chosen], context[index], has_position[index], greedy=greedy, generator=self.generator
            )
            self.stats.decisions += len(chosen)
            states: npt.NDArray[np.float64] | None = None  # built once, only when an intent needs it
            for i, action_value, confidence in zip(
                chosen, decisions.actions.tolist(), decisions.confidence.tolist(), strict=True
            ):
                action = AgentAction(action_value)
                if action not in ENTRY_ACTIONS and action is not AgentAction.EXIT_POSITION:
                    continue
                if confidence < min_confidence:
                    continue
                symbol = self.symbols[i]
                if states is None:
                    states = np.concatenate([rows, context.numpy()], axis=1)
                state = tuple(states[i].tolist())
                intents.append(
                    OrderIntent.from_action(
                        action,
                        symbol=symbol,
                        bar_open_time_ms=event.open_time_ms,
                        reference_price=Decimal(repr(event.candles[symbol].close)),
                        model_version=runner.version,
                        confidence=float(confidence),
                        shadow=shadow,
                        state=state,
                        regime=regime_name(rows[i]),
                    )
                )
                book.submit(intents[-1])
                self.stats.intents[f"{runner.version}:{action.name}"] += 1
        self.stats.latency_s.append(time.perf_counter() - started)
        return intents

    def _paper_bar(self, event: CandleClosed, deciding: set[str]) -> None:
        """Fill the paper books' queued decisions at this bar's open and mark its close; a
        version that stopped deciding (replaced champion, ended A/B) loses its book."""
        for version in [v for v in self.books if v not in deciding]:
            del self.books[version]
        for version in deciding:
            if version not in self.books:
                self.books[version] = PaperBook(version, self.symbols, self.paper_rules)
        for book in self.books.values():
            self.recorder.record(book.on_bar(event.open_time_ms, event.candles))

    def _context(
        self, snapshot: PositionSnapshot, has_position: torch.Tensor, pattern_memory: torch.Tensor
    ) -> torch.Tensor:
        return context_features(
            pattern_memory=pattern_memory,
            has_position=has_position,
            size_multiplier=torch.from_numpy(snapshot.size_multiplier),
            unrealised_pnl_bps=torch.from_numpy(snapshot.unrealised_pnl_bps),
            hold_bars=torch.from_numpy(snapshot.hold_bars),
            bars_per_day=DAY_MS / self.step_ms,
            drawdown=torch.from_numpy(snapshot.drawdown),
            trades_today=torch.from_numpy(snapshot.trades_today),
            wins_today=torch.from_numpy(snapshot.wins_today),
        )
