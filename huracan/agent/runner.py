"""One loaded model, ready to decide: the policy network, its normaliser and its schema.

Pure (no I/O beyond what the caller hands in): market rows and context in, actions and their
probabilities out, for a batch of symbols in one compiled call (huracan/agent/kernel.py, on the
weights huracan/agent/forward.py copies out of the network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from huracan.agent.forward import ActorForward
from huracan.agent.kernel import decide_rows
from huracan.core.intents import ACTION_COUNT, ENTRY_ACTIONS, AgentAction
from huracan.features.context import CONTEXT_WIDTH
from huracan.features.market import MARKET_FEATURES, REGIMES
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import STATE_SCHEMA, FeatureSchema
from huracan.rl.checkpoint import Checkpoint, CheckpointError, SchemaMismatch
from huracan.rl.policy import MASK_TABLE, load_policy

# Row 0: flat, row 1: long; the valid actions of each (the training env's rule).
MASKS = np.ascontiguousarray(MASK_TABLE.numpy(), dtype=np.bool_)
# The actions that make an intent: an entry or the exit (waiting and holding change nothing).
ACTING_ACTIONS = np.isin(np.arange(ACTION_COUNT), [*ENTRY_ACTIONS, AgentAction.EXIT_POSITION])
# The regime's one-hot code in the market row, in REGIMES order (as regime_names reads it).
REGIME_COLUMNS = np.array([MARKET_FEATURES.index(f"regime_{name}") for name in REGIMES], dtype=np.int64)
NO_UNIFORMS = np.empty(0)


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
        self.packed = self.forward.packed()
        self.mean = np.ascontiguousarray(self.normaliser.mean, dtype=np.float64)
        self.scale = np.ascontiguousarray(self.normaliser.scale, dtype=np.float64)
        # Load (or, on a cold numba cache, compile) the kernel now rather than on the first bar.
        self.decisions(
            np.zeros((1, market_width)),
            np.zeros((1, CONTEXT_WIDTH), np.float32),
            np.zeros(1, bool),
            greedy=True,
        )
        # A model trained before the pattern memory had trades saw zeros in its three inputs;
        # real figures there would be inputs it never learned: it keeps getting zeros.
        training = checkpoint.config.get("training") or {}
        self.uses_pattern_memory = float(training.get("pattern_memory_rows") or 0.0) > 0.0

    def decisions(
        self,
        market_rows: npt.NDArray[np.float64],
        context: npt.NDArray[np.float32],
        has_position: npt.NDArray[np.bool_],
        *,
        greedy: bool,
        rng: np.random.Generator | None = None,
    ) -> Decisions:
        """Actions for a batch of symbols, every row decided: rows [S, market width] raw and
        warm, context [S, 10] (context_rows' block)."""
        n = len(market_rows)
        actions, confidence = np.empty(n, dtype=np.int64), np.empty(n)
        self.decide(
            np.ascontiguousarray(market_rows, dtype=np.float64),
            np.ascontiguousarray(context, dtype=np.float32),
            np.ascontiguousarray(has_position, dtype=np.bool_),
            np.arange(n, dtype=np.int64),
            n,
            greedy=greedy,
            rng=rng,
            min_confidence=math.inf,  # no intent rows wanted
            out=np.empty((0, 0)),
            actions=actions,
            confidence=confidence,
        )
        return Decisions(actions, confidence)

    def decide(
        self,
        rows: npt.NDArray[np.float64],
        context: npt.NDArray[np.float32],
        has_position: npt.NDArray[np.bool_],
        chosen: npt.NDArray[np.int64],
        n: int,
        *,
        greedy: bool,
        rng: np.random.Generator | None,
        min_confidence: float,
        out: npt.NDArray[np.float64],
        actions: npt.NDArray[np.int64],
        confidence: npt.NDArray[np.float64],
    ) -> int:
        """The decision step's call: decides rows[chosen[:n]] (all arrays [S, ...] in symbol
        order, C-contiguous, of these dtypes), each decision into actions[:n] and confidence[:n],
        and writes an intent row into `out` (kernel.py's layout) for each acting decision;
        returns their count. Sampling draws rng.random(n), as forward.sample does."""
        uniforms = NO_UNIFORMS if greedy else (rng or np.random.default_rng()).random(n)
        packed = self.packed
        acting: int = decide_rows(
            rows,
            context,
            has_position,
            chosen,
            n,
            self.mean,
            self.scale,
            packed.weights,
            packed.biases,
            packed.widths,
            MASKS,
            greedy,
            uniforms,
            float(min_confidence),  # an int would compile another specialisation
            ACTING_ACTIONS,
            REGIME_COLUMNS,
            out,
            actions,
            confidence,
        )
        return acting
