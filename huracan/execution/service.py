"""The trading task: the risk gate's loop over bars and intents, in bar order.

For each closed bar t:
1. the venue's fills for bar t (simulated: the fill model on bar t, for what step 5 of bar t-1
   left; live: the venue is asked),
2. the position book marked at t's close, and the decision step let go on bar t (it waits for
   this step, so its context is current; it normally runs before 3),
3. stop-loss, take-profit and time exits through the gate, the circuit breaker checked, maker
   entries re-priced or given up,
4. the decision step's intents for bar t taken off the intent queue, through the gate, until its
   BarDecided(t) marker,
5. shadow and replay, where bar t+1's open came with bar t (CandleClosed.next_opens): the bar's
   market orders fill at that open now, as a live venue fills them at once, and not on bar
   t+1's path from its close to the decision (the same fills, the same book at t+1's close),
6. the bar's orders answered and its writes in the journal (Executor.flush): only then does bar
   t+1 begin, so a market order decided on t's close fills at t+1's open, as in training.

The gate never waits for a round trip: approved orders are registered at once and written ahead
and sent behind it (huracan/execution/submitter.py).

This task is the intent queue's only consumer. Live and shadow also poll working orders every
`order_poll_interval_s`, reconcile open orders and balances, and read the operator's
`huracan halt|reduce|resume` from the database. Stopping cancels every open order of our
symbols on the venue.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from decimal import Decimal

from huracan.core.bus import Topic
from huracan.core.events import CandleClosed
from huracan.core.intents import BarDecided, OrderIntent
from huracan.core.numbers import decimal_of
from huracan.daemon.service import ServiceContext
from huracan.execution.reconcile import Reconciler, cancel_all
from huracan.execution.sim_venue import SimulatedVenue
from huracan.logs import get_logger
from huracan.risk.calendar import trading_day
from huracan.risk.gate import RiskGate
from huracan.risk.rates import TickerSource, venue_rate

log = get_logger("huracan.execution.service")

OPERATOR_POLL_S = 2.0
RATE_REFRESH_S = 60.0


class TradingService:
    name = "trade"

    def __init__(
        self,
        gate: RiskGate,
        *,
        candles: Topic[CandleClosed],
        intents: asyncio.Queue[OrderIntent | BarDecided],
        symbols: Sequence[str],
        step_ms: int,
        simulated: SimulatedVenue | None,
        reconciler: Reconciler,
        max_hold_bars: int,
        poll_interval_s: float,
        balances_interval_s: float,
        decision_wait_s: float | None,
        fresh_session: bool,
        rates: TickerSource | None = None,
    ) -> None:
        """decision_wait_s: how long to wait for the decision step's marker of a bar (None: as
        long as it takes, which replay wants; live must not let a stuck decision step hold up
        its exits). fresh_session: replay starts history over, so an earlier replay's orders
        and positions are closed off instead of restored. rates: where live and shadow read the
        quote -> account currency rate (None: the configured rate stays)."""
        self.gate = gate
        self.executor = gate.executor
        self.inbox = candles.subscribe(self.name, maxsize=64)
        self.intents = intents
        self.symbols = tuple(symbols)
        self.step_ms = step_ms
        self.simulated = simulated
        self.reconciler = reconciler
        self.max_hold_bars = max_hold_bars
        self.poll_interval_s = poll_interval_s
        self.balances_interval_s = balances_interval_s
        self.decision_wait_s = decision_wait_s
        self.fresh_session = fresh_session
        self.rates = rates
        self._started = False
        self.marked_through = -1
        self._marked = asyncio.Condition()
        self.bars = 0
        # Set once a run has stopped and written what it had: the learning task's last pass
        # waits for it, so the trades closed at the end are learned too.
        self.stopped = asyncio.Event()
        self.traded_through = -1  # open time of the last bar whose on_bar has returned
        self._traded = asyncio.Condition()

    async def positions_ready(self, open_time_ms: int) -> None:
        """For the decision step: returns once the book has taken bar `open_time_ms`."""
        async with self._marked:
            await self._marked.wait_for(lambda: self.marked_through >= open_time_ms)

    async def run(self, ctx: ServiceContext) -> None:
        self.stopped.clear()
        executor = self.executor
        # A restart of this task (the supervisor runs it again after a crash) starts from the
        # journal, like a restart of the process: nothing held in memory is trusted twice.
        executor.reset()
        self.gate.reconciled = False
        fresh = self.fresh_session and not self._started
        self._started = True
        if fresh:
            orders, positions = await executor.journal.abandon_session(
                executor.now_ms(), "replay session ended"
            )
            if orders or positions:
                log.info("earlier replay session closed off", orders=orders, positions=positions)
        await self.gate.start(fresh_session=fresh)
        await self._refresh_rate()
        await self.reconciler.reconcile_at_start()  # raises if the venue cannot be reconciled
        self.gate.reconciled = True
        next_poll = next_operator = time.monotonic()
        next_balances = next_rate = time.monotonic() + self.balances_interval_s
        try:
            while not ctx.stopping.is_set():
                ctx.liveness.beat(ctx.name, quiet_for_s=self.poll_interval_s)
                try:
                    async with asyncio.timeout(self.poll_interval_s):  # see _take_decisions
                        event = await self.inbox.get()
                except TimeoutError:
                    event = None
                if event is not None:
                    await self.on_bar(event, ctx)
                now = time.monotonic()
                if now >= next_operator:
                    await self.gate.poll_operator()
                    next_operator = now + OPERATOR_POLL_S
                if self.simulated is None and now >= next_poll:
                    await self.reconciler.poll_orders()
                    await self.gate.maintain_makers()
                    next_poll = now + self.poll_interval_s
                if self.simulated is None and now >= next_balances:
                    await self.reconciler.check_balances()
                    next_balances = now + self.balances_interval_s
                if now >= next_rate:
                    await self._refresh_rate()
                    next_rate = now + RATE_REFRESH_S
                ctx.beat()
            # Bars already taken in (at most the inbox) are settled before stopping, so a replay's
            # last fills and exits are not lost to the stop it triggers.
            while not self.inbox.empty():
                await self.on_bar(self.inbox.get_nowait(), ctx, stopping=True)
        finally:
            await self._release_waiters()
            if self.simulated is None:
                # Stopping (or crashing) leaves no order of ours working on the venue.
                try:
                    canceled = await cancel_all(executor, list(self.symbols), "daemon stopping")
                    log.info("open orders canceled at stop", count=canceled)
                except Exception:
                    log.exception("cancelling open orders at stop failed; reconciliation will see them")
            try:
                await executor.flush()
            except Exception:
                # The venue still knows what was not written: start-up reconciliation finds it.
                log.exception("journal writes left unwritten at stop")
            self.stopped.set()

    async def _refresh_rate(self) -> None:
        if self.rates is None or not self.executor.markets:
            return
        quote = next(iter(self.executor.markets.values())).quote
        rate = await venue_rate(self.rates, quote=quote, account=self.gate.account_currency)
        if rate is not None:
            self.gate.set_rate(rate)

    async def on_bar(self, event: CandleClosed, ctx: ServiceContext, *, stopping: bool = False) -> None:
        executor, gate = self.executor, self.gate
        self.bars += 1
        await executor.flush()  # the last bar's writes first (and any failure of theirs surfaces here)
        executor.book.new_day(trading_day(event.open_time_ms + self.step_ms, gate.timezone))
        if self.simulated is not None:
            for candle in event.candles.values():
                self.simulated.on_bar(candle)
        await executor.sync()
        for symbol, candle in event.candles.items():
            executor.book.mark(symbol, decimal_of(candle.close))
        executor.book.close_bar()
        # The book has the bar: the decision step decides on it now (this yield lets it run
        # first, when it is waiting for the bar: the CPU of the exits below is then not in its
        # latency), then the engine's exits and the decisions go to the gate in that order. The
        # bar's fills go to the journal once the gate has had the decisions.
        async with self._marked:
            self.marked_through = event.open_time_ms
            self._marked.notify_all()
        await asyncio.sleep(0)
        exiting = executor.symbols_with(side="sell")  # an exit placed below is for its own symbol
        for symbol, candle in event.candles.items():
            if symbol not in executor.book.positions or symbol in exiting:
                continue
            reason = executor.book.exit_reason_on_bar(
                symbol, low=candle.low, high=candle.high, max_hold_bars=self.max_hold_bars
            )
            if reason is not None:
                await gate.exit_position(symbol, reason, event.open_time_ms, decimal_of(candle.close))
        await gate.check_breaker()
        await gate.maintain_makers()
        if self.simulated is not None:
            self.simulated.forget_closed()
        # A bar whose decisions did not all come (stopping, or a late decision step in shadow)
        # leaves its market orders to the next bar's close: the late step decides on this
        # bar's book, not on the next open's.
        decided = not stopping and await self._take_decisions(event.open_time_ms, ctx)
        if decided and self.simulated is not None and event.next_opens and executor.orders:
            await self._fill_at_next_open(event, self.simulated)
        await executor.flush()
        async with self._traded:
            self.traded_through = event.open_time_ms
            self._traded.notify_all()

    async def _fill_at_next_open(self, event: CandleClosed, venue: SimulatedVenue) -> None:
        """The next bar has opened: the simulated venue fills what takes at its open, and the
        book has those fills before the bar closes. The book's day moves first to the next
        bar's, as its on_bar would move it before taking these fills."""
        executor = self.executor
        await executor.flush()  # every order of the bar has reached the venue (and its failure surfaces)
        opened = event.open_time_ms + self.step_ms
        executor.book.new_day(trading_day(opened + self.step_ms, self.gate.timezone))
        for symbol, price in event.next_opens.items():
            if math.isfinite(price) and price > 0:
                venue.on_open(symbol, opened, price)
            else:  # its orders fill when the bar closes
                log.warning("unusable next open ignored", symbol=symbol, price=price, opens_ms=opened)
        await executor.sync()

    async def bar_traded(self, open_time_ms: int) -> None:
        """For a replay's ingest: returns once bar `open_time_ms` has been traded (its fills,
        exits and decisions through the gate, its writes flushed)."""
        async with self._traded:
            await self._traded.wait_for(lambda: self.traded_through >= open_time_ms)

    async def _take_decisions(self, open_time_ms: int, ctx: ServiceContext) -> bool:
        """Intents of bar `open_time_ms` through the gate, up to the decision step's marker;
        False when it did not come (late, or stopping)."""
        deadline = None if self.decision_wait_s is None else time.monotonic() + self.decision_wait_s
        while not ctx.stopping.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            ctx.liveness.beat(
                ctx.name, quiet_for_s=timeout
            )  # waiting on the decision step is not being stuck
            try:
                # asyncio.timeout, not wait_for: wait_for wraps the get in a task of its own,
                # two more event loop turns between the decision and the gate.
                async with asyncio.timeout(timeout):
                    item = await self.intents.get()
            except TimeoutError:
                if deadline is not None and time.monotonic() >= deadline:
                    log.warning("decision step late; bar moves on", bar_open_time_ms=open_time_ms)
                    return False
                continue
            if isinstance(item, BarDecided):
                if item.open_time_ms >= open_time_ms:
                    return True
                continue
            await self.gate.handle(item)
        return False

    async def _release_waiters(self) -> None:
        async with self._marked:
            self.marked_through = 2**62
            self._marked.notify_all()
        async with self._traded:  # a replay's ingest must not wait for a bar nobody will trade
            self.traded_through = 2**62
            self._traded.notify_all()

    def summary(self) -> str:
        stats = self.executor.stats
        trades = stats.trades
        pnl = sum((t.pnl_quote for t in trades), Decimal(0))
        wins = sum(1 for t in trades if t.pnl_quote > 0)
        gross_win = sum((t.pnl_quote for t in trades if t.pnl_quote > 0), Decimal(0))
        gross_loss = -sum((t.pnl_quote for t in trades if t.pnl_quote < 0), Decimal(0))
        factor = f"{gross_win / gross_loss:.2f}" if gross_loss else "n/a"
        rate = self.gate.quote_to_account
        by_reason: dict[str, int] = {}
        for t in trades:
            by_reason[t.exit_reason] = by_reason.get(t.exit_reason, 0) + 1
        denied = ", ".join(f"{k} {v}" for k, v in sorted(self.gate.stats.denied.items())) or "none"
        return (
            f"trading: {len(trades)} trades, {wins} won ({(wins / len(trades) if trades else 0):.0%}), "
            f"PnL {pnl:.2f} quote = {pnl * rate:.2f} account, profit factor {factor}, "
            f"fees {stats.fees_quote:.2f}; exits: {by_reason or 'none'}; "
            f"orders {stats.placed} placed, {stats.rejected} refused, {stats.unknown} unknown; "
            f"maker share {stats.maker_share:.0%} (saved {stats.maker_saved_quote:.2f} quote; "
            f"{stats.reprices} re-prices, {stats.fallbacks} taker fallbacks, {stats.abandoned} abandoned); "
            f"gate: {self.gate.stats.approved} approved, {self.gate.stats.scaled} scaled, denied: {denied}; "
            f"open positions {len(self.executor.book.positions)}, max drawdown {self.executor.book.max_drawdown:.2%}"
        )
