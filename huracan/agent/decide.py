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
from huracan.features.context import PATTERN_MEMORY_WIDTH, context_features
from huracan.features.incremental import IncrementalFeatures
from huracan.features.market import WARMUP_BARS, CostAssumptions, regime_names
from huracan.logs import get_logger
from huracan.memory.candles import CandleStore
from huracan.rl.env import EnvConfig

log = get_logger("huracan.agent.decide")

DAY_MS = 86_400_000
# Bars read back at start-up: the windows need WARMUP_BARS; the EMAs (longest span 144) need
# more to forget where they started, (1 - 2/145)^1360 < 1e-8, so live matches training.
PRIME_BARS = 4 * WARMUP_BARS
FLUSH_INTERVAL_S = 10.0
# The actions that make an intent: an entry or the exit (waiting and holding change nothing).
ACTING_VALUES = np.array(sorted(int(a) for a in (*ENTRY_ACTIONS, AgentAction.EXIT_POSITION)))


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
        patterns_ready: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        """positions: the champion's position book (the executor's); None: the champion's paper
        book stands in. positions_ready(t): waits until the book has taken bar t's fills, so a
        decision on bar t sees the position as the training environment would.
        patterns_ready(close): waits until the pattern memory holds what is known at that close
        (replay, where market time outruns the learning task)."""
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
        self.patterns_ready = patterns_ready
        self.books: dict[str, PaperBook] = {}
        self._barred: set[str] = set()  # versions whose paper book took the current bar
        self.primed = False
        self.stats = DecisionStats()
        self.rng = np.random.default_rng(seed)
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
                async with asyncio.timeout(timeout):  # not wait_for: no task of its own per bar
                    event = await self.inbox.get()
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
        if self.patterns_ready is not None and not stopping:
            await self.patterns_ready(event.open_time_ms + self.step_ms)
        agent = ctx.config.current.agent
        decided: list[OrderIntent | BarDecided] = [BarDecided(event.open_time_ms)]
        try:
            intents = self.intents_for(event, greedy=agent.greedy, min_confidence=agent.min_confidence)
            decided[:0] = intents
        except Exception:
            # The trading task waits for this bar's marker: it goes out even when deciding
            # failed, so a crash here cannot hold the bar stream (replay) or the exits (live).
            if not self.intents.full():
                self.intents.put_nowait(decided[0])
            try:
                self.settle_paper(event, [])  # and the paper books still take the bar
            except Exception:  # the first error is the one to raise
                log.exception("paper books could not take the bar")
            raise
        for item in decided:
            if not stopping:
                await self.intents.put(item)  # a full queue holds the bar stream back: backpressure
            elif self.intents.full():  # its consumer may be gone: never block a shutdown
                self.stats.dropped_at_stop += isinstance(item, OrderIntent)
            else:
                self.intents.put_nowait(item)
        # The gate takes the intents before the paper books do their bookkeeping.
        await asyncio.sleep(0)
        self.settle_paper(event, intents)

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
        """The whole step for a bar: the intents, then the paper books. Pure but for the feature
        windows and paper books it advances and the stats."""
        intents = self.intents_for(event, greedy=greedy, min_confidence=min_confidence)
        self.settle_paper(event, intents)
        return intents

    def intents_for(self, event: CandleClosed, *, greedy: bool, min_confidence: float) -> list[OrderIntent]:
        """Features for the bar, then each model's decisions for its symbols; settle_paper(event,
        intents) must follow (on_bar lets the gate have the intents first)."""
        started = time.perf_counter()
        self.stats.bars += 1
        rows = self.features.push(event.open_time_ms, event.candles)
        warm = self.features.warm_mask
        deciders = self.models.deciders()
        self._open_books({runner.version for runner, _, _ in deciders})
        for runner, symbols, _ in deciders:  # each version's paper equity is its symbols' accounts
            self.recorder.symbols_by_version[runner.version] = len(symbols)
        self._barred.clear()
        if not deciders:
            return []
        # As known at the bar's close: in a replay the memory may hold later trades of earlier runs.
        # Zeros for a model that never trained on the pattern memory's figures (and no search
        # when no deciding model reads them).
        no_memory = np.zeros((len(self.symbols), PATTERN_MEMORY_WIDTH))
        pattern_memory = (
            self.patterns.nearest_setups(self.symbols, rows, event.open_time_ms + self.step_ms)
            if any(runner.uses_pattern_memory for runner, _, _ in deciders)
            else no_memory
        )
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
            view: PositionView = self.positions if self.positions is not None and not shadow else book
            if view is book:  # its context is the paper book: it takes the bar first
                self._paper_take_bar(book, event)
            snapshot = view.snapshot(self.symbols)
            context = self._context(snapshot, pattern_memory if runner.uses_pattern_memory else no_memory)
            decisions = runner.decide(
                rows[chosen], context[chosen], snapshot.has_position[chosen], greedy=greedy, rng=self.rng
            )
            self.stats.decisions += len(chosen)
            actions, confidences = decisions.actions, decisions.confidence
            acting = np.isin(actions, ACTING_VALUES) & (confidences >= min_confidence)
            if not acting.any():
                continue
            # Only the acting rows are turned into Python objects, each kind in one call.
            picked = np.asarray(chosen)[acting]
            states = np.concatenate([rows[picked], context[picked]], axis=1).tolist()
            regimes = regime_names(rows[picked])
            for i, action_value, confidence, state, regime in zip(
                picked.tolist(),
                actions[acting].tolist(),
                confidences[acting].tolist(),
                states,
                regimes,
                strict=True,
            ):
                action = AgentAction(action_value)
                symbol = self.symbols[i]
                intents.append(
                    OrderIntent.from_action(
                        action,
                        symbol=symbol,
                        bar_open_time_ms=event.open_time_ms,
                        reference_price=Decimal(repr(event.candles[symbol].close)),
                        model_version=runner.version,
                        confidence=confidence,
                        shadow=shadow,
                        state=tuple(state),
                        regime=regime,
                    )
                )
                self.stats.intents[f"{runner.version}:{action.name}"] += 1
        self.stats.latency_s.append(time.perf_counter() - started)
        return intents

    def _open_books(self, deciding: set[str]) -> None:
        """A paper book per deciding version; a version that stopped deciding (replaced
        champion, ended A/B) loses its book."""
        for version in [v for v in self.books if v not in deciding]:
            del self.books[version]
        for version in deciding:
            if version not in self.books:
                self.books[version] = PaperBook(version, self.symbols, self.paper_rules)

    def _paper_take_bar(self, book: PaperBook, event: CandleClosed) -> None:
        """Fill the book's queued decisions at this bar's open and mark its close."""
        self.recorder.record(book.on_bar(event.open_time_ms, event.candles))
        self._barred.add(book.version)

    def settle_paper(self, event: CandleClosed, intents: Sequence[OrderIntent]) -> None:
        """The books that have not taken the bar take it; then each queues its version's
        decisions for the next bar's open."""
        for book in self.books.values():
            if book.version not in self._barred:
                self._paper_take_bar(book, event)
        for intent in intents:
            self.books[intent.model_version].submit(intent)

    def _context(
        self, snapshot: PositionSnapshot, pattern_memory: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float32]:
        return context_features(
            # float32 as in the training environment, so the block's roundings are the same
            pattern_memory=pattern_memory.astype(np.float32),
            has_position=snapshot.has_position,
            size_multiplier=snapshot.size_multiplier,
            unrealised_pnl_bps=snapshot.unrealised_pnl_bps,
            hold_bars=snapshot.hold_bars,
            bars_per_day=DAY_MS / self.step_ms,
            drawdown=snapshot.drawdown,
            trades_today=snapshot.trades_today,
            wins_today=snapshot.wins_today,
        )
