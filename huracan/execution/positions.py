"""The position book: one long position per symbol, built from fills; pure, no I/O.

A position opens with its entry's first fill and closes when what is left after a sell is less
than the market's lot step (the dust the venue will not take). Fees count against the trade:
entry fees raise its cost, exit fees lower its proceeds; a fee charged in the base currency
(Binance takes the commission of a buy from the coins bought) is both a cost and coins the
position does not hold. When a position closes the book returns a ClosedTrade with what the
trade memory needs: prices, PnL, fees, slippage against the decision's reference prices, the
exit reason and the entry's context (model, confidence, state vector, regime).

Exit rules, checked on each closed bar in this order: stop-loss (the bar's low reached the
stop: when a bar touches both the stop and the target we cannot tell which came first, so
the worse is assumed), take-profit (the high reached the target), time exit (held for
max_hold_bars bars).
"""

from __future__ import annotations

import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import numpy as np

from huracan.agent.positions import PositionSnapshot
from huracan.core.numbers import decimal_of
from huracan.risk.portfolio import Holding

BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class EntryContext:
    """Why and on what the position was entered: the decision behind its first order."""

    model_version: str
    confidence: float
    size_multiplier: float
    reference_price: Decimal  # the close of the bar that produced the decision
    features: tuple[float, ...] = ()  # the state vector the model saw
    regime: str = "unknown"
    entry_order_id: int | None = None  # orders.id of the entry

    @classmethod
    def unknown(cls, price: Decimal, order_id: int | None) -> EntryContext:
        """A buy whose decision is not known (an adopted order): entered at its fill price."""
        return cls("unknown", 0.0, 1.0, price, entry_order_id=order_id)


@dataclass(slots=True)
class Position:
    symbol: str
    entry: EntryContext
    opened_ms: int
    amount_step: Decimal
    quantity: Decimal = Decimal(0)  # base held
    base_fees: Decimal = Decimal(0)  # coins bought but kept by the venue as its fee
    bought_quantity: Decimal = Decimal(0)
    bought_notional: Decimal = Decimal(0)  # sum of price * quantity of the buys
    entry_fees_quote: Decimal = Decimal(0)
    sold_quantity: Decimal = Decimal(0)
    sold_notional: Decimal = Decimal(0)
    exit_fees_quote: Decimal = Decimal(0)
    realised_pnl_quote: Decimal = Decimal(0)  # of the part sold so far, net of its fees
    stop_price: Decimal | None = None
    take_profit_price: Decimal | None = None
    hold_bars: int = 0
    last_price: Decimal | None = None
    exit_reference_price: Decimal | None = None
    exit_reason: str | None = None  # set when the exit order is placed
    exit_order_id: int | None = None
    db_id: int | None = None  # positions.id

    @property
    def average_entry_price(self) -> Decimal:
        return self.bought_notional / self.bought_quantity if self.bought_quantity else Decimal(0)

    @property
    def average_exit_price(self) -> Decimal | None:
        return self.sold_notional / self.sold_quantity if self.sold_quantity else None

    @property
    def cost_per_unit_held(self) -> Decimal:
        """What each coin held cost, entry fees included."""
        held_bought = self.bought_quantity - self.base_fees
        if held_bought <= 0:
            return Decimal(0)
        return (self.bought_notional + self.entry_fees_quote) / held_bought

    def unrealised_pnl_quote(self) -> Decimal:
        if self.last_price is None or not self.quantity:
            return Decimal(0)
        return self.quantity * (self.last_price - self.cost_per_unit_held)

    def unrealised_pnl_bps(self) -> float:
        if self.last_price is None or not self.bought_quantity:
            return 0.0
        return float((self.last_price / self.average_entry_price - 1) * BPS)


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    symbol: str
    entry: EntryContext
    entry_time_ms: int
    exit_time_ms: int
    entry_price: Decimal  # average of the entry fills
    exit_price: Decimal  # average of the exit fills
    quantity: Decimal  # base bought
    pnl_quote: Decimal  # net of every fee
    fees_quote: Decimal
    pnl_bps: float  # over the entry notional
    slippage_bps: float  # entry and exit fills against the decisions' reference prices, adverse > 0
    exit_reason: str
    position_id: int | None
    exit_order_id: int | None


@dataclass(frozen=True, slots=True)
class FillEffect:
    """What one fill did to the book."""

    position: Position | None  # the position after the fill (None when it closed)
    opened: bool = False
    closed: ClosedTrade | None = None


@dataclass(slots=True)
class DayTally:
    day: int = -1  # trading-day number (see huracan.risk.trading_day)
    realised_quote: Decimal = Decimal(0)
    trades: int = 0
    wins: int = 0


def _at_or_beyond(price: float, level: Decimal, direction: int) -> bool:
    """Whether decimal_of(price) is at `level` or beyond it (direction -1: below, 1: above).
    Most bars end far from a position's stop and target: floats, 1e-16 apart from the exact
    values, settle those without making the price exact (a bar's checks sit between its close
    and the decision); within 1e-12 of the level the exact decimals decide."""
    distance = (price - float(level)) * direction
    margin = 1e-12 * abs(price)
    if distance > margin:
        return True
    if distance < -margin:
        return False
    exact = decimal_of(price)
    return exact >= level if direction > 0 else exact <= level


def floor_to_step(quantity: Decimal, step: Decimal) -> Decimal:
    return (quantity / step).to_integral_value(ROUND_DOWN) * step


@dataclass(slots=True)
class PositionBook:
    """Every open position of one mode and venue, plus the day's tally and the equity curve the
    agent's risk context reads (drawdown of the account)."""

    capital_quote: Decimal  # starting equity in quote, for the drawdown the agent sees
    stop_loss_bps: Decimal
    take_profit_bps: Decimal
    positions: dict[str, Position] = field(default_factory=dict)
    today: DayTally = field(default_factory=DayTally)
    realised_total_quote: Decimal = Decimal(0)
    peak_equity_quote: Decimal = Decimal(0)
    max_drawdown: float = 0.0
    last_prices: dict[str, Decimal] = field(default_factory=dict)
    # Bumped by every change the book makes to its positions (fills, marks, clear): what is
    # derived from them may be kept until it moves. Code that sets a position's fields itself
    # (restore) calls touch().
    version: int = 0
    held_version: int = 0  # bumped as `version` is, except by marks: what is held, not its price
    _equity: tuple[int, Decimal] = (-1, Decimal(0))  # (version, equity_quote) last computed
    _holdings: tuple[int, dict[str, Holding]] = field(
        default_factory=lambda: (-1, {}), repr=False, compare=False
    )
    _unrealised: tuple[int, dict[str, Decimal]] = field(
        default_factory=lambda: (-1, {}), repr=False, compare=False
    )
    _snapshots: dict[tuple[str, ...], _SnapshotBuffers] = field(
        default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        self.peak_equity_quote = max(self.peak_equity_quote, self.capital_quote)

    def touch(self) -> None:
        self.version += 1
        self.held_version += 1

    def clear(self) -> None:
        """No positions and nothing realised (a restart of the trading task, before restore)."""
        self.positions.clear()
        self.realised_total_quote = Decimal(0)
        self.touch()

    # --- fills ----------------------------------------------------------------------------------
    def apply_buy(
        self,
        symbol: str,
        *,
        price: Decimal,
        quantity: Decimal,
        fee_quote: Decimal,
        fee_base: Decimal,
        time_ms: int,
        entry: EntryContext,
        amount_step: Decimal,
    ) -> FillEffect:
        """A buy fill. `fee_quote` is every fee of the fill in quote (a base fee converted at
        the fill price); `fee_base` is the part charged in coins, which the position does not
        receive."""
        self.version += 1
        self.held_version += 1
        position = self.positions.get(symbol)
        opened = position is None
        if position is None:
            position = Position(symbol, entry, time_ms, amount_step)
            self.positions[symbol] = position
        position.bought_quantity += quantity
        position.bought_notional += price * quantity
        position.entry_fees_quote += fee_quote
        position.base_fees += fee_base
        position.quantity += quantity - fee_base
        average = position.average_entry_price
        position.stop_price = average * (1 - self.stop_loss_bps / BPS)
        position.take_profit_price = average * (1 + self.take_profit_bps / BPS)
        position.last_price = position.last_price or price
        return FillEffect(position, opened=opened)

    def apply_sell(
        self, symbol: str, *, price: Decimal, quantity: Decimal, fee_quote: Decimal, time_ms: int
    ) -> FillEffect:
        position = self.positions.get(symbol)
        if position is None:
            raise KeyError(f"a sell fill for {symbol}, where the book holds no position")
        self.version += 1
        self.held_version += 1
        cost = position.cost_per_unit_held * quantity
        position.quantity -= quantity
        position.sold_quantity += quantity
        position.sold_notional += price * quantity
        position.exit_fees_quote += fee_quote
        position.realised_pnl_quote += price * quantity - fee_quote - cost
        if position.quantity >= position.amount_step:
            return FillEffect(position)
        del self.positions[symbol]
        trade = self._closed(position, time_ms)
        self._tally(trade, time_ms)
        return FillEffect(None, closed=trade)

    def _closed(self, position: Position, time_ms: int) -> ClosedTrade:
        entry_price = position.average_entry_price
        exit_price = position.average_exit_price or entry_price
        fees = position.entry_fees_quote + position.exit_fees_quote
        # The dust left behind (less than a lot step) is written off at the exit price.
        pnl = position.realised_pnl_quote + position.quantity * (exit_price - position.cost_per_unit_held)
        entry_notional = position.bought_notional
        slippage = (entry_price / position.entry.reference_price - 1) * BPS
        if position.exit_reference_price is not None and exit_price:
            slippage += (position.exit_reference_price / exit_price - 1) * BPS
        return ClosedTrade(
            symbol=position.symbol,
            entry=position.entry,
            entry_time_ms=position.opened_ms,
            exit_time_ms=time_ms,
            entry_price=entry_price,
            exit_price=exit_price,
            quantity=position.bought_quantity,
            pnl_quote=pnl,
            fees_quote=fees,
            pnl_bps=float(pnl / entry_notional * BPS) if entry_notional else 0.0,
            slippage_bps=float(slippage),
            exit_reason=position.exit_reason or "signal",
            position_id=position.db_id,
            exit_order_id=position.exit_order_id,
        )

    def _tally(self, trade: ClosedTrade, time_ms: int) -> None:
        self.realised_total_quote += trade.pnl_quote
        self.today.realised_quote += trade.pnl_quote
        self.today.trades += 1
        self.today.wins += int(trade.pnl_quote > 0)

    # --- bars -----------------------------------------------------------------------------------
    def new_day(self, day: int) -> None:
        if day != self.today.day:
            self.today = DayTally(day)

    def mark(self, symbol: str, close: Decimal, *, bar_passed: bool = True) -> None:
        self.last_prices[symbol] = close
        position = self.positions.get(symbol)
        if position is not None:
            self.version += 1
            position.last_price = close
            if bar_passed:
                position.hold_bars += 1

    def close_bar(self) -> None:
        """After a bar's marks: the equity's peak and the deepest drawdown so far (once per bar,
        not per symbol: the sum over the positions is the costly part)."""
        equity = self.equity_quote()
        self.peak_equity_quote = max(self.peak_equity_quote, equity)
        peak = self.peak_equity_quote
        self.max_drawdown = max(self.max_drawdown, float((peak - equity) / peak) if peak > 0 else 0.0)

    def exit_reason_on_bar(self, symbol: str, *, low: float, high: float, max_hold_bars: int) -> str | None:
        """The exit rule this bar triggers for `symbol`'s position, if any (see the module doc).
        `low` and `high` as the candle has them: compared as the decimals the venue sent."""
        position = self.positions.get(symbol)
        if position is None or position.exit_reason is not None:
            return None
        if position.stop_price is not None and _at_or_beyond(low, position.stop_price, -1):
            return "stop_loss"
        if position.take_profit_price is not None and _at_or_beyond(high, position.take_profit_price, 1):
            return "take_profit"
        if position.hold_bars >= max_hold_bars:
            return "time_exit"
        return None

    # --- views ----------------------------------------------------------------------------------
    def unrealised_by_symbol(self) -> dict[str, Decimal]:
        """Each position's unrealised PnL in quote, kept until the book's version moves (the
        bar's close and the gate's first look both sum them). Not to be changed by the caller."""
        if self._unrealised[0] != self.version:
            self._unrealised = (
                self.version,
                {s: p.unrealised_pnl_quote() for s, p in self.positions.items()},
            )
        return self._unrealised[1]

    def unrealised_quote(self) -> Decimal:
        return sum(self.unrealised_by_symbol().values(), Decimal(0))

    def equity_quote(self) -> Decimal:
        # Asked at each bar's close and again by the decision step's snapshot: kept per version.
        if self._equity[0] != self.version:
            self._equity = (
                self.version,
                self.capital_quote + self.realised_total_quote + self.unrealised_quote(),
            )
        return self._equity[1]

    def drawdown(self) -> float:
        peak = self.peak_equity_quote
        return float((peak - self.equity_quote()) / peak) if peak > 0 else 0.0

    def holdings(self, exits_working: Iterable[str] = ()) -> dict[str, Holding]:
        """The risk manager's view of the positions. Without `exits_working` it is kept until a
        fill changes the book (marks do not change a holding; the gate asks at every bar) and
        must not be changed by the caller."""
        working = set(exits_working)
        if not working and self._holdings[0] == self.held_version:
            return self._holdings[1]
        held = {
            s: Holding(
                s, p.quantity, p.average_entry_price, p.stop_price, s in working or p.exit_reason is not None
            )
            for s, p in self.positions.items()
        }
        if not working:
            self._holdings = (self.held_version, held)
        return held

    def snapshot(self, symbols: Sequence[str]) -> PositionSnapshot:
        """The agent's PositionView: its position and risk context per symbol. Its arrays are
        kept per symbol list and rewritten by the next call (the decision step reads them at
        once): it runs between the candle close and the decision, where every numpy call is
        dear, so it writes them through array.array item stores."""
        buffers = self._snapshots.get(tuple(symbols))
        if buffers is None:
            buffers = self._snapshots[tuple(symbols)] = _SnapshotBuffers(len(symbols))
        flags, multiplier, pnl_bps, hold = buffers.fill_flat()
        for i, symbol in enumerate(symbols):
            position = self.positions.get(symbol)
            if position is None:
                continue
            flags[i] = 1
            multiplier[i] = position.entry.size_multiplier
            pnl_bps[i] = position.unrealised_pnl_bps()
            hold[i] = position.hold_bars
        buffers.fill_account(self.drawdown(), float(self.today.trades), float(self.today.wins))
        return buffers.snapshot


class _SnapshotBuffers:
    """PositionBook.snapshot's arrays for one symbol list: numpy views of array.array and
    bytearray storage, cleared by slice assignment and written item by item."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.flags = bytearray(n)
        self.zeros = array.array("d", bytes(8 * n))
        self.columns = [array.array("d", self.zeros) for _ in range(6)]
        self.snapshot = PositionSnapshot(
            np.frombuffer(self.flags, dtype=np.bool_),
            *(np.frombuffer(c, dtype=np.float64) for c in self.columns),
        )

    def fill_flat(self) -> tuple[bytearray, array.array[float], array.array[float], array.array[float]]:
        """No position anywhere; returns the per-symbol storage to write the positions into."""
        self.flags[:] = bytes(self.n)
        for column in self.columns[:3]:
            column[:] = self.zeros
        return self.flags, self.columns[0], self.columns[1], self.columns[2]

    def fill_account(self, drawdown: float, trades: float, wins: float) -> None:
        for column, value in zip(self.columns[3:], (drawdown, trades, wins), strict=True):
            column[:] = array.array("d", [value]) * self.n


def entry_context_json(entry: EntryContext) -> dict[str, Any]:
    return {
        "model_version": entry.model_version,
        "confidence": entry.confidence,
        "size_multiplier": entry.size_multiplier,
        "reference_price": str(entry.reference_price),
        "features": list(entry.features),
        "regime": entry.regime,
    }


def entry_context_of(payload: dict[str, Any], order_id: int | None) -> EntryContext:
    return EntryContext(
        model_version=str(payload.get("model_version") or "unknown"),
        confidence=float(payload.get("confidence") or 0.0),
        size_multiplier=float(payload.get("size_multiplier") or 1.0),
        reference_price=Decimal(str(payload.get("reference_price") or "0")),
        features=tuple(float(x) for x in payload.get("features") or ()),
        regime=str(payload.get("regime") or "unknown"),
        entry_order_id=order_id,
    )
