"""Closed trades handed from the executor to the pattern memory at the moment they close.

The learning task reads trades from `trade_memory`, which the journal writes a little later and
which the task reads only when it wakes. The agent must not wait for either: a trade closed on
this bar is a past setup for the next bar, in replay as live. So the executor's hook notes it
(nothing more on the fill path) and drain() puts the noted trades in the nearest-setups view
under provisional (negative) ids before the view is read (DrainingView, the decision step's
pattern memory; and each learning pass). The learning task
gives a trade its real id when it learns the row (matched by symbol, entry and exit time).

A losing trade's weight in the view changes once its loss is analysed, 4 h after its exit. In
replay that moment comes in market time far sooner than the learning task wakes, so the replay
waits for it (LearningService.ready_for): `penalties_due` lists the losses handed over whose
penalty is not yet known, with the time it becomes known.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from huracan.analysis.trades import ANALYSIS_HORIZON, HORIZONS
from huracan.execution.positions import ClosedTrade
from huracan.features.schema import MARKET_WIDTH
from huracan.memory.embedding import EntryEmbedder
from huracan.memory.setups import NearestSetups


class Handover:
    def __init__(self, setups: NearestSetups, embedder: EntryEmbedder) -> None:
        self.setups = setups
        self.embedder = embedder
        # (symbol, entry ms, exit ms) -> provisional id, until the row is learned.
        self.provisional: dict[tuple[str, int, int], int] = {}
        # Provisional id -> what the view holds of it (embedding, pnl bps, exit ms): a rebuilt
        # view gets them again.
        self.held: dict[int, tuple[np.ndarray, float, int]] = {}
        # Trade id (provisional, then real) -> when its loss penalty becomes known.
        self.penalties_due: dict[int, int] = {}
        self._count = 0
        # Noted on the fill path, not yet in the view: (provisional id, state, pnl bps, exit ms).
        self._noted: list[tuple[int, tuple[float, ...], float, int]] = []

    def note_closed(self, trade: ClosedTrade) -> None:
        """On the fill path: only noted here (no embedding, no index work); drain() puts the
        noted trades into the view before anyone reads it."""
        if len(trade.entry.features) < MARKET_WIDTH:
            return  # no entry state: nothing to compare setups with
        exit_ms = max(trade.exit_time_ms, trade.entry_time_ms)  # as the journal writes it
        key = (trade.symbol, trade.entry_time_ms, exit_ms)
        if key in self.provisional:  # the same trade again (its fills recorded again after a restart)
            return
        self._count += 1
        provisional = -self._count
        self.provisional[key] = provisional
        self._noted.append((provisional, trade.entry.features[:MARKET_WIDTH], float(trade.pnl_bps), exit_ms))
        if trade.pnl_quote < 0:  # as the loss analyzer's queue: pnl_quote, not the rounded bps
            self.penalties_due[provisional] = exit_ms + HORIZONS[ANALYSIS_HORIZON]

    def drain(self) -> None:
        """The noted trades into the view, embedded in one batch."""
        if not self._noted:
            return
        noted, self._noted = self._noted, []
        # float32 first: as trade_memory's real[] stores the state the learning task reads back.
        embeddings = self.embedder.embed(np.asarray([n[1] for n in noted], dtype=np.float32))
        pnl = [n[2] for n in noted]
        self.setups.add_trades(
            [n[0] for n in noted], embeddings, pnl, [p > 0 for p in pnl], exit_time_ms=[n[3] for n in noted]
        )
        for (provisional, _, pnl_bps, exit_ms), embedding in zip(noted, embeddings, strict=True):
            self.held[provisional] = (embedding, pnl_bps, exit_ms)

    def learned(self, symbol: str, entry_ms: int, exit_ms: int, trade_id: int) -> bool:
        """The row of a trade was learned: True when it had been handed over (it is in the view
        already, now under `trade_id`)."""
        self.drain()
        provisional = self.provisional.pop((symbol, entry_ms, exit_ms), None)
        if provisional is None:
            return False
        self.held.pop(provisional, None)
        self.setups.rekey(provisional, trade_id)
        due = self.penalties_due.pop(provisional, None)
        if due is not None:
            self.penalties_due[trade_id] = due
        return True

    def settled(self, trade_id: int) -> None:
        """The trade's loss was analysed (or will not be): nothing to wait for."""
        self.penalties_due.pop(trade_id, None)

    def due_before(self, as_of_ms: int) -> bool:
        """Whether a penalty known before `as_of_ms` is still unknown here."""
        return any(known < as_of_ms for known in self.penalties_due.values())

    def carry_into(self, fresh: NearestSetups) -> None:
        """Before a rebuilt view replaces the old one: the trades handed over and not yet
        learned go into it too (the rows it was built from do not have them)."""
        self.drain()
        for provisional, (embedding, pnl_bps, exit_ms) in self.held.items():
            fresh.add_trade(provisional, embedding, pnl_bps, pnl_bps > 0, exit_time_ms=exit_ms)


class DrainingView:
    """The decision step's pattern memory: the view, with the trades noted since the last read
    put in first. Only a model that reads the memory makes the decision step ask, so nothing is
    embedded on the way to an order for one that does not."""

    def __init__(self, handover: Handover) -> None:
        self.handover = handover

    def nearest_setups(
        self, symbols: Sequence[str], market_rows: npt.NDArray[np.float64], as_of_ms: int
    ) -> npt.NDArray[np.float64]:
        self.handover.drain()
        return self.handover.setups.nearest_setups(symbols, market_rows, as_of_ms)
