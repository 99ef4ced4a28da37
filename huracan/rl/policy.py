"""The agent's network: an actor-critic MLP whose action distribution respects the mask.

Actor and critic have separate trunks (as stable-baselines3's MLP policy does): the value loss,
whose scale follows the rewards, then cannot drag the features the policy relies on. Invalid
actions get a logit of MASKED_LOGIT before the softmax, so their probability is exactly 0 in
float32, they are never sampled or chosen greedily, and they add nothing to the entropy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from huracan.core.intents import ACTION_COUNT, valid_actions
from huracan.rl.checkpoint import Checkpoint

MASKED_LOGIT = -1e9


class _FastTanh(torch.autograd.Function):
    """tanh as 2 * sigmoid(2x) - 1: on CPU torch's float tanh kernel is ~10x slower than its
    sigmoid and was a third of the PPO update's time. Same function, max error ~2e-7."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(x * 2.0).mul_(2.0).sub_(1.0)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        result: torch.Tensor = torch.ops.aten.tanh_backward(grad, y)
        return result


class Tanh(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _FastTanh.apply(x)  # type: ignore[no-untyped-call,no-any-return]


def _mask_table() -> torch.Tensor:
    table = torch.zeros(2, ACTION_COUNT, dtype=torch.bool)
    for held in (False, True):
        for action in valid_actions(held):
            table[int(held), action] = True
    return table


# Row 0: flat, row 1: long. Built once: live inference asks for masks on every bar.
MASK_TABLE = _mask_table()


def action_masks(has_position: torch.Tensor) -> torch.Tensor:
    """[..., ACTION_COUNT] bool: the actions valid in each position state (flat: wait or enter;
    long: exit or hold); the env builds the same from the same rule, and live decisions index
    MASK_TABLE itself (huracan/agent/runner.py)."""
    return MASK_TABLE.to(has_position.device)[has_position.long()]


def _mlp(inputs: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layer = nn.Linear(inputs, width)
        nn.init.orthogonal_(layer.weight, gain=math.sqrt(2.0))
        nn.init.zeros_(layer.bias)
        layers += [layer, Tanh()]
        inputs = width
    return nn.Sequential(*layers)


def _head(inputs: int, outputs: int, gain: float) -> nn.Linear:
    layer = nn.Linear(inputs, outputs)
    nn.init.orthogonal_(layer.weight, gain=gain)
    nn.init.zeros_(layer.bias)
    return layer


class MaskedCategorical:
    """A categorical over the valid actions only. Cheaper than torch.distributions.Categorical
    (no argument validation, one log_softmax) and exact about masked actions."""

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor) -> None:
        self.mask = mask
        self.logits = logits.masked_fill(mask.logical_not(), MASKED_LOGIT)
        self.log_probs = torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        terms = self.probs * self.log_probs
        return -torch.where(self.mask, terms, torch.zeros_like(terms)).sum(-1)

    def greedy(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Gumbel-max: one uniform draw per logit from the given generator, so a seeded run
        repeats exactly; masked logits stay ~-1e9 and are never the maximum."""
        uniform = torch.rand(self.logits.shape, generator=generator, device=self.logits.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-12, 1.0 - 1e-7)))
        return (self.logits + gumbel).argmax(-1)


class ActorCritic(nn.Module):
    def __init__(
        self, observation_size: int, hidden: Sequence[int] = (64, 64), n_actions: int = ACTION_COUNT
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("the network needs at least one hidden layer")
        self.observation_size = observation_size
        self.hidden = tuple(int(h) for h in hidden)
        self.n_actions = n_actions
        self.actor = _mlp(observation_size, self.hidden)
        self.critic = _mlp(observation_size, self.hidden)
        # Small policy head: the first policy is near uniform over the valid actions.
        self.policy_head = _head(self.hidden[-1], n_actions, gain=0.01)
        self.value_head = _head(self.hidden[-1], 1, gain=1.0)

    def shape(self) -> dict[str, Any]:
        """The plain values that rebuild this network (see ppo.load_policy)."""
        return {
            "observation_size": self.observation_size,
            "hidden": list(self.hidden),
            "n_actions": self.n_actions,
            "activation": "tanh",
            "trunk": "separate",
        }

    def forward(self, obs: torch.Tensor, mask: torch.Tensor) -> tuple[MaskedCategorical, torch.Tensor]:
        return self.distribution(obs, mask), self.value(obs)

    def distribution(self, obs: torch.Tensor, mask: torch.Tensor) -> MaskedCategorical:
        return MaskedCategorical(self.policy_head(self.actor(obs)), mask)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        value: torch.Tensor = self.value_head(self.critic(obs))
        return value.squeeze(-1)

    def act(
        self,
        obs: torch.Tensor,
        mask: torch.Tensor,
        *,
        greedy: bool = False,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(action, its log-probability, state value) for a batch of states."""
        dist, value = self(obs, mask)
        action = dist.greedy() if greedy else dist.sample(generator)
        return action, dist.log_prob(action), value

    def action_probabilities(self, obs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[N, A] probabilities, exactly 0 for masked actions; obs is cast to the weights' dtype."""
        return self.distribution(obs.to(self.policy_head.weight.dtype), mask).probs

    def evaluate_actions(
        self, obs: torch.Tensor, mask: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log-probability, entropy, value) of taken actions, with gradients, for the update."""
        dist, value = self(obs, mask)
        return dist.log_prob(actions), dist.entropy(), value


def load_policy(saved: Checkpoint) -> ActorCritic:
    """Rebuild the network a checkpoint describes (config["network"], see ActorCritic.shape)
    and load its weights, strictly: a missing or extra tensor is an error, not a silent default."""
    try:
        shape = saved.config["network"]
        policy = ActorCritic(
            int(shape["observation_size"]), [int(h) for h in shape["hidden"]], int(shape["n_actions"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"checkpoint config has no usable network shape: {exc}") from None
    policy.load_state_dict(saved.policy_state, strict=True)
    policy.eval()
    return policy
