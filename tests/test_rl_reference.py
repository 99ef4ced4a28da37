"""The bar-by-bar reference: hand-checked fills, and the vectorised env reproducing its fills,
equity, rewards and context on the bundled real candles for random valid action sequences."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from typing import Literal

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.intents import FLAT_ACTIONS, LONG_ACTIONS, AgentAction
from huracan.features.context import CONTEXT_WIDTH, context_features
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.env import EnvConfig, InvalidActionError, MarketData, TradingEnv
from huracan.rl.reference import BarState, Fill, ReferenceResult, simulate

REL = 1e-9
FEATURES = 4


@functools.cache
def real_market() -> MarketData:
    series = [read_candle_file(p) for _, p in sorted(find_candle_files(BUNDLED_CANDLES_DIR, "5m").items())]
    bars = min(len(s) for s in series)
    features = np.random.default_rng(0).normal(size=(len(series), bars, FEATURES))
    return MarketData.from_numpy(
        features,
        np.stack([s.open[:bars] for s in series]),
        np.stack([s.close[:bars] for s in series]),
        np.stack([s.open_time_ms[:bars] for s in series]),
        first_valid=0,
    )


def valid_sequence(choices: list[int]) -> list[int]:
    """Turn free choices into a valid action sequence: position state follows the actions alone."""
    actions, long = [], False
    for choice in choices:
        allowed = LONG_ACTIONS if long else FLAT_ACTIONS
        action = allowed[choice % len(allowed)]
        actions.append(int(action))
        long = (long or action in FLAT_ACTIONS[1:]) and action is not AgentAction.EXIT_POSITION
    return actions


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=1e-12)


def assert_fill(env_fill: Fill, ref_fill: Fill) -> None:
    assert (env_fill.bar, env_fill.side) == (ref_fill.bar, ref_fill.side)
    for name in ("price", "quantity", "fee"):
        assert close(getattr(env_fill, name), getattr(ref_fill, name)), (name, env_fill, ref_fill)


def expected_context(state: BarState, config: EnvConfig) -> torch.Tensor:
    def one(value: float) -> torch.Tensor:
        return torch.tensor([value], dtype=torch.float64)

    return context_features(
        pattern_memory=torch.zeros(1, 3, dtype=torch.float64),
        has_position=one(float(state.has_position)),
        size_multiplier=one(state.size_multiplier),
        unrealised_pnl_bps=one(state.unrealised_pnl_bps),
        hold_bars=one(state.hold_bars),
        bars_per_day=float(config.bars_per_day),
        drawdown=one(state.drawdown),
        trades_today=one(state.trades_today),
        wins_today=one(state.wins_today),
    )[0].float()


def run_env_and_compare(
    data: MarketData, config: EnvConfig, symbols: list[int], starts: list[int], sequences: list[list[int]]
) -> list[ReferenceResult]:
    """Step the env with every sequence side by side and check each against its reference run."""
    env = TradingEnv(data, config)
    obs, _ = env.reset(symbols=torch.tensor(symbols), starts=torch.tensor(starts))
    n = len(symbols)
    references = [
        simulate(data.open[s].tolist(), data.close[s].tolist(), seq, start, config, day=data.day[s].tolist())
        for s, start, seq in zip(symbols, starts, sequences, strict=True)
    ]
    fills: list[list[Fill]] = [[] for _ in range(n)]
    ended = [False] * n
    for i, ref in enumerate(references):
        assert torch.allclose(obs[i, -CONTEXT_WIDTH:], expected_context(ref.bars[0], config), atol=1e-6)
    for step in range(max(len(r.bars) for r in references) - 1):
        actions = torch.tensor(
            [
                seq[step] if step < len(seq) and not ended[i] else int(AgentAction.DO_NOTHING)
                for i, seq in enumerate(sequences)
            ]
        )
        # An env whose reference episode is over only steps on (or is frozen); give it a valid action.
        actions = torch.where(env.mask.gather(1, actions.unsqueeze(1)).squeeze(1), actions, 5)
        if not config.auto_reset:
            actions = torch.where(env.finished, 0, actions)
        result = env.step(actions)
        for i, ref in enumerate(references):
            if ended[i]:
                continue
            state = ref.bars[step + 1]
            if float(result.fill_quantity[i]) > 0:
                side: Literal["buy", "sell"] = (
                    "sell" if int(actions[i]) == AgentAction.EXIT_POSITION else "buy"
                )
                fills[i].append(
                    Fill(
                        state.bar,
                        side,
                        float(result.fill_price[i]),
                        float(result.fill_quantity[i]),
                        float(result.fill_fee[i]),
                    )
                )
            assert close(float(result.equity[i]), state.equity), (
                i,
                step,
                float(result.equity[i]),
                state.equity,
            )
            assert math.isclose(float(result.reward[i]), state.reward, rel_tol=1e-5, abs_tol=1e-3)
            final = step + 2 == len(ref.bars)
            assert bool(result.done[i]) == (final and ref.end != "actions_exhausted")
            if bool(result.done[i]):
                assert close(float(result.episode_return[i]), ref.episode_return)
                assert bool(result.truncated[i]) == (ref.end != "drawdown")
            got = result.final_obs[i, -CONTEXT_WIDTH:]
            assert torch.allclose(got, expected_context(state, config), atol=1e-5), (i, step, got, state)
            ended[i] = final
    for i, ref in enumerate(references):
        assert len(fills[i]) == len(ref.fills)
        for env_fill, ref_fill in zip(fills[i], ref.fills, strict=True):
            assert_fill(env_fill, ref_fill)
    return references


configs = st.builds(
    EnvConfig,
    fee_bps=st.sampled_from([0.0, 7.5, 10.0]),
    half_spread_bps=st.sampled_from([0.0, 1.0, 2.5]),
    slippage_bps=st.sampled_from([0.0, 2.0]),
    position_fraction=st.sampled_from([0.25, 0.5, 0.6]),
    drawdown_penalty=st.sampled_from([0.0, 0.5]),
    max_drawdown=st.sampled_from([0.25, 0.004]),  # 0.4% ends some episodes early on real prices
    auto_reset=st.booleans(),
)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    config=configs,
    symbol=st.integers(0, 2),
    start=st.integers(0, 25_000),
    choices=st.lists(st.integers(0, 11), min_size=150, max_size=700),
)
def test_env_matches_reference_one_env(
    config: EnvConfig, symbol: int, start: int, choices: list[int]
) -> None:
    data = real_market()
    config = replace(config, n_envs=1, episode_bars=len(choices))
    start = min(start, data.n_bars - 2)
    run_env_and_compare(data, config, [symbol], [start], [valid_sequence(choices)])


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    config=configs,
    episodes=st.lists(
        st.tuples(
            st.integers(0, 2),
            st.integers(0, 25_800),
            st.lists(st.integers(0, 11), min_size=300, max_size=300),
        ),
        min_size=2,
        max_size=6,
    ),
)
def test_env_matches_reference_many_envs(
    config: EnvConfig, episodes: list[tuple[int, int, list[int]]]
) -> None:
    """Envs at different symbols and starts, some reaching the data end, stepped together."""
    data = real_market()
    config = replace(config, n_envs=len(episodes), episode_bars=300)
    references = run_env_and_compare(
        data,
        config,
        [s for s, _, _ in episodes],
        [min(start, data.n_bars - 2) for _, start, _ in episodes],
        [valid_sequence(c) for _, _, c in episodes],
    )
    assert all(r.end != "actions_exhausted" for r in references)


def test_one_round_trip_by_hand() -> None:
    """Entry at the next bar's open with spread and slippage, fee on notional; exit likewise."""
    config = EnvConfig(fee_bps=10.0, half_spread_bps=1.0, slippage_bps=2.0, position_fraction=0.5)
    open_ = [100.0, 101.0, 103.0, 104.0, 102.0]
    close_ = [100.5, 102.0, 103.5, 103.0, 101.0]
    actions = [AgentAction.ENTER_LONG_LARGE, AgentAction.HOLD_POSITION, AgentAction.EXIT_POSITION]
    result = simulate(open_, close_, actions, 0, config)

    notional = 1.5 * 0.5 * 1.0
    buy = 101.0 * 1.0003
    quantity = notional / buy
    entry_fee = notional * 0.001
    cash = 1.0 - notional - entry_fee
    sell = 104.0 * 0.9997
    proceeds = quantity * sell
    exit_fee = proceeds * 0.001
    entry, leave = result.fills
    assert (entry.bar, entry.side, leave.bar, leave.side) == (1, "buy", 3, "sell")
    assert (entry.price, entry.quantity, entry.fee) == pytest.approx((buy, quantity, entry_fee), rel=1e-12)
    assert (leave.price, leave.quantity, leave.fee) == pytest.approx((sell, quantity, exit_fee), rel=1e-12)
    assert result.equity == pytest.approx(
        (1.0, cash + quantity * 102.0, cash + quantity * 103.5, cash + proceeds - exit_fee)
    )
    assert result.bars[1].unrealised_pnl_bps == pytest.approx((102.0 / buy - 1) * 1e4)
    assert [b.hold_bars for b in result.bars] == [0, 1, 2, 0]
    assert (result.trades, result.wins) == (1, int(proceeds - exit_fee > notional + entry_fee))
    assert result.rewards[0] == pytest.approx((cash + quantity * 102.0 - 1.0) * 1e4)
    assert result.end == "actions_exhausted"


def test_day_change_resets_trades_today() -> None:
    config = EnvConfig(fee_bps=0.0, half_spread_bps=0.0, slippage_bps=0.0)
    prices = [100.0, 100.0, 110.0, 120.0, 130.0, 140.0]
    day = [0, 0, 0, 1, 1, 1]
    actions = [AgentAction.ENTER_LONG_NORMAL, AgentAction.EXIT_POSITION, AgentAction.ENTER_LONG_NORMAL]
    result = simulate(prices, [p + 5 for p in prices], actions, 0, config, day=day)
    # The exit fills at open[2] (day 0): a win; the next bar opens a new day.
    assert [(b.trades_today, b.wins_today) for b in result.bars] == [(0, 0), (0, 0), (1, 1), (0, 0)]


def test_reference_refuses_invalid_actions_and_stops_at_the_end() -> None:
    config = EnvConfig(episode_bars=2)
    with pytest.raises(InvalidActionError):
        simulate([1.0] * 5, [1.0] * 5, [AgentAction.EXIT_POSITION], 0, config)
    with pytest.raises(InvalidActionError):
        simulate([1.0] * 5, [1.0] * 5, [AgentAction.ENTER_LONG_SMALL, AgentAction.DO_NOTHING], 0, config)
    ended = simulate([1.0] * 5, [1.0] * 5, [AgentAction.DO_NOTHING] * 4, 0, config)
    assert (ended.end, len(ended.bars)) == ("episode_end", 3)
    at_data_end = simulate([1.0] * 5, [1.0] * 5, [AgentAction.DO_NOTHING] * 4, 3, config)
    assert (at_data_end.end, len(at_data_end.bars)) == ("data_end", 2)
