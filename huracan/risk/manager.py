"""The RiskManager: the limits and the sizing that turn an OrderIntent into an order quantity.

Pure code: it reads a frozen Portfolio snapshot and returns a RiskAssessment; it keeps no state
and does no I/O. A price or size it cannot divide by is a denial, not an exception.

Exits (sells) are never blocked by the limits on new risk: the trading state, the circuit
breaker, the daily loss limit and profit target, the position count, the order rate, the price
collar, the heat and the position cap all exist to stop the book from growing, and refusing a
sell would only keep risk on. A stop-loss that the gate turned down because the day's loss limit
was hit would make the loss larger, which is the opposite of what the limit is for. So an exit
is denied only when there is nothing to sell: no holding ("no_position"), an exit already
working ("exit_in_progress"), or a quantity that floors to zero at the lot step ("dust"). No
minimum amount or notional is applied to an exit beyond that: the venue may refuse a tiny
remainder, but the gate must never be the one to strand a stop-loss.

Entries (buys) pass every check below in order; the first failing one denies, with quantity 0:

 1. the state is ACTIVE ("halted", "reducing");
 2. the circuit breaker has not tripped: PnL since the last reset > -circuit_breaker_loss;
 3. no order of the symbol is in UNKNOWN ("unknown_order"): until reconciliation says what it
    became, we cannot know how much of the symbol we hold;
 4. the market's rules are known ("unknown_market"): without the lot step there is no quantity;
 5. no entry is working and no position is open on it (long-only, no pyramiding);
 6. today's PnL > -daily_loss_limit; 7. today's PnL < daily_profit_target (when set);
 8. open positions plus working entries < max_open_positions;
 9. orders in the last 60 s < max_orders_per_minute ("order_rate");
10. the price is within price_collar_bps of the last price ("price_collar"), when one is known
    (a price or conversion rate <= 0 is "invalid_price", a multiplier that is not a positive
    number "invalid_size": a broken snapshot or intent is refused, never divided by);
11. sizing, in the account currency: target = size_multiplier * normal_position, then
    a. the position cap ("position_cap"), b. the heat, the loss to the stops of every holding
    and working entry plus this entry's stop_loss_bps of its notional, <= max_heat_pct of
    capital ("max_heat"),
    c. quantity = target / quote_to_account / price floored to the lot step, at most the
       market's max_amount ("max_amount"),
    d. the market's minimum amount and notional ("below_minimum").
    With `scale_down` a cap or heat breach shrinks the target to fit instead of denying; the
    limits that shrank it are in `scaled_by` and the reason is "scaled_<first of them>".

Money is Decimal throughout; a float only ever appears as the risk score and as the agent's size
multiplier, which is turned into a Decimal through str so that 1.5 stays exactly 1.5.
"""

from __future__ import annotations

import math
from decimal import ROUND_DOWN, Decimal

from huracan.config.sections import ExecutionSettings, RiskSettings
from huracan.core.intents import OrderIntent
from huracan.exchange.models import MarketRules
from huracan.risk.portfolio import Holding, Portfolio, RiskAssessment, RiskLimits, TradingState

APPROVED = "approved"
SCALED_PREFIX = "scaled_"
# Exit denials: nothing to sell.
NO_POSITION = "no_position"
EXIT_IN_PROGRESS = "exit_in_progress"
DUST = "dust"
# Entry denials, in the order they are checked.
HALTED = "halted"
REDUCING = "reducing"
CIRCUIT_BREAKER = "circuit_breaker"
UNKNOWN_ORDER = "unknown_order"
UNKNOWN_MARKET = "unknown_market"
ENTRY_IN_PROGRESS = "entry_in_progress"
POSITION_OPEN = "position_open"
DAILY_LOSS_LIMIT = "daily_loss_limit"
DAILY_PROFIT_TARGET = "daily_profit_target"
MAX_OPEN_POSITIONS = "max_open_positions"
ORDER_RATE = "order_rate"
PRICE_COLLAR = "price_collar"
INVALID_PRICE = "invalid_price"
INVALID_SIZE = "invalid_size"
POSITION_CAP = "position_cap"
MAX_HEAT = "max_heat"
MAX_AMOUNT = "max_amount"  # only ever in scaled_by: the venue's largest order clamps, never denies
BELOW_MINIMUM = "below_minimum"

# A denial by one of these means a limit is at (or past) its edge: the risk score says so.
LIMIT_DENIALS: frozenset[str] = frozenset(
    {
        HALTED,
        REDUCING,
        CIRCUIT_BREAKER,
        DAILY_LOSS_LIMIT,
        DAILY_PROFIT_TARGET,
        MAX_OPEN_POSITIONS,
        ORDER_RATE,
        PRICE_COLLAR,
        POSITION_CAP,
        MAX_HEAT,
    }
)

BPS = Decimal(10_000)
RATE_WINDOW_MS = 60_000
_ZERO = Decimal(0)


def floor_to_step(quantity: Decimal, step: Decimal) -> Decimal:
    """`quantity` rounded down to a whole number of `step`s (unchanged when there is no step)."""
    if step <= 0:
        return quantity
    return (quantity / step).to_integral_value(ROUND_DOWN) * step


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _ratio(part: Decimal, whole: Decimal) -> float:
    # A zero limit is fully used by anything above nothing.
    if whole <= 0:
        return 1.0 if part > 0 else 0.0
    return float(part / whole)


class RiskManager:
    def __init__(self, limits: RiskLimits, *, account_currency: str = "GBP") -> None:
        self.limits = limits
        self.account_currency = account_currency

    @classmethod
    def from_settings(
        cls, risk: RiskSettings, execution: ExecutionSettings, *, normal_position: Decimal | None = None
    ) -> RiskManager:
        if normal_position is None:
            normal_position = risk.position_cap * Decimal("0.6")
        limits = RiskLimits(
            position_cap=risk.position_cap,
            normal_position=normal_position,
            daily_loss_limit=risk.daily_loss_limit,
            # Through str: Decimal(0.1) would carry the float's binary error into every limit.
            max_heat_pct=Decimal(str(risk.max_heat_pct)),
            circuit_breaker_loss=risk.circuit_breaker_loss,
            daily_profit_target=risk.daily_profit_target,
            max_open_positions=risk.max_open_positions,
            max_orders_per_minute=risk.max_orders_per_minute,
            price_collar_bps=Decimal(str(risk.price_collar_bps)),
            stop_loss_bps=Decimal(str(execution.stop_loss_bps)),
            scale_down=risk.scale_down_instead_of_reject,
        )
        return cls(limits, account_currency=risk.account_currency)

    # --- the checks the gate also uses on their own ------------------------------------------------
    def breaker_tripped(self, portfolio: Portfolio) -> bool:
        return portfolio.pnl_since_reset <= -self.limits.circuit_breaker_loss

    def check_collar(self, symbol: str, price: Decimal, portfolio: Portfolio) -> bool:
        """Whether `price` is within price_collar_bps of the last price (True when none is known:
        the collar guards against a fat finger, not against having no market data)."""
        last = portfolio.last_prices.get(symbol)
        if last is None or last <= 0:
            return True
        return abs(price / last - 1) * BPS <= self.limits.price_collar_bps

    def holding_risk(self, holding: Holding, portfolio: Portfolio) -> Decimal:
        """What the holding loses, in the account currency, if it is sold at its stop now."""
        last = portfolio.last_prices.get(holding.symbol, holding.average_price)
        stop = holding.stop_price
        if stop is None:
            stop = last * (1 - self.limits.stop_loss_bps / BPS)
        return holding.quantity * max(last - stop, _ZERO) * portfolio.quote_to_account

    def heat(self, portfolio: Portfolio) -> Decimal:
        """The loss to the stops of every holding, and of every working entry once it fills
        (its notional at the default stop distance)."""
        held = sum((self.holding_risk(h, portfolio) for h in portfolio.holdings.values()), _ZERO)
        entering = sum(portfolio.entry_notional.values(), _ZERO)
        return held + entering * self.limits.stop_loss_bps / BPS

    def allowed_heat(self, portfolio: Portfolio) -> Decimal:
        return self.limits.max_heat_pct / 100 * portfolio.capital

    def orders_in_window(self, portfolio: Portfolio) -> int:
        start = portfolio.now_ms - RATE_WINDOW_MS
        return sum(1 for t in portfolio.recent_orders_ms if start < t <= portfolio.now_ms)

    # --- the verdict --------------------------------------------------------------------------------
    def assess(
        self, intent: OrderIntent, portfolio: Portfolio, *, price: Decimal | None = None
    ) -> RiskAssessment:
        """`price` is the order's limit price when it has one; a market order is priced at the last
        price (or, with none known, at the decision's reference price)."""
        if intent.side == "sell":
            return self._assess_exit(intent, portfolio)
        # Anything that is not a sell takes the entry path: every limit applies to it.
        if price is None:
            price = portfolio.last_prices.get(intent.symbol, intent.reference_price)
        return self._assess_entry(intent, portfolio, price)

    def _assess_exit(self, intent: OrderIntent, portfolio: Portfolio) -> RiskAssessment:
        symbol = intent.symbol
        holding = portfolio.holdings.get(symbol)
        if holding is None:
            return _deny(NO_POSITION, f"no {symbol} position to sell")
        if holding.exit_working:
            return _deny(EXIT_IN_PROGRESS, f"an exit of {symbol} is already working")
        rules = portfolio.markets.get(symbol)
        # Without the market's rules the whole holding goes unrounded: the venue may refuse it,
        # but refusing it here would leave a stop-loss unsent for want of a lot step.
        quantity = holding.quantity if rules is None else floor_to_step(holding.quantity, rules.amount_step)
        if quantity <= 0:
            step = "none" if rules is None else f"{rules.amount_step:f}"
            return _deny(DUST, f"{symbol} holding {holding.quantity:f} is below the lot step {step}")
        return RiskAssessment(True, APPROVED, 0.0, quantity, f"sell {quantity:f} {symbol} ({intent.reason})")

    def _assess_entry(self, intent: OrderIntent, portfolio: Portfolio, price: Decimal) -> RiskAssessment:
        lim, symbol, ccy = self.limits, intent.symbol, self.account_currency
        if portfolio.state is TradingState.HALTED:
            return _deny(HALTED, "trading is HALTED: no new positions until an operator resumes")
        if portfolio.state is TradingState.REDUCING:
            return _deny(REDUCING, "trading is REDUCING: only exits are allowed")
        if self.breaker_tripped(portfolio):
            return _deny(
                CIRCUIT_BREAKER,
                f"PnL since reset {_money(portfolio.pnl_since_reset)} {ccy} "
                f"<= -{_money(lim.circuit_breaker_loss)} breaker",
            )
        if symbol in portfolio.unresolved:
            return _deny(UNKNOWN_ORDER, f"an order of {symbol} is UNKNOWN until reconciled")
        rules = portfolio.markets.get(symbol)
        if rules is None:
            return _deny(UNKNOWN_MARKET, f"no market rules for {symbol}")
        if symbol in portfolio.working_entries:
            return _deny(ENTRY_IN_PROGRESS, f"an entry of {symbol} is already working")
        if symbol in portfolio.holdings:
            return _deny(POSITION_OPEN, f"a {symbol} position is already open (no pyramiding)")
        if portfolio.pnl_today <= -lim.daily_loss_limit:
            return _deny(
                DAILY_LOSS_LIMIT,
                f"daily PnL {_money(portfolio.pnl_today)} {ccy} <= -{_money(lim.daily_loss_limit)} limit",
            )
        target_pnl = lim.daily_profit_target
        if target_pnl is not None and portfolio.pnl_today >= target_pnl:
            return _deny(
                DAILY_PROFIT_TARGET,
                f"daily PnL {_money(portfolio.pnl_today)} {ccy} >= {_money(target_pnl)} target",
            )
        open_now = len(portfolio.holdings) + len(portfolio.working_entries)
        if open_now >= lim.max_open_positions:
            return _deny(
                MAX_OPEN_POSITIONS,
                f"{open_now} positions open or entering >= {lim.max_open_positions} allowed",
            )
        orders = self.orders_in_window(portfolio)
        if orders >= lim.max_orders_per_minute:
            return _deny(
                ORDER_RATE, f"{orders} orders in the last minute >= {lim.max_orders_per_minute} allowed"
            )
        if not price.is_finite() or price <= 0 or portfolio.quote_to_account <= 0:
            return _deny(
                INVALID_PRICE, f"unusable price {price} or conversion rate {portfolio.quote_to_account}"
            )
        if not self.check_collar(symbol, price, portfolio):
            last = portfolio.last_prices[symbol]
            return _deny(
                PRICE_COLLAR,
                f"price {price:f} is {abs(price / last - 1) * BPS:.1f} bps from last {last:f} "
                f"> {lim.price_collar_bps:f} bps collar",
            )
        if not math.isfinite(intent.size_multiplier) or intent.size_multiplier <= 0:
            return _deny(INVALID_SIZE, f"size multiplier {intent.size_multiplier} is not a positive number")
        return self._size_entry(intent, portfolio, price, rules, open_now + 1)

    def _size_entry(
        self, intent: OrderIntent, portfolio: Portfolio, price: Decimal, rules: MarketRules, open_after: int
    ) -> RiskAssessment:
        lim, symbol, ccy = self.limits, intent.symbol, self.account_currency
        rate, stop_fraction = portfolio.quote_to_account, lim.stop_loss_bps / BPS
        scaled_by: list[str] = []
        target = Decimal(str(intent.size_multiplier)) * lim.normal_position

        if target > lim.position_cap:
            if not lim.scale_down:
                return _deny(
                    POSITION_CAP, f"entry {_money(target)} {ccy} > {_money(lim.position_cap)} position cap"
                )
            target = lim.position_cap
            scaled_by.append(POSITION_CAP)

        heat_now, allowed = self.heat(portfolio), self.allowed_heat(portfolio)
        if heat_now + target * stop_fraction > allowed:
            room = allowed - heat_now
            # With no stop distance no size fits a heat that is already over the limit.
            if not lim.scale_down or room <= 0 or stop_fraction <= 0:
                return _deny(
                    MAX_HEAT,
                    f"heat {_money(heat_now)} + {_money(target * stop_fraction)} {ccy} "
                    f"> {_money(allowed)} allowed ({lim.max_heat_pct:f}% of capital)",
                )
            target = room / stop_fraction
            scaled_by.append(MAX_HEAT)

        step = rules.amount_step
        quantity = floor_to_step(target / rate / price, step)
        if rules.max_amount is not None and quantity > rules.max_amount:
            quantity = floor_to_step(rules.max_amount, step)
            scaled_by.append(MAX_AMOUNT)

        def fits(q: Decimal) -> bool:
            notional = q * price * rate
            return notional <= lim.position_cap and heat_now + notional * stop_fraction <= allowed

        # The divisions above round at the context's precision: a quotient that lands a hair
        # above a step boundary could overshoot a limit by a rounding error. A step back or two
        # makes "within the limit" exact rather than nearly so.
        for _ in range(3):
            if quantity <= 0 or fits(quantity):
                break
            quantity -= step if step > 0 else quantity
        if quantity > 0 and not fits(quantity):
            quantity = _ZERO

        notional_quote = quantity * price
        too_small = (
            quantity <= 0
            or (rules.min_amount is not None and quantity < rules.min_amount)
            or (rules.min_notional is not None and notional_quote < rules.min_notional)
        )
        if too_small:
            return _deny(
                BELOW_MINIMUM,
                f"{quantity:f} {symbol} ({notional_quote:f} {rules.quote}) is below the market minimum "
                f"(amount {rules.min_amount}, notional {rules.min_notional})",
            )

        notional = notional_quote * rate
        heat_after = heat_now + notional * stop_fraction
        score = max(
            _ratio(notional, lim.position_cap),
            _ratio(heat_after, allowed),
            open_after / lim.max_open_positions if lim.max_open_positions > 0 else 1.0,
            _ratio(max(_ZERO, -portfolio.pnl_today), lim.daily_loss_limit),
        )
        reason = SCALED_PREFIX + scaled_by[0] if scaled_by else APPROVED
        detail = (
            f"buy {quantity:f} {symbol} at {price:f} = {_money(notional)} {ccy}; "
            f"heat {_money(heat_after)} of {_money(allowed)} {ccy}"
        )
        if scaled_by:
            detail += f"; scaled down by {', '.join(scaled_by)}"
        return RiskAssessment(True, reason, min(max(score, 0.0), 1.0), quantity, detail, tuple(scaled_by))


def _deny(reason: str, detail: str) -> RiskAssessment:
    return RiskAssessment(False, reason, 1.0 if reason in LIMIT_DENIALS else 0.0, _ZERO, detail)
