"""The live decision's forward pass against the torch network it was copied from: the numpy
pass (the readable reference) and the compiled one the daemon runs (huracan/agent/kernel.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from huracan.agent.forward import ActorForward, PackedActor, sample
from huracan.agent.kernel import probabilities_into
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


def compiled_probabilities(packed: PackedActor, observation: np.ndarray, mask: np.ndarray) -> np.ndarray:
    largest = int(packed.widths.max())
    out = np.empty(observation.shape[0:1] + mask.shape[1:], dtype=np.float32)
    for r in range(len(observation)):
        x, y = np.zeros(largest), np.empty(largest)
        x[: observation.shape[1]] = observation[r]
        probabilities_into(x, packed.weights, packed.biases, packed.widths, mask[r], y)
        out[r] = y[: mask.shape[1]]
    return out


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    hidden=st.sampled_from([(64, 64), (32,), (128, 64, 32)]),
    rows=st.integers(1, 40),
    head_scale=st.sampled_from([0.0001, 1.0, 3.0]),  # near uniform (an untrained head) to peaked
)
def test_compiled_probabilities_equal_the_torch_policy(
    seed: int, hidden: tuple[int, ...], rows: int, head_scale: float
) -> None:
    policy = network(seed, hidden, head_scale)
    rng = np.random.default_rng(seed)
    observation = rng.normal(0.0, 2.0, (rows, 80)).astype(np.float32)
    held = rng.random(rows) < 0.5
    mask = action_masks(torch.from_numpy(held)).numpy()
    with torch.inference_mode():
        expected = policy.action_probabilities(torch.from_numpy(observation), torch.from_numpy(mask)).numpy()
    got = compiled_probabilities(ActorForward.of(policy).packed(), observation, mask)
    np.testing.assert_allclose(got, expected, atol=2e-6)
    assert (got[~mask] == 0.0).all()
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)
    decisive = np.sort(expected, axis=1)[:, -1] - np.sort(expected, axis=1)[:, -2] > 1e-4
    assert (got.argmax(axis=1)[decisive] == expected.argmax(axis=1)[decisive]).all()
    # And the numpy pass, which the daemon ran before: the same to float rounding.
    numpy_pass = ActorForward.of(policy).probabilities(observation, mask)
    np.testing.assert_allclose(got, numpy_pass, atol=2e-6)


def test_packed_layers_are_torchs_weights_end_to_end() -> None:
    # A (32,) network on 80 inputs and 6 actions: 32 x 80 + 6 x 32 = 2752 weights, 32 + 6 biases.
    policy = network(1, (32,))
    packed = ActorForward.of(policy).packed()
    assert packed.widths.tolist() == [80, 32, 6]
    assert packed.weights.shape == (2752,)
    assert packed.biases.shape == (38,)
    first = next(m for m in policy.actor if isinstance(m, nn.Linear)).weight.detach().numpy()  # [out, in]
    assert (packed.weights[:2560].reshape(32, 80) == first).all()
    assert (packed.weights[2560:].reshape(6, 32) == policy.policy_head.weight.detach().numpy()).all()
    assert (packed.biases[32:] == policy.policy_head.bias.detach().numpy()).all()


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
