"""A handful of kill -9 points of the live trading stack against the emulator (make chaos runs
hundreds): after the kills and a restart's reconciliation, no duplicate or orphan order and no
lost or double-counted fill. See huracan/testing/chaos.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from huracan.testing.chaos import chaos_data_dir, run_chaos

pytestmark = pytest.mark.db


@pytest.mark.timeout(180)
def test_kill_nine_at_random_points_loses_and_duplicates_nothing(db_dsn: str, tmp_path: Path) -> None:
    result = run_chaos(db_dsn, kills=4, seed=11, data_dir=chaos_data_dir(tmp_path))
    assert result.verification.get("problems") == [], result.verification
    # The workers really traded before they were killed, and every venue order is accounted for.
    assert result.verification["venue_orders"] > 0
    assert result.verification["venue_orders"] == result.verification["journal_orders"]
    assert result.verification["venue_trades"] == result.verification["journal_fills"]
