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

from huracan.agent.kernel import (
    ACTION_COLUMN,
    CONFIDENCE_COLUMN,
    OUTPUT_EXTRA,
    REGIME_COLUMN,
    SYMBOL_COLUMN,
    UNKNOWN_REGIME,
    context_rows,
    eligible_rows,
)
from huracan.agent.models import ModelSlots
from huracan.agent.paper import PaperBook
from huracan.agent.performance import PerformanceRecorder
from huracan.agent.positions import PatternMemoryView, PositionSnapshot, PositionView
from huracan.core.bus import Topic
from huracan.core.events import CandleClosed
from huracan.core.intents import AgentAction, BarDecided, OrderIntent
from huracan.core.timeframe import timeframe_ms
from huracan.daemon.service import ServiceContext
from huracan.features.context import CONTEXT_WIDTH, PATTERN_MEMORY_WIDTH
from huracan.features.incremental import IncrementalFeatures
from huracan.features.market import REGIMES, WARMUP_BARS, CostAssumptions
from huracan.features.schema import STATE_SIZE
from huracan.logs import get_logger
from huracan.memory.candles import CandleStore
from huracan.rl.env import EnvConfig

log = get_logger("huracan.agent.decide")

DAY_MS = 86_400_000
# Bars read back at start-up: the windows need WARMUP_BARS; the EMAs (longest span 144) need
# more to forget where they started, (1 - 2/145)^1360 < 1e-8, so live matches training.
PRIME_BARS = 4 * WARMUP_BARS
FLUSH_INTERVAL_S = 10.0
# The kernel's output columns (kernel.py), and what their integer values name.
SYMBOL_AT, ACTION_AT, CONFIDENCE_AT, REGIME_AT = (
    STATE_SIZE + c for c in (SYMBOL_COLUMN, ACTION_COLUMN, CONFIDENCE_COLUMN, REGIME_COLUMN)
)
ACTION_OF: dict[float, AgentAction] = {int(a): a for a in AgentAction}
REGIME_OF: dict[float, str] = {UNKNOWN_REGIME: "unknown", **dict(enumerate(REGIMES))}


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
        # The decision step's buffers, reused bar after bar (nothing handed out points into them).
        n = len(self.symbols)
        self._symbol_of: dict[float, str] = dict(enumerate(self.symbols))
        self._members: dict[frozenset[str], npt.NDArray[np.bool_]] = {}
        self._chosen = np.empty(n, dtype=np.int64)
        self._no_memory = np.zeros((n, PATTERN_MEMORY_WIDTH))
        self._context_block = np.empty((n, CONTEXT_WIDTH), dtype=np.float32)
        self._decided = np.empty((n, STATE_SIZE + OUTPUT_EXTRA))
        self._actions = np.empty(n, dtype=np.int64)
        self._confidence = np.empty(n)
        self._bars_per_day = DAY_MS / self.step_ms
        self._intent_keys: dict[str, dict[AgentAction, str]] = {}
        # Load (or compile) the compiled steps now, on arguments of the types the bars pass.
        eligible_rows(self.features.rows, self.features.present, self.features.present, self._chosen)
        self._context(PositionSnapshot.flat(n), self._no_memory)

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
        intents) must follow (on_bar lets the gate have the intents first).

        The arithmetic is three compiled calls per model (huracan/agent/kernel.py); what is left
        here is a few Python operations per model and per intent (kernel.py's module doc: when a
        bar wakes the daemon its caches are cold, and every numpy call is dear)."""
        started = time.perf_counter()
        self.stats.bars += 1
        rows = self.features.push(event.open_time_ms, event.candles)
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
        pattern_memory = (
            np.ascontiguousarray(
                self.patterns.nearest_setups(self.symbols, rows, event.open_time_ms + self.step_ms),
                dtype=np.float64,
            )
            if any(runner.uses_pattern_memory for runner, _, _ in deciders)
            else self._no_memory
        )
        intents: list[OrderIntent] = []
        for runner, symbols, shadow in deciders:
            # The symbols with a bar are those the feature push advanced.
            n, cold = eligible_rows(rows, self.features.present, self._members_of(symbols), self._chosen)
            self.stats.cold += cold
            if not n:
                continue
            book = self.books[runner.version]
            view: PositionView = self.positions if self.positions is not None and not shadow else book
            if view is book:  # its context is the paper book: it takes the bar first
                self._paper_take_bar(book, event)
            snapshot = view.snapshot(self.symbols)
            context = self._context(
                snapshot, pattern_memory if runner.uses_pattern_memory else self._no_memory
            )
            acting = runner.decide(
                rows,
                context,
                snapshot.has_position,
                self._chosen,
                n,
                greedy=greedy,
                rng=self.rng,
                min_confidence=min_confidence,
                out=self._decided,
                actions=self._actions,
                confidence=self._confidence,
            )
            self.stats.decisions += n
            if acting:
                # The acting rows become Python objects in one call; no other row does.
                self._add_intents(intents, event, runner.version, shadow, self._decided[:acting].tolist())
        self.stats.latency_s.append(time.perf_counter() - started)
        return intents

    def _add_intents(
        self,
        intents: list[OrderIntent],
        event: CandleClosed,
        version: str,
        shadow: bool,
        decided: list[list[float]],
    ) -> None:
        """An OrderIntent per output row of the kernel (its layout: kernel.py). The row's integer
        columns are floats: they look up the int-keyed tables directly (2.0 == 2, same hash)."""
        keys = self._intent_keys.get(version)
        if keys is None:
            keys = self._intent_keys[version] = {a: f"{version}:{a.name}" for a in AgentAction}
        counts, candles, symbol_of = self.stats.intents, event.candles, self._symbol_of
        for row in decided:
            action = ACTION_OF[row[ACTION_AT]]
            symbol = symbol_of[row[SYMBOL_AT]]
            intents.append(
                OrderIntent.from_action(
                    action,
                    symbol=symbol,
                    bar_open_time_ms=event.open_time_ms,
                    # The shortest decimal that round-trips: the venue's own price string.
                    reference_price=Decimal(repr(candles[symbol].close)),
                    model_version=version,
                    confidence=row[CONFIDENCE_AT],
                    shadow=shadow,
                    state=tuple(row[:STATE_SIZE]),
                    regime=REGIME_OF[row[REGIME_AT]],
                )
            )
            counts[keys[action]] += 1

    def _members_of(self, symbols: frozenset[str]) -> npt.NDArray[np.bool_]:
        """[S] which of the service's symbols a model decides for (kept per symbol set: the
        champion's and a challenger's change only when the registry's roles do)."""
        member = self._members.get(symbols)
        if member is None:
            if len(self._members) >= 8:  # old challenger shares
                self._members.clear()
            member = self._members[symbols] = np.array([s in symbols for s in self.symbols], dtype=np.bool_)
        return member

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
        """The context block [S, 10] (context_features' float32 arithmetic, compiled), in a
        buffer the next call overwrites."""
        context_rows(
            pattern_memory,
            snapshot.has_position,
            snapshot.size_multiplier,
            snapshot.unrealised_pnl_bps,
            snapshot.hold_bars,
            self._bars_per_day,
            snapshot.drawdown,
            snapshot.trades_today,
            snapshot.wins_today,
            self._context_block,
        )
        return self._context_block
