"""Point a ccxt `binance` instance at another host: the loopback emulator in tests.

    exchange = ccxt.async_support.binance({
        "apiKey": ..., "secret": ..., "enableRateLimit": False,
        "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]},
                    "fetchCurrencies": False, "fetchMargins": False},
    })
    point_at(exchange, "http://127.0.0.1:43123")

The options matter: by default `load_markets` also asks the futures hosts (fapi, dapi) for
their exchangeInfo and, with keys, `sapi/v1/capital/config/getall` for currencies.
(`huracan.testing.emulator.SPOT_ONLY_OPTIONS` holds them.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import ccxt.async_support


def _rebase(url: str, base_url: str) -> str:
    # Keep the path (/api/v3, /sapi/v1, /fapi/v1 ...), swap scheme and host.
    return base_url.rstrip("/") + urlsplit(url).path


def _rewrite(entry: Any, base_url: str) -> Any:
    if isinstance(entry, str):
        return _rebase(entry, base_url)
    if isinstance(entry, dict):
        return {key: _rewrite(value, base_url) for key, value in entry.items()}
    return entry


def point_at(exchange: ccxt.async_support.Exchange, base_url: str) -> None:
    """Rewrite every REST base URL of `exchange` (public, private, v1, sapi*, fapi*, dapi*,
    eapi*, papi*) to `base_url` plus the original path, so that no call, spot or not, can
    leave for the real venue. `base_url` is scheme and host, e.g. "http://127.0.0.1:43123"."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"base_url must be like http://127.0.0.1:8080, got {base_url!r}")
    exchange.urls["api"] = _rewrite(exchange.urls["api"], base_url)
    # ccxt keeps a sandbox copy that set_sandbox_mode() would swap in; point it here too.
    if isinstance(exchange.urls.get("test"), dict):
        exchange.urls["test"] = _rewrite(exchange.urls["test"], base_url)
