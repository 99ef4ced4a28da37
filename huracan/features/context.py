"""The part of the state that is not the market: pattern memory, position and risk context.

One torch function computes it for the training environment ([n_envs] tensors) and for live
inference ([n_symbols] tensors), so both see the same scaling. Every number is scaled by its
formula to roughly -1..1 (binary flags stay 0/1); these features are not in the running
normaliser because their scale is known and a flag's mean and variance mean nothing.
"""

from __future__ import annotations

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


def context_features(
    *,
    pattern_memory: torch.Tensor,  # [..., 3]: win rate 0..1, average profit bps, reliability 0..1
    has_position: torch.Tensor,  # [...] bool or 0/1
    size_multiplier: torch.Tensor,  # [...] 0 when flat
    unrealised_pnl_bps: torch.Tensor,  # [...]
    hold_bars: torch.Tensor,  # [...]
    bars_per_day: float,
    drawdown: torch.Tensor,  # [...] fraction of peak equity, >= 0
    trades_today: torch.Tensor,  # [...]
    wins_today: torch.Tensor,  # [...]
) -> torch.Tensor:
    """The context block, [..., CONTEXT_WIDTH], in the dtype of `pattern_memory`."""
    dtype = pattern_memory.dtype
    held = has_position.to(dtype)
    trades = trades_today.to(dtype)
    win_rate = torch.where(trades > 0, wins_today.to(dtype) / trades.clamp(min=1), torch.zeros_like(trades))
    columns = (
        pattern_memory[..., 0],
        pattern_memory[..., 1] / 100.0,
        pattern_memory[..., 2],
        held,
        size_multiplier.to(dtype) * held,
        (unrealised_pnl_bps.to(dtype) / 100.0).clamp(-10.0, 10.0) * held,
        (hold_bars.to(dtype) / bars_per_day).clamp(0.0, 4.0) * held,
        (drawdown.to(dtype) * 10.0).clamp(0.0, 1.0),
        (trades / 10.0).clamp(0.0, 2.0),
        win_rate,
    )
    return torch.stack(columns, dim=-1)
