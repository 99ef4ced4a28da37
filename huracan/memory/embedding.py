"""The entry embedding: a trade's 70 raw market features at entry, reduced to 16 numbers in
which Euclidean distance means "a similar setup". The pattern library clusters in this space
and the nearest-setups view searches it.

Two fixed steps, both fitted once on real history and committed (embedding_basis.json):
1. Scale: z = (x - mean) / scale per feature, clipped to +-CLIP; a non-finite input (a cold
   symbol's NaN row, an infinity) becomes 0 after scaling, so an embedding is always finite.
   `scale` is the feature's standard deviation, or 1 where the feature did not vary (a
   constant column carries no similarity information and must not blow up).
2. Project: e = (z - centre) @ components.T, the top EMBEDDING_DIM principal components of
   the scaled, clipped rows (`centre` is their mean). Signs are fixed so that each component's
   largest-magnitude loading is positive: an eigen-solver may return either sign, and a
   flipped axis would move every stored centroid.

The basis is deliberately independent of the agent's running normaliser: the model is
retrained and its normaliser with it, but stored centroids and trade embeddings must keep
their meaning. `version` is a short hash of the basis numbers; the pattern library stores it
(pattern_library.embedding_version) so centroids of another basis are recognised as stale.
Numbers are rounded to BASIS_DIGITS significant digits when fitted, so fitting, saving and
loading give the same floats and the same version.

`python -m huracan.memory.embedding` refits from the bundled candles (data/candles, bars
before 2023 only) and rewrites embedding_basis.json. Loading that file (`default`) and that
command are this module's only I/O; `fit_basis` and `embed` are pure.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from huracan.features.market import MARKET_FEATURES, MARKET_WIDTH

EMBEDDING_DIM = 16
CLIP = 5.0  # as the agent's normaliser: a fat-tailed feature must not own a component
SCALE_FLOOR = 1e-12  # below this standard deviation a feature counts as constant
BASIS_DIGITS = 9  # significant digits kept: float32 embeddings need fewer than 8
BASIS_PATH = Path(__file__).with_name("embedding_basis.json")
# Bars before 2023-01-01 UTC only: later history is held out for validation.
FIT_END_MS = 1_672_531_200_000
FIT_TIMEFRAME = "5m"

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


def _rounded(values: npt.ArrayLike) -> F64:
    """To BASIS_DIGITS significant digits, through the decimal text the file stores."""
    flat = np.asarray(values, dtype=np.float64)
    out = np.array([float(f"{v:.{BASIS_DIGITS}g}") for v in flat.ravel().tolist()], dtype=np.float64)
    return out.reshape(flat.shape)


class EntryEmbedder:
    """Raw market rows [N, 70] -> embeddings [N, EMBEDDING_DIM], float32."""

    __slots__ = ("_bias", "_projection", "centre", "components", "mean", "scale", "version")

    def __init__(
        self, mean: npt.ArrayLike, scale: npt.ArrayLike, centre: npt.ArrayLike, components: npt.ArrayLike
    ):
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.centre = np.asarray(centre, dtype=np.float64)
        self.components = np.asarray(components, dtype=np.float64)
        for name, array in (("mean", self.mean), ("scale", self.scale), ("centre", self.centre)):
            if array.shape != (MARKET_WIDTH,) or not np.isfinite(array).all():
                raise ValueError(f"entry embedding basis: {name} must be {MARKET_WIDTH} finite numbers")
        if self.components.shape != (EMBEDDING_DIM, MARKET_WIDTH) or not np.isfinite(self.components).all():
            raise ValueError(
                f"entry embedding basis: components must be {EMBEDDING_DIM} x {MARKET_WIDTH} finite "
                f"numbers, got shape {self.components.shape}"
            )
        if (self.scale <= 0).any():
            raise ValueError("entry embedding basis: every scale must be positive")
        digest = hashlib.sha256()
        for array in (self.mean, self.scale, self.centre, self.components):
            digest.update(np.ascontiguousarray(array, dtype="<f8").tobytes())
        self.version = digest.hexdigest()[:12]
        # e = (z - centre) @ C.T = z @ C.T - centre @ C.T: one matrix product on the hot path.
        self._projection = np.ascontiguousarray(self.components.T)
        self._bias = self.centre @ self._projection

    def embed(self, market_rows: npt.ArrayLike) -> F32:
        """[N, 70] raw market features -> [N, 16]; a single row [70] gives [16]."""
        rows = np.asarray(market_rows, dtype=np.float64)
        single = rows.ndim == 1
        if single:
            rows = rows[None, :]
        if rows.ndim != 2 or rows.shape[1] != MARKET_WIDTH:
            raise ValueError(
                f"entry embedding: rows of {MARKET_WIDTH} market features expected, got shape {rows.shape}"
            )
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = (rows - self.mean) / self.scale
        scaled[~np.isfinite(scaled)] = 0.0
        np.clip(scaled, -CLIP, CLIP, out=scaled)
        embedded = (scaled @ self._projection - self._bias).astype(np.float32)
        return embedded[0] if single else embedded

    @classmethod
    def default(cls) -> EntryEmbedder:
        """The committed basis, loaded once per process."""
        return _default()

    @classmethod
    def from_json(cls, text: str) -> EntryEmbedder:
        try:
            data = json.loads(text)
            return cls(data["mean"], data["scale"], data["centre"], data["components"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"entry embedding basis is unreadable: {exc}") from None

    def to_json(self, *, rows: int | None = None, source: str = "") -> str:
        """The basis file's text: the numbers (shortest round-trip decimals) and where they came
        from; `version` is written for people reading the file and recomputed on load."""
        document: dict[str, Any] = {
            "version": self.version,
            "dim": EMBEDDING_DIM,
            "source": source,
            "rows": rows,
            "features": list(MARKET_FEATURES),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "centre": self.centre.tolist(),
            "components": self.components.tolist(),
        }
        return json.dumps(document, indent=1) + "\n"


def fit_basis(market_rows: npt.ArrayLike) -> EntryEmbedder:
    """Mean, scale and the top EMBEDDING_DIM principal components of the rows (rows holding any
    non-finite value, i.e. warm-up, are left out). Deterministic for the same rows."""
    rows = np.asarray(market_rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != MARKET_WIDTH:
        raise ValueError(f"entry embedding fit: rows of {MARKET_WIDTH} features expected, got {rows.shape}")
    rows = rows[np.isfinite(rows).all(axis=1)]
    if len(rows) < 2 * MARKET_WIDTH:
        raise ValueError(
            f"entry embedding fit: {len(rows)} complete rows, at least {2 * MARKET_WIDTH} needed"
        )
    mean = _rounded(rows.mean(axis=0))
    std = rows.std(axis=0)
    scale = _rounded(np.where(std > SCALE_FLOOR, std, 1.0))
    scaled = np.clip((rows - mean) / scale, -CLIP, CLIP)
    centre = _rounded(scaled.mean(axis=0))
    centred = scaled - centre
    covariance = centred.T @ centred / (len(centred) - 1)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    top = eigenvectors[:, np.argsort(eigenvalues, kind="stable")[::-1][:EMBEDDING_DIM]].T
    signs = np.sign(top[np.arange(EMBEDDING_DIM), np.abs(top).argmax(axis=1)])
    components = _rounded(top * signs[:, None])
    return EntryEmbedder(mean, scale, centre, components)


@functools.cache
def _default() -> EntryEmbedder:
    return EntryEmbedder.from_json(BASIS_PATH.read_text())


def bundled_market_rows() -> F64:
    """The fitting data: market feature rows of the bundled 5m candles before FIT_END_MS, file
    by file in symbol order (warm-up rows included; fit_basis drops them)."""
    from huracan.config.settings import BUNDLED_CANDLES_DIR  # pydantic: only for the refit
    from huracan.features.market import Ohlcv, compute_market_features
    from huracan.market.candle_files import find_candle_files, read_candle_file

    files = find_candle_files(BUNDLED_CANDLES_DIR, FIT_TIMEFRAME)
    if not files:
        raise FileNotFoundError(f"no {FIT_TIMEFRAME} candle files in {BUNDLED_CANDLES_DIR}")
    parts = []
    for _, path in sorted(files.items()):
        series = read_candle_file(path)
        features = compute_market_features(Ohlcv.from_series(series))
        parts.append(features[series.open_time_ms < FIT_END_MS])
    return np.concatenate(parts)


def main() -> None:
    rows = bundled_market_rows()
    embedder = fit_basis(rows)
    complete = int(np.isfinite(rows).all(axis=1).sum())
    source = f"bundled {FIT_TIMEFRAME} candles (data/candles), bars before {FIT_END_MS} ms (2023-01-01 UTC)"
    BASIS_PATH.write_text(embedder.to_json(rows=complete, source=source))
    print(f"entry embedding basis {embedder.version}: {complete:,} rows -> {BASIS_PATH}")


if __name__ == "__main__":
    main()
