"""The lookahead check: change every bar after t and see whether any feature up to t moves.

A feature that moves has read the future, however indirectly (a centred window, a full-series
normalisation, a shift the wrong way). The check treats the feature function as a black box,
so it holds for the pipeline as a whole and for any feature added later.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from huracan.features.kernels import Array
from huracan.features.market import MARKET_FEATURES, Ohlcv

FeatureFunction = Callable[[Ohlcv], Array]


@dataclass(frozen=True, slots=True)
class Leak:
    feature: str
    cut: int  # bars after this index were changed
    bar: int  # the earliest bar <= cut whose value changed
    before: float
    after: float


def scrambled_future(ohlcv: Ohlcv, cut: int, rng: np.random.Generator) -> Ohlcv:
    """The same bars up to `cut`, then a different but valid path: a random walk from the bar
    at `cut` with its own highs, lows and volumes (times unchanged)."""
    o, h, low, c, v = (
        np.array(a, dtype=np.float64, copy=True)
        for a in (ohlcv.open, ohlcv.high, ohlcv.low, ohlcv.close, ohlcv.volume)
    )
    future = c.shape[-1] - cut - 1
    if future <= 0:
        return ohlcv
    steps = rng.normal(0.0, 0.01, size=(*c.shape[:-1], future))
    closes = c[..., cut : cut + 1] * np.exp(np.cumsum(steps, axis=-1))
    opens = np.concatenate((c[..., cut : cut + 1], closes[..., :-1]), axis=-1)
    wiggle = np.exp(np.abs(rng.normal(0.0, 0.005, size=(2, *closes.shape))))
    o[..., cut + 1 :] = opens
    c[..., cut + 1 :] = closes
    h[..., cut + 1 :] = np.maximum(opens, closes) * wiggle[0]
    low[..., cut + 1 :] = np.minimum(opens, closes) / wiggle[1]
    v[..., cut + 1 :] = rng.uniform(0.1, 10.0, size=closes.shape) * np.nanmean(v) + 1.0
    return replace(ohlcv, open=o, high=h, low=low, close=c, volume=v)


def find_lookahead(
    features: FeatureFunction,
    ohlcv: Ohlcv,
    cuts: Sequence[int],
    rng: np.random.Generator,
    *,
    names: Sequence[str] = MARKET_FEATURES,
    tolerance: float = 0.0,
) -> list[Leak]:
    """Every feature (by name) whose value at some bar <= cut changes when the bars after the
    cut change, for each cut. `features` maps Ohlcv [..., T] to [..., T, F]."""
    baseline = features(ohlcv)
    leaks: list[Leak] = []
    for cut in cuts:
        changed = features(scrambled_future(ohlcv, cut, rng))
        past_before = baseline[..., : cut + 1, :]
        past_after = changed[..., : cut + 1, :]
        same = (past_before == past_after) | (np.isnan(past_before) & np.isnan(past_after))
        if tolerance > 0:
            same |= np.abs(past_before - past_after) <= tolerance
        moved = ~same.reshape(-1, cut + 1, same.shape[-1]).all(axis=0)  # [bars, features]
        flat_before = past_before.reshape(-1, cut + 1, same.shape[-1])
        flat_after = past_after.reshape(-1, cut + 1, same.shape[-1])
        for f in (int(i) for i in np.flatnonzero(moved.any(axis=0))):
            bar = int(np.flatnonzero(moved[:, f])[0])
            series = int(np.flatnonzero(~same.reshape(flat_before.shape)[:, bar, f])[0])
            before, after = flat_before[series, bar, f], flat_after[series, bar, f]
            leaks.append(Leak(names[f], cut, bar, float(before), float(after)))
    return leaks
