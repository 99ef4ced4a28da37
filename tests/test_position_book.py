"""The position book's fold of fills (pure, huracan/execution/positions.py): average price,
realised and unrealised PnL by hand, and the equity it keeps between changes equal to the one
computed afresh after any sequence of fills, marks and bars."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.execution.positions import EntryContext, PositionBook
from huracan.risk.portfolio import Holding

STEP = Decimal("0.001")


def book() -> PositionBook:
    return PositionBook(
        capital_quote=Decimal(10_000), stop_loss_bps=Decimal(200), take_profit_bps=Decimal(400)
    )


def entry(price: Decimal) -> EntryContext:
    return EntryContext("m", 0.8, 1.0, price)


def fresh_equity(b: PositionBook) -> Decimal:
    return (
        b.capital_quote
        + b.realised_total_quote
        + sum(
            (
                p.quantity * (p.last_price - p.cost_per_unit_held)
                for p in b.positions.values()
                if p.last_price
            ),
            Decimal(0),
        )
    )


def test_a_round_trip_by_hand() -> None:
    b = book()
    b.apply_buy("BTC", price=Decimal(100), quantity=Decimal(2), fee_quote=Decimal("0.2"), fee_base=Decimal(0),
                time_ms=0, entry=entry(Decimal(100)), amount_step=STEP)  # fmt: skip
    b.apply_buy("BTC", price=Decimal(110), quantity=Decimal(2), fee_quote=Decimal("0.22"), fee_base=Decimal(0),
                time_ms=1, entry=entry(Decimal(100)), amount_step=STEP)  # fmt: skip
    position = b.positions["BTC"]
    assert position.average_entry_price == Decimal(105)  # (200 + 220) / 4
    b.mark("BTC", Decimal(120))
    # Unrealised: 4 x 120 - (420 + 0.42 of fees) = 59.58; equity 10,000 + 59.58.
    assert position.unrealised_pnl_quote() == Decimal("59.58")
    assert b.equity_quote() == Decimal("10059.58")
    effect = b.apply_sell(
        "BTC", price=Decimal(120), quantity=Decimal(4), fee_quote=Decimal("0.48"), time_ms=2
    )
    assert effect.closed is not None
    assert effect.closed.pnl_quote == Decimal("59.10")  # 480 - 0.48 - 420.42
    assert b.equity_quote() == Decimal("10059.10")
    assert not b.positions


PRICE = st.decimals(Decimal(50), Decimal(150), places=2)
QUANTITY = st.decimals(Decimal("0.001"), Decimal(3), places=3)
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["buy", "sell", "mark", "close_bar"]),
        st.sampled_from(["BTC", "ETH"]),
        PRICE,
        QUANTITY,
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(STEPS)
def test_the_kept_equity_is_the_fresh_one_after_any_sequence(
    steps: list[tuple[str, str, Decimal, Decimal]],
) -> None:
    b = book()
    for t, (kind, symbol, price, quantity) in enumerate(steps):
        held = b.positions.get(symbol)
        if kind == "buy":
            b.apply_buy(symbol, price=price, quantity=quantity, fee_quote=Decimal(0), fee_base=Decimal(0),
                        time_ms=t, entry=entry(price), amount_step=STEP)  # fmt: skip
        elif kind == "sell" and held is not None:
            b.apply_sell(
                symbol, price=price, quantity=min(quantity, held.quantity), fee_quote=Decimal(0), time_ms=t
            )
        elif kind == "mark":
            b.mark(symbol, price)
        elif kind == "close_bar":
            b.close_bar()
        assert b.equity_quote() == fresh_equity(b)
    b.clear()
    assert b.equity_quote() == b.capital_quote


# --- exit rules on a bar's floats ---------------------------------------------------------------

# A venue's price: up to 15 significant digits (decimal_of's promise), here 1e-8 .. 1e7.
prices = st.builds(
    lambda digits, exponent: Decimal(digits).scaleb(exponent),
    st.integers(1, 10**15 - 1),
    st.integers(-23, -8),
).filter(lambda d: Decimal("1e-8") <= d <= Decimal("1e7"))


@settings(max_examples=2_000, deadline=None)
@given(
    low=prices,
    high=prices,
    entry_price=prices,
    nudge=st.sampled_from([None, *((k, d) for k in (-1, 0, 1) for d in (14, 20))]),
    hold=st.integers(0, 3),
)
def test_exit_rules_on_the_candles_floats_are_the_exact_decimals(
    low: Decimal, high: Decimal, entry_price: Decimal, nudge: tuple[int, int] | None, hold: int
) -> None:
    """The bar's low and high arrive as floats; the rules decide on the decimals they stand for,
    also when a price sits on the stop or the target, or closer to it than floats can tell."""
    b = book()
    b.apply_buy(
        "X", price=entry_price, quantity=Decimal(1), fee_quote=Decimal(0), fee_base=Decimal(0),
        time_ms=0, entry=entry(entry_price), amount_step=STEP,
    )  # fmt: skip
    position = b.positions["X"]
    assert position.stop_price is not None
    assert position.take_profit_price is not None
    if nudge is not None:  # the stop and the target on the bar's low and high, or a hair beside
        k, digits = nudge  # 1e-20 apart: the same float, but not the same decimal
        position.stop_price = low * (1 + k * Decimal(10) ** -digits)
        position.take_profit_price = high * (1 - k * Decimal(10) ** -digits)
    position.hold_bars = hold
    got = b.exit_reason_on_bar("X", low=float(low), high=float(high), max_hold_bars=2)
    if low <= position.stop_price:
        want: str | None = "stop_loss"
    elif high >= position.take_profit_price:
        want = "take_profit"
    else:
        want = "time_exit" if hold >= 2 else None
    assert got == want


# --- the agent's view ---------------------------------------------------------------------------


def fresh_snapshot(b: PositionBook, symbols: list[str]) -> list[list[float]]:
    """PositionBook.snapshot's arrays computed afresh, as lists."""
    held = [b.positions.get(s) for s in symbols]
    return [
        [p is not None for p in held],
        [p.entry.size_multiplier if p else 0.0 for p in held],
        [p.unrealised_pnl_bps() if p else 0.0 for p in held],
        [p.hold_bars if p else 0.0 for p in held],
        [b.drawdown()] * len(symbols),
        [float(b.today.trades)] * len(symbols),
        [float(b.today.wins)] * len(symbols),
    ]


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(st.tuples(st.sampled_from("ABC"), st.integers(0, 3), st.integers(50, 150)), max_size=30)
)
def test_the_kept_snapshot_arrays_are_the_fresh_ones_after_any_sequence(
    steps: list[tuple[str, int, int]],
) -> None:
    """The snapshot's arrays are reused call after call: nothing of an earlier call stays. The
    holdings the book keeps between fills are the fresh ones too."""
    b = book()
    symbols = ["A", "B", "C", "D"]
    for symbol, kind, price in steps:
        at = Decimal(price)
        if kind == 0 and symbol not in b.positions:
            b.apply_buy(
                symbol, price=at, quantity=Decimal(1), fee_quote=Decimal("0.1"), fee_base=Decimal(0),
                time_ms=0, entry=EntryContext("m", 0.8, 0.5 + len(b.positions), at), amount_step=STEP,
            )  # fmt: skip
        elif kind == 1 and symbol in b.positions:
            b.apply_sell(
                symbol, price=at, quantity=b.positions[symbol].quantity, fee_quote=Decimal("0.1"), time_ms=0
            )
        else:
            b.mark(symbol, at)
        b.close_bar()
        snapshot = b.snapshot(symbols)
        got = [
            snapshot.has_position.tolist(),
            snapshot.size_multiplier.tolist(),
            snapshot.unrealised_pnl_bps.tolist(),
            snapshot.hold_bars.tolist(),
            snapshot.drawdown.tolist(),
            snapshot.trades_today.tolist(),
            snapshot.wins_today.tolist(),
        ]
        assert got == fresh_snapshot(b, symbols)
        fresh_holdings = {
            s: Holding(s, p.quantity, p.average_entry_price, p.stop_price, False)
            for s, p in b.positions.items()
        }
        assert b.holdings() == fresh_holdings  # kept across marks, made again after a fill
        assert b.snapshot(symbols[::-1]).has_position.tolist() == got[0][::-1]  # another list, its own arrays
