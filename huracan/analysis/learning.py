"""The learning task: every closed trade is embedded and folded into a pattern, followed 1 h,
4 h and 24 h after its exit, and explained (win or loss analysis) once its 4 h are known.

The thin shell around pure parts: the embedding and the pattern library (huracan/memory),
the post-exit computation and the analyzers (huracan/analysis). Each pass reads its work from
the tables (huracan/memory/learning_store.py), so a restart resumes where the last process
stopped; at start-up the in-process library and the nearest-setups view the agent reads are
rebuilt from the stored trades. Horizons are judged on stored candles, not on a clock: a
horizon is tracked once the bars covering it are in the database, in replay as live.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from decimal import Decimal

import asyncpg
import numpy as np

from huracan.analysis.attribution import SimilarSetups
from huracan.analysis.handover import DrainingView, Handover
from huracan.analysis.learning_bars import bars_around, exit_regimes, utc_day
from huracan.analysis.learning_stats import LearningStats
from huracan.analysis.losses import analyze_loss
from huracan.analysis.post_exit import PostExit, best_move_from_entry, horizon_covered, track_post_exit
from huracan.analysis.trades import ANALYSIS_HORIZON, HORIZONS, TradeFacts
from huracan.analysis.wins import analyze_win
from huracan.core.candle import CandleSeries
from huracan.core.timeframe import timeframe_ms
from huracan.daemon.service import ServiceContext
from huracan.execution.positions import ClosedTrade
from huracan.features.market import WARMUP_BARS
from huracan.features.schema import MARKET_WIDTH
from huracan.logs import get_logger
from huracan.memory.candles import CandleStore
from huracan.memory.embedding import EntryEmbedder
from huracan.memory.learning_store import Learned, LearningStore
from huracan.memory.patterns import PatternLibrary, TradeOutcome
from huracan.memory.setups import NearestSetups
from huracan.memory.trade_performance import record_trade_days
from huracan.memory.vectors import pgvector_available, prepare_pgvector, similar_before

log = get_logger("huracan.analysis.learning")

DAY_MS = 86_400_000
# Trades per chunk of the start-up rebuild between two beats (and yields to the event loop).
REBUILD_CHUNK = 20_000
# Trades read per tracking step: a backlog is tracked over several passes.
TRACK_PAGE = 2_000
# A horizon still not covered this long after it passed (by the newest stored bar of any
# symbol) never will be: the symbol left the universe or its bars are missing for good.
GIVE_UP_AFTER_MS = 2 * 86_400_000
# At stop, how long the last pass waits for the trading task to have written its last trades.
UPSTREAM_WAIT_S = 10.0
# How long a replay bar waits for loss analyses it should know (then decides without them).
READY_WAIT_S = 10.0


class LearningService:
    name = "learning"

    def __init__(
        self,
        store: LearningStore,
        candles: CandleStore,
        setups: NearestSetups,
        *,
        timeframe: str,
        horizons: Sequence[str] = tuple(HORIZONS),
        neighbours: int = 20,
        batch: int = 500,
        embedder: EntryEmbedder | None = None,
        library: PatternLibrary | None = None,
        upstream_stopped: asyncio.Event | None = None,
        fresh_replay: bool = False,
        mode: str = "replay",
        equity_quote: Decimal | None = None,
    ) -> None:
        """upstream_stopped: set when the task that writes the trades (the trading task) has
        stopped; the last pass at stop waits for it (up to UPSTREAM_WAIT_S). fresh_replay: the
        agent's view leaves out earlier replay sessions' trades (the pattern library keeps them)."""
        self.fresh_replay = fresh_replay
        # The versions' own trades per day into model_performance (source = mode); None: not.
        self.mode, self.equity_quote = mode, equity_quote
        self.store = store
        self.candles = candles
        self.setups = setups
        self.timeframe = timeframe
        self.step_ms = timeframe_ms(timeframe)
        self.horizons = tuple(h for h in HORIZONS if h in horizons)
        self.neighbours = neighbours
        self.batch = batch
        self.embedder = embedder if embedder is not None else EntryEmbedder.default()
        self.library = library if library is not None else PatternLibrary()
        self.stats = LearningStats()
        self.upstream_stopped = upstream_stopped
        # Whether the pgvector columns are filled and indexed: similar setups are then asked of
        # PostgreSQL. Prepared in the background (a backfill and index builds can take minutes).
        self.pgvector = False
        self._vectors: asyncio.Task[None] | None = None
        # Trades below these ids need nothing more (tracked on every horizon, analysed).
        self.next_track_id = 0
        self.next_analysis_id = 0
        self._beat: Callable[[], None] = lambda: None  # the liveness beat, once running
        # Trades handed over at their close (note_closed), under a provisional negative id until
        # their trade_memory row is learned: (symbol, entry ms, exit ms) -> provisional id.
        self.handover = Handover(setups, self.embedder)
        self.view = DrainingView(self.handover)  # what the decision step reads
        # Wakes the loop early (a replay waiting on loss penalties); notified after every pass.
        self._wake = asyncio.Event()
        self._passed = asyncio.Condition()
        self._rebuilt = asyncio.Event()  # a replay's first bars wait for the rebuilt memory
        # Replay trades below this id (the first one after this process started) are earlier
        # sessions'; set at the first rebuild.
        self._session_first_id = 0
        self._stale = False
        self.running = False
        # Trades whose analysis raised: logged once, retried by the next process.
        self.failed: set[int] = set()

    # --- the task ------------------------------------------------------------------------------
    async def run(self, ctx: ServiceContext) -> None:
        self._beat = ctx.beat
        self.running = True
        try:
            await self._run(ctx)
        finally:
            self.running = False
            self._rebuilt.set()  # nobody waits on a task that is not there

    async def _run(self, ctx: ServiceContext) -> None:
        await self.rebuild()  # from the tables, into fresh state: a restart after a crash too
        while not ctx.stopping.is_set():
            self._wake.clear()  # before the pass: a call during it brings the next one at once
            await self._guarded_pass()
            ctx.beat()
            interval = ctx.config.current.memory.learning_interval_s
            ctx.liveness.beat(ctx.name, quiet_for_s=interval)
            # The interval, a replay's decision step calling, or the stop.
            waits = [asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(ctx.stopping.wait())]
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()
        # What closed during the last interval and at the stop itself (a replay's last exits).
        if self.upstream_stopped is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(UPSTREAM_WAIT_S):
                    await self.upstream_stopped.wait()
        await self._guarded_pass()
        if self._vectors is not None and not self._vectors.done():
            self._vectors.cancel()  # resumable: the next start backfills and builds what is left
            with contextlib.suppress(asyncio.CancelledError):
                await self._vectors

    def note_closed(self, trade: ClosedTrade) -> None:
        """The executor's hook: a trade closed just now goes into the pattern memory at once
        (huracan/analysis/handover.py)."""
        self.handover.note_closed(trade)

    async def ready_for(self, as_of_ms: int) -> None:
        """For a replay's decision step: returns once every loss penalty the bar closing at
        `as_of_ms` would know live is in the view (at most READY_WAIT_S, then it goes on)."""
        if not self.running:  # a harness without the learning task: no penalty will come
            return
        try:
            async with asyncio.timeout(READY_WAIT_S):
                await self._rebuilt.wait()
                while self.handover.due_before(as_of_ms):
                    async with self._passed:
                        self._wake.set()
                        await self._passed.wait()
        except TimeoutError:
            late = [t for t, known in self.handover.penalties_due.items() if known < as_of_ms]
            log.warning("loss analyses late for a replay bar; deciding without them", trades=late[:10])
            for trade_id in late:
                self.handover.settled(trade_id)

    async def _prepare_vectors(self) -> None:
        try:
            await prepare_pgvector(self.store.pool)
        except Exception:
            log.exception("pgvector preparation failed; similarity search stays in process")
            return
        self.pgvector = True

    async def _guarded_pass(self) -> None:
        """A pass whose failure (a database hiccup, a defect) is logged and retried at the next
        interval: learning is never a reason to stop trading."""
        try:
            if self._stale:  # memory ran ahead of what a failed pass committed: start from rows
                await self.rebuild()
                self._stale = False
            await self.learn_pass()
        except Exception:
            self.stats.failed_passes += 1
            self._stale = True
            log.exception("learning pass failed; the next one starts from the tables again")
        async with self._passed:
            self._passed.notify_all()

    async def rebuild(self) -> None:
        """The library and the nearest-setups view from the stored trades and patterns, into
        fresh state (the setups object shared with the decision step is refilled in place)."""
        started = time.perf_counter()
        if not self._session_first_id:  # first thing: this session's trades come after it
            self._session_first_id = await self.store.max_trade_id() + 1
        self.library = PatternLibrary(radius=self.library.radius)
        self.next_track_id = self.next_analysis_id = 0
        self.failed.clear()
        if self._vectors is None or self._vectors.done():
            self.store.pgvector = self.pgvector = False
            if await pgvector_available(self.store.pool):
                self.store.pgvector = True  # written from now on; older rows are backfilled
                self._vectors = asyncio.create_task(self._prepare_vectors(), name="pgvector-prepare")
        version = self.embedder.version
        forgotten = await self.store.forget_other_embeddings(version)
        if forgotten:
            log.warning("trades of another embedding basis go back to the learning queue", trades=forgotten)
        for pattern_id, centroid in await self.store.patterns(version):
            self.library.add_pattern(pattern_id, centroid)
        learned = await self.store.learned(version)
        for i, trade in enumerate(learned):
            outcome = TradeOutcome(
                trade.trade_id, trade.pnl_bps, trade.hold_ms, trade.exit_time_ms, trade.pnl_bps > 0
            )
            self.library.record(trade.pattern_id, outcome, None, move_centroid=False)
            if trade.penalty is not None:
                self.library.record_penalty(trade.pattern_id, trade.trade_id, trade.penalty)
            if trade.best_move_bps is not None and trade.best_after_entry_ms is not None:
                self.library.record_post_exit(
                    trade.pattern_id, trade.trade_id, trade.best_move_bps, trade.best_after_entry_ms
                )
            if i % REBUILD_CHUNK == REBUILD_CHUNK - 1:
                self._beat()
                await asyncio.sleep(0)
        # A replay starts history over: earlier replays' trades of the same days would be a
        # memory of another run, so its agent starts from the other modes' trades only (a
        # replay on a fresh database and a second one on the same database decide alike).
        first = self._session_first_id
        seen = [t for t in learned if not (self.fresh_replay and t.mode == "replay" and t.trade_id < first)]
        # The index over every trade is built off the event loop, then swapped in at once.
        fresh = self.setups.empty_like()
        if seen:
            await asyncio.to_thread(
                fresh.add_trades,
                [t.trade_id for t in seen],
                np.stack([t.embedding for t in seen]),
                [t.pnl_bps for t in seen],
                [t.pnl_bps > 0 for t in seen],
                [1.0 - (t.penalty or 0.0) for t in seen],
                exit_time_ms=[t.exit_time_ms for t in seen],
                known_ms=[t.exit_time_ms + HORIZONS[ANALYSIS_HORIZON] for t in seen],
            )
        self.handover.carry_into(fresh)  # no await between: nothing is handed over meanwhile
        self.setups.adopt(fresh)
        self._rebuilt.set()
        # Statistics are derived: write them once more in case the last process died between passes.
        await self.store.save_stats([self.library.stats(p) for p in self.library.pattern_ids()])
        self.stats.rebuilt_trades = len(learned)
        self.stats.rebuild_s = time.perf_counter() - started
        log.info(
            "pattern library rebuilt",
            patterns=len(self.library),
            trades=len(learned),
            seconds=round(self.stats.rebuild_s, 3),
            embedding=version,
            pgvector=self.pgvector,
        )

    async def learn_pass(self) -> None:
        self.handover.drain()
        newest = await self.store.max_trade_id()
        drained = False
        while not drained:  # batch by batch; each awaits the database, so bars go on between
            drained = await self.learn_new()
            self._beat()
        await self.track(newest)
        await self.analyse()
        # Below both bounds every trade is learned, tracked to 4 h and analysed (or breakeven,
        # or failed: those are retried by the next process): later passes skip them.
        self.next_analysis_id = max(self.next_analysis_id, min(self.next_track_id, newest + 1))

    # --- the steps -----------------------------------------------------------------------------
    async def learn_new(self) -> bool:
        """Embed and assign the trades not yet in a pattern; True when the queue is empty."""
        trades = await self.store.unlearned(self.batch)
        if not trades:
            return True
        # A day more than the warm-up: a series with holes (venue outages) still warms up.
        series = await self._series(
            trades, before_ms=WARMUP_BARS * self.step_ms + DAY_MS, after_ms=self.step_ms
        )
        embeddings = self.embedder.embed(np.stack([t.entry_features[:MARKET_WIDTH] for t in trades]))
        regimes = exit_regimes(trades, series, self.step_ms)
        learned: list[Learned] = []
        touched: set[int] = set()
        for trade, embedding, exit_regime in zip(trades, embeddings, regimes, strict=True):
            if self.library.needs_new_pattern(embedding):
                pattern_id = await self.store.new_pattern(
                    embedding, self.embedder.version, trade.entry_regime
                )
                self.library.add_pattern(pattern_id, embedding)
                self.stats.new_patterns += 1
            else:
                nearest = self.library.nearest_pattern(embedding)
                assert nearest is not None  # a library that needs no new pattern is not empty
                pattern_id = nearest[0]
            hold_ms = trade.exit_time_ms - trade.entry_time_ms
            outcome = TradeOutcome(trade.trade_id, trade.pnl_bps, hold_ms, trade.exit_time_ms, trade.won)
            self.library.record(pattern_id, outcome, embedding)
            if not self.handover.learned(
                trade.symbol, trade.entry_time_ms, trade.exit_time_ms, trade.trade_id
            ):
                self.setups.add_trade(
                    trade.trade_id, embedding, trade.pnl_bps, trade.won, exit_time_ms=trade.exit_time_ms
                )
            touched.add(pattern_id)
            learned.append(Learned(trade.trade_id, embedding, exit_regime, pattern_id))
        await self.store.save_learned(learned, [self.library.stats(p) for p in sorted(touched)])
        self.stats.learned += len(learned)
        if self.equity_quote is not None:
            await record_trade_days(
                self.store.pool,
                exchange=self.store.exchange,
                mode=self.mode,
                days={(t.model_version, utc_day(t.exit_time_ms)) for t in trades},
                first_id=self._session_first_id if self.fresh_replay else 0,
                equity_quote=self.equity_quote,
            )
        return len(trades) < self.batch

    async def track(self, newest: int) -> None:
        """Post-exit rows for every horizon whose bars are stored (a page of trades a pass);
        `newest`: the highest trade id when the pass began."""
        pending = await self.store.untracked(self.next_track_id, self.horizons, TRACK_PAGE)
        latest: dict[str, int | None] = {}
        for symbol in {t.symbol for t, _ in pending}:
            latest[symbol] = await self.store.latest_bar_ms(symbol, self.timeframe)
        newest_bar = max((v for v in latest.values() if v is not None), default=None)
        due: list[tuple[TradeFacts, list[str]]] = []
        settled: dict[int, int] = {}  # horizons settled without a row: given up
        for trade, missing in pending:
            covered = latest[trade.symbol]
            ready = []
            for h in missing:
                end = trade.exit_time_ms + HORIZONS[h]
                if covered is not None and covered + self.step_ms >= end:
                    ready.append(h)
                elif newest_bar is not None and newest_bar - end > GIVE_UP_AFTER_MS:
                    settled[trade.trade_id] = settled.get(trade.trade_id, 0) + 1
            if ready:
                due.append((trade, ready))
        rows: list[tuple[int, PostExit]] = []
        if due:
            series = await self._series(
                [t for t, _ in due], before_ms=DAY_MS, after_ms=max(HORIZONS.values())
            )
            for i, (trade, ready) in enumerate(due):
                bars = series[trade.symbol]
                for horizon in ready:
                    tracked = track_post_exit(trade, bars, horizon, self.step_ms)
                    if tracked is not None:
                        rows.append((trade.trade_id, tracked))
                    # Covered yet untrackable (the data has a hole over the whole window), or
                    # tracked: either way nothing more to wait for.
                    if tracked is not None or horizon_covered(trade, bars, horizon, self.step_ms):
                        settled[trade.trade_id] = settled.get(trade.trade_id, 0) + 1
                if i % 200 == 199:
                    await asyncio.sleep(0)
            await self.store.save_post_exit(rows)
            self.stats.tracked += len(rows)
        remaining = [t.trade_id for t, m in pending if settled.get(t.trade_id, 0) < len(m)]
        if remaining:
            self.next_track_id = min(remaining)
        elif len(pending) == TRACK_PAGE:  # a full page, all settled: the next page follows it
            self.next_track_id = pending[-1][0].trade_id + 1
        else:
            self.next_track_id = max(self.next_track_id, newest + 1)

    async def analyse(self) -> None:
        """Win and loss analyses of the learned trades whose analysis horizon is tracked."""
        pending = [
            (t, p)
            for t, p in await self.store.unanalysed(self.next_analysis_id)
            if t.trade_id not in self.failed
        ]
        if not pending:
            return
        series = await self._series(
            [t for t, _ in pending], before_ms=DAY_MS, after_ms=HORIZONS[ANALYSIS_HORIZON]
        )
        touched: set[int] = set()
        for trade, pattern_id in pending:
            try:
                await self._analyse_one(trade, pattern_id, series[trade.symbol])
            except (
                ValueError,
                ArithmeticError,
                IndexError,
                TypeError,
                KeyError,
                asyncpg.DataError,
                asyncpg.IntegrityConstraintViolationError,
            ) as exc:
                # A defect in the analysis of one trade must not stop learning from the others.
                self.failed.add(trade.trade_id)
                self.handover.settled(trade.trade_id)
                self.stats.failed += 1
                log.error("trade analysis failed", trade_id=trade.trade_id, error=repr(exc))
                continue
            if pattern_id is not None:
                touched.add(pattern_id)
        await self.store.save_stats([self.library.stats(p) for p in sorted(touched)])

    async def _analyse_one(self, trade: TradeFacts, pattern_id: int | None, series: CandleSeries) -> None:
        """pattern_id None: a trade without the entry state (an adopted order's position) is
        explained without similar setups and teaches no pattern."""
        if len(trade.entry_features) < MARKET_WIDTH:  # unknown features, not zeros: attribution skips NaN
            trade = dataclasses.replace(trade, entry_features=np.full(MARKET_WIDTH, np.nan))
        post = track_post_exit(trade, series, ANALYSIS_HORIZON, self.step_ms)
        similar = await self._similar(trade) if pattern_id is not None else SimilarSetups.empty(MARKET_WIDTH)
        if post is not None and pattern_id is not None:
            best_at = (
                post.optimal_exit_time_ms if post.optimal_exit_time_ms is not None else post.best_price_at_ms
            )
            best_move, after_ms = best_move_from_entry(
                trade.sign,
                trade.entry_price,
                trade.exit_price,
                trade.entry_time_ms,
                post.optimal_exit_price,
                best_at,
            )
            self.library.record_post_exit(pattern_id, trade.trade_id, best_move, after_ms)
        if trade.won:
            # The base rate of what had exited by the entry: no later trade judges this one.
            base = self.setups.base_win_rate(trade.entry_time_ms)
            history = (
                None
                if pattern_id is None
                else self.library.history(pattern_id, trade.entry_time_ms, exclude=trade.trade_id)
            )
            win = analyze_win(
                trade, series, post, similar, 0.5 if base is None else base, self.step_ms, history
            )
            await self.store.save_win(trade.trade_id, win)
            self.stats.wins_analysed += 1
            return
        loss = analyze_loss(trade, series, post, similar, self.step_ms)
        await self.store.save_loss(trade, loss)
        self.handover.settled(trade.trade_id)
        if pattern_id is not None:
            self.library.record_penalty(pattern_id, trade.trade_id, loss.confidence_penalty)
            # Known from the analysis horizon on: a bar before it saw the trade at full weight.
            known_ms = trade.exit_time_ms + HORIZONS[ANALYSIS_HORIZON]
            with contextlib.suppress(KeyError):  # an earlier replay's trade is not in the view
                self.setups.set_weight(trade.trade_id, 1.0 - loss.confidence_penalty, known_ms)
        self.stats.losses_analysed += 1
        reasons = self.stats.loss_reasons
        reasons[loss.primary_failure_reason] = reasons.get(loss.primary_failure_reason, 0) + 1

    async def _similar(self, trade: TradeFacts) -> SimilarSetups:
        """The nearest past setups that had exited when this trade was entered (what was known)."""
        embedding = self.embedder.embed(trade.entry_features[None, :MARKET_WIDTH])[0]
        if self.pgvector:  # one filtered k-nearest query, exact about the exit times
            found = await similar_before(
                self.store.pool,
                embedding,
                trade.entry_time_ms,
                self.neighbours,
                exclude=trade.trade_id,
                exchange=self.store.exchange,
                replays_before=self._session_first_id if self.fresh_replay else 0,
            )
            known = [(won, pnl, features) for _, won, pnl, features in found]
        else:  # in process, among the trades that had exited by the entry
            ids, _ = self.setups.similar(embedding, self.neighbours, before_ms=trade.entry_time_ms)
            known = await self.store.outcomes(ids[ids != trade.trade_id].tolist(), trade.entry_time_ms)
        return SimilarSetups.of(known, MARKET_WIDTH)

    async def _series(
        self, trades: Sequence[TradeFacts], *, before_ms: int, after_ms: int
    ) -> dict[str, CandleSeries]:
        """Per symbol, the bars of every trade's [entry - before, exit + after], a bar more."""
        return await bars_around(
            self.candles,
            self.store.exchange,
            self.timeframe,
            trades,
            before_ms=before_ms,
            after_ms=after_ms + self.step_ms,
        )

    def summary(self) -> str:
        return self.stats.summary(patterns=len(self.library))
