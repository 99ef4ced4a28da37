"""One loaded model, ready to decide: the policy network, its normaliser and its schema.

Pure (no I/O beyond what the caller hands in): market rows and context in, actions and their
probabilities out, for a batch of symbols in one forward pass (numpy: huracan/agent/forward.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from huracan.agent.forward import ActorForward, sample
from huracan.features.context import CONTEXT_WIDTH
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import STATE_SCHEMA, FeatureSchema
from huracan.rl.checkpoint import Checkpoint, CheckpointError, SchemaMismatch
from huracan.rl.policy import MASK_TABLE, load_policy

# Row 0: flat, row 1: long; the valid actions of each (the training env's rule).
MASKS = MASK_TABLE.numpy()


@dataclass(frozen=True, slots=True)
class Decisions:
    actions: npt.NDArray[np.int64]  # AgentAction values, [S]
    confidence: npt.NDArray[np.float64]  # probability of the chosen action, [S]


class PolicyRunner:
    def __init__(
        self,
        checkpoint: Checkpoint,
        version: str,
        *,
        schema: FeatureSchema = STATE_SCHEMA,
        bars_per_day: int | None = None,
    ) -> None:
        """bars_per_day: the live timeframe's; a model trained on another timeframe is refused
        (its hold-duration context and every window length would mean something else)."""
        # The hash was checked on load; the names are compared too, so a message can say what moved.
        if checkpoint.schema_hash != schema.hash or tuple(checkpoint.feature_names) != schema.names:
            moved = [n for n in checkpoint.feature_names if n not in schema.names][:5]
            raise SchemaMismatch(
                f"model {version}: trained on feature schema {checkpoint.schema_hash[:12]}, this build "
                f"computes {schema.hash[:12]} (features not computed here: {moved or 'order differs'})"
            )
        self.version = version
        try:
            self.policy = load_policy(checkpoint)
            self.normaliser = RunningNormaliser.from_state(checkpoint.normaliser)
        except (ValueError, RuntimeError) as exc:  # a shape or state that does not fit the network
            raise CheckpointError(f"model {version}: weights or normaliser unusable: {exc}") from None
        trained_bars_per_day = checkpoint.config.get("env", {}).get("bars_per_day")
        if bars_per_day is not None and trained_bars_per_day != bars_per_day:
            raise SchemaMismatch(
                f"model {version}: trained on {trained_bars_per_day} bars a day, this daemon's timeframe "
                f"has {bars_per_day}; train a model for this timeframe"
            )
        market_width = schema.size - CONTEXT_WIDTH
        if self.normaliser.width != market_width:
            raise CheckpointError(
                f"model {version}: normaliser has {self.normaliser.width} columns, the market block {market_width}"
            )
        if not all(
            bool(torch.isfinite(t).all()) for t in checkpoint.policy_state.values() if t.is_floating_point()
        ):
            raise CheckpointError(f"model {version}: weights hold NaN or infinity (a diverged training run)")
        if self.policy.observation_size != schema.size:
            raise CheckpointError(
                f"model {version}: network takes {self.policy.observation_size} inputs, the state has {schema.size}"
            )
        self.forward = ActorForward.of(self.policy)
        # A model trained before the pattern memory had trades saw zeros in its three inputs;
        # real figures there would be inputs it never learned: it keeps getting zeros.
        training = checkpoint.config.get("training") or {}
        self.uses_pattern_memory = float(training.get("pattern_memory_rows") or 0.0) > 0.0

    def decide(
        self,
        market_rows: npt.NDArray[np.float64],
        context: npt.NDArray[np.floating[Any]],
        has_position: npt.NDArray[np.bool_],
        *,
        greedy: bool,
        rng: np.random.Generator | None = None,
    ) -> Decisions:
        """Actions for a batch of symbols: rows [S, market width] raw, context [S, 10]."""
        observation = np.concatenate(
            (self.normaliser.normalise(market_rows), context.astype(np.float32, copy=False)), axis=1
        )
        probabilities = self.forward.probabilities(observation, MASKS[has_position.astype(np.intp)])
        if greedy:
            actions = probabilities.argmax(axis=1)
        else:
            actions = sample(probabilities, rng if rng is not None else np.random.default_rng())
        confidence = np.take_along_axis(probabilities, actions[:, None], axis=1)[:, 0]
        return Decisions(actions.astype(np.int64, copy=False), confidence.astype(np.float64))
