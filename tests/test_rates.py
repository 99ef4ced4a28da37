"""The account currency's rate from the venue's own market, either way round, or none."""

from __future__ import annotations

from decimal import Decimal

from huracan.exchange.errors import BadSymbol
from huracan.exchange.models import Ticker
from huracan.risk.rates import venue_rate


class Markets:
    """A venue that lists some markets (a stand-in for the adapter's fetch_ticker)."""

    def __init__(self, last: dict[str, str]) -> None:
        self.last = last

    async def fetch_ticker(self, symbol: str) -> Ticker:
        if symbol not in self.last:
            raise BadSymbol(f"no market {symbol}")
        return Ticker(symbol, None, Decimal(self.last[symbol]), None, None, None, None)


async def test_account_per_quote_market_is_inverted() -> None:
    assert await venue_rate(Markets({"GBP/USDT": "1.25"}), quote="USDT", account="GBP") == Decimal("0.8")


async def test_quote_per_account_market_is_taken_as_it_is() -> None:
    assert await venue_rate(Markets({"USDT/GBP": "0.79"}), quote="USDT", account="GBP") == Decimal("0.79")


async def test_no_market_leaves_the_configured_rate() -> None:
    assert await venue_rate(Markets({}), quote="USDT", account="GBP") is None


async def test_same_currency_is_one() -> None:
    assert await venue_rate(Markets({}), quote="USDT", account="USDT") == Decimal(1)
