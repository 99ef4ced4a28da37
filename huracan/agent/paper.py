"""Paper trading per model version: every version's decisions filled by the canonical rules.

A PaperBook keeps one account per symbol (huracan/rl/reference.Account: fills at the next
bar's open with half spread, slippage and the taker fee; the same rules the training env and
the execution path follow). It gives each deciding model the position context of its own
decisions, and its closed trades are that version's results in `model_performance`, so a
champion and an A/B challenger are compared on the same bars and the same terms. The risk
gate's sizing and real fills are the execution issue's; these figures measure the decisions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np

from huracan.agent.positions import PositionSnapshot
from huracan.core.candle import Candle
from huracan.core.intents import ENTRY_ACTIONS, SIZE_MULTIPLIER, AgentAction, OrderIntent
from huracan.rl.env import EnvConfig
from huracan.rl.reference import Account

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class PaperTrade:
    model_version: str
    symbol: str
    entry_time_ms: int  # open time of the bar whose open filled the entry
    exit_time_ms: int
    size_multiplier: float
    entry_price: float
    exit_price: float
    pnl: float  # net of both fees, as a fraction of the symbol account's starting equity
    fees: float  # same unit
    profit_bps: float  # net PnL over the entry notional

    @property
    def won(self) -> bool:
        return self.pnl > 0

    @property
    def exit_day(self) -> date:
        return datetime.fromtimestamp(self.exit_time_ms / 1000, UTC).date()


class PaperBook:
    def __init__(self, version: str, symbols: Sequence[str], rules: EnvConfig) -> None:
        self.version = version
        self.rules = rules
        self.accounts = {s: Account(rules) for s in symbols}
        self.pending: dict[str, AgentAction] = {}
        self.entered_at: dict[str, int] = {}
        self.last_close: dict[str, float] = {}
        self.bars = 0
        self.dropped = 0  # intents no longer valid when their bar came (the position changed)

    def submit(self, intent: OrderIntent) -> None:
        """Queue a decision; it fills at the open of the symbol's next bar."""
        self.pending[intent.symbol] = intent.action

    def on_bar(self, open_time_ms: int, candles: Mapping[str, Candle]) -> list[PaperTrade]:
        """Fill queued decisions at this bar's open, then mark at its close."""
        self.bars += 1
        day = open_time_ms // DAY_MS
        closed: list[PaperTrade] = []
        for symbol, candle in candles.items():
            account = self.accounts.get(symbol)
            if account is None:
                continue
            account.new_day(day)
            action = self.pending.pop(symbol, None)
            if action is not None:
                trade = self._fill(account, symbol, action, open_time_ms, candle.open)
                if trade is not None:
                    closed.append(trade)
            account.mark(self.bars, candle.close)
            account.fills.clear()  # the trade records keep what matters; months of fills would not
            self.last_close[symbol] = candle.close
        return closed

    def _fill(
        self, account: Account, symbol: str, action: AgentAction, time_ms: int, open_price: float
    ) -> PaperTrade | None:
        if action in ENTRY_ACTIONS and not account.has_position:
            account.enter(self.bars, open_price, SIZE_MULTIPLIER[action])
            self.entered_at[symbol] = time_ms
            return None
        if action is AgentAction.EXIT_POSITION and account.has_position:
            entry_cost, entry_price = account.entry_cost, account.entry_price
            multiplier, quantity = account.size_multiplier, account.quantity
            entry_fee = entry_cost - quantity * entry_price
            account.exit(self.bars, open_price)
            sell = account.fills[-1]
            pnl = quantity * sell.price - sell.fee - entry_cost
            return PaperTrade(
                model_version=self.version,
                symbol=symbol,
                entry_time_ms=self.entered_at.pop(symbol),
                exit_time_ms=time_ms,
                size_multiplier=multiplier,
                entry_price=entry_price,
                exit_price=sell.price,
                pnl=pnl,
                fees=entry_fee + sell.fee,
                profit_bps=pnl / (quantity * entry_price) * 1e4,
            )
        self.dropped += 1
        return None

    def snapshot(self, symbols: Sequence[str]) -> PositionSnapshot:
        """The PositionView of this version's paper accounts."""
        states = [
            self.accounts[s].state(self.bars, self.last_close.get(s, self.accounts[s].entry_price or 1.0))
            for s in symbols
        ]
        return PositionSnapshot(
            np.array([st.has_position for st in states], dtype=bool),
            np.array([st.size_multiplier for st in states]),
            np.array([st.unrealised_pnl_bps for st in states]),
            np.array([float(st.hold_bars) for st in states]),
            np.array([st.drawdown for st in states]),
            np.array([float(st.trades_today) for st in states]),
            np.array([float(st.wins_today) for st in states]),
        )
