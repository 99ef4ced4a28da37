"""The compiled decision step decides as the numpy step it replaced, on the bundled real data.

The reference here is the numpy code the daemon ran before (RunningNormaliser.normalise,
context_features, ActorForward.probabilities, argmax or forward.sample, regime_names, np.isin),
restated as it was. Probabilities may differ by float rounding (the forward pass sums in
another order); every decision must be the same: greedy and sampled (same seed), every warm row
of the bundled candles, for an untrained network (near uniform: the closest calls) and a
trained-looking one; and the whole step's intents, bar after bar, with paper positions and an
A/B challenger."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from huracan.agent.decide import DecisionService
from huracan.agent.forward import sample
from huracan.agent.models import Challenger, ModelSlots
from huracan.agent.performance import PerformanceRecorder
from huracan.agent.positions import NoPatternMemory
from huracan.agent.runner import MASKS, PolicyRunner
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.bus import Topic
from huracan.core.candle import CandleSeries
from huracan.core.events import CandleClosed
from huracan.core.intents import ENTRY_ACTIONS, AgentAction, OrderIntent
from huracan.features.context import PATTERN_MEMORY_WIDTH, context_features
from huracan.features.market import MARKET_WIDTH, WARMUP_BARS, CostAssumptions, regime_names
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import STATE_SCHEMA
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.checkpoint import Checkpoint
from huracan.rl.env import EnvConfig
from huracan.rl.ppo import PPOConfig, checkpoint, make_policy
from huracan.rl.trainer import Features

ACTING_VALUES = np.array(sorted(int(a) for a in (*ENTRY_ACTIONS, AgentAction.EXIT_POSITION)))
F32 = npt.NDArray[np.float32]


@pytest.fixture(scope="module")
def series() -> dict[str, CandleSeries]:
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    return {s: read_candle_file(f) for s, f in sorted(files.items())}


@pytest.fixture(scope="module")
def market_rows(series: dict[str, CandleSeries]) -> npt.NDArray[np.float64]:
    """Every warm row of the bundled candles (3 symbols, a quarter of 5-minute bars)."""
    rows = Features.of(series, CostAssumptions()).market.reshape(-1, MARKET_WIDTH)
    return np.ascontiguousarray(rows[np.isfinite(rows).all(axis=1)])


@pytest.fixture(scope="module")
def normaliser_state(market_rows: npt.NDArray[np.float64]) -> dict[str, object]:
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(market_rows)
    return normaliser.state()


def model(normaliser_state: dict[str, object], *, seed: int, trained_looking: bool) -> Checkpoint:
    config = PPOConfig(seed=seed)
    torch.manual_seed(seed)
    policy = make_policy(STATE_SCHEMA.size, config)
    if trained_looking:  # the initial head is near uniform; a trained one takes sides
        with torch.no_grad():
            policy.policy_head.weight.mul_(300.0)
            policy.policy_head.bias.normal_(0.0, 1.0)
    return checkpoint(
        policy,
        None,
        EnvConfig(),
        config,
        schema_hash=STATE_SCHEMA.hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=dict(normaliser_state),
    )


def reference_decide(
    runner: PolicyRunner,
    rows: npt.NDArray[np.float64],
    context: F32,
    held: npt.NDArray[np.bool_],
    *,
    greedy: bool,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """PolicyRunner.decide as it was: numpy normalisation and forward pass."""
    observation = np.concatenate((runner.normaliser.normalise(rows), context.astype(np.float32)), axis=1)
    probabilities = runner.forward.probabilities(observation, MASKS[held.astype(np.intp)])
    actions = probabilities.argmax(axis=1) if greedy else sample(probabilities, rng)
    confidence = np.take_along_axis(probabilities, actions[:, None], axis=1)[:, 0]
    return actions.astype(np.int64), confidence.astype(np.float64)


def positions(n: int, seed: int) -> dict[str, npt.NDArray[Any]]:
    """Plausible position and risk context for n decisions: about a third of them long."""
    rng = np.random.default_rng(seed)
    held = rng.random(n) < 0.35
    trades = rng.integers(0, 12, n).astype(np.float64)
    return {
        "pattern_memory": np.stack([rng.random(n), rng.normal(5.0, 40.0, n), rng.random(n)], axis=1),
        "has_position": held,
        "size_multiplier": rng.choice([0.5, 1.0, 1.5], n) * held,
        "unrealised_pnl_bps": rng.normal(0.0, 80.0, n) * held,
        "hold_bars": rng.integers(0, 600, n).astype(np.float64) * held,
        "drawdown": rng.random(n) * 0.2,
        "trades_today": trades,
        "wins_today": np.floor(trades * rng.random(n)),
    }


@pytest.mark.parametrize("trained_looking", [False, True])
def test_every_bundled_decision_is_the_numpy_steps(
    market_rows: npt.NDArray[np.float64], normaliser_state: dict[str, object], trained_looking: bool
) -> None:
    runner = PolicyRunner(model(normaliser_state, seed=4, trained_looking=trained_looking), "m")
    n = len(market_rows)
    assert n > 75_000  # 3 x 25,887 bars, less the warm-up
    book = positions(n, seed=1)
    held: npt.NDArray[np.bool_] = book["has_position"]
    context: F32 = context_features(
        bars_per_day=288.0, **{**book, "pattern_memory": book["pattern_memory"].astype(np.float32)}
    )
    for greedy in (True, False):
        expected, expected_confidence = reference_decide(
            runner, market_rows, context, held, greedy=greedy, rng=np.random.default_rng(9)
        )
        got = runner.decisions(market_rows, context, held, greedy=greedy, rng=np.random.default_rng(9))
        differ = np.flatnonzero(got.actions != expected)
        assert differ.size == 0, (
            f"greedy={greedy}: {differ.size} of {n} decisions differ, first rows {differ[:5]}"
        )
        np.testing.assert_allclose(got.confidence, expected_confidence, atol=1e-6)
        if greedy:  # the data makes every kind of decision: the comparison is not vacuous
            assert set(got.actions.tolist()) >= {0, 4, 5} | ({1, 2, 3} & set(expected.tolist()))


class ReferenceService(DecisionService):
    """DecisionService.intents_for as it was (numpy step, regime_names, from_action)."""

    def intents_for(self, event: CandleClosed, *, greedy: bool, min_confidence: float) -> list[OrderIntent]:
        rows = self.features.push(event.open_time_ms, event.candles)
        warm = self.features.warm_mask
        deciders = self.models.deciders()
        self._open_books({runner.version for runner, _, _ in deciders})
        self._barred.clear()
        no_memory = np.zeros((len(self.symbols), PATTERN_MEMORY_WIDTH))
        intents: list[OrderIntent] = []
        for runner, symbols, shadow in deciders:
            chosen = [
                self._index[s]
                for s in self.symbols
                if s in symbols and s in event.candles and warm[self._index[s]]
            ]
            if not chosen:
                continue
            book = self.books[runner.version]
            view = self.positions if self.positions is not None and not shadow else book
            if view is book:
                self._paper_take_bar(book, event)
            snapshot = view.snapshot(self.symbols)
            context = context_features(
                pattern_memory=no_memory.astype(np.float32),
                has_position=snapshot.has_position,
                size_multiplier=snapshot.size_multiplier,
                unrealised_pnl_bps=snapshot.unrealised_pnl_bps,
                hold_bars=snapshot.hold_bars,
                bars_per_day=288.0,
                drawdown=snapshot.drawdown,
                trades_today=snapshot.trades_today,
                wins_today=snapshot.wins_today,
            )
            actions, confidences = reference_decide(
                runner,
                rows[chosen],
                context[chosen],
                snapshot.has_position[chosen],
                greedy=greedy,
                rng=self.rng,
            )
            acting = np.isin(actions, ACTING_VALUES) & (confidences >= min_confidence)
            picked = np.asarray(chosen)[acting]
            states = np.concatenate([rows[picked], context[picked]], axis=1).tolist()
            for i, value, confidence, state, regime in zip(
                picked.tolist(),
                actions[acting].tolist(),
                confidences[acting].tolist(),
                states,
                regime_names(rows[picked]),
                strict=True,
            ):
                symbol = self.symbols[i]
                intents.append(
                    OrderIntent.from_action(
                        AgentAction(value),
                        symbol=symbol,
                        bar_open_time_ms=event.open_time_ms,
                        reference_price=Decimal(repr(event.candles[symbol].close)),
                        model_version=runner.version,
                        confidence=confidence,
                        shadow=shadow,
                        state=tuple(state),
                        regime=regime,
                    )
                )
        return intents


class Slots(ModelSlots):
    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self.champion = None
        self.challenger = None


def build(cls: type[DecisionService], symbols: tuple[str, ...], slots: Slots) -> DecisionService:
    return cls(
        exchange_id="binance",
        symbols=symbols,
        timeframe="5m",
        candles=Topic("candle-closed"),
        store=None,  # type: ignore[arg-type]  # no priming from the database
        models=slots,
        positions=None,  # the champion's paper book: real positions from its own decisions
        patterns=NoPatternMemory(),
        intents=asyncio.Queue(),
        cost=CostAssumptions(),
        paper_rules=EnvConfig(),
        recorder=PerformanceRecorder(Decimal("1000"), Decimal("0.8")),
    )


def without_confidence(intent: OrderIntent) -> tuple[object, ...]:
    return (
        intent.symbol, intent.action, intent.side, intent.size_multiplier, intent.bar_open_time_ms,
        intent.reference_price, intent.model_version, intent.reason, intent.shadow, intent.state, intent.regime,
    )  # fmt: skip


@pytest.mark.parametrize(("greedy", "min_confidence"), [(True, 0.0), (False, 0.0), (False, 0.2)])
def test_the_step_makes_the_same_intents_bar_after_bar(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object], greedy: bool, min_confidence: float
) -> None:
    symbols = tuple(series)
    bars = WARMUP_BARS + 400
    events = [
        CandleClosed("5m", int(series[symbols[0]].open_time_ms[i]), {s: series[s].candle(i) for s in symbols})
        for i in range(bars)
    ]
    services = []
    for cls in (DecisionService, ReferenceService):
        slots = Slots(symbols)
        slots.champion = PolicyRunner(model(normaliser_state, seed=2, trained_looking=False), "m-champ")
        challenger = PolicyRunner(model(normaliser_state, seed=3, trained_looking=True), "m-chall")
        slots.challenger = Challenger(challenger, frozenset(symbols[1:]))
        services.append(build(cls, symbols, slots))
    fast, reference = services
    made = 0
    for event in events:
        got = fast.decide(event, greedy=greedy, min_confidence=min_confidence)
        expected = reference.decide(event, greedy=greedy, min_confidence=min_confidence)
        assert [without_confidence(i) for i in got] == [without_confidence(i) for i in expected], (
            event.open_time_ms
        )
        np.testing.assert_allclose([i.confidence for i in got], [i.confidence for i in expected], atol=1e-6)
        made += len(got)
    assert made > 400  # both models act, in and out of positions
    # The champion decides all 3 symbols, the challenger 2, on each warm bar (400 and a few).
    assert fast.stats.decisions % 5 == 0
    assert fast.stats.decisions >= 400 * 5


def test_a_nan_in_the_context_makes_no_decision_as_before(
    market_rows: npt.NDArray[np.float64], normaliser_state: dict[str, object]
) -> None:
    # A position book that cannot price a symbol (NaN unrealised PnL): NaN x 0 stays NaN in the
    # context, every probability is NaN, and both passes choose action 0: no intent.
    runner = PolicyRunner(model(normaliser_state, seed=4, trained_looking=True), "m")
    book = positions(6, seed=2)
    book["unrealised_pnl_bps"][:] = np.nan
    context: F32 = context_features(
        bars_per_day=288.0, **{**book, "pattern_memory": book["pattern_memory"].astype(np.float32)}
    )
    held: npt.NDArray[np.bool_] = book["has_position"]
    for greedy in (True, False):
        expected, _ = reference_decide(
            runner, market_rows[:6], context, held, greedy=greedy, rng=np.random.default_rng(1)
        )
        got = runner.decisions(market_rows[:6], context, held, greedy=greedy, rng=np.random.default_rng(1))
        assert got.actions.tolist() == expected.tolist() == [0] * 6
