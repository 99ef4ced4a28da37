"""Kill -9 chaos: the live daemon killed at random points against the emulator, restarted, and
then checked against the venue's own records.

    python -m huracan.testing.chaos --kills 200 [--seed 1] [--speed 5]     # make chaos
    python -m huracan.testing.chaos --mode stack --kills 200               # the trading stack alone

The runner (runner.py) starts the loopback emulator in a process of its own, in paced mode:
market time (2021's candles) moves at `--speed` bars per wall second as a pure function of wall
time, which it serves at GET /emulator/clock. It registers a champion model that trades a lot
(huracan.testing.champion), then again and again starts the whole daemon (daemon.py: the real
huracan.daemon.app.Daemon in live mode, its clock a PacedMarketClock that follows the
emulator's market time) and sends it SIGKILL at a random point: in start-up, in backfill and
reconciliation, or while trading. No finally block runs, no rollback but the database's own.
Each daemon begins as after a crash: the journal restored, the venue reconciled, and only
then orders.

At the end, with market time frozen, a last worker (stack.py) reconciles and checks (venue.py):
- no duplicate orders (a client order id is at most one venue order),
- no orphans (every venue order is in the journal; every open one is tracked as working),
- no lost or double-counted fills (every venue trade is recorded once, nothing is recorded that
  the venue did not trade, and each order's recorded fills add up to what the venue executed),
- balances equal the journal's ledger,
and the run asserts that the daemons placed orders at all.
"""

from huracan.testing.chaos.runner import ChaosResult, run_chaos
from huracan.testing.chaos.venue import SYMBOLS, chaos_config, chaos_data_dir, verify_against_venue

__all__ = ["SYMBOLS", "ChaosResult", "chaos_config", "chaos_data_dir", "run_chaos", "verify_against_venue"]
