"""Binance's JSON shapes for orders, trades, balances, tickers (from the recorded fixtures)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from huracan.testing.emulator.book import SyntheticBook
from huracan.testing.emulator.markets import text8
from huracan.testing.emulator.matching import Balance, Order, Trade


def order_full(order: Order, fills: Iterable[Trade]) -> dict[str, Any]:
    """POST /api/v3/order with newOrderRespType=FULL."""
    return {
        "symbol": order.market_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": order.time_ms,
        "price": text8(order.price),
        "origQty": text8(order.orig_qty),
        "executedQty": text8(order.executed_qty),
        "origQuoteOrderQty": text8(order.orig_quote_qty),
        "cummulativeQuoteQty": text8(order.cumm_quote_qty),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "workingTime": order.time_ms,
        "fills": [
            {
                "price": text8(t.price),
                "qty": text8(t.qty),
                "commission": text8(t.commission),
                "commissionAsset": t.commission_asset,
                "tradeId": t.trade_id,
            }
            for t in fills
        ],
        "selfTradePreventionMode": "NONE",
    }


def order_ack(order: Order) -> dict[str, Any]:
    return {
        "symbol": order.market_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "transactTime": order.time_ms,
    }


def order_result(order: Order) -> dict[str, Any]:
    body = order_full(order, ())
    del body["fills"]
    return body


def order_query(order: Order) -> dict[str, Any]:
    """GET /api/v3/order, openOrders, allOrders."""
    return {
        "symbol": order.market_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": order.client_order_id,
        "price": text8(order.price),
        "origQty": text8(order.orig_qty),
        "executedQty": text8(order.executed_qty),
        "cummulativeQuoteQty": text8(order.cumm_quote_qty),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "stopPrice": "0.00000000",
        "icebergQty": "0.00000000",
        "time": order.time_ms,
        "updateTime": order.update_time_ms,
        "isWorking": True,
        "workingTime": order.time_ms,
        "origQuoteOrderQty": text8(order.orig_quote_qty),
        "selfTradePreventionMode": "NONE",
    }


def order_canceled(order: Order, cancel_client_id: str) -> dict[str, Any]:
    """DELETE /api/v3/order."""
    return {
        "symbol": order.market_id,
        "origClientOrderId": order.client_order_id,
        "orderId": order.order_id,
        "orderListId": -1,
        "clientOrderId": cancel_client_id,
        "transactTime": order.update_time_ms,
        "price": text8(order.price),
        "origQty": text8(order.orig_qty),
        "executedQty": text8(order.executed_qty),
        "origQuoteOrderQty": text8(order.orig_quote_qty),
        "cummulativeQuoteQty": text8(order.cumm_quote_qty),
        "status": order.status,
        "timeInForce": order.time_in_force,
        "type": order.type,
        "side": order.side,
        "selfTradePreventionMode": "NONE",
    }


def my_trade(trade: Trade) -> dict[str, Any]:
    return {
        "symbol": trade.market_id,
        "id": trade.trade_id,
        "orderId": trade.order_id,
        "orderListId": -1,
        "price": text8(trade.price),
        "qty": text8(trade.qty),
        "quoteQty": text8(trade.quote_qty),
        "commission": text8(trade.commission),
        "commissionAsset": trade.commission_asset,
        "time": trade.time_ms,
        "isBuyer": trade.side == "BUY",
        "isMaker": trade.is_maker,
        "isBestMatch": True,
    }


def account(
    balances: Mapping[str, Balance], maker_fee: Decimal, taker_fee: Decimal, now_ms: int, omit_zero: bool
) -> dict[str, Any]:
    rows = [
        {"asset": asset, "free": text8(b.free), "locked": text8(b.locked)}
        for asset, b in sorted(balances.items())
        if not (omit_zero and b.free == 0 and b.locked == 0)
    ]
    return {
        "makerCommission": int(maker_fee * 10_000),
        "takerCommission": int(taker_fee * 10_000),
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {
            "maker": text8(maker_fee),
            "taker": text8(taker_fee),
            "buyer": "0.00000000",
            "seller": "0.00000000",
        },
        "canTrade": True,
        "canWithdraw": False,
        "canDeposit": False,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": now_ms,
        "accountType": "SPOT",
        "balances": rows,
        "permissions": ["SPOT"],
        "uid": 1,
    }


def book_ticker(market_id: str, book: SyntheticBook) -> dict[str, Any]:
    return {
        "symbol": market_id,
        "bidPrice": text8(book.bids[0].price),
        "bidQty": text8(book.bids[0].qty),
        "askPrice": text8(book.asks[0].price),
        "askQty": text8(book.asks[0].qty),
    }


def depth(book: SyntheticBook, limit: int, update_id: int) -> dict[str, Any]:
    return {
        "lastUpdateId": update_id,
        "bids": [[text8(level.price), text8(level.qty)] for level in book.bids[:limit]],
        "asks": [[text8(level.price), text8(level.qty)] for level in book.asks[:limit]],
    }


def ticker_24hr(
    market_id: str,
    book: SyntheticBook,
    window: tuple[Decimal, Decimal, Decimal, Decimal, Decimal, Decimal],
    open_ms: int,
    close_ms: int,
) -> dict[str, Any]:
    """`window`: open, high, low, last, prev close, base volume over the last 24 h of closed bars."""
    first, high, low, last, prev_close, volume = window
    change = last - first
    percent = (change / first * 100).quantize(Decimal("0.001")) if first else Decimal(0)
    quote_volume = volume * last
    return {
        "symbol": market_id,
        "priceChange": text8(change),
        "priceChangePercent": format(percent, "f"),
        "weightedAvgPrice": text8((high + low + last) / 3),
        "prevClosePrice": text8(prev_close),
        "lastPrice": text8(last),
        "lastQty": text8(book.bids[0].qty),
        "bidPrice": text8(book.bids[0].price),
        "bidQty": text8(book.bids[0].qty),
        "askPrice": text8(book.asks[0].price),
        "askQty": text8(book.asks[0].qty),
        "openPrice": text8(first),
        "highPrice": text8(high),
        "lowPrice": text8(low),
        "volume": text8(volume),
        "quoteVolume": text8(quote_volume),
        "openTime": open_ms,
        "closeTime": close_ms,
        "firstId": -1,
        "lastId": -1,
        "count": 0,
    }
