"""Which models decide: the champion for its symbols, an A/B challenger in shadow for its share.

The registry says which versions hold those roles; `ModelSlots` loads them, verifies each
artefact (hash and feature schema) and swaps a slot only when the new model loaded. A model
file that is corrupt or of another schema is refused with an error in the log, and the daemon
keeps deciding with the model it has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from huracan.agent.runner import PolicyRunner
from huracan.features.schema import STATE_SCHEMA
from huracan.logs import get_logger
from huracan.rl.checkpoint import CheckpointError
from huracan.rl.registry import ModelRecord, ModelRegistry, challenger_symbols

log = get_logger("huracan.agent.models")


@dataclass(frozen=True, slots=True)
class Challenger:
    runner: PolicyRunner
    symbols: frozenset[str]


class ModelSlots:
    def __init__(self, registry: ModelRegistry, symbols: Sequence[str], bars_per_day: int) -> None:
        self.registry = registry
        self.symbols = tuple(symbols)
        self.bars_per_day = bars_per_day
        self.champion: PolicyRunner | None = None
        self.challenger: Challenger | None = None
        # Versions that failed to load, so a broken artefact is reported once, not every check.
        self._refused: set[tuple[str, str]] = set()

    async def refresh(self) -> None:
        """Bring the slots in line with the registry, keeping what runs when a load fails."""
        active = await self.registry.active()
        if active is None:
            if self.champion is None:
                log.warning(
                    "no champion model: the agent decides nothing until `huracan train` registers one"
                )
        elif self.champion is None or self.champion.version != active.version:
            runner = await self._load(active, "champion")
            if runner is not None:
                previous = self.champion.version if self.champion else None
                self.champion = runner
                log.info("champion model in use", version=active.version, previous=previous)
        shadow = await self.registry.challenger()
        if shadow is None:
            if self.challenger is not None:
                log.info("A/B test ended", challenger=self.challenger.runner.version)
            self.challenger = None
            return
        share = shadow.ab_share or 0.0
        symbols = challenger_symbols(self.symbols, shadow.version, share)
        if self.challenger is not None and self.challenger.runner.version == shadow.version:
            self.challenger = Challenger(self.challenger.runner, symbols)
            return
        runner = await self._load(shadow, "challenger")
        # A challenger that does not load decides nothing; the one it replaced is no longer in test.
        self.challenger = Challenger(runner, symbols) if runner is not None else None
        if runner is not None:
            log.info("A/B challenger in shadow", version=shadow.version, share=share, symbols=sorted(symbols))

    async def _load(self, record: ModelRecord, role: str) -> PolicyRunner | None:
        try:
            checkpoint = await self.registry.load(record, expected_schema_hash=STATE_SCHEMA.hash)
            return PolicyRunner(checkpoint, record.version, bars_per_day=self.bars_per_day)
        except CheckpointError as exc:
            key = (record.version, record.artifact_sha256 or "")
            if key not in self._refused:
                self._refused.add(key)
                kept = self.champion.version if role == "champion" and self.champion else None
                log.error("model refused", role=role, version=record.version, error=str(exc), kept=kept)
            return None

    def deciders(self) -> list[tuple[PolicyRunner, frozenset[str], bool]]:
        """(runner, its symbols, shadow?): the champion decides for every symbol; a challenger
        decides again, in shadow, for its share, so the two can be compared on the same bars."""
        out: list[tuple[PolicyRunner, frozenset[str], bool]] = []
        if self.champion is not None:
            out.append((self.champion, frozenset(self.symbols), False))
        if self.challenger is not None:
            out.append((self.challenger.runner, self.challenger.symbols, True))
        return out
