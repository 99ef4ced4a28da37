"""Candle ingestion: backfill, then every newly closed bar, validated, stored, published.

One service per timeframe covers every symbol of the universe, so that each bar time is
published once, for all symbols together (the agent decides on one batch per bar time).

    start-up:  for each symbol, fetch from the last stored bar (or backfill_days back) to now,
               then repair the gaps found in the stored window
    each bar:  wait for the bar's close (+ a small delay for the venue to settle), fetch what is
               new for every symbol at once, validate, store, publish CandleClosed (with the
               next bar's open where the venue showed that bar forming)

A rejected bar is counted, logged with its reason and never stored; it never stops the task.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from huracan.core.bus import Topic
from huracan.core.candle import Candle
from huracan.core.clock import Clock
from huracan.core.events import CandleClosed
from huracan.core.timeframe import bar_open, timeframe_ms
from huracan.daemon.service import ServiceContext
from huracan.exchange.errors import Retryable
from huracan.logs import get_logger
from huracan.market.validation import find_gaps, validate_batch
from huracan.memory.candles import CandleStore, WriteResult

log = get_logger("huracan.market.ingest")

DAY_MS = 86_400_000
# Replay: how long to wait for a published bar to be traded before going on without it.
SETTLE_WAIT_S = 60.0


class CandleSource(Protocol):
    """What ingestion needs of a venue: the exchange adapter and the replay venue both fit."""

    exchange_id: str

    async def fetch_ohlcv(
        self, symbol: str, timeframe: str, since_ms: int, until_ms: int
    ) -> list[Candle]: ...

    def opening_price(self, symbol: str, timeframe: str, open_time_ms: int) -> float | None:
        """The open of the bar opening at open_time_ms, where the venue showed it forming."""
        ...


@dataclass(slots=True)
class IngestStats:
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    published: int = 0
    gaps_repaired: int = 0
    fetch_failures: int = 0


@dataclass(frozen=True, slots=True)
class IngestPlan:
    symbols: tuple[str, ...]
    timeframe: str
    backfill_days: int
    # Venues publish a bar a moment after its close; asking at once often returns the old one.
    close_delay_ms: int = 2_000
    # How long to keep asking for a symbol's bar before publishing the bar time without it.
    straggler_wait_ms: int = 20_000


class CandleIngest:
    name = "ingest"

    def __init__(
        self,
        plan: IngestPlan,
        source: CandleSource,
        store: CandleStore,
        clock: Clock,
        *,
        on_exhausted: Callable[[], None] | None = None,
    ) -> None:
        self.plan = plan
        self.on_exhausted = on_exhausted
        self.source = source
        self.store = store
        self.clock = clock
        self.step_ms = timeframe_ms(plan.timeframe)
        self.topic: Topic[CandleClosed] = Topic("candle-closed")
        self.stats = IngestStats()
        # The newest accepted bar of each stream (validation's reference) and where to fetch from.
        self.last: dict[str, Candle] = {}
        self.next_since: dict[str, int] = {}
        self._unfillable: set[tuple[str, int, int]] = set()
        # Replay: waits until the bar just published is traded, so the replay clock (which the
        # order path reads) never runs ahead of the bar being traded. None: publish and go on.
        self.settled: Callable[[int], Awaitable[None]] | None = None

    async def run(self, ctx: ServiceContext) -> None:
        await self.backfill()
        ctx.beat()
        while not ctx.stopping.is_set():
            if self._exhausted():
                log.info(
                    "replay finished",
                    stored=self.stats.stored,
                    published=self.stats.published,
                    rejected=dict(self.stats.rejected),
                )
                if self.on_exhausted is not None:
                    self.on_exhausted()
                while not await ctx.sleep(60):  # idle, accounted for with the watchdog, until stopped
                    pass
                return
            next_close = bar_open(self.clock.now_ms(), self.plan.timeframe) + self.step_ms
            await self._sleep_until(ctx, next_close + self.plan.close_delay_ms)
            if ctx.stopping.is_set():
                return
            await self.ingest_closed_bars()
            ctx.beat()

    async def _sleep_until(self, ctx: ServiceContext, time_ms: int) -> None:
        sleeper = asyncio.ensure_future(self.clock.sleep_until(time_ms))
        stop = asyncio.ensure_future(ctx.stopping.wait())
        ctx.liveness.beat(ctx.name, quiet_for_s=max(0.0, (time_ms - self.clock.now_ms()) / 1000))
        try:
            await asyncio.wait({sleeper, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            stop.cancel()

    def _exhausted(self) -> bool:
        """A replay venue runs out of data; a live venue never does."""
        exhausted = getattr(self.source, "exhausted", None)
        return bool(exhausted()) if callable(exhausted) else False

    # --- start-up -------------------------------------------------------------------------------
    async def backfill(self) -> None:
        now = self.clock.now_ms()
        window_start = bar_open(now - self.plan.backfill_days * DAY_MS, self.plan.timeframe)
        for symbol in self.plan.symbols:
            # The newest bar stored before now: a replay over data stored by an earlier run must
            # not skip the bars that are still in its future.
            stored = await self.store.open_times(
                self.source.exchange_id, symbol, self.plan.timeframe, window_start, now
            )
            since = window_start if len(stored) == 0 else int(stored[-1]) + self.step_ms
            self.next_since[symbol] = since
            fetched = await self._fetch(symbol, since, now) or []
            await self._write(self._take(symbol, fetched, now))
            await self.repair_gaps(symbol, window_start, bar_open(now, self.plan.timeframe))
        log.info(
            "backfill done",
            symbols=list(self.plan.symbols),
            timeframe=self.plan.timeframe,
            stored=self.stats.stored,
            rejected=dict(self.stats.rejected),
        )

    async def repair_gaps(self, symbol: str, start_ms: int, end_ms: int) -> None:
        """Refetch the bars missing from the stored window. A gap the venue cannot fill (an outage
        or maintenance) is remembered and not asked for again."""
        exchange, timeframe = self.source.exchange_id, self.plan.timeframe
        times = await self.store.open_times(exchange, symbol, timeframe, start_ms, end_ms)
        if len(times) == 0:
            return
        for first, last in find_gaps(times, timeframe, int(times[0]), end_ms):
            if (symbol, first, last) in self._unfillable:
                continue
            fetched = await self._fetch(symbol, first, last + self.step_ms)
            if fetched is None:
                continue  # the venue did not answer: try this gap at the next start, not "unfillable"
            # Repairs fill in behind the newest bar: validated without the stream-order rule.
            accepted = self._validate(symbol, fetched, self.clock.now_ms(), None)
            stored = (await self._write(accepted)).inserted
            if stored:
                self.stats.gaps_repaired += 1
                log.info("gap repaired", symbol=symbol, first_ms=first, last_ms=last, bars=stored)
            else:
                self._unfillable.add((symbol, first, last))
                log.warning("gap the venue cannot fill", symbol=symbol, first_ms=first, last_ms=last)

    # --- every bar ------------------------------------------------------------------------------
    async def ingest_closed_bars(self) -> list[CandleClosed]:
        """Fetch what closed since the last bar of each symbol, validate it and store it in one
        write; publish one CandleClosed per new bar time, oldest first."""
        now = self.clock.now_ms()
        newest = bar_open(now, self.plan.timeframe) - self.step_ms  # the last bar that has closed
        new: dict[str, list[Candle]] = {s: [] for s in self.plan.symbols}
        waited = 0
        pending = list(self.plan.symbols)
        while pending:
            fetched = await asyncio.gather(*(self._fetch(s, self._since(s, now), now) for s in pending))
            taken = [
                self._take(symbol, bars or [], now) for symbol, bars in zip(pending, fetched, strict=True)
            ]
            await self._write([bar for bars in taken for bar in bars])
            for symbol, bars in zip(pending, taken, strict=True):
                new[symbol].extend(bars)
            pending = [s for s in pending if not new[s] or new[s][-1].open_time_ms < newest]
            if not pending or waited >= self.plan.straggler_wait_ms:
                break
            waited += 1_000
            await self.clock.sleep_until(self.clock.now_ms() + 1_000)
            now = self.clock.now_ms()
        return await self._publish(new)

    async def _fetch(self, symbol: str, since_ms: int, until_ms: int) -> list[Candle] | None:
        """The venue's bars, or None when it stays unavailable after the adapter's retries: the
        stream then simply resumes from where it was at the next bar, instead of the task dying
        (and being restarted) over an outage. Other errors (bad symbol, authentication) are real
        faults and propagate."""
        try:
            return await self.source.fetch_ohlcv(symbol, self.plan.timeframe, since_ms, until_ms)
        except Retryable as exc:
            self.stats.fetch_failures += 1
            log.warning("fetch failed; asked again next bar", symbol=symbol, error=str(exc))
            return None

    def _since(self, symbol: str, now: int) -> int:
        return self.next_since.get(symbol, bar_open(now, self.plan.timeframe) - self.step_ms)

    async def _publish(self, new: dict[str, list[Candle]]) -> list[CandleClosed]:
        by_time: dict[int, dict[str, Candle]] = {}
        for symbol, bars in new.items():
            for bar in bars:
                by_time.setdefault(bar.open_time_ms, {})[symbol] = bar
        events = []
        times = sorted(by_time)
        for k, open_time in enumerate(times):
            candles = by_time[open_time]
            missing = tuple(s for s in self.plan.symbols if s not in candles)
            if missing:
                log.warning(
                    "bar published without some symbols", open_time_ms=open_time, missing=list(missing)
                )
            following = by_time.get(times[k + 1]) if k + 1 < len(times) else None
            next_opens = self._next_opens(open_time + self.step_ms, candles, following)
            event = CandleClosed(self.plan.timeframe, open_time, candles, missing, next_opens)
            await self.topic.publish(event)
            self.stats.published += 1
            events.append(event)
            if self.settled is not None:
                try:
                    async with asyncio.timeout(SETTLE_WAIT_S):
                        await self.settled(open_time)
                except TimeoutError:  # a crashed consumer must not hold the replay for ever
                    log.warning("bar not traded in time; the replay goes on", open_time_ms=open_time)
        return events

    def _next_opens(
        self, opened_ms: int, candles: Mapping[str, Candle], following: Mapping[str, Candle] | None
    ) -> dict[str, float]:
        """The open of the bar after this one, by symbol: from the next bar of this batch (as
        validated: none where it was refused or missing), or for the batch's newest bar from
        the bar the venue showed forming. Only a positive finite price; a symbol without one
        has its market orders filled when that bar closes."""
        opens: dict[str, float] = {}
        for symbol in candles:
            price: float | None = None
            if following is None:
                price = self.source.opening_price(symbol, self.plan.timeframe, opened_ms)
            elif (bar := following.get(symbol)) is not None and bar.open_time_ms == opened_ms:
                price = bar.open
            if price is not None and math.isfinite(price) and price > 0:
                opens[symbol] = price
        return opens

    # --- validation and storage ----------------------------------------------------------------
    def _take(self, symbol: str, fetched: Sequence[Candle], now: int) -> list[Candle]:
        """Validate the next bars of a stream and move the stream on past the accepted ones."""
        accepted = self._validate(symbol, fetched, now, self.last.get(symbol))
        if accepted:
            self.last[symbol] = accepted[-1]
            self.next_since[symbol] = accepted[-1].open_time_ms + self.step_ms
        return accepted

    def _validate(
        self, symbol: str, fetched: Sequence[Candle], now: int, last_accepted: Candle | None
    ) -> list[Candle]:
        verdict = validate_batch(fetched, now_ms=now, last_accepted=last_accepted)
        self.stats.duplicates += verdict.duplicates
        for candle, reason in verdict.rejected:
            self.stats.rejected[reason] += 1
            log.warning(
                "bar rejected",
                symbol=symbol,
                open_time_ms=candle.open_time_ms,
                reason=str(reason),
                bar=[candle.open, candle.high, candle.low, candle.close, candle.volume],
            )
        return list(verdict.accepted)

    async def _write(self, candles: Sequence[Candle]) -> WriteResult:
        result = await self.store.write(candles)
        self.stats.stored += result.inserted
        self.stats.duplicates += result.identical
        if result.conflicting:
            self.stats.conflicts += len(result.conflicting)
            log.warning(
                "bars differ from the stored ones; kept the stored",
                count=len(result.conflicting),
                first=[(c.incoming.symbol, c.incoming.open_time_ms) for c in result.conflicting[:5]],
            )
        return result
