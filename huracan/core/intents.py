"""What the agent wants done, before the risk gate has a say: the six actions and OrderIntent."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import Literal


class AgentAction(IntEnum):
    """The policy's action space. The order is part of every trained model: never reorder."""

    DO_NOTHING = 0
    ENTER_LONG_SMALL = 1
    ENTER_LONG_NORMAL = 2
    ENTER_LONG_LARGE = 3
    EXIT_POSITION = 4
    HOLD_POSITION = 5


ACTION_COUNT = len(AgentAction)
ENTRY_ACTIONS = (AgentAction.ENTER_LONG_SMALL, AgentAction.ENTER_LONG_NORMAL, AgentAction.ENTER_LONG_LARGE)
# Position size as a multiple of the normal position; the risk gate turns it into an amount.
SIZE_MULTIPLIER: dict[AgentAction, float] = {
    AgentAction.ENTER_LONG_SMALL: 0.5,
    AgentAction.ENTER_LONG_NORMAL: 1.0,
    AgentAction.ENTER_LONG_LARGE: 1.5,
}
# Valid actions by position state (masked in the policy, never punished): flat may wait or
# enter; long may exit or hold.
FLAT_ACTIONS = (AgentAction.DO_NOTHING, *ENTRY_ACTIONS)
LONG_ACTIONS = (AgentAction.EXIT_POSITION, AgentAction.HOLD_POSITION)


def valid_actions(has_position: bool) -> tuple[AgentAction, ...]:
    return LONG_ACTIONS if has_position else FLAT_ACTIONS


IntentSide = Literal["buy", "sell"]


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """One decision to change a position, put on the intent queue. Only the risk gate turns an
    intent into an order; `shadow` intents (an A/B challenger's) are only ever simulated."""

    symbol: str
    action: AgentAction
    side: IntentSide
    size_multiplier: float  # of the normal position; 0 for exits (the whole position goes)
    bar_open_time_ms: int  # the bar whose close produced the decision
    reference_price: Decimal  # that bar's close
    model_version: str
    confidence: float  # probability the policy gave the chosen action, 0..1
    reason: str = "agent"  # agent | stop_loss | take_profit | time_exit | reconciliation ...
    shadow: bool = False
    state: tuple[float, ...] = ()  # the state vector the model decided on (entries: trade memory)
    regime: str = "unknown"  # the market regime at the decision

    @classmethod
    def from_action(
        cls,
        action: AgentAction,
        *,
        symbol: str,
        bar_open_time_ms: int,
        reference_price: Decimal,
        model_version: str,
        confidence: float,
        shadow: bool = False,
        state: tuple[float, ...] = (),
        regime: str = "unknown",
    ) -> OrderIntent:
        if action not in ENTRY_ACTIONS and action is not AgentAction.EXIT_POSITION:
            raise ValueError(f"{action.name} changes no position and makes no intent")
        return cls(
            symbol=symbol,
            action=action,
            side="buy" if action in ENTRY_ACTIONS else "sell",
            size_multiplier=SIZE_MULTIPLIER.get(action, 0.0),
            bar_open_time_ms=bar_open_time_ms,
            reference_price=reference_price,
            model_version=model_version,
            confidence=confidence,
            shadow=shadow,
            state=state,
            regime=regime,
        )


@dataclass(frozen=True, slots=True)
class BarDecided:
    """Put on the intent queue after a bar's intents: the decision step is done with that bar,
    so execution may move on to the next one (replay keeps decisions and fills in bar order)."""

    open_time_ms: int
