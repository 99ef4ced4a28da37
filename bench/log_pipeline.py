"""Throughput of our JSON log pipeline against a plain structlog+orjson one, and the cost of a
filtered-out debug call in both. Writes to /dev/null (a real write and flush per line, as in
production). Prints a table, then one JSON line with the figures. Not part of the test suite.

    .venv/bin/python bench/log_pipeline.py
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog

from huracan.logs import bind_context, configure_logging, get_logger, register_secrets
from huracan.logs.setup import reset_logging

INFO_CALLS = 40_000
DEBUG_CALLS = 400_000
REPEATS = 3


def best_ns_per_call(fn: Callable[[], None], calls: int) -> float:
    """Best of REPEATS, in ns per call: the least disturbed run is the closest to the code's cost."""
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter_ns()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / calls)
    return best


def _orjson_str(obj: Any, **kw: Any) -> str:
    return orjson.dumps(obj, default=kw.get("default")).decode()


def reference(stream: TextIO) -> tuple[float, float]:
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(serializer=_orjson_str),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger("huracan.exec")
    info = best_ns_per_call(
        lambda: log.info("order submitted", side="buy", qty=0.25, price=64123.5), INFO_CALLS
    )
    debug = best_ns_per_call(lambda: log.debug("book update", depth=20), DEBUG_CALLS)
    structlog.reset_defaults()
    return info, debug


def ours(stream: TextIO) -> dict[str, float]:
    # Realistic: one module at debug (so the pipeline's floor is debug), secrets registered, context bound.
    configure_logging(fmt="json", stream=stream, level="info", levels={"huracan.exchange": "debug"})
    register_secrets(["bench-api-key-0123456789", "bench-api-secret-abcdef", "postgresql://u:pw-123456@db/h"])
    bind_context(symbol="BTC/USDT", client_order_id="c-0001", model_version="ppo-v7")
    log = get_logger("huracan.exec")
    plain = structlog.get_logger("huracan.memory")  # not via get_logger: filtered by the processor
    foreign = logging.getLogger("ccxt.base")
    figures = {
        "info_ns": best_ns_per_call(
            lambda: log.info("order submitted", side="buy", qty=0.25, price=64123.5), INFO_CALLS
        ),
        "debug_ns": best_ns_per_call(lambda: log.debug("book update", depth=20), DEBUG_CALLS),
        "plain_structlog_debug_ns": best_ns_per_call(
            lambda: plain.debug("book update", depth=20), INFO_CALLS
        ),
        "stdlib_warning_ns": best_ns_per_call(
            lambda: foreign.warning("rate limited %s", "binance"), INFO_CALLS
        ),
    }
    reset_logging()
    structlog.contextvars.clear_contextvars()
    return figures


def main() -> int:
    started = time.perf_counter()
    with open(os.devnull, "w") as stream:
        ref_info, ref_debug = reference(stream)
        our = ours(stream)
    result = {
        "python": platform.python_version(),
        "structlog": structlog.__version__ if hasattr(structlog, "__version__") else "?",
        "reference_events_per_s": round(1e9 / ref_info),
        "ours_events_per_s": round(1e9 / our["info_ns"]),
        "info_ratio_ours_over_reference": round(our["info_ns"] / ref_info, 2),
        "reference_filtered_debug_ns": round(ref_debug, 1),
        "ours_filtered_debug_ns": round(our["debug_ns"], 1),
        "filtered_debug_ratio": round(our["debug_ns"] / ref_debug, 2),
        "ours_plain_structlog_filtered_debug_ns": round(our["plain_structlog_debug_ns"], 1),
        "ours_stdlib_records_per_s": round(1e9 / our["stdlib_warning_ns"]),
        "wall_s": round(time.perf_counter() - started, 2),
    }
    rows = [
        ("info event, events/s", f"{result['reference_events_per_s']:,}", f"{result['ours_events_per_s']:,}"),
        ("info event, ns/call", f"{ref_info:,.0f}", f"{our['info_ns']:,.0f}"),
        ("filtered debug, ns/call", f"{ref_debug:,.1f}", f"{our['debug_ns']:,.1f}"),
    ]
    print(f"{'':28}{'reference':>14}{'huracan':>14}{'ratio':>8}")
    for (label, ref, mine), ratio in zip(
        rows,
        (ref_info / our["info_ns"], our["info_ns"] / ref_info, our["debug_ns"] / ref_debug),
        strict=True,
    ):
        print(f"{label:28}{ref:>14}{mine:>14}{ratio:>8.2f}")
    print(f"{'structlog.get_logger debug':28}{'':>14}{our['plain_structlog_debug_ns']:>14,.0f}  ns/call")
    print(f"{'stdlib record (ccxt)':28}{'':>14}{result['ours_stdlib_records_per_s']:>14,}  records/s")
    print(orjson.dumps(result).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
