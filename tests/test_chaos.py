"""A handful of kill -9 points of the whole live daemon against a paced emulator (make chaos runs
hundreds): after the kills and a restart's reconciliation, no duplicate or orphan order and no
lost or double-counted fill. See huracan/testing/chaos/."""

from __future__ import annotations

from pathlib import Path

import pytest

from huracan.testing.chaos import chaos_data_dir, run_chaos

pytestmark = pytest.mark.db


@pytest.mark.timeout(180)
def test_kill_nine_of_the_daemon_at_random_points_loses_and_duplicates_nothing(
    db_dsn: str, tmp_path: Path
) -> None:
    data = tmp_path / "candles"
    data.mkdir()
    # Seed 4 aims the four kills at: just after the services started, trading, start-up, trading.
    result = run_chaos(
        db_dsn, kills=4, seed=4, data_dir=chaos_data_dir(data, 4000), work_dir=tmp_path / "run"
    )
    failure = f"{result.summary()}\n--- the last daemon's log (tail) ---\n{result.last_log}"
    assert result.early_exits == [], failure
    assert result.daemon_errors == [], failure
    assert result.verification.get("problems") == [], failure
    # The daemons really traded before they were killed, and every venue trade is recorded once.
    assert result.verification["venue_orders"] > 0, failure
    assert result.lives_with_orders >= 1, failure
    assert result.kills_after_orders >= 1, failure
    assert result.verification["venue_trades"] == result.verification["journal_fills"], failure
