"""`huracan download`: candles of the universe from any ccxt exchange into the database and/or
candle files, chunk by chunk, with a progress bar.

    huracan download --days 30                        # the universe at its timeframe, into the DB
    huracan download --symbols BTC/USDT,ETH/USDT --timeframe 1h --since 2024-01-01 \\
                     --until 2024-07-01 --to both --csv-dir data/candles

For each symbol the window [since, until) is fetched through the ExchangeAdapter (its retries and
request budget) in chunks of `--chunk-bars` bars, so that memory stays bounded and progress is
visible. Every bar is validated (`validate_batch`); rejected bars are counted by reason and never
stored. Accepted bars go to the `candles` table (`CandleStore.write`: never overwrites) and/or
are appended to `<csv-dir>/<exchange>_<BASE>-<QUOTE>_<tf>.csv` after the file's last bar (a file
only grows: bars at or before its last bar are counted as skipped, so a second run resumes).

Symbols the exchange does not list are refused before anything is downloaded (exit 64 when
they came from `--symbols`, 78 when from the configuration). An exchange that still fails after
the adapter's retries ends the command with exit 69; every chunk stored before stays stored.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, Protocol, TextIO

from huracan.config import HuracanConfig
from huracan.core.candle import Candle
from huracan.core.timeframe import timeframe_ms
from huracan.exchange.adapter import ExchangeAdapter
from huracan.exchange.errors import ExchangeError
from huracan.exit_codes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE
from huracan.logs import get_logger
from huracan.market.candle_files import (
    CandleFileError,
    CandleFileName,
    append_candle_file,
    read_candle_file,
)
from huracan.market.validation import validate_batch
from huracan.memory.candles import CandleStore

log = get_logger("huracan.market.download")

Destination = Literal["db", "csv", "both"]
DEFAULT_CHUNK_BARS = 10_000
TIMEFRAMES = ("1m", "5m", "15m", "1h", "4h", "1d")
_SYMBOL = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- the plan ---------------------------------------------------------------------------------
class DownloadError(Exception):
    """The download cannot go ahead; `exit_code` is the command's exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class DownloadPlan:
    exchange: str
    symbols: tuple[str, ...]
    timeframe: str
    since_ms: int  # aligned to the timeframe; first bar open time
    until_ms: int  # exclusive bound on bar open times
    to_db: bool
    csv_dir: Path | None  # None: no CSV files
    chunk_bars: int = DEFAULT_CHUNK_BARS
    symbols_from_cli: bool = False  # which exit status an unlisted symbol gets

    @property
    def total_bars(self) -> int:
        """Bar slots in the window per symbol (the exchange may have fewer)."""
        return max(0, (self.until_ms - self.since_ms) // timeframe_ms(self.timeframe))

    def csv_path(self, symbol: str) -> Path:
        assert self.csv_dir is not None
        return self.csv_dir / CandleFileName(self.exchange, symbol, self.timeframe).filename()


def parse_time(text: str) -> int:
    """Epoch ms of an ISO date or date-time ("2024-01-01", "2024-01-01T12:30", with or without
    an offset; no offset means UTC). ValueError if it is neither."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO date (2024-01-31) or date-time (2024-01-31T12:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _iso(time_ms: int) -> str:
    return datetime.fromtimestamp(time_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M")


def plan_from_args(
    config: HuracanConfig, args: argparse.Namespace, *, now_ms: int | None = None
) -> DownloadPlan:
    """The plan for the command line `args` over `config`; DownloadError (exit 64 or 78) when
    they do not make one."""
    now = _now_ms() if now_ms is None else now_ms
    timeframe: str = args.timeframe or config.universe.timeframe
    step = timeframe_ms(timeframe)
    if args.symbols:
        symbols = tuple(dict.fromkeys(s.strip().upper() for s in args.symbols.split(",") if s.strip()))
        bad = [s for s in symbols if not _SYMBOL.match(s)]
        if bad or not symbols:
            raise DownloadError(
                f"--symbols: not BASE/QUOTE symbols: {', '.join(bad) or args.symbols!r}", EX_USAGE
            )
    else:
        symbols = tuple(config.universe.symbols)
    try:
        until = now if args.until is None else parse_time(args.until)
        if args.since is not None:
            since = parse_time(args.since)
        else:
            days = args.days if args.days is not None else config.universe.backfill_days
            since = until - days * 86_400_000
    except ValueError as exc:
        raise DownloadError(f"--since/--until: {exc}", EX_USAGE) from None
    since = -(-since // step) * step  # the first bar opening at or after since
    if since >= until:
        raise DownloadError(f"empty window: since {_iso(since)} is not before until {_iso(until)}", EX_USAGE)
    to: Destination = args.to
    csv_dir: Path | None = None
    if to in ("csv", "both"):
        csv_dir = args.csv_dir if args.csv_dir is not None else config.universe.replay_data_dir
    exchange = config.exchange.id
    if csv_dir is not None:
        probe = CandleFileName(exchange, symbols[0], timeframe).filename()
        try:
            CandleFileName.parse(Path(probe))
        except CandleFileError:
            raise DownloadError(
                f"exchange id {exchange!r} cannot be part of a candle file name "
                "(<exchange>_<BASE>-<QUOTE>_<tf>.csv, exchange of a-z and 0-9 only); use --to db",
                EX_USAGE,
            ) from None
    if args.chunk_bars < 1:
        raise DownloadError("--chunk-bars must be at least 1", EX_USAGE)
    return DownloadPlan(
        exchange=exchange,
        symbols=symbols,
        timeframe=timeframe,
        since_ms=since,
        until_ms=until,
        to_db=to in ("db", "both"),
        csv_dir=csv_dir,
        chunk_bars=args.chunk_bars,
        symbols_from_cli=bool(args.symbols),
    )


# --- progress ---------------------------------------------------------------------------------
def render_bar(label: str, done: int, total: int, *, width: int = 20, unit: str = "bars") -> str:
    """`BTC/USDT 5m [##########----------]  50% 12,960/25,920 bars`."""
    share = 1.0 if total <= 0 else min(1.0, max(0.0, done / total))
    filled = int(share * width)
    return (
        f"{label} [{'#' * filled}{'-' * (width - filled)}] {int(share * 100):3d}% {done:,}/{total:,} {unit}"
    )


class Progress(Protocol):
    def update(self, symbol: str, timeframe: str, done: int, total: int) -> None: ...

    def finish(self, symbol: str, timeframe: str, done: int, total: int) -> None: ...


class TerminalProgress:
    """A bar redrawn in place with carriage returns (for a terminal)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def update(self, symbol: str, timeframe: str, done: int, total: int) -> None:
        self.stream.write("\r" + render_bar(f"{symbol} {timeframe}", done, total) + "\033[K")
        self.stream.flush()

    def finish(self, symbol: str, timeframe: str, done: int, total: int) -> None:
        self.update(symbol, timeframe, done, total)
        self.stream.write("\n")
        self.stream.flush()


class LogProgress:
    """One structured `download progress` line per chunk (for logs and pipes)."""

    def update(self, symbol: str, timeframe: str, done: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, done * 100 // total)
        log.info(
            "download progress", symbol=symbol, timeframe=timeframe, bars=done, total=total, percent=percent
        )

    def finish(self, symbol: str, timeframe: str, done: int, total: int) -> None:
        """Nothing more: the last chunk's line said 100%, and `download done` follows."""


def progress_for(stream: TextIO) -> Progress:
    isatty = getattr(stream, "isatty", None)
    return TerminalProgress(stream) if callable(isatty) and isatty() else LogProgress()


# --- the download -----------------------------------------------------------------------------
@dataclass(slots=True)
class SymbolResult:
    symbol: str
    fetched: int = 0  # bars the exchange sent in the window
    stored: int = 0  # new in the database
    already_stored: int = 0  # in the database already with the same values
    conflicts: int = 0  # in the database already with other values (kept as stored)
    duplicates: int = 0  # identical copies dropped by validation
    rejected: Counter[str] = field(default_factory=Counter)
    csv_written: int = 0
    csv_skipped: int = 0  # at or before the file's last bar: the file had them (or cannot take them)


@dataclass(slots=True)
class DownloadSummary:
    plan: DownloadPlan
    results: list[SymbolResult] = field(default_factory=list)
    failure: str | None = None  # why it stopped early

    def render(self) -> str:
        p = self.plan
        lines = [
            f"download summary: {p.exchange} {len(p.symbols)} symbol(s) at {p.timeframe}, "
            f"{_iso(p.since_ms)} to {_iso(p.until_ms)} UTC"
        ]
        for r in self.results:
            rejected = ", ".join(f"{reason} {n}" for reason, n in sorted(r.rejected.items())) or "none"
            parts = [f"  {r.symbol}: {r.fetched:,} bars fetched"]
            if p.to_db:
                parts.append(
                    f"{r.stored:,} stored ({r.already_stored:,} already stored, {r.conflicts} conflicting)"
                )
            if p.csv_dir is not None:
                parts.append(f"{r.csv_written:,} written to CSV ({r.csv_skipped:,} already in the file)")
            parts.append(f"rejected: {rejected}")
            lines.append(", ".join(parts))
        total_rejected = sum(sum(r.rejected.values()) for r in self.results)
        totals = [f"  total: {sum(r.fetched for r in self.results):,} fetched"]
        if p.to_db:
            totals.append(f"{sum(r.stored for r in self.results):,} stored")
        if p.csv_dir is not None:
            totals.append(f"{sum(r.csv_written for r in self.results):,} written to CSV")
        totals.append(f"{total_rejected:,} rejected")
        lines.append(", ".join(totals))
        if self.failure is not None:
            lines.append(f"  stopped early: {self.failure}")
        return "\n".join(lines)


async def check_symbols(exchange: ExchangeAdapter, plan: DownloadPlan) -> None:
    """DownloadError naming every symbol of the plan the exchange does not list."""
    markets = await exchange.load_markets()
    missing = [s for s in plan.symbols if s not in markets]
    if missing:
        where = "--symbols" if plan.symbols_from_cli else "universe.symbols (configuration)"
        raise DownloadError(
            f"{plan.exchange} lists no spot market for {', '.join(missing)} (from {where}); nothing downloaded",
            EX_USAGE if plan.symbols_from_cli else EX_CONFIG,
        )


def _csv_last_time(path: Path) -> int | None:
    """The last bar of an existing candle file (read whole: it must be a valid file to append to)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    series = read_candle_file(path)
    return int(series.open_time_ms[-1]) if len(series) else None


async def download(
    exchange: ExchangeAdapter,
    plan: DownloadPlan,
    *,
    store: CandleStore | None,
    progress: Progress,
    summary: DownloadSummary | None = None,
    now_ms: Callable[[], int] = _now_ms,
) -> DownloadSummary:
    """Fetch, validate and store the plan's bars, symbol by symbol, chunk by chunk. Exchange
    errors (after the adapter's retries) propagate; `summary` (pass one to keep it then) holds
    what was done until then. `check_symbols` first: this does not check."""
    if plan.to_db and store is None:
        raise ValueError("the plan writes to the database: a store is needed")
    summary = summary if summary is not None else DownloadSummary(plan)
    step = timeframe_ms(plan.timeframe)
    chunk_ms = plan.chunk_bars * step
    if plan.csv_dir is not None:
        plan.csv_dir.mkdir(parents=True, exist_ok=True)
    for symbol in plan.symbols:
        result = SymbolResult(symbol)
        summary.results.append(result)
        csv_path = plan.csv_path(symbol) if plan.csv_dir is not None else None
        csv_last = _csv_last_time(csv_path) if csv_path is not None else None
        since = plan.since_ms
        if not plan.to_db and csv_last is not None:
            since = max(since, csv_last + step)  # CSV only: resume after the file's last bar
        last_accepted: Candle | None = None
        progress.update(symbol, plan.timeframe, (since - plan.since_ms) // step, plan.total_bars)
        start = since
        while start < plan.until_ms:
            end = min(start + chunk_ms, plan.until_ms)
            candles = await exchange.fetch_ohlcv(symbol, plan.timeframe, start, end)
            result.fetched += len(candles)
            verdict = validate_batch(candles, now_ms=now_ms(), last_accepted=last_accepted)
            result.duplicates += verdict.duplicates
            for bar, reason in verdict.rejected:
                result.rejected[reason.value] += 1
                log.warning("bar rejected", symbol=symbol, open_time_ms=bar.open_time_ms, reason=reason.value)
            accepted = verdict.accepted
            if accepted:
                last_accepted = accepted[-1]
            if store is not None and plan.to_db and accepted:
                written = await store.write(accepted)
                result.stored += written.inserted
                result.already_stored += written.identical
                result.conflicts += len(written.conflicting)
                for conflict in written.conflicting:
                    log.warning(
                        "bar differs from the stored one; kept as stored",
                        symbol=symbol,
                        open_time_ms=conflict.incoming.open_time_ms,
                    )
            if csv_path is not None and accepted:
                fresh = [c for c in accepted if csv_last is None or c.open_time_ms > csv_last]
                result.csv_skipped += len(accepted) - len(fresh)
                if fresh:
                    result.csv_written += append_candle_file(csv_path, fresh)
                    csv_last = fresh[-1].open_time_ms
            start = end
            progress.update(symbol, plan.timeframe, (start - plan.since_ms) // step, plan.total_bars)
        progress.finish(symbol, plan.timeframe, plan.total_bars, plan.total_bars)
        log.info(
            "download done",
            symbol=symbol,
            timeframe=plan.timeframe,
            fetched=result.fetched,
            stored=result.stored,
            csv_written=result.csv_written,
            rejected=sum(result.rejected.values()),
        )
    return summary


# --- the command --------------------------------------------------------------------------------
def add_download_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """The `download` subcommand on `commands` (cli.build_parser's subparsers)."""
    parser = commands.add_parser(
        "download",
        parents=list(parents),
        help="download candles from the exchange into the database and/or CSV files",
        description=(
            "Download closed candles of the universe (or --symbols) from the configured ccxt "
            "exchange into the database and/or candle files."
        ),
    )
    parser.add_argument(
        "--symbols",
        metavar="LIST",
        help="comma-separated, e.g. BTC/USDT,ETH/USDT (default: universe.symbols)",
    )
    parser.add_argument("--timeframe", choices=TIMEFRAMES, help="default: universe.timeframe")
    window = parser.add_mutually_exclusive_group()
    window.add_argument("--since", metavar="DATE", help="ISO date or date-time, UTC unless it has an offset")
    window.add_argument(
        "--days", type=int, metavar="N", help="the last N days (default: universe.backfill_days)"
    )
    parser.add_argument("--until", metavar="DATE", help="ISO date or date-time, exclusive (default: now)")
    parser.add_argument(
        "--to", choices=["db", "csv", "both"], default="db", help="where the bars go (default: db)"
    )
    parser.add_argument(
        "--csv-dir", type=Path, metavar="DIR", help="for --to csv|both (default: universe.replay_data_dir)"
    )
    parser.add_argument(
        "--chunk-bars",
        type=int,
        default=DEFAULT_CHUNK_BARS,
        metavar="N",
        help=f"bars per chunk (default: {DEFAULT_CHUNK_BARS:,})",
    )
    return parser


async def cmd_download(
    config: HuracanConfig,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """`huracan download`: exit 0 done, 64 bad arguments or a symbol from --symbols the exchange
    does not list, 78 the same from the configuration, 69 the exchange or database unavailable."""
    from huracan.memory.database import DatabaseUnavailable, SchemaNotCurrent, open_command_pool
    from huracan.memory.migrate import MigrationError

    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        plan = plan_from_args(config, args)
    except DownloadError as exc:
        print(f"huracan download: {exc}", file=err)
        return exc.exit_code
    summary = DownloadSummary(plan)
    pool = None
    status = EX_OK
    try:
        async with ExchangeAdapter(config.exchange) as exchange:
            await check_symbols(exchange, plan)
            store = None
            if plan.to_db:
                try:
                    pool = await open_command_pool(config.database, config.daemon.state_dir)
                except SchemaNotCurrent as exc:
                    raise DownloadError(str(exc), EX_CONFIG) from None
                store = CandleStore(pool)
            await download(exchange, plan, store=store, progress=progress_for(err), summary=summary)
    except DownloadError as exc:
        print(f"huracan download: {exc}", file=err)
        return exc.exit_code
    except ExchangeError as exc:
        summary.failure = f"the exchange failed after retries: {exc}"
        print(
            f"\nhuracan download: {plan.exchange} unavailable after retries ({type(exc).__name__}): {exc}",
            file=err,
        )
        status = EX_UNAVAILABLE
    except DatabaseUnavailable as exc:
        summary.failure = f"database unavailable: {exc}"
        print(f"\nhuracan download: database unavailable: {exc}", file=err)
        status = EX_UNAVAILABLE
    except MigrationError as exc:
        print(f"huracan download: {exc}", file=err)
        return EX_SOFTWARE
    except CandleFileError as exc:
        summary.failure = f"candle file: {exc}"
        print(f"\nhuracan download: cannot append to the candle file: {exc}", file=err)
        status = EX_USAGE
    finally:
        if pool is not None:
            await pool.close()
    if summary.results:
        if status != EX_OK:
            print("what was downloaded before the failure stays stored", file=err)
        print(summary.render(), file=out)
    return status
