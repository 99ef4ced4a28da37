"""The seeded fault schedule: which request gets which fault, decided the same way every run.

A `FaultSchedule` holds rules. Each rule names the endpoints it watches (an fnmatch pattern on
the path, e.g. ``/api/v3/order`` or ``/api/v3/*``, and a method or ``*``), the fault, and when
it fires: on the listed 1-based calls among the requests that the rule watches (`nth`), and/or
with a probability drawn from the schedule's own `random.Random(seed)`. The same seed and the
same sequence of requests give the same faults. Every fault injected is appended to
`schedule.injected`, so tests can assert on what happened.

Latency rules add delay and let the request go on (several may stack); of the other rules the
first that fires decides the request's fate.

What each fault does on the wire (and what ccxt's `binance` makes of it: see the table in
`huracan.testing.emulator`):

| kind | the emulator |
| --- | --- |
| LATENCY | sleeps `latency_ms`, then answers normally |
| HTTP_429 | 429, `Retry-After: retry_after_s`, body ``{"code":-1003,...}`` |
| HTTP_418 | 418, `Retry-After: retry_after_s`, body ``{"code":-1003,...IP banned...}`` |
| HTTP_5XX | `status` (default 503) with a plain-text gateway body |
| CONNECTION_RESET | closes the connection without a response |
| TIMEOUT_BEFORE_ACCEPT | hangs `hang_s` (or until the emulator closes), request NOT executed |
| TIMEOUT_AFTER_ACCEPT | executes the request (an order is placed), then hangs |
| MALFORMED_JSON | 200 with a truncated JSON body |
| DUPLICATE_RESPONSE | executes the request, answers with the previous body for that endpoint |
| OUT_OF_ORDER | executes; list bodies (klines, orders, trades) come back shuffled, other bodies are replaced by the oldest remembered body for that endpoint |
| CORRUPT_KLINES | executes; a klines body (a list of rows) comes back with the rule's `damage` done to it (`KlineDamage`: impossible, hostile or unreadable bars, or a body that is not a list); other bodies are left alone |
"""

from __future__ import annotations

import enum
import fnmatch
import random
from dataclasses import dataclass, field


class FaultKind(enum.Enum):
    LATENCY = "latency"
    HTTP_429 = "http_429"
    HTTP_418 = "http_418"
    HTTP_5XX = "http_5xx"
    CONNECTION_RESET = "connection_reset"
    TIMEOUT_BEFORE_ACCEPT = "timeout_before_accept"
    TIMEOUT_AFTER_ACCEPT = "timeout_after_accept"
    MALFORMED_JSON = "malformed_json"
    DUPLICATE_RESPONSE = "duplicate_response"
    OUT_OF_ORDER = "out_of_order"
    CORRUPT_KLINES = "corrupt_klines"


class KlineCorruption(enum.Enum):
    """What CORRUPT_KLINES does to one row (or, for the body modes, to the whole body)."""

    HIGH_BELOW_LOW = "high_below_low"  # high and low swapped and pulled apart: high < low
    ZERO_PRICE = "zero_price"  # the column (1-4) becomes "0"
    NEGATIVE_PRICE = "negative_price"  # the column (1-4) becomes its negative
    NEGATIVE_VOLUME = "negative_volume"  # the volume becomes its negative
    NAN = "nan"  # the column becomes "NaN"
    INFINITE = "infinite"  # the column becomes "Infinity"
    TEXT = "text"  # the column becomes "abc"
    NULL = "null"  # the column becomes null
    WRONG_TYPE = "wrong_type"  # the column becomes an object ({"v": ...})
    MISALIGNED_TIME = "misaligned_time"  # the open time moves by 1 ms (off the bar grid)
    FUTURE_TIME = "future_time"  # the open time moves a year ahead
    TRUNCATED_ROW = "truncated_row"  # the row keeps only its first 3 fields
    ROW_NOT_A_LIST = "row_not_a_list"  # the row becomes an object keyed by column number
    BODY_NOT_A_LIST = "body_not_a_list"  # the body becomes {"code": 0, "data": [rows]}
    EMPTY_ROWS = "empty_rows"  # every row becomes []


@dataclass(frozen=True, slots=True)
class KlineDamage:
    """One change to a klines body: `kind` done to the row whose open time is `open_time_ms`
    (when set and served; otherwise nothing), or else to row `row` (an index taken modulo the
    row count, so any int names a row). `column` (0 time, 1-4 OHLC, 5 volume) is the field
    that the field modes change."""

    kind: KlineCorruption
    row: int = 0
    column: int = 1
    open_time_ms: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.column <= 11:
            raise ValueError(f"a kline row has columns 0 to 11, got {self.column}")


@dataclass(frozen=True, slots=True)
class FaultRule:
    """One kind of fault on some endpoints. It fires on the `nth` calls it watches (1-based)
    and otherwise with `probability`; `max_times` caps how often it fires in all (None: no cap)."""

    kind: FaultKind
    path: str = "*"
    method: str = "*"
    probability: float = 0.0
    nth: tuple[int, ...] = ()
    max_times: int | None = None
    latency_ms: int = 0
    retry_after_s: int = 1
    status: int = 503
    hang_s: float = 30.0
    damage: tuple[KlineDamage, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {self.probability}")
        if any(n < 1 for n in self.nth):
            raise ValueError(f"nth counts calls from 1, got {self.nth}")
        if self.kind is FaultKind.HTTP_5XX and not 500 <= self.status <= 599:
            raise ValueError(f"HTTP_5XX needs a 5xx status, got {self.status}")
        if (self.kind is FaultKind.CORRUPT_KLINES) != bool(self.damage):
            raise ValueError("CORRUPT_KLINES needs `damage`, and only CORRUPT_KLINES takes it")

    def watches(self, method: str, path: str) -> bool:
        return (self.method == "*" or self.method.upper() == method.upper()) and fnmatch.fnmatchcase(
            path, self.path
        )


@dataclass(frozen=True, slots=True)
class InjectedFault:
    """A record of one fault: the request it hit (counted over all requests, from 1) and the rule."""

    request_number: int
    method: str
    path: str
    kind: FaultKind
    rule_index: int


@dataclass(frozen=True, slots=True)
class FaultDecision:
    latency_ms: int = 0
    fault: FaultRule | None = None


@dataclass
class FaultSchedule:
    """Seeded rules; `decide` is called once per request, in arrival order."""

    seed: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    injected: list[InjectedFault] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)
        self._watched = [0] * len(self.rules)
        self._fired = [0] * len(self.rules)
        self._requests = 0

    @property
    def rng(self) -> random.Random:
        """The schedule's random source (also used to shuffle OUT_OF_ORDER bodies)."""
        return self._rng

    def set_rules(self, rules: list[FaultRule]) -> None:
        """Replace the rules at runtime; their call counts start again from zero."""
        self.rules = list(rules)
        self._watched = [0] * len(self.rules)
        self._fired = [0] * len(self.rules)

    def clear(self) -> None:
        self.set_rules([])

    def decide(self, method: str, path: str) -> FaultDecision:
        self._requests += 1
        if len(self._watched) != len(self.rules):  # rules list replaced by assignment
            self._watched = [0] * len(self.rules)
            self._fired = [0] * len(self.rules)
        latency_ms = 0
        chosen: FaultRule | None = None
        for index, rule in enumerate(self.rules):
            if not rule.watches(method, path):
                continue
            self._watched[index] += 1
            # Draw for every watching rule, fired or not, so one rule's outcome does not shift
            # the random sequence that the others see.
            draw = self._rng.random()
            fires = self._watched[index] in rule.nth or draw < rule.probability
            if rule.max_times is not None and self._fired[index] >= rule.max_times:
                fires = False
            if not fires or (chosen is not None and rule.kind is not FaultKind.LATENCY):
                continue
            self._fired[index] += 1
            self.injected.append(InjectedFault(self._requests, method.upper(), path, rule.kind, index))
            if rule.kind is FaultKind.LATENCY:
                latency_ms += rule.latency_ms
            else:
                chosen = rule
        return FaultDecision(latency_ms, chosen)

    def injected_kinds(self) -> list[FaultKind]:
        return [record.kind for record in self.injected]


_YEAR_MS = 365 * 86_400_000
_BODY_MODES = frozenset({KlineCorruption.BODY_NOT_A_LIST, KlineCorruption.EMPTY_ROWS})


def _negated(value: object) -> object:
    text = str(value)
    return text[1:] if text.startswith("-") else f"-{text}"


def _damage_row(row: list[object], damage: KlineDamage) -> object:
    kind, column = damage.kind, damage.column
    if kind is KlineCorruption.ROW_NOT_A_LIST:
        return {str(i): v for i, v in enumerate(row)}
    if kind is KlineCorruption.TRUNCATED_ROW:
        return row[:3]
    row = list(row)
    if len(row) < 6:
        return row  # already truncated: nothing more to aim at
    if kind is KlineCorruption.HIGH_BELOW_LOW:
        try:
            low = float(str(row[3]))
        except ValueError:
            return row
        row[2] = repr(low / 2) if low > 0 else "-1"
    elif kind is KlineCorruption.ZERO_PRICE:
        row[1 + (column - 1) % 4] = "0"
    elif kind is KlineCorruption.NEGATIVE_PRICE:
        index = 1 + (column - 1) % 4
        row[index] = _negated(row[index])
    elif kind is KlineCorruption.NEGATIVE_VOLUME:
        row[5] = _negated(row[5])
    elif kind is KlineCorruption.NAN:
        row[column] = "NaN"
    elif kind is KlineCorruption.INFINITE:
        row[column] = "Infinity"
    elif kind is KlineCorruption.TEXT:
        row[column] = "abc"
    elif kind is KlineCorruption.NULL:
        row[column] = None
    elif kind is KlineCorruption.WRONG_TYPE:
        row[column] = {"v": row[column]}
    elif kind is KlineCorruption.MISALIGNED_TIME and isinstance(row[0], int):
        row[0] += 1
    elif kind is KlineCorruption.FUTURE_TIME and isinstance(row[0], int):
        row[0] += _YEAR_MS
    return row


def corrupt_klines(body: object, damage: tuple[KlineDamage, ...]) -> object:
    """`body` (a klines answer: a list of rows) with `damage` done to it; other bodies, and
    damage aimed at an open time that is not served, leave it as it is."""
    if not isinstance(body, list) or not body:
        return body
    rows: list[object] = list(body)
    targets: list[tuple[int, KlineDamage]] = []
    for item in damage:
        if item.kind in _BODY_MODES:
            continue
        if item.open_time_ms is None:
            targets.append((item.row % len(rows), item))
            continue
        targets.extend(
            (i, item)
            for i, row in enumerate(body)
            if isinstance(row, list) and row and row[0] == item.open_time_ms
        )
    for index, item in targets:
        row = rows[index]
        if isinstance(row, list):
            rows[index] = _damage_row(row, item)
    kinds = {item.kind for item in damage}
    if KlineCorruption.EMPTY_ROWS in kinds:
        rows = [[] for _ in rows]
    if KlineCorruption.BODY_NOT_A_LIST in kinds:
        return {"code": 0, "data": rows}
    return rows
