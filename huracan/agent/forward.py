"""The actor's forward pass outside torch, for live decisions.

Training needs torch (gradients, the PPO update); a live decision needs only the actor's few
matrix products for 20 symbols. Through torch those cost ~10 dispatcher calls of tens of
microseconds each when the caches are cold, which is the daemon's state when a bar closes
after minutes of waiting. The weights are copied out of the loaded network once.

`ActorForward.probabilities` and `sample` are the pass in numpy: the readable statement of
what a live decision computes, held equal to torch's by tests/test_agent_forward.py. The daemon
runs the same pass compiled (huracan/agent/kernel.py: a few numpy calls still cost tens of
microseconds each when cold) on `PackedActor`'s copy of the weights, and the tests hold its
probabilities to torch's and its decisions to this module's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from torch import nn

from huracan.rl.policy import ActorCritic

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class PackedActor:
    """The actor's layers laid end to end, as the compiled pass takes them: `weights` holds each
    layer's [out, in] matrix (torch's layout: an output's weights side by side) in C order, one
    after another, `biases` each bias, `widths` the observation width, each hidden width and the
    action count."""

    weights: F32
    biases: F32
    widths: npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ActorForward:
    """Hidden layers (weight transposed [in, out], bias [out]) with tanh, then the policy head."""

    hidden: tuple[tuple[F32, F32], ...]
    head: tuple[F32, F32]

    @classmethod
    def of(cls, policy: ActorCritic) -> ActorForward:
        layers = [m for m in policy.actor if isinstance(m, nn.Linear)]
        if len(layers) != len(policy.hidden):
            raise ValueError(f"actor has {len(layers)} linear layers for {len(policy.hidden)} hidden widths")

        def numpy_of(layer: nn.Linear) -> tuple[F32, F32]:
            weight = layer.weight.detach().to("cpu").float().numpy().T.copy()  # [in, out], C order
            return weight, layer.bias.detach().to("cpu").float().numpy().copy()

        return cls(tuple(numpy_of(layer) for layer in layers), numpy_of(policy.policy_head))

    def packed(self) -> PackedActor:
        layers = (*self.hidden, self.head)
        return PackedActor(
            np.concatenate([weight.T.ravel() for weight, _ in layers]),
            np.concatenate([bias for _, bias in layers]),
            np.array([layers[0][0].shape[0], *(bias.shape[0] for _, bias in layers)], dtype=np.int64),
        )

    def probabilities(self, observation: F32, mask: npt.NDArray[np.bool_]) -> F32:
        """[S, A] action probabilities, exactly 0 where `mask` is False (as MaskedCategorical)."""
        x = observation
        for weight, bias in self.hidden:
            x = np.tanh(x @ weight + bias)
        weight, bias = self.head
        logits = np.where(mask, x @ weight + bias, -np.inf)
        # Softmax from the largest valid logit: exp(-inf) is exactly 0 for a masked action.
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities: F32 = exp / exp.sum(axis=1, keepdims=True)
        return probabilities


def sample(probabilities: F32, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """One action per row, drawn from its probabilities by inverse CDF. Drawing u below the
    row's total and taking the first cumulative sum above u never picks a zero-probability
    (masked) action, whatever the float rounding of the sum."""
    cumulative = np.cumsum(probabilities, axis=1, dtype=np.float64)
    u = rng.random(len(probabilities)) * cumulative[:, -1]
    actions: npt.NDArray[np.int64] = (cumulative <= u[:, None]).sum(axis=1)
    return actions
