"""The training environment: N episodes of long-only spot trading stepped together as tensors.

Rules (huracan/rl/reference.py implements the same ones a bar at a time, and so must the live
execution path; change them in all three or in none):

- The observation at bar t is `cat(features[s, t], context)`, the context marked at close[t].
  The action chosen on it executes at open[t+1], never at the bar that produced the state.
- Entry (flat -> long, multiplier m from SIZE_MULTIPLIER): notional = m * position_fraction *
  equity (equity marked at close[t], before the trade); buy price = open[t+1] * (1 + (half_spread
  + slippage) / 1e4); quantity = notional / buy price; fee = notional * fee_bps / 1e4 from cash.
- Exit: sell price = open[t+1] * (1 - (half_spread + slippage) / 1e4); fee = proceeds * fee_bps
  / 1e4. A trade is a win when its net PnL, after both fees, is > 0.
- DO_NOTHING and HOLD_POSITION change nothing. Invalid actions (flat: DO_NOTHING or an entry;
  long: EXIT or HOLD) are masked in the policy; passing one anyway raises InvalidActionError.
- After the fill, equity = cash + quantity * close[t+1]. Reward = (equity[t+1] - equity[t]) /
  equity[t] * 1e4 (bps) - drawdown_penalty * (increase of the drawdown, in bps).
- The episode ends after episode_bars steps, when the drawdown from the episode's peak equity
  reaches max_drawdown (terminated), or when bar t+1 is the last bar of the data (no bar left to
  execute at). Time limits and the data end are "truncated", which PPO bootstraps through.
  An open position is not liquidated at the end: the episode return marks it at the last close.
- Episode return = final equity / starting equity (1.0) - 1, a fraction.
- Context: pattern memory from the data; has_position; size multiplier; unrealised PnL in bps of
  close[t] against the entry fill price (fees excluded); bars held (1 at the first close after
  the entry fill); drawdown; trades closed today and how many of them won, both reset when the
  UTC day of the bar changes (the day of the fill's bar: an exit at open[t+1] counts on day[t+1]).
- An ended episode auto-resets (unless auto_reset=False) to a random symbol and a start drawn
  from [first_valid, T - episode_bars - 1] with the env's seeded generator: flat, equity 1.0.
  With auto_reset=False an ended env freezes: its actions are ignored, its reward is 0 and done
  is reported once, on the step it ended.

Prices and the account are float64 so the env agrees with the float reference to ~1e-15;
observations are float32. Every step is a fixed handful of batched ops, no loop over envs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from huracan.core.intents import ACTION_COUNT, ENTRY_ACTIONS, SIZE_MULTIPLIER, AgentAction, valid_actions
from huracan.features.context import CONTEXT_WIDTH, PATTERN_MEMORY_WIDTH, context_features

MS_PER_DAY = 86_400_000
START_EQUITY = 1.0


class InvalidActionError(ValueError):
    """An action the mask forbids reached the env: a bug in the caller, never a policy choice."""


@dataclass(frozen=True, slots=True)
class MarketData:
    """Aligned bars of S symbols: one index t is one moment for all of them."""

    features: torch.Tensor  # [S, T, F] float32, already normalised
    open: torch.Tensor  # [S, T] float64
    close: torch.Tensor  # [S, T] float64
    day: torch.Tensor  # [S, T] int64, UTC day number
    first_valid: int  # first bar whose features are valid (after the warm-up)
    pattern_memory: torch.Tensor | None = None  # [S, T, 3] float32; zeros when absent

    def __post_init__(self) -> None:
        if self.features.dim() != 3:
            raise ValueError(
                f"features must be [symbols, bars, features], got shape {tuple(self.features.shape)}"
            )
        s, t, _ = self.features.shape
        for name in ("open", "close", "day"):
            shape = tuple(getattr(self, name).shape)
            if shape != (s, t):
                raise ValueError(f"{name} has shape {shape}, features say ({s}, {t})")
        if self.features.dtype != torch.float32:
            raise ValueError(f"features must be float32, got {self.features.dtype}")
        if self.open.dtype != torch.float64 or self.close.dtype != torch.float64:
            raise ValueError("open and close must be float64: the account is kept in float64")
        if not 0 <= self.first_valid < t - 1:
            raise ValueError(f"first_valid {self.first_valid} leaves no bar to trade in {t} bars")
        if self.pattern_memory is None:
            zeros = torch.zeros(s, t, PATTERN_MEMORY_WIDTH, dtype=torch.float32, device=self.features.device)
            object.__setattr__(self, "pattern_memory", zeros)
        elif tuple(self.pattern_memory.shape) != (s, t, PATTERN_MEMORY_WIDTH):
            raise ValueError(
                f"pattern_memory has shape {tuple(self.pattern_memory.shape)}, want ({s}, {t}, 3)"
            )

    @property
    def n_symbols(self) -> int:
        return int(self.features.shape[0])

    @property
    def n_bars(self) -> int:
        return int(self.features.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.features.shape[2])

    def to(self, device: str | torch.device) -> MarketData:
        assert self.pattern_memory is not None
        return MarketData(
            self.features.to(device),
            self.open.to(device),
            self.close.to(device),
            self.day.to(device),
            self.first_valid,
            self.pattern_memory.to(device),
        )

    @classmethod
    def from_numpy(
        cls,
        features: npt.NDArray[np.floating],
        open_: npt.NDArray[np.float64],
        close: npt.NDArray[np.float64],
        open_time_ms: npt.NDArray[np.int64],  # [S, T], or [T] when the bars are aligned
        *,
        first_valid: int | None = None,
        pattern_memory: npt.NDArray[np.floating] | None = None,
    ) -> MarketData:
        """Build from [S, T, F] features (NaN during warm-up) and [S, T] bars. Without
        first_valid, it is the first bar where every feature of every symbol is finite. NaNs
        before it become 0 (never observed); a NaN after it is an error, not something to hide."""
        finite = np.isfinite(features).all(axis=(0, 2))
        if first_valid is None:
            valid_bars = np.flatnonzero(finite)
            if len(valid_bars) == 0:
                raise ValueError("no bar has finite features for every symbol")
            first_valid = int(valid_bars[0])
        if not finite[first_valid:].all():
            bad = first_valid + int(np.flatnonzero(~finite[first_valid:])[0])
            raise ValueError(f"features are not finite at bar {bad}, after the warm-up ends at {first_valid}")
        clean = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
        day = np.asarray(open_time_ms, dtype=np.int64) // MS_PER_DAY
        # Copies throughout: the env must not change under the caller's later edits of its arrays.
        return cls(
            features=torch.from_numpy(clean),
            open=torch.tensor(open_, dtype=torch.float64),
            close=torch.tensor(close, dtype=torch.float64),
            day=torch.tensor(np.broadcast_to(day, np.shape(close)), dtype=torch.int64),
            first_valid=first_valid,
            pattern_memory=None
            if pattern_memory is None
            else torch.tensor(pattern_memory, dtype=torch.float32),
        )


@dataclass(frozen=True, slots=True)
class EnvConfig:
    n_envs: int = 64
    episode_bars: int = 288
    fee_bps: float = 10.0  # taker
    half_spread_bps: float = 1.0
    slippage_bps: float = 2.0
    position_fraction: float = 0.5  # notional of a 1x position, as a fraction of equity
    drawdown_penalty: float = 0.0  # reward -= penalty * increase of drawdown in bps
    max_drawdown: float = 0.25  # the episode ends (terminated) at this drawdown
    bars_per_day: int = 288
    seed: int = 0
    device: str = "cpu"
    auto_reset: bool = True  # False for evaluation: an ended env freezes instead

    def __post_init__(self) -> None:
        if self.n_envs < 1 or self.episode_bars < 1 or self.bars_per_day < 1:
            raise ValueError("n_envs, episode_bars and bars_per_day must be >= 1")
        if min(self.fee_bps, self.half_spread_bps, self.slippage_bps, self.drawdown_penalty) < 0:
            raise ValueError("costs and the drawdown penalty cannot be negative")
        if self.position_fraction <= 0:
            raise ValueError("position_fraction must be > 0")
        if not 0 < self.max_drawdown <= 1:
            raise ValueError("max_drawdown must be in (0, 1]")

    # The same expressions in the reference: identical floats, identical fills.
    @property
    def buy_factor(self) -> float:
        return 1.0 + (self.half_spread_bps + self.slippage_bps) / 1e4

    @property
    def sell_factor(self) -> float:
        return 1.0 - (self.half_spread_bps + self.slippage_bps) / 1e4

    @property
    def fee_rate(self) -> float:
        return self.fee_bps / 1e4


class StepResult(NamedTuple):
    obs: torch.Tensor  # [N, F+10] float32; the new episode's first state where done (auto-reset)
    mask: torch.Tensor  # [N, 6] bool
    reward: torch.Tensor  # [N] float32, bps
    done: torch.Tensor  # [N] bool
    truncated: torch.Tensor  # [N] bool: done by time limit or data end, not by drawdown
    episode_return: torch.Tensor  # [N] float64, NaN where not done
    final_obs: torch.Tensor  # [N, F+10]: the last state of an ended episode, = obs elsewhere
    equity: torch.Tensor  # [N] float64 after the step, before any reset
    fill_price: torch.Tensor  # [N] float64, NaN where nothing filled
    fill_quantity: torch.Tensor  # [N] float64, 0 where nothing filled
    fill_fee: torch.Tensor  # [N] float64, 0 where nothing filled


def _action_tables(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    multiplier = torch.zeros(ACTION_COUNT, dtype=torch.float64, device=device)
    is_entry = torch.zeros(ACTION_COUNT, dtype=torch.bool, device=device)
    for action in ENTRY_ACTIONS:
        multiplier[action] = SIZE_MULTIPLIER[action]
        is_entry[action] = True
    masks = torch.zeros(2, ACTION_COUNT, dtype=torch.bool, device=device)
    for held in (False, True):
        for action in valid_actions(held):
            masks[int(held), action] = True
    return multiplier, is_entry, masks


class TradingEnv:
    """See the module docstring for the rules. State tensors are replaced, never written in
    place, so a StepResult stays valid after later steps."""

    def __init__(self, data: MarketData, config: EnvConfig) -> None:
        self.config = config
        self.device = torch.device(config.device)
        data = data.to(self.device)
        self.data = data
        s, t, f = data.features.shape
        self._n_bars = int(t)
        self._last_start = self._n_bars - config.episode_bars - 1
        if config.auto_reset and self._last_start < data.first_valid:
            raise ValueError(
                f"{t} bars hold no episode of {config.episode_bars} bars after the warm-up ({data.first_valid} bars)"
            )
        assert data.pattern_memory is not None
        self._features = data.features.reshape(s * t, f)
        self._pattern = data.pattern_memory.reshape(s * t, PATTERN_MEMORY_WIDTH)
        self._open = data.open.reshape(-1)
        self._close = data.close.reshape(-1)
        self._day = data.day.reshape(-1)
        self._multiplier, self._is_entry, self._mask_table = _action_tables(self.device)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(config.seed)
        n = config.n_envs
        self._zeros_f64 = torch.zeros(n, dtype=torch.float64, device=self.device)
        self._nan_f64 = torch.full((n,), math.nan, dtype=torch.float64, device=self.device)
        self._zeros_long = torch.zeros(n, dtype=torch.long, device=self.device)
        self._all_rows = torch.ones(n, dtype=torch.bool, device=self.device)
        # The account of every env, [N] each; _set_episodes gives them their starting values.
        zl, zf, no = self._zeros_long, self._zeros_f64, self._all_rows.logical_not()
        self._symbol = self._bar = self._index = self._steps = self._hold_bars = self._day_now = zl
        self._trades_today = self._wins_today = self._episode_trades = self._episode_wins = zl
        self._cash = self._quantity = self._entry_price = self._entry_cost = self._size = zf
        self._equity = self._peak = self._drawdown = zf
        self._has_position = self._finished = no
        self._set_episodes(self._all_rows, *self._draw_episodes(), self._zeros_long)

    @property
    def observation_size(self) -> int:
        return self.data.n_features + CONTEXT_WIDTH

    @property
    def n_envs(self) -> int:
        return self.config.n_envs

    # Read-only views of the account, for evaluation and tests.
    @property
    def symbol(self) -> torch.Tensor:
        return self._symbol

    @property
    def bar(self) -> torch.Tensor:
        return self._bar

    @property
    def equity(self) -> torch.Tensor:
        return self._equity

    @property
    def has_position(self) -> torch.Tensor:
        return self._has_position

    @property
    def drawdown(self) -> torch.Tensor:
        return self._drawdown

    @property
    def episode_trades(self) -> torch.Tensor:
        return self._episode_trades

    @property
    def episode_wins(self) -> torch.Tensor:
        return self._episode_wins

    @property
    def finished(self) -> torch.Tensor:
        return self._finished

    @property
    def mask(self) -> torch.Tensor:
        return self._mask_table.index_select(0, self._has_position.long())

    def reset(
        self,
        *,
        symbols: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
        seed: int | None = None,
        stagger: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Start every env afresh. Explicit symbols/starts fix where episodes begin (tests,
        evaluation); `seed` re-seeds the generator; `stagger` gives each env a random number of
        already-elapsed steps so that time-limit resets spread over the rollout instead of
        arriving all at once."""
        if seed is not None:
            self._generator.manual_seed(seed)
        drawn_symbols, drawn_starts = self._draw_episodes()
        n = self.config.n_envs
        symbols = drawn_symbols if symbols is None else symbols.to(self.device, torch.long)
        starts = drawn_starts if starts is None else starts.to(self.device, torch.long)
        if symbols.shape != (n,) or starts.shape != (n,):
            raise ValueError(f"symbols and starts must have shape ({n},)")
        if bool(((symbols < 0) | (symbols >= self.data.n_symbols)).any()):
            raise ValueError(f"a symbol index is outside 0..{self.data.n_symbols - 1}")
        if bool(((starts < self.data.first_valid) | (starts > self._n_bars - 2)).any()):
            raise ValueError(f"a start is outside [{self.data.first_valid}, {self._n_bars - 2}]")
        elapsed = self._zeros_long
        if stagger:
            elapsed = torch.randint(
                0, self.config.episode_bars, (n,), generator=self._generator, device=self.device
            )
        self._set_episodes(self._all_rows, symbols, starts, elapsed)
        return self._observe(), self.mask

    def _draw_episodes(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.config.n_envs
        symbols = torch.randint(0, self.data.n_symbols, (n,), generator=self._generator, device=self.device)
        high = max(self._last_start, self.data.first_valid) + 1
        starts = torch.randint(
            self.data.first_valid, high, (n,), generator=self._generator, device=self.device
        )
        return symbols, starts

    def _set_episodes(
        self, rows: torch.Tensor, symbols: torch.Tensor, starts: torch.Tensor, elapsed: torch.Tensor
    ) -> None:
        """Begin new episodes on `rows` (bool [N]): flat, equity 1.0; the other rows keep theirs."""

        def fresh(new: torch.Tensor | float, old: torch.Tensor) -> torch.Tensor:
            return torch.where(rows, new, old)

        self._symbol = fresh(symbols, self._symbol)
        self._bar = fresh(starts, self._bar)
        self._index = self._symbol * self._n_bars + self._bar
        self._steps = fresh(elapsed, self._steps)
        self._cash = fresh(START_EQUITY, self._cash)
        self._quantity = fresh(0.0, self._quantity)
        self._entry_price = fresh(1.0, self._entry_price)
        self._entry_cost = fresh(0.0, self._entry_cost)
        self._size = fresh(0.0, self._size)
        self._has_position = fresh(False, self._has_position)
        self._hold_bars = fresh(0, self._hold_bars)
        self._equity = fresh(START_EQUITY, self._equity)
        self._peak = fresh(START_EQUITY, self._peak)
        self._drawdown = fresh(0.0, self._drawdown)
        self._day_now = fresh(self._day.index_select(0, self._index), self._day_now)
        self._trades_today = fresh(0, self._trades_today)
        self._wins_today = fresh(0, self._wins_today)
        self._episode_trades = fresh(0, self._episode_trades)
        self._episode_wins = fresh(0, self._episode_wins)
        self._finished = fresh(False, self._finished)

    def _observe(self) -> torch.Tensor:
        idx = self._index
        close_now = self._close.index_select(0, idx)
        unrealised = torch.where(self._has_position, (close_now / self._entry_price - 1.0) * 1e4, 0.0)
        context = context_features(
            pattern_memory=self._pattern.index_select(0, idx),
            has_position=self._has_position,
            size_multiplier=self._size,
            unrealised_pnl_bps=unrealised,
            hold_bars=self._hold_bars,
            bars_per_day=float(self.config.bars_per_day),
            drawdown=self._drawdown,
            trades_today=self._trades_today,
            wins_today=self._wins_today,
        )
        return torch.cat((self._features.index_select(0, idx), context), dim=1)

    def step(self, actions: torch.Tensor) -> StepResult:
        cfg = self.config
        actions = actions.to(self.device, torch.long)
        in_range = (actions >= 0) & (actions < ACTION_COUNT)
        safe = actions.clamp(0, ACTION_COUNT - 1)
        allowed = self.mask.gather(1, safe.unsqueeze(1)).squeeze(1) & in_range
        if not cfg.auto_reset:
            allowed = allowed | self._finished
        if not bool(allowed.all()):
            self._raise_invalid(actions, allowed)

        enter = self._is_entry.index_select(0, safe)
        leave = safe == AgentAction.EXIT_POSITION
        if cfg.auto_reset:
            advance: torch.Tensor | int = 1
        else:
            # A frozen env stays on its bar: nothing fills, equity and reward stay put.
            live = self._finished.logical_not()
            enter, leave = enter & live, leave & live
            advance = live.long()
        nxt = self._index + advance
        open_next = self._open.index_select(0, nxt)
        close_next = self._close.index_select(0, nxt)

        equity = self._equity
        multiplier = self._multiplier.index_select(0, safe)
        notional = multiplier * cfg.position_fraction * equity
        buy_price = open_next * cfg.buy_factor
        buy_fee = notional * cfg.fee_rate
        entry_cost = notional + buy_fee
        sell_price = open_next * cfg.sell_factor
        proceeds = self._quantity * sell_price
        sell_fee = proceeds * cfg.fee_rate
        net_proceeds = proceeds - sell_fee
        won = leave & (net_proceeds - self._entry_cost > 0)

        cash = torch.where(
            enter, self._cash - entry_cost, torch.where(leave, self._cash + net_proceeds, self._cash)
        )
        quantity = torch.where(enter, notional / buy_price, torch.where(leave, 0.0, self._quantity))
        fill_price = torch.where(enter, buy_price, torch.where(leave, sell_price, self._nan_f64))
        fill_quantity = torch.where(enter | leave, torch.where(enter, quantity, self._quantity), 0.0)
        fill_fee = torch.where(enter, buy_fee, torch.where(leave, sell_fee, 0.0))
        has_position = (self._has_position | enter) & leave.logical_not()

        day = self._day.index_select(0, nxt)
        same_day = day == self._day_now
        trades_today = torch.where(same_day, self._trades_today, 0) + leave
        wins_today = torch.where(same_day, self._wins_today, 0) + won

        self._cash, self._quantity, self._has_position = cash, quantity, has_position
        self._entry_price = torch.where(enter, buy_price, self._entry_price)
        self._entry_cost = torch.where(enter, entry_cost, self._entry_cost)
        self._size = torch.where(enter, multiplier, torch.where(leave, 0.0, self._size))
        self._hold_bars = torch.where(has_position, torch.where(enter, 0, self._hold_bars) + 1, 0)
        self._day_now, self._trades_today, self._wins_today = day, trades_today, wins_today
        self._episode_trades = self._episode_trades + leave
        self._episode_wins = self._episode_wins + won
        self._index = nxt
        self._bar = self._bar + advance
        self._steps = self._steps + advance

        new_equity = cash + quantity * close_next
        peak = torch.maximum(self._peak, new_equity)
        drawdown = (peak - new_equity) / peak
        reward = (new_equity - equity) / equity * 1e4
        if cfg.drawdown_penalty:
            reward = reward - cfg.drawdown_penalty * (drawdown - self._drawdown).clamp(min=0.0) * 1e4
        self._equity, self._peak, self._drawdown = new_equity, peak, drawdown

        terminated = drawdown >= cfg.max_drawdown
        out_of_time = (self._steps >= cfg.episode_bars) | (self._bar >= self._n_bars - 1)
        done = terminated | out_of_time
        if not cfg.auto_reset:
            done = done & self._finished.logical_not()
            self._finished = self._finished | done
        truncated = done & terminated.logical_not()
        episode_return = torch.where(done, new_equity / START_EQUITY - 1.0, self._nan_f64)

        obs = self._observe()
        final_obs = obs
        if cfg.auto_reset and bool(done.any()):
            self._set_episodes(done, *self._draw_episodes(), self._zeros_long)
            obs = self._observe()
        return StepResult(
            obs=obs,
            mask=self.mask,
            reward=reward.float(),
            done=done,
            truncated=truncated,
            episode_return=episode_return,
            final_obs=final_obs,
            equity=new_equity,
            fill_price=fill_price,
            fill_quantity=fill_quantity,
            fill_fee=fill_fee,
        )

    def _raise_invalid(self, actions: torch.Tensor, allowed: torch.Tensor) -> None:
        env = int(allowed.logical_not().nonzero()[0, 0])
        action = int(actions[env])
        name = AgentAction(action).name if 0 <= action < ACTION_COUNT else str(action)
        state = "long" if bool(self._has_position[env]) else "flat"
        raise InvalidActionError(f"env {env} is {state} and got {name}; mask the policy, do not punish")
