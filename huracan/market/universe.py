"""The trading universe against what the exchange lists: a symbol the venue does not list (or
lists only as not trading) is a configuration error found at start-up, not a stream of
BadSymbol errors later."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from huracan.exchange.models import MarketRules


class UnknownSymbols(ValueError):
    """Symbols of the configured universe that the exchange does not list as trading."""

    def __init__(self, exchange_id: str, missing: Iterable[str], inactive: Iterable[str] = ()) -> None:
        self.exchange_id = exchange_id
        self.missing = tuple(missing)
        self.inactive = tuple(inactive)
        parts = []
        if self.missing:
            parts.append(f"not listed: {', '.join(self.missing)}")
        if self.inactive:
            parts.append(f"listed but not trading: {', '.join(self.inactive)}")
        super().__init__(
            f"universe.symbols: {exchange_id} has no spot market for some symbols ({'; '.join(parts)})"
        )


class MarketLister(Protocol):
    exchange_id: str

    async def load_markets(self, *, reload: bool = False) -> dict[str, MarketRules]: ...


async def check_universe(adapter: MarketLister, symbols: Iterable[str]) -> None:
    """Raise UnknownSymbols naming every symbol the exchange does not list as an active spot
    market. Exchange errors (the venue unreachable) pass through as they are."""
    markets: Mapping[str, MarketRules] = await adapter.load_markets()
    wanted = list(dict.fromkeys(symbols))
    missing = [s for s in wanted if s not in markets]
    inactive = [s for s in wanted if s in markets and not markets[s].active]
    if missing or inactive:
        raise UnknownSymbols(adapter.exchange_id, missing, inactive)
