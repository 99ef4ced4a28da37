"""Running mean and variance of the market features, fitted on training data and saved with the
model, so live features are scaled exactly as the ones the model learnt on.

The daemon's decision step normalises in compiled code (huracan/agent/kernel.py's
`normalise_into`, with this mean and `scale`); tests/test_decide_kernel.py holds it equal to
`normalise` to the bit."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

CLIP = 5.0
VAR_FLOOR = 1e-12


class RunningNormaliser:
    """Chan et al.'s parallel merge of (count, mean, M2), one chunk at a time, in float64."""

    def __init__(self, width: int) -> None:
        if width < 1:
            raise ValueError("width must be >= 1")
        self.width = width
        self.count = 0.0
        self.mean = np.zeros(width)
        self.m2 = np.zeros(width)

    @property
    def var(self) -> npt.NDArray[np.float64]:
        return self.m2 / self.count if self.count > 0 else np.ones(self.width)

    @property
    def scale(self) -> npt.NDArray[np.float64]:
        """The divisor of `normalise`: the standard deviation, floored at sqrt(VAR_FLOOR) so a
        constant column does not divide by zero. The live decision kernel takes it as is."""
        return np.sqrt(np.maximum(self.var, VAR_FLOOR))

    def update(self, x: npt.NDArray[np.floating[Any]]) -> None:
        """Fold in rows [..., width]; rows with any NaN (warm-up) are skipped."""
        rows = np.asarray(x, dtype=np.float64).reshape(-1, self.width)
        rows = rows[np.isfinite(rows).all(axis=1)]
        n = float(len(rows))
        if n == 0:
            return
        chunk_mean = rows.mean(axis=0)
        chunk_m2 = ((rows - chunk_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + chunk_m2 + delta * delta * (self.count * n / total)
        self.count = total

    def normalise(self, x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
        """(x - mean) / std, clipped to +-5, NaN to 0, as float32."""
        scaled = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return np.nan_to_num(np.clip(scaled, -CLIP, CLIP), nan=0.0).astype(np.float32)

    def state(self) -> dict[str, Any]:
        """Plain floats and lists: stored in a checkpoint that loads with weights_only=True."""
        return {
            "count": float(self.count),
            "mean": [float(m) for m in self.mean],
            "m2": [float(m) for m in self.m2],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunningNormaliser:
        try:
            mean = np.asarray(state["mean"], dtype=np.float64)
            m2 = np.asarray(state["m2"], dtype=np.float64)
            count = float(state["count"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"normaliser state is unreadable: {exc!r}") from None
        if mean.ndim != 1 or mean.shape != m2.shape or len(mean) == 0:
            raise ValueError(f"normaliser state has mean {mean.shape} and m2 {m2.shape}")
        if not (math.isfinite(count) and count > 0 and np.isfinite(mean).all() and (m2 >= 0).all()):
            raise ValueError("normaliser state holds a non-positive count or non-finite statistics")
        normaliser = cls(len(mean))
        normaliser.count, normaliser.mean, normaliser.m2 = count, mean, m2
        return normaliser
