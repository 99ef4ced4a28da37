"""The part of the state that is not the market: pattern memory, position and risk context.

One function computes it for the training environment ([n_envs] torch tensors) and for numpy
arrays ([n_symbols]), so both see the same scaling. Every number is scaled by its formula to
roughly -1..1 (binary flags stay 0/1); these features are not in the running normaliser because
their scale is known and a flag's mean and variance mean nothing.

The daemon's decision step runs the same formulas compiled (huracan/agent/kernel.py's
`context_rows`, one call instead of ~25 numpy operations when a bar wakes a cold process);
tests/test_decide_kernel.py holds the two equal to the bit. A change here is a change there.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import torch

CONTEXT_FEATURES: tuple[str, ...] = (
    # Pattern memory's view of the nearest past setups; zeros until the pattern library feeds it.
    "pattern_win_rate",
    "pattern_avg_profit_bps",  # /100
    "pattern_reliability",
    # Position.
    "has_position",
    "position_size_multiplier",
    "unrealised_pnl_bps",  # /100, clipped to +-10
    "hold_duration_days",  # bars held / bars per day, clipped to 4
    # Risk context.
    "drawdown",  # fraction of peak equity x 10, clipped to 1
    "trades_today",  # /10, clipped to 2
    "win_rate_today",  # 0 when no trade closed today
)
PATTERN_MEMORY_WIDTH = 3
CONTEXT_WIDTH = len(CONTEXT_FEATURES)


Arr = TypeVar("Arr", torch.Tensor, npt.NDArray[Any])


def _like(x: Arr, like: Arr) -> Arr:
    if isinstance(x, torch.Tensor):
        return x.to(like.dtype)
    return np.asarray(x, dtype=like.dtype)


def context_features(
    *,
    pattern_memory: Arr,  # [..., 3]: win rate 0..1, average profit bps, reliability 0..1
    has_position: Arr,  # [...] bool or 0/1
    size_multiplier: Arr,  # [...] 0 when flat
    unrealised_pnl_bps: Arr,  # [...]
    hold_bars: Arr,  # [...]
    bars_per_day: float,
    drawdown: Arr,  # [...] fraction of peak equity, >= 0
    trades_today: Arr,  # [...]
    wins_today: Arr,  # [...]
) -> Arr:
    """The context block, [..., CONTEXT_WIDTH], in the dtype of `pattern_memory`; all
    arguments torch tensors or all numpy arrays."""
    held = _like(has_position, pattern_memory)
    trades = _like(trades_today, pattern_memory)
    # wins / trades where a trade closed today, else 0 (wins is 0 then too, and trades >= 1).
    win_rate = _like(wins_today, pattern_memory) / trades.clip(1.0, None)
    columns = (
        pattern_memory[..., 0],
        pattern_memory[..., 1] / 100.0,
        pattern_memory[..., 2],
        held,
        _like(size_multiplier, pattern_memory) * held,
        (_like(unrealised_pnl_bps, pattern_memory) / 100.0).clip(-10.0, 10.0) * held,
        (_like(hold_bars, pattern_memory) / bars_per_day).clip(0.0, 4.0) * held,
        (_like(drawdown, pattern_memory) * 10.0).clip(0.0, 1.0),
        (trades / 10.0).clip(0.0, 2.0),
        win_rate,
    )
    if isinstance(pattern_memory, torch.Tensor):
        return torch.stack(columns, dim=-1)
    stacked: Arr = np.stack(columns, axis=-1)
    return stacked
