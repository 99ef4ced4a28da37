"""The live decision's numpy forward pass against the torch network it was copied from."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.agent.forward import ActorForward, sample
from huracan.core.intents import ACTION_COUNT
from huracan.rl.policy import ActorCritic, action_masks


def network(seed: int, hidden: tuple[int, ...] = (64, 64), head_scale: float = 1.0) -> ActorCritic:
    torch.manual_seed(seed)
    policy = ActorCritic(80, hidden)
    with torch.no_grad():  # a trained-looking head: the initial one is near uniform
        policy.policy_head.weight.mul_(100.0 * head_scale)
        policy.policy_head.bias.normal_(0.0, 2.0)
    return policy.eval()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    hidden=st.sampled_from([(64, 64), (32,), (128, 64, 32)]),
    rows=st.integers(1, 40),
)
def test_probabilities_equal_the_torch_policy(seed: int, hidden: tuple[int, ...], rows: int) -> None:
    policy = network(seed, hidden)
    rng = np.random.default_rng(seed)
    observation = rng.normal(0.0, 2.0, (rows, 80)).astype(np.float32)
    held = rng.random(rows) < 0.5
    with torch.inference_mode():
        expected = policy.action_probabilities(
            torch.from_numpy(observation), action_masks(torch.from_numpy(held))
        ).numpy()
    mask = action_masks(torch.from_numpy(held)).numpy()
    got = ActorForward.of(policy).probabilities(observation, mask)
    assert got.dtype == np.float32
    assert got.shape == (rows, ACTION_COUNT)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert (got[~mask] == 0.0).all()  # a masked action is impossible, not improbable
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    decisive = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 1e-4
    assert (got.argmax(axis=1)[decisive] == expected.argmax(axis=1)[decisive]).all()


def test_a_network_of_another_depth_than_it_claims_is_refused() -> None:
    policy = network(0)
    policy.hidden = (64, 64, 64)
    with pytest.raises(ValueError, match="linear layers"):
        ActorForward.of(policy)


def test_sampling_follows_the_probabilities_and_never_picks_a_masked_action() -> None:
    probabilities = np.array(
        [[0.0, 0.7, 0.0, 0.2, 0.1, 0.0], [0.5, 0.0, 0.0, 0.0, 0.0, 0.5]], dtype=np.float32
    )
    rng = np.random.default_rng(7)
    draws = np.stack([sample(probabilities, rng) for _ in range(20_000)])
    for row in range(2):
        counts = np.bincount(draws[:, row], minlength=ACTION_COUNT) / len(draws)
        assert (counts[probabilities[row] == 0] == 0).all()
        np.testing.assert_allclose(counts, probabilities[row], atol=0.015)


def test_sampling_repeats_exactly_from_the_same_seed() -> None:
    probabilities = np.full((20, ACTION_COUNT), 1.0 / ACTION_COUNT, dtype=np.float32)
    first = [sample(probabilities, np.random.default_rng(3)) for _ in range(3)]
    again = [sample(probabilities, np.random.default_rng(3)) for _ in range(3)]
    assert all((a == b).all() for a, b in zip(first, again, strict=True))
