"""Market rules (Binance's symbol filters) and the exchangeInfo body built from them.

The candle files carry no filters, so they are derived from each symbol's price level the way
Binance sets them for USDT pairs: a tick of about one part in a million of the price
(BTC at 20 000 gets 0.01), a lot step worth about 0.1 to 1 of the quote asset (BTC 0.00001,
DOGE 1), a minimum notional of 5 quote units. ccxt reads precision and limits from these
filters (PRICE_FILTER tickSize, LOT_SIZE stepSize, NOTIONAL minNotional).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_UP, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from huracan.testing.emulator.candles import SymbolCandles

_EIGHT = Decimal("0.00000001")


def text8(value: Decimal) -> str:
    """Binance's fixed eight decimals ("0.01000000")."""
    return format(value.quantize(_EIGHT), "f")


@dataclass(frozen=True, slots=True)
class MarketRules:
    market_id: str  # BTCUSDT
    base: str
    quote: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_price: Decimal
    max_price: Decimal
    min_notional: Decimal
    max_notional: Decimal

    def floor_qty(self, qty: Decimal) -> Decimal:
        return (qty / self.step_size).to_integral_value(ROUND_DOWN) * self.step_size

    def floor_price(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(ROUND_DOWN) * self.tick_size

    def ceil_price(self, price: Decimal) -> Decimal:
        return (price / self.tick_size).to_integral_value(ROUND_UP) * self.tick_size


def _power_of_ten(exponent: int) -> Decimal:
    return Decimal(1).scaleb(exponent)


def derive_rules(candles: SymbolCandles) -> MarketRules:
    return rules_from_prices(candles.symbol, candles.market_id, candles.source.close)


def rules_from_prices(symbol: str, market_id: str, closes: npt.NDArray[np.float64]) -> MarketRules:
    """The filters Binance would set for a market trading at these prices (also the replay
    venue's rules, so replay and the emulator round orders alike)."""
    base, quote = symbol.split("/")
    reference = float(np.median(closes[closes > 0])) if np.any(closes > 0) else 1.0
    magnitude = math.floor(math.log10(reference))
    tick = _power_of_ten(max(magnitude - 6, -8))
    step = _power_of_ten(min(max(-(magnitude + 1), -8), 0))
    return MarketRules(
        market_id=market_id,
        base=base,
        quote=quote,
        tick_size=tick,
        step_size=step,
        min_qty=step,
        max_qty=Decimal(9_000_000) * step * 1000,
        min_price=tick,
        max_price=_power_of_ten(magnitude + 3),
        min_notional=Decimal(5),
        max_notional=Decimal(9_000_000),
    )


def symbol_info(rules: MarketRules) -> dict[str, Any]:
    """One entry of exchangeInfo's `symbols`, in the shape Binance returns today."""
    return {
        "symbol": rules.market_id,
        "status": "TRADING",
        "baseAsset": rules.base,
        "baseAssetPrecision": 8,
        "quoteAsset": rules.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "otoAllowed": False,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": False,
        "cancelReplaceAllowed": False,
        "amendAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": text8(rules.min_price),
                "maxPrice": text8(rules.max_price),
                "tickSize": text8(rules.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": text8(rules.min_qty),
                "maxQty": text8(rules.max_qty),
                "stepSize": text8(rules.step_size),
            },
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": text8(rules.max_qty),
                "stepSize": "0.00000000",
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": text8(rules.min_notional),
                "applyMinToMarket": True,
                "maxNotional": text8(rules.max_notional),
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(rules: Iterable[MarketRules], server_time_ms: int) -> dict[str, Any]:
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
        ],
        "exchangeFilters": [],
        "symbols": [symbol_info(r) for r in rules],
    }
