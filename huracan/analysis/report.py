"""Reports a person reads from the memory: `huracan report losses`.

The loss report groups the analysed losses (a `loss_analysis` row joined to its `trade_memory`
row) by primary failure reason, so that the most common way of losing money comes first.
Conventions:

- A loss counts once the loss analyzer has judged it; a losing trade without a
  `loss_analysis` row is not in the report yet.
- `share` and `preventable_share` are fractions 0..1: of the analysed losses in the selection,
  and of this reason's losses that the analyzer marked preventable.
- `avg_pnl_bps` is the mean net result of those trades in basis points of the entry notional
  (negative for losses); `pnl_account` their summed net PnL in the account currency, exact.
  Rows are per (reason, account currency): PnL in two currencies is never added up.
- `common_severity` is the most frequent severity; a tie goes to the more severe one, so the
  report never understates how bad a reason is.
- `since` selects trades by exit time: a date means its midnight UTC; None means from the
  start. `mode` selects replay, shadow or live trades; None means every mode.

`loss_report` queries; `format_loss_report` is pure; `cmd_report` is the command's thin shell.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, TextIO

import asyncpg

from huracan.config import HuracanConfig
from huracan.exit_codes import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE

MODES = ("replay", "shadow", "live")
# Mildest first, as loss_analysis_severity_check lists them.
SEVERITIES = ("minor", "moderate", "severe", "critical")
ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
NO_LOSSES = "no analysed losses in this selection (the loss analyzer has judged no losing trade here yet)"


@dataclass(frozen=True, slots=True)
class LossReasonRow:
    reason: str  # loss_analysis.primary_failure_reason
    account_currency: str
    trades: int
    share: float  # of the analysed losses in the selection, 0..1
    avg_pnl_bps: float  # mean net bps of these trades
    pnl_account: Decimal  # summed net PnL, account currency
    preventable_share: float  # 0..1
    common_severity: str
    latest_analyzed_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "account_currency": self.account_currency,
            "trades": self.trades,
            "share": self.share,
            "avg_pnl_bps": self.avg_pnl_bps,
            # A string: JSON numbers would round the exact amount.
            "pnl_account": str(self.pnl_account),
            "preventable_share": self.preventable_share,
            "common_severity": self.common_severity,
            "latest_analyzed_at": self.latest_analyzed_at.isoformat(),
        }


class ReportArgumentError(ValueError):
    """A bad filter; the message names the argument and what it should be."""


# The selection is materialised once (two readers); severity ties break towards the more severe.
LOSS_REPORT_SQL = """
WITH losses AS (
    SELECT la.primary_failure_reason AS reason, tm.account_currency, tm.pnl_bps, tm.pnl_account,
           la.preventable, la.severity, la.analyzed_at
      FROM loss_analysis la
      JOIN trade_memory tm ON tm.id = la.trade_id
     WHERE ($1::timestamptz IS NULL OR tm.exit_time >= $1::timestamptz)
       AND ($2::text IS NULL OR tm.mode = $2::text)
), severities AS (
    SELECT DISTINCT ON (reason, account_currency) reason, account_currency, severity
      FROM losses
     GROUP BY reason, account_currency, severity
     ORDER BY reason, account_currency, count(*) DESC, array_position($3::text[], severity) DESC
)
SELECT l.reason, l.account_currency, count(*) AS trades,
       count(*)::float8 / (sum(count(*)) OVER ())::float8 AS share,
       avg(l.pnl_bps) AS avg_pnl_bps, sum(l.pnl_account) AS pnl_account,
       avg(l.preventable::int)::float8 AS preventable_share,
       s.severity AS common_severity, max(l.analyzed_at) AS latest_analyzed_at
  FROM losses l
  JOIN severities s USING (reason, account_currency)
 GROUP BY l.reason, l.account_currency, s.severity
 ORDER BY trades DESC, l.reason, l.account_currency
"""


def since_moment(since: date | datetime | None) -> datetime | None:
    """The first exit time in the selection: a date's midnight UTC, an aware datetime as it is."""
    if since is None:
        return None
    if isinstance(since, datetime):
        if since.tzinfo is None:
            raise ReportArgumentError(f"since: {since.isoformat()} has no time zone; give an aware datetime")
        return since
    return datetime.combine(since, time(0), tzinfo=UTC)


async def loss_report(
    pool_or_conn: asyncpg.Pool | asyncpg.Connection,
    *,
    since: date | datetime | None = None,
    mode: str | None = None,
) -> list[LossReasonRow]:
    """Analysed losses per primary failure reason (and account currency), most trades first."""
    if mode is not None and mode not in MODES:
        raise ReportArgumentError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    records = await pool_or_conn.fetch(LOSS_REPORT_SQL, since_moment(since), mode, list(SEVERITIES))
    return [
        LossReasonRow(
            reason=r["reason"],
            account_currency=r["account_currency"],
            trades=r["trades"],
            share=r["share"],
            avg_pnl_bps=r["avg_pnl_bps"],
            pnl_account=r["pnl_account"],
            preventable_share=r["preventable_share"],
            common_severity=r["common_severity"],
            latest_analyzed_at=r["latest_analyzed_at"],
        )
        for r in records
    ]


# --- rendering (pure) -----------------------------------------------------------------------------
HEADER = (
    "REASON",
    "TRADES",
    "SHARE",
    "AVG BPS",
    "PNL (ACCOUNT)",
    "PREVENTABLE",
    "SEVERITY",
    "LAST ANALYSED (UTC)",
)
# Numbers read best right-aligned; the rest left.
RIGHT = (False, True, True, True, True, True, False, False)


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def format_loss_report(rows: Sequence[LossReasonRow]) -> str:
    """An aligned plain-text table, a total line under it; one clear line when there are no rows."""
    if not rows:
        return NO_LOSSES
    cells = [
        (
            r.reason,
            f"{r.trades:,}",
            f"{r.share:.1%}",
            f"{r.avg_pnl_bps:+.1f}",
            _money(r.pnl_account, r.account_currency),
            f"{r.preventable_share:.0%}",
            r.common_severity,
            f"{r.latest_analyzed_at.astimezone(UTC):%Y-%m-%d %H:%M}",
        )
        for r in rows
    ]
    trades = sum(r.trades for r in rows)
    currencies = {r.account_currency for r in rows}
    total_pnl = (
        _money(sum((r.pnl_account for r in rows), Decimal(0)), currencies.pop())
        if len(currencies) == 1
        else "(mixed currencies)"
    )
    total = (
        "total",
        f"{trades:,}",
        f"{sum(r.share for r in rows):.1%}",
        # Means weighted by trades: the mean over every analysed loss, not over reasons.
        f"{sum(r.avg_pnl_bps * r.trades for r in rows) / trades:+.1f}",
        total_pnl,
        f"{sum(r.preventable_share * r.trades for r in rows) / trades:.0%}",
        "",
        "",
    )
    table = [HEADER, *cells, total]
    widths = [max(len(row[i]) for row in table) for i in range(len(HEADER))]

    def line(row: tuple[str, ...]) -> str:
        padded = (
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, right in zip(row, widths, RIGHT, strict=True)
        )
        return "  ".join(padded).rstrip()

    return "\n".join(line(row) for row in table)


# --- the command ----------------------------------------------------------------------------------
def add_report_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> argparse.ArgumentParser:
    """The `report` subcommand on `commands` (cli.build_parser's subparsers). The filters are
    checked by the command, not argparse, so that a bad one exits 64 like other misuse."""
    parser = commands.add_parser(
        "report",
        help="what the memory says: losses per failure reason",
        description="Reports over the trade memory.",
    )
    kinds = parser.add_subparsers(dest="report", required=True, metavar="REPORT")
    losses = kinds.add_parser(
        "losses", parents=list(parents), help="analysed losses per primary failure reason"
    )
    losses.add_argument("--since", metavar="YYYY-MM-DD", help="trades that exited on or after this UTC day")
    losses.add_argument(
        "--mode", metavar="|".join(MODES), help="only this mode's trades (default: every mode)"
    )
    losses.add_argument("--json", action="store_true", help="a JSON array of the rows on stdout")
    return parser


def parse_since(text: str | None) -> date | None:
    if text is None:
        return None
    # fromisoformat alone would also take 20261101 and week dates; the option promises one form.
    if not ISO_DAY.fullmatch(text):
        raise ReportArgumentError(f"--since: {text!r} is not a date YYYY-MM-DD")
    try:
        return date.fromisoformat(text)
    except ValueError as exc:
        raise ReportArgumentError(f"--since: {text!r} is not a date YYYY-MM-DD ({exc})") from None


def parse_mode(text: str | None) -> str | None:
    if text is not None and text not in MODES:
        raise ReportArgumentError(f"--mode: {text!r} is not one of {', '.join(MODES)}")
    return text


def _scope(since: date | None, mode: str | None) -> str:
    modes = f"{mode} trades" if mode else "trades of every mode"
    return f"analysed losses, {modes}" + (f" that exited since {since.isoformat()} (UTC)" if since else "")


async def cmd_report(
    config: HuracanConfig,
    args: argparse.Namespace,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """`huracan report losses`. Exit 0 done (no losses too); 64 a bad filter; 69 database
    unavailable; 70 a query failed; 78 the schema is not current and auto_migrate is off."""
    from huracan.memory.database import DatabaseUnavailable, SchemaNotCurrent, open_command_pool
    from huracan.memory.migrate import MigrationError

    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    where = f"huracan report {args.report}"
    try:
        since, mode = parse_since(args.since), parse_mode(args.mode)
    except ReportArgumentError as exc:
        print(f"{where}: {exc}", file=err)
        return EX_USAGE
    try:
        pool = await open_command_pool(config.database, config.daemon.state_dir)
    except SchemaNotCurrent as exc:
        print(f"{where}: {exc}", file=err)
        return EX_CONFIG
    except (DatabaseUnavailable, OSError) as exc:
        print(f"{where}: database unavailable: {exc}", file=err)
        return EX_UNAVAILABLE
    except MigrationError as exc:
        print(f"{where}: {exc}", file=err)
        return EX_SOFTWARE
    try:
        rows = await loss_report(pool, since=since, mode=mode)
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError) as exc:
        print(f"{where}: database connection lost: {exc}", file=err)
        return EX_UNAVAILABLE
    except asyncpg.PostgresError as exc:
        print(f"{where}: the query failed: {type(exc).__name__}: {exc}", file=err)
        return EX_SOFTWARE
    finally:
        await pool.close()
    if args.json:
        print(json.dumps([row.to_json() for row in rows]), file=out)
    else:
        print(_scope(since, mode) + ":", file=out)
        print(format_loss_report(rows), file=out)
    return EX_OK


__all__ = [
    "MODES",
    "LossReasonRow",
    "ReportArgumentError",
    "add_report_parser",
    "cmd_report",
    "format_loss_report",
    "loss_report",
    "parse_mode",
    "parse_since",
]
