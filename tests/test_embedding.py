"""The entry embedding: the committed basis is what the bundled candles give, the projection
is the documented arithmetic, and no input makes it return NaN."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from huracan.features.market import MARKET_WIDTH
from huracan.memory.embedding import (
    BASIS_PATH,
    CLIP,
    EMBEDDING_DIM,
    EntryEmbedder,
    bundled_market_rows,
    fit_basis,
)


@pytest.fixture(scope="module")
def bundled_rows() -> np.ndarray:
    return bundled_market_rows()


def test_the_committed_basis_is_the_refit_from_the_bundled_candles(bundled_rows: np.ndarray) -> None:
    committed = EntryEmbedder.default()
    refit = fit_basis(bundled_rows)
    # Equal to the stored digits; a tolerance only for another machine's BLAS rounding.
    for name in ("mean", "scale", "centre", "components"):
        np.testing.assert_allclose(getattr(refit, name), getattr(committed, name), rtol=1e-7, atol=1e-9)
    rows = bundled_rows[np.isfinite(bundled_rows).all(axis=1)][::500]
    np.testing.assert_allclose(refit.embed(rows), committed.embed(rows), atol=1e-4)
    document = json.loads(BASIS_PATH.read_text())
    assert document["version"] == committed.version  # the file says which basis it is
    assert document["dim"] == EMBEDDING_DIM
    assert len(document["features"]) == MARKET_WIDTH


def test_fitting_is_deterministic_and_fit_save_load_keeps_the_version(bundled_rows: np.ndarray) -> None:
    sample = bundled_rows[:20_000]
    first, second = fit_basis(sample), fit_basis(sample.copy())
    assert first.version == second.version
    loaded = EntryEmbedder.from_json(first.to_json())
    assert loaded.version == first.version
    np.testing.assert_array_equal(loaded.components, first.components)


def test_components_are_orthonormal_with_the_largest_loading_positive() -> None:
    basis = EntryEmbedder.default()
    c = basis.components
    np.testing.assert_allclose(c @ c.T, np.eye(EMBEDDING_DIM), atol=1e-7)
    largest = c[np.arange(EMBEDDING_DIM), np.abs(c).argmax(axis=1)]
    assert (largest > 0).all()


def test_a_hand_made_basis_finds_the_one_shared_direction() -> None:
    # Features 0 and 1 move as 3t + 7 and -t / 2; the other 68 are independent noise. Scaled to
    # unit variance, the pair makes one direction, (z0 - z1) / sqrt 2, of variance 2, against 1
    # for each noise feature: it is the top component.
    rng = np.random.default_rng(0)
    t = rng.normal(size=20_000)
    rows = rng.normal(size=(20_000, MARKET_WIDTH))
    rows[:, 0], rows[:, 1] = 3.0 * t + 7.0, -0.5 * t
    basis = fit_basis(rows)
    top = basis.components[0]
    # +-(1, -1) / sqrt 2; which sign depends on which of the two loadings sampling made larger.
    np.testing.assert_allclose(np.abs(top[:2]), [2**-0.5, 2**-0.5], atol=0.01)
    assert top[0] == pytest.approx(-top[1], abs=0.01)
    assert np.abs(top[2:]).max() < 0.03
    # A row one std up in feature 0 and one down in feature 1 scales to z = (1, -1, 0, ...):
    # (z - centre) . top = +-(1/sqrt 2 + 1/sqrt 2) = +-sqrt 2, the centre being about 0.
    row = basis.mean.copy()
    row[0] += basis.scale[0]
    row[1] -= basis.scale[1]
    z = np.zeros(MARKET_WIDTH)
    z[:2] = [1.0, -1.0]
    assert basis.embed(row)[0] == pytest.approx((z - basis.centre) @ top, abs=1e-5)
    assert abs(basis.embed(row)[0]) == pytest.approx(2**0.5, abs=0.02)


def test_non_finite_features_count_as_the_mean_and_outliers_are_clipped() -> None:
    basis = EntryEmbedder.default()
    at_mean = basis.embed(basis.mean)
    nan_row = np.full(MARKET_WIDTH, np.nan)
    inf_row = np.where(np.arange(MARKET_WIDTH) % 2 == 0, np.inf, -np.inf)
    embedded = basis.embed(np.stack([nan_row, inf_row]))
    assert embedded.dtype == np.float32
    assert embedded.shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(embedded[0], at_mean, atol=1e-6)
    np.testing.assert_allclose(embedded[1], at_mean, atol=1e-6)
    # 1000 standard deviations out is read as CLIP of them.
    far, clipped = basis.mean.copy(), basis.mean.copy()
    far[5] += 1000.0 * basis.scale[5]
    clipped[5] += CLIP * basis.scale[5]
    np.testing.assert_allclose(basis.embed(far), basis.embed(clipped), atol=1e-5)


def test_bad_shapes_and_bases_are_refused() -> None:
    basis = EntryEmbedder.default()
    with pytest.raises(ValueError, match="70 market features"):
        basis.embed(np.zeros((3, 69)))
    with pytest.raises(ValueError, match="components"):
        EntryEmbedder(basis.mean, basis.scale, basis.centre, basis.components[:3])
    with pytest.raises(ValueError, match="unreadable"):
        EntryEmbedder.from_json("{}")
    with pytest.raises(ValueError, match="complete rows"):
        fit_basis(np.full((500, MARKET_WIDTH), np.nan))
    assert EntryEmbedder.default() is EntryEmbedder.default()  # loaded once


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        (4, MARKET_WIDTH),
        elements=st.floats(allow_nan=True, allow_infinity=True, width=64),
    )
)
def test_any_input_gives_a_finite_bounded_embedding(rows: np.ndarray) -> None:
    basis = EntryEmbedder.default()
    embedded = basis.embed(rows)
    assert np.isfinite(embedded).all()
    # |z - centre| <= |z| + |centre| with |z| <= CLIP sqrt(70); the components are orthonormal.
    bound = CLIP * MARKET_WIDTH**0.5 + float(np.linalg.norm(basis.centre)) + 1e-3
    assert (np.linalg.norm(embedded, axis=1) <= bound).all()
