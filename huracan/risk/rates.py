"""Quote currency -> account currency: the rate the limits are measured at.

Replay uses `risk.quote_to_account_rate` from the config (history has no live rate). Live and
shadow read the venue's own market between the two currencies (GBP/USDT, or USDT/GBP) when it
lists one, and keep the configured rate when it does not or cannot answer.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Protocol

from huracan.exchange.errors import ExchangeError
from huracan.exchange.models import Ticker
from huracan.logs import get_logger

log = get_logger("huracan.risk.rates")


class MixedQuoteCurrencies(ValueError):
    """The universe's markets are quoted in more than one currency; the limits are measured at
    one quote -> account rate, so they must share a quote currency."""


def single_quote(quotes: set[str]) -> str:
    if len(quotes) != 1:
        raise MixedQuoteCurrencies(
            f"the universe's symbols are quoted in {', '.join(sorted(quotes)) or 'nothing'}; use symbols of one quote currency"
        )
    return next(iter(quotes))


class TickerSource(Protocol):
    async def fetch_ticker(self, symbol: str) -> Ticker: ...


async def venue_rate(source: TickerSource, *, quote: str, account: str) -> Decimal | None:
    """Account currency per unit of quote, from ACCOUNT/QUOTE or QUOTE/ACCOUNT; None when the
    venue has neither market or does not answer."""
    if quote == account:
        return Decimal(1)
    for symbol, inverse in ((f"{account}/{quote}", True), (f"{quote}/{account}", False)):
        try:
            last = (await source.fetch_ticker(symbol)).last
        except ExchangeError:
            continue
        if last > 0:
            return 1 / last if inverse else last
    log.warning(
        "no venue market for the account currency; the configured rate stays", quote=quote, account=account
    )
    return None
