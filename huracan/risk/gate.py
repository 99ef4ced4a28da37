"""The risk gate: every order the engine sends passes here, and only here.

Agent entries and exits, stop-losses, take-profits, time exits, circuit-breaker flattening and
maker re-prices all become OrderIntents that `handle` assesses with the RiskManager (pure) and,
when approved, hands to the executor inside `gate_pass()`. Denials and scale-downs are
`risk_events` rows. Cancels are never denied. The trading state (ACTIVE, REDUCING, HALTED) is
persisted; entering REDUCING or HALTED cancels working entries (HALTED: every open order of our
symbols on the venue), and the circuit breaker halts and, by default, flattens every position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

import asyncpg

from huracan.core.intents import AgentAction, OrderIntent
from huracan.exchange.errors import ExchangeError
from huracan.execution.approval import ApprovedOrder, gate_pass
from huracan.execution.executor import Executor
from huracan.execution.maker import MakerRules, maker_actions, maker_price
from huracan.execution.positions import EntryContext
from huracan.execution.reconcile import cancel_all
from huracan.logs import get_logger
from huracan.risk.calendar import day_start_ms, trading_day
from huracan.risk.manager import RATE_WINDOW_MS, RiskManager
from huracan.risk.portfolio import Holding, Portfolio, RiskAssessment, TradingState
from huracan.risk.state_store import load_state, record_denial, set_state

log = get_logger("huracan.risk.gate")

# The agent's exits are "signal" exits in the trade memory.
EXIT_REASONS = {"agent": "signal"}


@dataclass(slots=True)
class GateStats:
    approved: int = 0
    denied: dict[str, int] = field(default_factory=dict)
    scaled: int = 0
    shadow_skipped: int = 0


class RiskGate:
    def __init__(
        self,
        manager: RiskManager,
        executor: Executor,
        pool: asyncpg.Pool,
        *,
        mode: str,
        symbols: tuple[str, ...],
        capital: Decimal,
        quote_to_account: Decimal,
        timezone: str,
        maker_entries: bool,
        maker: MakerRules,
        flatten_on_breaker: bool,
        account_currency: str = "GBP",
    ) -> None:
        self.manager = manager
        self.executor = executor
        self.pool = pool
        self.mode = mode
        self.symbols = symbols
        self.capital = capital
        self.quote_to_account = quote_to_account
        self.timezone = timezone
        self.maker_entries = maker_entries
        self.maker = maker
        self.flatten_on_breaker = flatten_on_breaker
        self.account_currency = account_currency
        self.state = TradingState.ACTIVE
        self.reconciled = False
        self.breaker_reset_ms = 0
        self.realised_before_reset_window = Decimal(0)  # account ccy, trades since reset before start
        self.realised_today_before = Decimal(0)  # account ccy, trades of today before start
        self.start_day = 0
        self._tally_day, self._tally, self._tallied = -1, Decimal(0), 0
        self._marks_day = -1
        self._day_marks: dict[str, tuple[int, Decimal]] = {}
        self._derived_at: tuple[int, int] = (-1, -1)  # (book version, day) of _derived
        self._derived: tuple[Decimal, Decimal, dict[str, Holding]] = (Decimal(0), Decimal(0), {})
        self.stats = GateStats()

    @property
    def now_ms(self) -> int:
        return self.executor.now_ms()

    async def start(self, *, fresh_session: bool = False) -> None:
        """Load the persisted state. fresh_session (replay): a new simulated session starts ACTIVE
        with the breaker's count at zero, whatever an earlier replay ended in."""
        if fresh_session:
            await set_state(
                self.pool,
                TradingState.ACTIVE,
                reason="replay_session",
                by="replay",
                mode=self.mode,
                now_ms=self.now_ms,
                reset_breaker=True,
            )
        record = await load_state(self.pool, self.mode)
        self.state = record.state
        self.breaker_reset_ms = record.breaker_reset_ms
        self.start_day = trading_day(self.now_ms, self.timezone)
        self.executor.book.new_day(self.start_day)
        if not fresh_session:
            # Replay's clock is in the past: an earlier replay's trades are not this session's.
            journal = self.executor.journal
            self.realised_before_reset_window = await journal.realised_since(self.breaker_reset_ms)
            self.realised_today_before = await journal.realised_since(
                day_start_ms(self.now_ms, self.timezone)
            )
        if self.state is not TradingState.ACTIVE:
            log.warning("trading state restored", state=self.state.value, reason=record.reason, by=record.by)

    # --- the portfolio as the rules see it ------------------------------------------------------
    def portfolio(self) -> Portfolio:
        now = self.now_ms
        book = self.executor.book
        rate = self.quote_to_account
        session = self._session_realised()
        day = trading_day(now, self.timezone)
        if day != self._marks_day:
            # What open positions were worth as the day began (at the first look of the day):
            # the day's PnL counts only what they gained or lost since.
            self._marks_day = day
            marks = book.unrealised_by_symbol()
            self._day_marks = {s: (p.opened_ms, marks[s]) for s, p in book.positions.items()}
        if self._derived_at != (book.version, day):
            # The sums over the positions are the costly part, and the gate asks for them on every
            # intent: kept until the book changes.
            unrealised = unrealised_today = Decimal(0)
            marks = book.unrealised_by_symbol()
            for symbol, position in book.positions.items():
                value = marks[symbol]
                start_opened, at_start = self._day_marks.get(symbol, (None, Decimal(0)))
                unrealised += value
                unrealised_today += value - (at_start if start_opened == position.opened_ms else Decimal(0))
            self._derived = (unrealised, unrealised_today, book.holdings())
            self._derived_at = (book.version, day)
        unrealised, unrealised_today, held = self._derived
        holdings = dict(held)
        exiting = self.executor.symbols_with(side="sell")
        for symbol, position in book.positions.items():  # exits come and go without a fill
            working = symbol in exiting or position.exit_reason is not None
            if holdings[symbol].exit_working is not working:
                holdings[symbol] = replace(holdings[symbol], exit_working=working)
        # Trades of today closed before this start, when today is still the day we started on.
        before = self.realised_today_before if day == self.start_day else Decimal(0)
        today = before + self._realised_on(day)
        return Portfolio(
            now_ms=now,
            state=self.state,
            capital=self.capital,
            quote_to_account=rate,
            holdings=holdings,
            last_prices=book.last_prices,
            markets=self.executor.markets,
            pnl_today=today + unrealised_today * rate,
            pnl_since_reset=self.realised_before_reset_window + session + unrealised * rate,
            working_entries=self.executor.symbols_with(side="buy"),
            entry_notional=self._entry_notional(book.last_prices, rate),
            unresolved=self.executor.unresolved_symbols(),
            recent_orders_ms=self.executor.submits_since(now - RATE_WINDOW_MS),
        )

    def _entry_notional(self, last_prices: Mapping[str, Decimal], rate: Decimal) -> dict[str, Decimal]:
        """What each working entry still buys, in the account currency (Portfolio.entry_notional)."""
        notional: dict[str, Decimal] = {}
        for order in self.executor.orders.values():
            if order.side == "buy" and not order.is_terminal:
                price = order.limit_price or last_prices.get(order.symbol)
                if price is None:
                    approved = self.executor.approved.get(order.client_order_id)
                    price = approved.intent.reference_price if approved is not None else Decimal(0)
                value = order.remaining_quantity * price * rate
                notional[order.symbol] = notional.get(order.symbol, Decimal(0)) + value
        return notional

    def _realised_on(self, day: int) -> Decimal:
        """This session's realised PnL (account currency) of trades closed on trading day `day`,
        kept as a running sum: the gate asks for it on every intent."""
        closed = self.executor.stats.closed_account
        if day != self._tally_day:
            self._tally_day, self._tally, self._tallied = day, Decimal(0), 0
        for exit_ms, pnl in closed[self._tallied :]:
            if trading_day(exit_ms, self.timezone) == day:
                self._tally += pnl
        self._tallied = len(closed)
        return self._tally

    def _session_realised(self) -> Decimal:
        """Account currency, each trade at the rate of its close."""
        return self.executor.stats.realised_account

    def set_rate(self, rate: Decimal) -> None:
        """A new quote -> account rate (live and shadow read it from the venue)."""
        if rate != self.quote_to_account:
            log.info("account currency rate", rate=str(rate), previous=str(self.quote_to_account))
        self.quote_to_account = self.executor.quote_to_account = rate

    # --- the one path ---------------------------------------------------------------------------
    async def handle(self, intent: OrderIntent, *, decided_ms: int | None = None) -> RiskAssessment | None:
        """Assess one intent and, when approved, place it. None for intents that are never
        executed (an A/B challenger's shadow decisions)."""
        if intent.shadow:
            self.stats.shadow_skipped += 1
            return None
        if not self.reconciled:
            return self._deny(
                intent,
                RiskAssessment(False, "not_reconciled", 1.0, Decimal(0), "the venue is not reconciled yet"),
            )
        limit_price: Decimal | None = None
        use_maker = intent.side == "buy" and self.maker_entries
        if use_maker:
            limit_price = await self._maker_limit(intent.symbol)
            use_maker = limit_price is not None
        portfolio = self.portfolio()
        assessment = self.manager.assess(intent, portfolio, price=limit_price)
        if not assessment.allowed:
            self._deny(intent, assessment)
            if assessment.reason == "circuit_breaker":
                await self.trip_breaker()
            return assessment
        if assessment.scaled:
            self.stats.scaled += 1
            self._record(intent, assessment, "scaled_down")
        entry = None
        if intent.side == "buy":
            entry = EntryContext(
                intent.model_version,
                intent.confidence,
                intent.size_multiplier,
                intent.reference_price,
                intent.state,
                intent.regime,
            )
        if intent.side == "sell":
            # An exit ends the trade: an entry still working on the symbol must not buy back in.
            for working in [
                o for o in self.executor.orders.values() if o.symbol == intent.symbol and o.side == "buy"
            ]:
                await self.executor.cancel(working, f"exit: {intent.reason}")
                self.executor.finished.pop(working.client_order_id, None)
        approved = ApprovedOrder(
            intent,
            assessment.quantity,
            "limit" if use_maker else "market",
            "entry" if intent.side == "buy" else f"exit:{EXIT_REASONS.get(intent.reason, intent.reason)}",
            limit_price if use_maker else None,
            use_maker,
            entry,
            decided_ms if decided_ms is not None else self.now_ms,
        )
        with gate_pass():
            await self.executor.place(approved)
        self.stats.approved += 1
        return assessment

    def _record(self, intent: OrderIntent, assessment: RiskAssessment, decision: str) -> None:
        """A risk_events row for a verdict other than a plain approval: written behind, in line
        with the journal's writes (Executor.flush), so a denial never holds up the next intent."""
        self.executor.writer.later(
            record_denial,
            self.pool,
            mode=self.mode,
            intent=intent,
            decision=decision,
            reason_code=assessment.reason,
            risk_score=assessment.risk_score,
            detail=assessment.detail,
            now_ms=self.now_ms,
        )

    def _deny(self, intent: OrderIntent, assessment: RiskAssessment) -> RiskAssessment:
        self.stats.denied[assessment.reason] = self.stats.denied.get(assessment.reason, 0) + 1
        self._record(intent, assessment, "rejected")
        log.info(
            "order denied",
            symbol=intent.symbol,
            side=intent.side,
            reason=assessment.reason,
            detail=assessment.detail,
        )
        return assessment

    async def _maker_limit(self, symbol: str) -> Decimal | None:
        try:
            book = await self.executor.venue.fetch_top_of_book(symbol)
        except ExchangeError as exc:
            log.info("no book for a maker entry; taking instead", symbol=symbol, error=str(exc))
            return None
        return maker_price(book.bid, self.maker.offset_bps, self.executor.markets[symbol].tick_size)

    # --- exits the engine decides itself ---------------------------------------------------------
    async def exit_position(self, symbol: str, reason: str, bar_open_time_ms: int, price: Decimal) -> None:
        position = self.executor.book.positions.get(symbol)
        if position is None:
            return
        intent = OrderIntent(
            symbol=symbol,
            action=AgentAction.EXIT_POSITION,
            side="sell",
            size_multiplier=0.0,
            bar_open_time_ms=bar_open_time_ms,
            reference_price=price,
            model_version=position.entry.model_version,
            confidence=1.0,
            reason=reason,
        )
        await self.handle(intent)

    # --- trading state --------------------------------------------------------------------------
    async def change_state(
        self, state: TradingState, *, reason: str, by: str, reset_breaker: bool = False
    ) -> None:
        if state is self.state and not reset_breaker:
            return
        await set_state(
            self.pool,
            state,
            reason=reason,
            by=by,
            mode=self.mode,
            now_ms=self.now_ms,
            reset_breaker=reset_breaker,
        )
        await self.apply_state(state, reason=reason, breaker_reset_ms=self.now_ms if reset_breaker else None)

    async def apply_state(
        self, state: TradingState, *, reason: str, breaker_reset_ms: int | None = None
    ) -> None:
        """Act on a state (set here or by an operator through the database)."""
        previous, self.state = self.state, state
        if breaker_reset_ms is not None and breaker_reset_ms != self.breaker_reset_ms:
            self.breaker_reset_ms = breaker_reset_ms
            self.realised_before_reset_window = (
                await self.executor.journal.realised_since(breaker_reset_ms) - self._session_realised()
            )
        if state is previous:
            return
        log.warning("trading state changed", state=state.value, previous=previous.value, reason=reason)
        if state is TradingState.HALTED:
            canceled = await cancel_all(self.executor, list(self.symbols), f"halted: {reason}")
            log.warning("open orders canceled on halt", count=canceled)
        elif state is TradingState.REDUCING:
            for order in [o for o in self.executor.orders.values() if o.side == "buy"]:
                await self.executor.cancel(order, "reducing")

    async def trip_breaker(self) -> None:
        if self.state is TradingState.HALTED:
            return
        await self.change_state(TradingState.HALTED, reason="circuit_breaker", by="risk")
        if self.flatten_on_breaker:
            for symbol, position in list(self.executor.book.positions.items()):
                price = position.last_price or position.average_entry_price
                await self.exit_position(symbol, "circuit_breaker", 0, price)

    async def check_breaker(self) -> None:
        if self.state is not TradingState.HALTED and self.manager.breaker_tripped(self.portfolio()):
            await self.trip_breaker()

    async def poll_operator(self) -> None:
        """Pick up `huracan halt|reduce|resume` from the database."""
        record = await load_state(self.pool, self.mode)
        if record.state is not self.state or record.breaker_reset_ms != self.breaker_reset_ms:
            await self.apply_state(
                record.state,
                reason=f"{record.reason} ({record.by})",
                breaker_reset_ms=record.breaker_reset_ms,
            )

    # --- maker upkeep ---------------------------------------------------------------------------
    async def maintain_makers(self) -> None:
        executor = self.executor
        resting = {cid: o for cid, o in executor.orders.items() if o.post_only}
        if not resting:
            return
        bids: dict[str, Decimal] = {}
        for symbol in {o.symbol for o in resting.values()}:
            try:
                bids[symbol] = (await executor.venue.fetch_top_of_book(symbol)).bid
            except ExchangeError:
                continue
        actions = maker_actions(
            resting,
            {cid: o.created_ms for cid, o in resting.items()},
            {cid: executor.approved[cid].decided_ms for cid in resting if cid in executor.approved},
            {cid: executor.approved[cid].reprices for cid in resting if cid in executor.approved},
            bids,
            {s: r.tick_size for s, r in executor.markets.items()},
            self.now_ms,
            self.maker,
        )
        for action in actions:
            await self._maker_step(action.order.client_order_id, action.step, action.price)

    async def _maker_step(
        self, cid: str, step: Literal["reprice", "fallback", "abandon"], price: Decimal | None
    ) -> None:
        executor = self.executor
        order = executor.orders.get(cid)
        approved = executor.approved.get(cid)
        if order is None or approved is None:
            return
        await executor.cancel(order, f"maker {step}")
        executor.finished.pop(cid, None)
        remaining = order.remaining_quantity
        if order.status.value not in ("CANCELED", "EXPIRED") or remaining <= 0:
            return  # filled meanwhile, or the cancel is not confirmed yet: look again next time
        if step == "abandon" or self.state is not TradingState.ACTIVE:
            executor.stats.abandoned += 1
            log.info(
                "maker entry abandoned", client_order_id=cid, symbol=order.symbol, remaining=str(remaining)
            )
            return
        # The rest of the entry is new risk again: the RiskManager assesses it like any entry
        # (the part already filled is the position it continues, so it is not held against it).
        portfolio = self.portfolio()
        holdings = {s: h for s, h in portfolio.holdings.items() if s != order.symbol}
        assessment = self.manager.assess(
            approved.intent, replace(portfolio, holdings=holdings), price=price if step == "reprice" else None
        )
        if not assessment.allowed:
            executor.stats.abandoned += 1
            self._deny(approved.intent, assessment)
            return
        remaining = min(remaining, assessment.quantity)
        if step == "reprice":
            executor.stats.reprices += 1
            replacement = ApprovedOrder(
                approved.intent,
                remaining,
                "limit",
                approved.reason,
                price,
                True,
                approved.entry,
                approved.decided_ms,
                approved.reprices + 1,
            )
        else:
            executor.stats.fallbacks += 1
            replacement = ApprovedOrder(
                approved.intent,
                remaining,
                "market",
                approved.reason,
                None,
                False,
                approved.entry,
                approved.decided_ms,
                approved.reprices,
            )
        with gate_pass():
            await executor.place(replacement)
