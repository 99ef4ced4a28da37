"""The layout of the state: which number is where. Saved with every model as names and a hash;
a model runs only on the schema it was trained on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from huracan.features.context import CONTEXT_FEATURES
from huracan.features.market import MARKET_FEATURES, MARKET_WIDTH


@dataclass(frozen=True, slots=True)
class FeatureSchema:
    names: tuple[str, ...]
    version: int

    def __post_init__(self) -> None:
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"feature names must be unique: {duplicates}")

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def hash(self) -> str:
        """sha256 of the version and the ordered names: any rename, insertion or reordering
        (or a change of meaning, announced by bumping the version) gives another hash."""
        text = f"huracan-state-v{self.version}\n" + "\n".join(self.names)
        return hashlib.sha256(text.encode()).hexdigest()


# Version 1: the 70 market features of huracan/features/market.py, then the context block.
STATE_SCHEMA = FeatureSchema(MARKET_FEATURES + CONTEXT_FEATURES, version=1)
STATE_SIZE = STATE_SCHEMA.size
assert STATE_SIZE == 80, STATE_SIZE
__all__ = ["MARKET_WIDTH", "STATE_SCHEMA", "STATE_SIZE", "FeatureSchema"]
