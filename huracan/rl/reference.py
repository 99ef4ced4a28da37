"""The environment's fill and PnL rules, one bar at a time in plain Python floats.

This is the yardstick: the vectorised env (huracan/rl/env.py) must produce the same fills and
equity path, and so must the event-driven execution path that simulates the agent's intents.
It is written as an account that receives events (a fill at a bar's open, a mark at its close)
so that it reads like that path, not like the tensor code. The rules are in env.py's docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from huracan.core.intents import ENTRY_ACTIONS, SIZE_MULTIPLIER, AgentAction, valid_actions
from huracan.rl.env import START_EQUITY, EnvConfig, InvalidActionError

EndReason = Literal["episode_end", "drawdown", "data_end", "actions_exhausted"]


@dataclass(frozen=True, slots=True)
class Fill:
    bar: int  # the bar at whose open it filled
    side: Literal["buy", "sell"]
    price: float
    quantity: float
    fee: float


@dataclass(frozen=True, slots=True)
class BarState:
    """The account marked at a bar's close: what the observation of that bar sees."""

    bar: int
    equity: float
    reward: float  # bps, for the step that ended at this bar (0 for the start bar)
    has_position: bool
    size_multiplier: float
    unrealised_pnl_bps: float
    hold_bars: int
    drawdown: float
    trades_today: int
    wins_today: int


@dataclass(frozen=True, slots=True)
class ReferenceResult:
    fills: tuple[Fill, ...]
    bars: tuple[BarState, ...]  # the start bar first, then one per step
    end: EndReason
    trades: int
    wins: int

    @property
    def equity(self) -> tuple[float, ...]:
        return tuple(b.equity for b in self.bars)

    @property
    def rewards(self) -> tuple[float, ...]:
        return tuple(b.reward for b in self.bars[1:])

    @property
    def episode_return(self) -> float:
        return self.bars[-1].equity / START_EQUITY - 1.0


@dataclass(slots=True)
class Account:
    """One long-only spot account. Entry and exit fill at a bar's open; mark at its close."""

    config: EnvConfig
    cash: float = START_EQUITY
    quantity: float = 0.0
    entry_price: float = 0.0
    entry_cost: float = 0.0  # notional + entry fee: what the open trade has cost so far
    size_multiplier: float = 0.0
    hold_bars: int = 0
    equity: float = START_EQUITY
    peak: float = START_EQUITY
    drawdown: float = 0.0
    day: int = 0
    trades_today: int = 0
    wins_today: int = 0
    trades: int = 0
    wins: int = 0
    fills: list[Fill] = field(default_factory=list)

    @property
    def has_position(self) -> bool:
        return self.quantity > 0.0

    def enter(self, bar: int, open_price: float, multiplier: float) -> None:
        cfg = self.config
        notional = multiplier * cfg.position_fraction * self.equity
        price = open_price * cfg.buy_factor
        fee = notional * cfg.fee_rate
        self.quantity = notional / price
        self.entry_cost = notional + fee
        self.cash = self.cash - self.entry_cost
        self.entry_price = price
        self.size_multiplier = multiplier
        self.hold_bars = 0
        self.fills.append(Fill(bar, "buy", price, self.quantity, fee))

    def exit(self, bar: int, open_price: float) -> None:
        cfg = self.config
        price = open_price * cfg.sell_factor
        proceeds = self.quantity * price
        fee = proceeds * cfg.fee_rate
        net = proceeds - fee
        self.fills.append(Fill(bar, "sell", price, self.quantity, fee))
        self.cash = self.cash + net
        won = net - self.entry_cost > 0
        self.trades_today += 1
        self.trades += 1
        self.wins_today += int(won)
        self.wins += int(won)
        self.quantity = 0.0
        self.size_multiplier = 0.0

    def new_day(self, day: int) -> None:
        if day != self.day:
            self.day, self.trades_today, self.wins_today = day, 0, 0

    def mark(self, bar: int, close_price: float) -> BarState:
        """Close of a bar: equity, drawdown and the reward of the step that led here."""
        if self.has_position:
            self.hold_bars += 1
        else:
            self.hold_bars = 0
        before = self.equity
        previous_drawdown = self.drawdown
        self.equity = self.cash + self.quantity * close_price
        self.peak = max(self.peak, self.equity)
        self.drawdown = (self.peak - self.equity) / self.peak
        reward = (self.equity - before) / before * 1e4
        if self.config.drawdown_penalty:
            reward = reward - self.config.drawdown_penalty * max(self.drawdown - previous_drawdown, 0.0) * 1e4
        return self.state(bar, close_price, reward)

    def state(self, bar: int, close_price: float, reward: float = 0.0) -> BarState:
        held = self.has_position
        return BarState(
            bar=bar,
            equity=self.equity,
            reward=reward,
            has_position=held,
            size_multiplier=self.size_multiplier if held else 0.0,
            unrealised_pnl_bps=(close_price / self.entry_price - 1.0) * 1e4 if held else 0.0,
            hold_bars=self.hold_bars if held else 0,
            drawdown=self.drawdown,
            trades_today=self.trades_today,
            wins_today=self.wins_today,
        )


def simulate(
    open_: Sequence[float],
    close: Sequence[float],
    actions: Sequence[int],
    start: int,
    config: EnvConfig,
    *,
    day: Sequence[int] | None = None,
) -> ReferenceResult:
    """Play `actions` (one per step) from the observation at bar `start` until the episode ends
    or the actions run out; actions after the end are ignored. Raises InvalidActionError on an
    action the position does not allow, as the env does."""
    if not 0 <= start < len(open_) - 1:
        raise ValueError(f"start {start} leaves no bar to trade in {len(open_)} bars")
    account = Account(config, day=int(day[start]) if day is not None else 0)
    bars = [account.state(start, float(close[start]))]
    t = start
    end: EndReason = "actions_exhausted"
    for step, raw in enumerate(actions, start=1):
        action = AgentAction(int(raw))
        if action not in valid_actions(account.has_position):
            state = "long" if account.has_position else "flat"
            raise InvalidActionError(f"step {step}: {action.name} while {state}")
        t += 1
        if day is not None:
            account.new_day(int(day[t]))
        if action in ENTRY_ACTIONS:
            account.enter(t, float(open_[t]), SIZE_MULTIPLIER[action])
        elif action is AgentAction.EXIT_POSITION:
            account.exit(t, float(open_[t]))
        bars.append(account.mark(t, float(close[t])))
        if account.drawdown >= config.max_drawdown:
            end = "drawdown"
            break
        if step >= config.episode_bars:
            end = "episode_end"
            break
        if t >= len(open_) - 1:
            end = "data_end"
            break
    return ReferenceResult(tuple(account.fills), tuple(bars), end, account.trades, account.wins)
