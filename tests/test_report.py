"""`huracan report losses` and the README's psql queries against PostgreSQL: the grouping worked
out by hand on seven analysed losses, the filters and their boundaries, the empty case, the
table's alignment, and the command through `huracan.cli.main` with its exit statuses."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan import cli
from huracan.analysis.report import (
    NO_LOSSES,
    LossReasonRow,
    ReportArgumentError,
    format_loss_report,
    loss_report,
    parse_since,
)
from huracan.exit_codes import EX_OK, EX_UNAVAILABLE, EX_USAGE

pytestmark = pytest.mark.db

REPO = Path(__file__).resolve().parents[1]


def day(d: int, month: int = 11, hour: int = 0) -> datetime:
    return datetime(2026, month, d, hour, tzinfo=UTC)


# (mode, exit time, pnl_bps, pnl_account GBP, reason, severity, preventable)
LOSSES = (
    ("replay", day(1, 10, 12), -40.0, "-12.00", "stop_too_tight", "moderate", True),  # t1
    ("replay", day(15, 10, 12), -60.0, "-18.00", "stop_too_tight", "severe", True),  # t2
    ("live", day(2), -20.0, "-6.00", "stop_too_tight", "moderate", False),  # t3: exactly midnight
    ("shadow", day(10, 11, 12), -80.0, "-24.00", "stop_too_tight", "severe", True),  # t4
    ("replay", day(20, 10, 12), -100.0, "-30.00", "regime_change", "moderate", False),  # t5
    ("live", day(5, 11, 12), -30.0, "-9.00", "regime_change", "moderate", False),  # t6
    ("live", day(3, 11, 12), -10.0, "-3.00", "costs_exceeded_move", "minor", True),  # t7
)
ANALYSIS_DELAY = timedelta(hours=4, minutes=5)


async def insert_trade(
    conn: asyncpg.Connection,
    *,
    mode: str,
    exit_time: datetime,
    pnl_bps: float,
    pnl_account: str,
    currency: str = "GBP",
    exit_reason: str = "stop_loss",
) -> int:
    pnl = Decimal(pnl_account)
    trade_id: int = await conn.fetchval(
        """
        INSERT INTO trade_memory (mode, exchange, symbol, entry_time, exit_time, entry_price, exit_price,
                                  quantity, size_multiplier, pnl_quote, pnl_account, account_currency,
                                  pnl_bps, entry_features, exit_reason, entry_regime, model_version)
        VALUES ($1, 'binance', 'BTC/USDT', $2::timestamptz - interval '1 hour', $2, 40000, 39900, 0.075, 1,
                $3, $4, $5, $6, '{0.1, 0.2}', $7, 'low_vol_ranging', 'm20261101-000000-abcdef')
        RETURNING id
        """,
        mode,
        exit_time,
        pnl / Decimal("0.79"),
        pnl,
        currency,
        pnl_bps,
        exit_reason,
    )
    return trade_id


async def insert_loss(
    conn: asyncpg.Connection, trade_id: int, reason: str, severity: str, preventable: bool, at: datetime
) -> None:
    await conn.execute(
        """
        INSERT INTO loss_analysis (trade_id, primary_failure_reason, severity, preventable, regime_changed,
                                   analyzed_at)
        VALUES ($1, $2, $3, $4, $2 = 'regime_change', $5)
        """,
        trade_id,
        reason,
        severity,
        preventable,
        at,
    )


async def seed(conn: asyncpg.Connection) -> list[int]:
    """The seven analysed losses, plus a win and a loss not analysed yet (neither may count)."""
    ids = []
    for mode, exit_time, bps, pnl, reason, severity, preventable in LOSSES:
        trade_id = await insert_trade(conn, mode=mode, exit_time=exit_time, pnl_bps=bps, pnl_account=pnl)
        await insert_loss(conn, trade_id, reason, severity, preventable, exit_time + ANALYSIS_DELAY)
        ids.append(trade_id)
    await insert_trade(
        conn, mode="live", exit_time=day(4), pnl_bps=55.0, pnl_account="16.50", exit_reason="take_profit"
    )
    await insert_trade(conn, mode="live", exit_time=day(6), pnl_bps=-500.0, pnl_account="-150.00")
    return ids


def summary(rows: list[LossReasonRow]) -> list[tuple[Any, ...]]:
    return [
        (
            r.reason,
            r.trades,
            round(r.share, 6),
            r.avg_pnl_bps,
            r.pnl_account,
            r.preventable_share,
            r.common_severity,
        )
        for r in rows
    ]


async def test_losses_grouped_by_reason(db_conn: asyncpg.Connection) -> None:
    await seed(db_conn)
    rows = await loss_report(db_conn)
    # stop_too_tight: t1-t4. 4 of 7 losses; bps (-40 - 60 - 20 - 80) / 4 = -50;
    #   GBP -12 - 18 - 6 - 24 = -60; preventable 3 of 4; severities moderate 2, severe 2: the tie
    #   goes to severe.
    # regime_change: t5, t6. 2/7; (-100 - 30) / 2 = -65; -39; none preventable; moderate.
    # costs_exceeded_move: t7. 1/7; -10; -3; 1 of 1; minor.
    assert summary(rows) == [
        ("stop_too_tight", 4, round(4 / 7, 6), -50.0, Decimal("-60.00"), 0.75, "severe"),
        ("regime_change", 2, round(2 / 7, 6), -65.0, Decimal("-39.00"), 0.0, "moderate"),
        ("costs_exceeded_move", 1, round(1 / 7, 6), -10.0, Decimal("-3.00"), 1.0, "minor"),
    ]
    assert {r.account_currency for r in rows} == {"GBP"}
    # Latest analysis of each reason: t4 (10 Nov), t6 (5 Nov), t7 (3 Nov), each + 4h05.
    assert [r.latest_analyzed_at for r in rows] == [
        day(10, 11, 12) + ANALYSIS_DELAY,
        day(5, 11, 12) + ANALYSIS_DELAY,
        day(3, 11, 12) + ANALYSIS_DELAY,
    ]

    text = format_loss_report(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["REASON", "TRADES", "SHARE"]
    assert lines[1].split() == [
        "stop_too_tight", "4", "57.1%", "-50.0", "-60.00", "GBP", "75%", "severe", "2026-11-10", "16:05",
    ]  # fmt: skip
    # Total: 7 trades; bps (-200 - 130 - 10) / 7 = -48.57; GBP -102; preventable (3 + 0 + 1) / 7 = 57%.
    assert lines[-1].split() == ["total", "7", "100.0%", "-48.6", "-102.00", "GBP", "57%"]


async def test_filters_by_mode_and_exit_day(db_conn: asyncpg.Connection) -> None:
    await seed(db_conn)
    # Live: t3, t6, t7, one trade each (a third each); equal counts sort by reason.
    assert summary(await loss_report(db_conn, mode="live")) == [
        ("costs_exceeded_move", 1, round(1 / 3, 6), -10.0, Decimal("-3.00"), 1.0, "minor"),
        ("regime_change", 1, round(1 / 3, 6), -30.0, Decimal("-9.00"), 0.0, "moderate"),
        ("stop_too_tight", 1, round(1 / 3, 6), -20.0, Decimal("-6.00"), 0.0, "moderate"),
    ]
    # Since 2 Nov: t3 (exited at that midnight: included), t4, t6, t7. stop_too_tight t3 + t4:
    # (-20 - 80) / 2 = -50, GBP -30, preventable 1 of 2, moderate 1 severe 1 -> severe.
    assert summary(await loss_report(db_conn, since=date(2026, 11, 2))) == [
        ("stop_too_tight", 2, 0.5, -50.0, Decimal("-30.00"), 0.5, "severe"),
        ("costs_exceeded_move", 1, 0.25, -10.0, Decimal("-3.00"), 1.0, "minor"),
        ("regime_change", 1, 0.25, -30.0, Decimal("-9.00"), 0.0, "moderate"),
    ]
    # One second later t3 is out.
    later = await loss_report(db_conn, since=day(2) + timedelta(seconds=1))
    assert [(r.reason, r.trades) for r in later] == [
        ("costs_exceeded_move", 1),
        ("regime_change", 1),
        ("stop_too_tight", 1),
    ]
    both = await loss_report(db_conn, since=date(2026, 11, 2), mode="shadow")
    assert summary(both) == [("stop_too_tight", 1, 1.0, -80.0, Decimal("-24.00"), 1.0, "severe")]
    assert await loss_report(db_conn, since=date(2027, 1, 1)) == []


async def test_empty_memory_and_bad_filters(db_conn: asyncpg.Connection) -> None:
    assert await loss_report(db_conn) == []
    assert format_loss_report([]) == NO_LOSSES
    with pytest.raises(ReportArgumentError, match="mode: 'paper' is not one of replay, shadow, live"):
        await loss_report(db_conn, mode="paper")
    with pytest.raises(ReportArgumentError, match="no time zone"):
        await loss_report(db_conn, since=datetime(2026, 11, 1))  # naive on purpose


async def test_currencies_are_never_added_up(db_conn: asyncpg.Connection) -> None:
    for currency, pnl in (("GBP", "-10.00"), ("USD", "-12.50")):
        trade_id = await insert_trade(
            db_conn, mode="live", exit_time=day(1), pnl_bps=-25.0, pnl_account=pnl, currency=currency
        )
        await insert_loss(db_conn, trade_id, "adverse_selection", "minor", False, day(1, 11, 5))
    rows = await loss_report(db_conn)
    assert [(r.account_currency, r.trades, r.share, r.pnl_account) for r in rows] == [
        ("GBP", 1, 0.5, Decimal("-10.00")),
        ("USD", 1, 0.5, Decimal("-12.50")),
    ]
    assert "(mixed currencies)" in format_loss_report(rows).splitlines()[-1]


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memory_queries", REPO / "bench" / "memory_queries.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_readme_queries_run_and_agree_with_the_report(db_conn: asyncpg.Connection) -> None:
    """The README's psql queries, verbatim (as the bench reads them), on the hand-made memory."""
    queries = {name: sql for name, _, sql in load_bench().readme_queries()}
    ids = await seed(db_conn)
    await db_conn.execute(
        """
        INSERT INTO post_exit_tracking (trade_id, horizon, horizon_time, price_at_horizon, best_price,
            best_price_at, worst_price, worst_price_at, missed_profit_bps, should_have_held,
            should_have_exited_earlier)
        SELECT $1, h, now(), 100, 101, now(), 99, now(), m, h = '4h', false
          FROM unnest(ARRAY['1h', '4h', '24h'], ARRAY[10.0, 30.0, 50.0]) AS x (h, m)
        """,
        ids[0],
    )
    await db_conn.execute(
        """
        INSERT INTO pattern_library (centroid, occurrences, wins, losses, win_rate, reliability, sample_adequate)
        VALUES ('{0.1}', 40, 24, 16, 0.6, 0.29, true), ('{0.2}', 10, 8, 2, 0.8, 0.09, false),
               ('{0.3}', 50, 25, 25, 0.5, 0.33, true)
        """
    )
    await db_conn.execute(
        """
        INSERT INTO model_performance (model_version, day, trades, wins, losses, pnl_account,
                                       gross_profit_quote, gross_loss_quote)
        VALUES ('m1', current_date, 4, 3, 1, 12.5, 30, 10), ('m1', current_date - 40, 9, 0, 9, -90, 0, 90)
        """
    )
    results = {name: await db_conn.fetch(sql) for name, sql in queries.items()}

    # Per mode: live t3 t6 t7 + a win + an unanalysed loss = 5 trades, 1 win, GBP -6 - 9 - 3 + 16.50 - 150.
    live = next(r for r in results["trades_per_mode"] if r["mode"] == "live")
    assert (live["trades"], live["wins"], live["pnl_account"]) == (5, 1, Decimal("-151.50"))
    # Only the adequate pattern above 0.55.
    assert [r["win_rate"] for r in results["winning_patterns"]] == [Decimal("0.600")]
    # The loss reasons, as loss_report has them (rounded as the query rounds).
    report = await loss_report(db_conn)
    assert [tuple(r.values()) for r in results["loss_reasons"]] == [
        (
            r.reason,
            r.account_currency,
            r.trades,
            round(Decimal(r.share), 3),
            round(Decimal(r.avg_pnl_bps), 1),
            r.pnl_account,
            round(Decimal(r.preventable_share), 3),
        )
        for r in report
    ]
    # t1 exited on a stop: three horizons in horizon order, held only at 4h.
    assert [(r["exit_reason"], r["horizon"], r["should_have_held"]) for r in results["post_exit"]] == [
        ("stop_loss", "1h", Decimal("0.000")),
        ("stop_loss", "4h", Decimal("1.000")),
        ("stop_loss", "24h", Decimal("0.000")),
    ]
    # The last 30 days hold today's row only: profit factor 30 / 10.
    assert [(r["model_version"], r["trades"], r["profit_factor"]) for r in results["models_30d"]] == [
        ("m1", 4, Decimal("3.00"))
    ]


rows_strategy = st.lists(
    st.builds(
        LossReasonRow,
        reason=st.sampled_from(["stop_too_tight", "regime_change", "costs_exceeded_move"]),
        account_currency=st.just("GBP"),
        trades=st.integers(1, 10**7),
        share=st.floats(0, 1),
        avg_pnl_bps=st.floats(-(10**5), 0),
        pnl_account=st.decimals(-(10**9), 0, places=2),
        preventable_share=st.floats(0, 1),
        common_severity=st.sampled_from(["minor", "moderate", "severe", "critical"]),
        latest_analyzed_at=st.datetimes(timezones=st.just(UTC)),
    ),
    min_size=1,
    max_size=8,
)


@given(rows_strategy)
@settings(max_examples=60, deadline=None)
def test_table_columns_line_up(rows: list[LossReasonRow]) -> None:
    lines = format_loss_report(rows).splitlines()
    assert len(lines) == len(rows) + 2  # header, one line per row, total
    # Right-aligned columns end where their header ends, on every line.
    for header in ("TRADES", "SHARE", "AVG BPS", "PNL (ACCOUNT)", "PREVENTABLE"):
        end = lines[0].index(header) + len(header)
        # (The total line ends after PREVENTABLE: its severity and time are blank.)
        assert all(line[end - 1] != " " and line[end : end + 1] in (" ", "") for line in lines)


def test_since_must_be_a_day() -> None:
    assert parse_since("2026-11-01") == date(2026, 11, 1)
    with pytest.raises(
        ReportArgumentError, match=r"--since: '2026-02-30' is not a date YYYY-MM-DD \(day is out"
    ):
        parse_since("2026-02-30")
    with pytest.raises(ReportArgumentError, match="--since: '20261101'"):
        parse_since("20261101")


# --- the command through its main entry (sync: main runs its own event loop) ----------------------
@pytest.fixture
def cli_env(db_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HURACAN_DATABASE__DSN", db_dsn)
    monkeypatch.setenv("HURACAN_DAEMON__STATE_DIR", str(tmp_path / "state"))
    return db_dsn


def seed_database(dsn: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await seed(conn)
        finally:
            await conn.close()

    asyncio.run(go())


def test_cli_prints_the_report(cli_env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "losses"]) == EX_OK
    assert capsys.readouterr().out.splitlines() == ["analysed losses, trades of every mode:", NO_LOSSES]

    seed_database(cli_env)
    assert cli.main(["report", "losses", "--mode", "live", "--since", "2026-11-03", "--json"]) == EX_OK
    # Live since 3 Nov: t6 and t7 (t3 exited on 2 Nov).
    rows = json.loads(capsys.readouterr().out)
    assert [(r["reason"], r["trades"], r["pnl_account"], r["share"]) for r in rows] == [
        ("costs_exceeded_move", 1, "-3.00", 0.5),
        ("regime_change", 1, "-9.00", 0.5),
    ]
    assert rows[0]["latest_analyzed_at"] == "2026-11-03T16:05:00+00:00"

    assert cli.main(["report", "losses", "--mode", "shadow"]) == EX_OK
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "analysed losses, shadow trades:"
    assert out[2].split()[:4] == ["stop_too_tight", "1", "100.0%", "-80.0"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2026-13-01"], "huracan report losses: --since: '2026-13-01' is not a date YYYY-MM-DD"),
        (["--since", "yesterday"], "huracan report losses: --since: 'yesterday' is not a date YYYY-MM-DD"),
        (["--mode", "paper"], "huracan report losses: --mode: 'paper' is not one of replay, shadow, live"),
    ],
)
def test_cli_refuses_bad_filters(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Refused before any database is needed: this DSN leads nowhere.
    monkeypatch.setenv("HURACAN_DATABASE__DSN", f"postgresql://nobody@/x?host={tmp_path}&port=1")
    monkeypatch.setenv("HURACAN_DAEMON__STATE_DIR", str(tmp_path / "state"))
    assert cli.main(["report", "losses", *argv]) == EX_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message)


def test_cli_without_a_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HURACAN_DATABASE__DSN", f"postgresql://nobody@/x?host={tmp_path}&port=1")
    monkeypatch.setenv("HURACAN_DAEMON__STATE_DIR", str(tmp_path / "state"))
    assert cli.main(["report", "losses"]) == EX_UNAVAILABLE
    assert "huracan report losses: database unavailable" in capsys.readouterr().err
