"""The decision step on real bundled candles: features, masks, one forward pass per model,
OrderIntents. The models are untrained networks whose policy head is biased towards one action,
so what the step must do with a decision is checked without depending on what training learns."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal

import numpy as np
import pytest
import torch

from huracan.agent.decide import DecisionService
from huracan.agent.models import Challenger, ModelSlots
from huracan.agent.performance import PerformanceRecorder
from huracan.agent.positions import NoPatternMemory, PositionSnapshot
from huracan.agent.runner import PolicyRunner
from huracan.config import HuracanConfig
from huracan.config.settings import BUNDLED_CANDLES_DIR
from huracan.core.bus import Topic
from huracan.core.candle import CandleSeries
from huracan.core.events import CandleClosed
from huracan.core.intents import AgentAction, BarDecided, OrderIntent
from huracan.daemon.service import Liveness, RunningConfig, ServiceContext
from huracan.features.market import WARMUP_BARS, CostAssumptions
from huracan.features.normaliser import RunningNormaliser
from huracan.features.schema import MARKET_WIDTH, STATE_SCHEMA
from huracan.market.candle_files import find_candle_files, read_candle_file
from huracan.rl.checkpoint import Checkpoint, CheckpointError, SchemaMismatch
from huracan.rl.env import EnvConfig
from huracan.rl.ppo import PPOConfig, checkpoint, make_policy
from huracan.rl.trainer import Features

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
BARS = WARMUP_BARS + 40


@pytest.fixture(scope="module")
def series() -> dict[str, CandleSeries]:
    files = find_candle_files(BUNDLED_CANDLES_DIR, "5m")
    out = {}
    for s in SYMBOLS:
        full = read_candle_file(files[s])
        out[s] = full.between(int(full.open_time_ms[0]), int(full.open_time_ms[BARS]))
    return out


@pytest.fixture(scope="module")
def normaliser_state(series: dict[str, CandleSeries]) -> dict[str, object]:
    normaliser = RunningNormaliser(MARKET_WIDTH)
    normaliser.update(Features.of(series, CostAssumptions()).market.reshape(-1, MARKET_WIDTH))
    return normaliser.state()


def biased_model(normaliser_state: dict[str, object], favourite: AgentAction, seed: int = 0) -> Checkpoint:
    config = PPOConfig(seed=seed)
    torch.manual_seed(seed)
    policy = make_policy(STATE_SCHEMA.size, config)
    with torch.no_grad():
        policy.policy_head.bias[int(favourite)] = 20.0
    return checkpoint(
        policy,
        None,
        EnvConfig(),
        config,
        schema_hash=STATE_SCHEMA.hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=dict(normaliser_state),
    )


class Slots(ModelSlots):
    """ModelSlots without a registry: the roles are set by the test (the registry-backed
    refresh is tested against PostgreSQL in test_agent_models.py)."""

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = tuple(symbols)
        self.champion = None
        self.challenger = None


class LongBook:
    """Long in the given symbols, flat elsewhere."""

    def __init__(self, long: set[str]) -> None:
        self.long = long

    def snapshot(self, symbols: Sequence[str]) -> PositionSnapshot:
        held = np.array([s in self.long for s in symbols])
        flat = PositionSnapshot.flat(len(symbols))
        return PositionSnapshot(
            held,
            held * 1.0,
            held * 12.5,
            held * 3.0,
            flat.drawdown,
            flat.trades_today,
            flat.wins_today,
        )


def service(slots: ModelSlots, positions: object = None) -> DecisionService:
    return DecisionService(
        exchange_id="binance",
        symbols=SYMBOLS,
        timeframe="5m",
        candles=Topic("candle-closed"),
        store=None,  # type: ignore[arg-type]  # priming from the database is not exercised here
        models=slots,
        positions=positions or LongBook(set()),  # type: ignore[arg-type]  # default: all flat
        patterns=NoPatternMemory(),
        intents=asyncio.Queue(),
        cost=CostAssumptions(),
        paper_rules=EnvConfig(),
        recorder=PerformanceRecorder(Decimal("1000"), Decimal("0.8")),
    )


def events(series: dict[str, CandleSeries]) -> list[CandleClosed]:
    times = series[SYMBOLS[0]].open_time_ms
    return [
        CandleClosed("5m", int(t), {s: series[s].candle(i) for s in SYMBOLS}) for i, t in enumerate(times)
    ]


def run_all(svc: DecisionService, evs: list[CandleClosed]) -> list[list[OrderIntent]]:
    return [svc.decide(e, greedy=True, min_confidence=0.0) for e in evs]


def test_no_intent_before_the_features_are_warm_then_entries_when_flat(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(biased_model(normaliser_state, AgentAction.ENTER_LONG_LARGE), "m-enter")
    svc = service(slots)
    per_bar = run_all(svc, events(series))
    cold = per_bar[:300]  # a 288-bar window cannot be full yet
    warm = per_bar[WARMUP_BARS:]
    assert all(not intents for intents in cold)
    assert all(len(intents) == len(SYMBOLS) for intents in warm)
    first = warm[0][0]
    assert first.action is AgentAction.ENTER_LONG_LARGE
    assert first.side == "buy"
    assert first.size_multiplier == 1.5
    assert first.model_version == "m-enter"
    assert not first.shadow
    assert 0.99 < first.confidence <= 1.0
    bar = events(series)[WARMUP_BARS]
    assert warm[0][0].reference_price == Decimal(repr(bar.candles[first.symbol].close))
    assert svc.stats.cold > 0
    assert svc.stats.decisions == sum(len(intents) for intents in per_bar) >= len(SYMBOLS) * len(warm)


def test_masks_follow_the_position_book(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    # The network prefers to enter; where the book is long, entering is masked: exit or hold only.
    slots = Slots(SYMBOLS)
    model = biased_model(normaliser_state, AgentAction.ENTER_LONG_NORMAL)
    with torch.no_grad():
        model.policy_state["policy_head.bias"][int(AgentAction.EXIT_POSITION)] = 10.0
    slots.champion = PolicyRunner(model, "m-mixed")
    svc = service(slots, LongBook({"ETH/USDT"}))
    last = run_all(svc, events(series))[-1]
    by_symbol = {i.symbol: i for i in last}
    assert by_symbol["ETH/USDT"].action is AgentAction.EXIT_POSITION
    assert by_symbol["ETH/USDT"].side == "sell"
    assert by_symbol["ETH/USDT"].size_multiplier == 0.0
    assert by_symbol["BTC/USDT"].action is AgentAction.ENTER_LONG_NORMAL


def test_hold_and_do_nothing_make_no_intent(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(biased_model(normaliser_state, AgentAction.DO_NOTHING), "m-idle")
    svc = service(slots)
    assert not any(run_all(svc, events(series)))
    assert svc.stats.decisions > 0


def test_min_confidence_filters_weak_decisions(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    model = biased_model(normaliser_state, AgentAction.ENTER_LONG_SMALL)
    with torch.no_grad():  # two entries nearly tied: neither reaches 0.6
        model.policy_state["policy_head.bias"][int(AgentAction.ENTER_LONG_NORMAL)] = 20.0
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(model, "m-torn")
    svc = service(slots)
    evs = events(series)
    for e in evs[:-1]:
        svc.decide(e, greedy=True, min_confidence=0.6)
    assert svc.decide(evs[-1], greedy=True, min_confidence=0.6) == []
    assert len(svc.decide(evs[-1], greedy=True, min_confidence=0.4)) == len(SYMBOLS)


def test_a_challenger_decides_in_shadow_for_its_share_while_the_champion_decides_for_all(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(biased_model(normaliser_state, AgentAction.ENTER_LONG_NORMAL), "m-champ")
    challenger = PolicyRunner(biased_model(normaliser_state, AgentAction.ENTER_LONG_SMALL, seed=1), "m-chall")
    slots.challenger = Challenger(challenger, frozenset({"SOL/USDT"}))
    svc = service(slots)  # the champion reads a flat book; the challenger its own paper book
    per_bar = run_all(svc, events(series))
    first = next(intents for intents in per_bar if intents)
    live = [i for i in first if not i.shadow]
    shadow = [i for i in first if i.shadow]
    assert {i.symbol for i in live} == set(SYMBOLS)
    assert {i.model_version for i in live} == {"m-champ"}
    assert [(i.symbol, i.model_version, i.action) for i in shadow] == [
        ("SOL/USDT", "m-chall", AgentAction.ENTER_LONG_SMALL)
    ]
    # Its paper book fills each decision at the next open, so the challenger's context follows
    # its own position: entries and exits alternate, never two entries in a row.
    shadow_actions = [i.action for intents in per_bar for i in intents if i.shadow]
    assert shadow_actions[0] is AgentAction.ENTER_LONG_SMALL
    assert all((a is AgentAction.ENTER_LONG_SMALL) == (k % 2 == 0) for k, a in enumerate(shadow_actions)), (
        shadow_actions
    )
    # Every exit became a closed paper trade, but one decided on the last bar (it fills next bar).
    exits = shadow_actions.count(AgentAction.EXIT_POSITION)
    decided_last = [i.action for i in per_bar[-1] if i.shadow]
    pending = decided_last == [AgentAction.EXIT_POSITION]
    assert svc.books["m-chall"].accounts["SOL/USDT"].trades == exits - pending


def test_a_symbol_without_a_bar_is_not_decided(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(biased_model(normaliser_state, AgentAction.ENTER_LONG_LARGE), "m-enter")
    svc = service(slots)
    evs = events(series)
    for e in evs[:-1]:
        svc.decide(e, greedy=True, min_confidence=0.0)
    last = evs[-1]
    partial = CandleClosed(
        "5m", last.open_time_ms, {"BTC/USDT": last.candles["BTC/USDT"]}, ("ETH/USDT", "SOL/USDT")
    )
    assert [i.symbol for i in svc.decide(partial, greedy=True, min_confidence=0.0)] == ["BTC/USDT"]


def test_greedy_decisions_repeat_exactly(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    def actions() -> list[tuple[str, AgentAction]]:
        slots = Slots(SYMBOLS)
        model = biased_model(normaliser_state, AgentAction.DO_NOTHING, seed=3)
        model.policy_state["policy_head.bias"].zero_()  # let the features decide
        slots.champion = PolicyRunner(model, "m")
        return [(i.symbol, i.action) for bar in run_all(service(slots), events(series)) for i in bar]

    assert actions() == actions()


def test_a_model_of_another_schema_or_shape_is_refused(normaliser_state: dict[str, object]) -> None:
    good = biased_model(normaliser_state, AgentAction.DO_NOTHING)
    other_schema = replace(good, schema_hash="0" * 64)
    with pytest.raises(SchemaMismatch, match="feature schema"):
        PolicyRunner(other_schema, "m-old")
    config = PPOConfig()
    small = checkpoint(
        make_policy(10, config),
        None,
        EnvConfig(),
        config,
        schema_hash=STATE_SCHEMA.hash,
        feature_names=STATE_SCHEMA.names,
        normaliser=dict(normaliser_state),
    )
    with pytest.raises(CheckpointError, match="80"):
        PolicyRunner(small, "m-small")
    broken = replace(good, normaliser={"count": 1.0, "mean": [0.0], "var": [1.0]})
    with pytest.raises(CheckpointError, match="normaliser"):
        PolicyRunner(broken, "m-broken")
    # Readable but of the wrong width: it would fail (or broadcast wrongly) on every bar.
    narrow = RunningNormaliser(10)
    narrow.update(np.ones((3, 10)))
    with pytest.raises(CheckpointError, match="normaliser has 10 columns"):
        PolicyRunner(replace(good, normaliser=narrow.state()), "m-narrow")
    # A diverged training run: NaN weights would decide nothing sensible.
    weights = {k: v.clone() for k, v in good.policy_state.items()}
    weights["policy_head.bias"][0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        PolicyRunner(replace(good, policy_state=weights), "m-nan")


async def test_a_failed_decision_still_releases_the_bar_and_the_paper_books_take_it(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object]
) -> None:
    # The trading task waits for each bar's marker and the paper books fill at the next open:
    # neither may hang on a decision step that raised.
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(biased_model(normaliser_state, AgentAction.DO_NOTHING), "m-broken")
    svc = service(slots)
    svc.primed = True
    ctx = ServiceContext("decide", RunningConfig(HuracanConfig()), asyncio.Event(), Liveness())
    evs = events(series)
    for e in evs[:-1]:
        await svc.on_bar(e, ctx)
    while not svc.intents.empty():
        svc.intents.get_nowait()

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("planted")

    slots.champion.decide = broken  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError, match="planted"):
        await svc.on_bar(evs[-1], ctx)
    assert svc.intents.get_nowait() == BarDecided(evs[-1].open_time_ms)
    assert svc.books["m-broken"].bars == len(evs)  # the failed bar too


class CountingMemory:
    """A pattern memory that always has something to say, and counts who asked."""

    def __init__(self) -> None:
        self.asked = 0

    def nearest_setups(self, symbols: object, rows: np.ndarray, as_of_ms: int) -> np.ndarray:
        self.asked += 1
        return np.full((len(rows), 3), 0.7)


@pytest.mark.parametrize("trained_on_memory", [False, True])
def test_only_a_model_trained_on_the_pattern_memory_reads_it(
    series: dict[str, CandleSeries], normaliser_state: dict[str, object], trained_on_memory: bool
) -> None:
    model = biased_model(normaliser_state, AgentAction.ENTER_LONG_LARGE)
    if trained_on_memory:  # as huracan train records it when its rows had past setups
        model = replace(model, config={**model.config, "training": {"pattern_memory_rows": 0.4}})
    slots = Slots(SYMBOLS)
    slots.champion = PolicyRunner(model, "m")
    svc = service(slots)
    memory = CountingMemory()
    svc.patterns = memory
    intents = [i for bar in run_all(svc, events(series)) for i in bar]
    assert intents
    # The state the model saw: the memory's figures, or the zeros it was trained on.
    seen = {tuple(round(x, 6) for x in i.state[70:73]) for i in intents}
    assert seen == ({(0.7, 0.007, 0.7)} if trained_on_memory else {(0.0, 0.0, 0.0)})
    assert (memory.asked > 0) is trained_on_memory  # no search for a model that does not read it
