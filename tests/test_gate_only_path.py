"""No order reaches a venue except through the risk gate: the code's structure, and a runtime guard.

Structural: in the product code (huracan/, the test emulator aside), the exchange's order
methods are called in exactly one place each: ccxt's `create_order` by the exchange adapter,
a venue's `create_order` by the executor's `_send`, which only the outbox calls with what `place`
queued, and `place` (inside `gate_pass`) by the risk gate alone. Runtime: `Executor.place`
outside the gate raises before it writes or sends anything.
"""

from __future__ import annotations

import ast
from decimal import Decimal
from pathlib import Path

import pytest

import huracan
from huracan.core.intents import AgentAction, OrderIntent
from huracan.execution.approval import ApprovedOrder, UngatedOrder, gate_pass
from huracan.execution.executor import Executor

PACKAGE = Path(huracan.__file__).parent
# The emulator is a venue, not a caller of one: its handlers are the far side of the wire.
EXCLUDED = PACKAGE / "testing" / "emulator"


class _Calls(ast.NodeVisitor):
    """The innermost enclosing function of every call `<anything>.<method>(...)`."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.scopes: list[str] = ["<module>"]
        self.found: list[str] = []

    def _scope(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scopes.append(node.name)
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = _scope
    visit_AsyncFunctionDef = _scope

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = (
            func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        )
        if name == self.method:
            self.found.append(self.scopes[-1])
        self.generic_visit(node)


def calls_of(method: str) -> dict[str, list[str]]:
    """module path -> the innermost enclosing function of every call of `method` (`x.method(...)`
    or `method(...)`)."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if EXCLUDED in path.parents:
            continue
        visitor = _Calls(method)
        visitor.visit(ast.parse(path.read_text(), filename=str(path)))
        if visitor.found:
            found[str(path.relative_to(PACKAGE))] = visitor.found
    return found


def test_only_the_adapter_and_the_executor_call_create_order() -> None:
    assert calls_of("create_order") == {
        "exchange/adapter.py": ["send"],  # ccxt's client, inside ExchangeAdapter.create_order
        "execution/executor.py": ["_send"],  # a venue (adapter or simulated), inside Executor._send
    }


def test_only_the_outbox_sends_and_only_what_place_queued() -> None:
    # `_send` is handed to the outbox when the executor builds it, and called nowhere else; the
    # outbox's only way in is `enqueue`, which only `place` calls.
    assert calls_of("_send") == {}
    assert calls_of("_new_outbox") == {"execution/executor.py": ["__init__", "reset"]}
    assert calls_of("enqueue") == {"execution/executor.py": ["place"]}


def test_only_the_risk_gate_places_orders() -> None:
    assert set(calls_of("place")) == {"risk/gate.py"}


def test_only_the_risk_gate_opens_the_gate() -> None:
    assert set(calls_of("gate_pass")) == {"risk/gate.py"}


def test_no_module_but_the_adapter_holds_a_ccxt_client() -> None:
    users = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if EXCLUDED not in path.parents and "import ccxt" in path.read_text()
    }
    # errors.py translates ccxt's exceptions; it never holds a client.
    assert users <= {"exchange/adapter.py", "exchange/errors.py", "exchange/urls.py", "exchange/retry.py"}


class _Refuses:
    """Stands in for every collaborator: touching any of them fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the executor touched {name} before checking the gate")


def _approved() -> ApprovedOrder:
    intent = OrderIntent.from_action(
        AgentAction.ENTER_LONG_NORMAL,
        symbol="BTC/USDT",
        bar_open_time_ms=0,
        reference_price=Decimal(20_000),
        model_version="m",
        confidence=0.9,
    )
    return ApprovedOrder(intent, Decimal("0.01"), "market", "entry")


def _executor() -> Executor:
    refuses = _Refuses()
    return Executor(
        refuses,  # type: ignore[arg-type]
        refuses,  # type: ignore[arg-type]
        refuses,  # type: ignore[arg-type]
        markets={},
        quote_to_account=Decimal(1),
        now_ms=lambda: 0,
        order_timeout_s=1.0,
        taker_cost_bps=Decimal(13),
        maker_fee_bps=Decimal(10),
    )


async def test_place_outside_the_gate_is_refused_before_anything_happens() -> None:
    with pytest.raises(UngatedOrder):
        await _executor().place(_approved())


async def test_the_gate_context_lets_the_order_through() -> None:
    # Inside gate_pass the executor goes on to the journal: the refusing stand-in proves it got there.
    with gate_pass(), pytest.raises(AssertionError, match="touched next_client_order_ids"):
        await _executor().place(_approved())
