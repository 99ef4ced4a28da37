"""huracan.logs: formats, journald priority, context, stdlib records, levels, redaction."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
import string
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from huracan.logs import (
    MASK,
    bind_context,
    configure_logging,
    flush_logs,
    get_logger,
    log_context,
    register_secrets,
    set_levels,
    unbind_context,
)
from huracan.logs.redact import REDACTOR, Redactor
from huracan.logs.setup import reset_logging

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
SECRET = "hunter2-Zq9xSECRET"
LOCAL_SECRET = "sk-local-7f3e9a"
UNREGISTERED_LOCAL = "local-only-7Hq2"


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _clean_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    structlog.contextvars.clear_contextvars()
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()
    REDACTOR.clear()


def json_lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_line_has_the_standard_fields() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    get_logger("huracan.test").info("order placed", symbol="BTC/USDT", qty=0.5)
    (line,) = json_lines(buf)
    assert line["event"] == "order placed"
    assert line["level"] == "info"
    assert line["logger"] == "huracan.test"
    assert ISO_UTC.match(line["ts"]), line["ts"]
    assert line["symbol"] == "BTC/USDT"
    assert line["qty"] == 0.5
    assert list(line)[:4] == ["ts", "level", "logger", "event"]


def test_auto_is_json_when_not_a_terminal_and_console_on_a_terminal() -> None:
    piped = io.StringIO()
    configure_logging(stream=piped)
    get_logger("t").info("hello")
    assert json_lines(piped)[0]["event"] == "hello"

    tty = FakeTTY()
    configure_logging(stream=tty)
    get_logger("t").info("hello")
    out = tty.getvalue()
    assert "hello" in out
    assert not out.startswith("{")
    assert "\x1b[" in out  # colours on a terminal


def test_console_honours_no_color_and_fmt_overrides_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    tty = FakeTTY()
    configure_logging(stream=tty)
    get_logger("t").warning("plain")
    assert "plain" in tty.getvalue()
    assert "\x1b[" not in tty.getvalue()

    forced_json = FakeTTY()
    configure_logging(fmt="json", stream=forced_json)
    get_logger("t").info("x")
    assert json_lines(forced_json)[0]["event"] == "x"

    forced_console = io.StringIO()
    configure_logging(fmt="console", stream=forced_console)
    get_logger("t").info("x")
    assert "[info" in forced_console.getvalue()
    assert "\x1b[" not in forced_console.getvalue()  # not a terminal: no colours


def test_journald_gets_a_syslog_priority_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        st_ = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st_.st_dev}:{st_.st_ino}")
        configure_logging(level="debug", stream=stream)
        log = get_logger("huracan.test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        logging.getLogger("asyncpg").error("foreign")
    lines = path.read_text().splitlines()
    assert [line[:3] for line in lines] == ["<7>", "<6>", "<4>", "<3>", "<2>", "<3>"]
    assert json.loads(lines[1][3:])["event"] == "i"


def test_no_prefix_when_stdout_is_merely_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")  # the journal is elsewhere; we were redirected
    path = tmp_path / "out.jsonl"
    with path.open("w") as stream:
        configure_logging(stream=stream)
        get_logger("t").error("to a file")
    (line,) = path.read_text().splitlines()
    assert json.loads(line)["event"] == "to a file"


async def test_each_task_has_its_own_context() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    log = get_logger("huracan.exec")
    bind_context(model_version="v7")

    async def trade(symbol: str, coid: str) -> None:
        bind_context(symbol=symbol, client_order_id=coid)
        await asyncio.sleep(0)
        log.info("submitted")

    await asyncio.gather(trade("BTC/USDT", "a1"), trade("ETH/USDT", "b2"))
    with log_context(symbol="SOL/USDT"):
        log.info("inside")
    log.info("outside")
    unbind_context("model_version")
    log.info("unbound")

    by_event = {(e["event"], e.get("symbol")): e for e in json_lines(buf)}
    assert by_event[("submitted", "BTC/USDT")]["client_order_id"] == "a1"
    assert by_event[("submitted", "ETH/USDT")]["client_order_id"] == "b2"
    assert by_event[("submitted", "ETH/USDT")]["model_version"] == "v7"
    assert ("inside", "SOL/USDT") in by_event
    assert ("outside", None) in by_event
    assert "model_version" not in by_event[("unbound", None)]


def test_stdlib_records_share_format_and_levels() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf, levels={"asyncpg": "warning", "ccxt": "debug"})
    logging.getLogger("asyncpg.pool").info("dropped: below asyncpg's warning")
    logging.getLogger("asyncpg.pool").warning("pool %s exhausted", "main")
    logging.getLogger("ccxt.base.exchange").debug("kept: ccxt at debug")
    logging.getLogger("aiohttp.client").debug("dropped: root at info")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("careful", UserWarning, stacklevel=1)
    lines = json_lines(buf)
    assert [(e["logger"], e["level"], e["event"]) for e in lines[:2]] == [
        ("asyncpg.pool", "warning", "pool main exhausted"),
        ("ccxt.base.exchange", "debug", "kept: ccxt at debug"),
    ]
    assert lines[2]["logger"] == "py.warnings"
    assert "careful" in lines[2]["event"]
    assert len(lines) == 3
    assert all(ISO_UTC.match(e["ts"]) for e in lines)


def test_longest_dotted_prefix_wins() -> None:
    buf = io.StringIO()
    levels = {"huracan": "warning", "huracan.exchange": "debug", "huracan.exchange.binance": "error"}
    configure_logging(fmt="json", stream=buf, level="info", levels=levels)
    get_logger("huracan.exchange.kraken").debug("a")  # huracan.exchange -> debug
    get_logger("huracan.exchange.binance.ws").warning("b")  # -> error: dropped
    get_logger("huracan.risk").info("c")  # huracan -> warning: dropped
    get_logger("huracan.exchanger").info("d")  # not a dotted child of huracan.exchange -> warning
    get_logger("other").info("e")  # default info
    structlog.get_logger("huracan.exchange.x").debug("f")  # plain structlog logger, same table
    structlog.get_logger("huracan.memory").info("g")  # dropped by the level processor
    assert [(e["event"], e["logger"]) for e in json_lines(buf)] == [
        ("a", "huracan.exchange.kraken"),
        ("e", "other"),
        ("f", "huracan.exchange.x"),
    ]


def test_set_levels_at_runtime_and_loggers_made_before_configuration() -> None:
    early = get_logger("huracan.strategy")  # module level: before configure_logging
    bound = early.bind(service="strategy")  # kept by a long-lived object
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf, level="info")
    early.debug("hidden")
    bound.debug("hidden")
    early.info("shown")
    set_levels("info", {"huracan.strategy": "debug", "asyncpg": "debug"})
    early.debug("now shown")
    bound.debug("bound too")
    logging.getLogger("asyncpg").debug("stdlib follows")
    set_levels("info", {})
    early.debug("hidden again")
    logging.getLogger("asyncpg").debug("hidden again")
    events = [e["event"] for e in json_lines(buf)]
    assert events == ["shown", "now shown", "bound too", "stdlib follows"]
    assert logging.getLogger("asyncpg").level == logging.NOTSET


def test_reconfigure_switches_stream_without_duplicating_stdlib_output() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger("t")
    configure_logging(fmt="json", stream=first)
    log.info("one")
    configure_logging(fmt="json", stream=second)
    log.info("two")
    logging.getLogger("ccxt").warning("three")
    assert [e["event"] for e in json_lines(first)] == ["one"]
    assert [e["event"] for e in json_lines(second)] == ["two", "three"]


def test_flush_logs_flushes_the_stream() -> None:
    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            self.flushes += 1
            super().flush()

    stream = Counting()
    configure_logging(fmt="json", stream=stream)
    before = stream.flushes
    flush_logs()
    assert stream.flushes > before


def test_unknown_level_is_refused_before_anything_changes() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    with pytest.raises(ValueError, match="verbose"):
        set_levels("verbose", {})
    get_logger("t").info("still configured")
    assert json_lines(buf)[0]["event"] == "still configured"


def _fail_with_secret_in_a_local() -> None:
    token_value = LOCAL_SECRET
    # Neither registered nor under a secret-sounding name: only leaving locals out keeps it out.
    nonce = UNREGISTERED_LOCAL
    raise RuntimeError(f"exchange rejected key {token_value} and {SECRET} ({len(nonce)})")


class Holder:
    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return f"Holder({self.value!r})"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_secrets_never_reach_the_output(fmt: str) -> None:
    buf = io.StringIO()
    configure_logging(fmt=fmt, stream=buf)  # type: ignore[arg-type]
    register_secrets([SECRET, SecretStr(LOCAL_SECRET), None, "", "abc"])
    log = get_logger("huracan.exchange")
    log.info(f"connecting with {SECRET}")
    log.info("fields", key=SECRET, nested={"a": [1, (SECRET, {"b": SECRET})]}, obj=Holder(SECRET))
    log.info("by name", api_key="unregistered-key", password="pw-unregistered", authorization="Bearer x")
    log.info("secret str", value=SecretStr("never-registered"))
    log.info("dsn", dsn="postgresql://trader:dsn-pass-123@db:5432/huracan")
    try:
        _fail_with_secret_in_a_local()
    except RuntimeError:
        log.exception("order failed")
    try:
        _fail_with_secret_in_a_local()
    except RuntimeError:
        logging.getLogger("ccxt").exception("stdlib failed")
    logging.getLogger("aiohttp").warning("stdlib %s", SECRET)
    out = buf.getvalue()
    for leaked in (
        SECRET,
        LOCAL_SECRET,
        "unregistered-key",
        "pw-unregistered",
        "never-registered",
        "dsn-pass",
        UNREGISTERED_LOCAL,
    ):
        assert leaked not in out, leaked
    assert MASK in out
    assert "RuntimeError" in out  # the exception itself is still there
    assert "postgresql://trader:" in out
    assert MASK not in REDACTOR.redact_text("abc abc")  # values under 4 characters are not registered


def test_registering_a_dsn_masks_its_password_alone_too() -> None:
    redactor = Redactor()
    redactor.register([SecretStr("postgresql://u:p%40ss-word@h/db")])
    assert "p@ss-word" not in redactor.redact_text("auth failed for password p@ss-word")
    assert redactor.redact_text("keyword form host=db password='x y' user=u") == (
        f"keyword form host=db password={MASK} user=u"
    )
    assert redactor.redact_value(None) is None
    assert redactor.redact_mapping({"api_key": None, "token": True, "secret": 5}) == {
        "api_key": None,
        "token": True,
        "secret": MASK,
    }


# The mask's own character is left out: a secret made of "*" cannot be told from the mask.
SECRET_CHARS = st.characters(exclude_characters="*", exclude_categories=["Cs"])


@settings(max_examples=200, deadline=None)
@given(
    secrets=st.lists(st.text(SECRET_CHARS, min_size=4, max_size=20), min_size=1, max_size=3),
    pieces=st.lists(st.text(st.characters(exclude_categories=["Cs"]), max_size=12), max_size=6),
)
def test_redacted_text_never_contains_a_secret(secrets: list[str], pieces: list[str]) -> None:
    redactor = Redactor()
    redactor.register(secrets)
    text = "".join(p + secrets[i % len(secrets)] for i, p in enumerate(pieces)) + "".join(secrets)
    out = redactor.redact_text(text)
    for secret in secrets:
        assert secret not in out
    nested = redactor.redact_value({"k": [text, (text,)], text: {"x": text}})
    for secret in secrets:
        assert secret not in repr(nested)


# JSON escapes quotes, backslashes and control characters; such secrets are covered by the text property.
JSON_SAFE = st.text(string.ascii_letters + string.digits + "-_.:/@ +=!?#%&()[]{}", min_size=4, max_size=16)


@settings(max_examples=100, deadline=None)
@given(secret=JSON_SAFE, before=JSON_SAFE, after=JSON_SAFE)
def test_json_pipeline_never_writes_a_registered_secret(secret: str, before: str, after: str) -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    register_secrets([secret])
    try:
        text = before + secret + after
        get_logger("prop").info(text, field=text, nested={"deep": [text]})
        logging.getLogger("prop.stdlib").warning("%s", text)
        entries = json_lines(buf)
        assert len(entries) == 2
        # Only what came from the text: "level", "logger" and the like may contain the secret by chance.
        for entry in entries:
            for key in ("event", "field", "nested"):
                if key in entry:  # the stdlib record has only "event"; json.dumps(None) is "null"
                    assert secret not in json.dumps(entry[key], ensure_ascii=False), (key, entry)
    finally:
        REDACTOR.clear()


def test_secret_str_and_secret_named_keys_render_as_the_mask() -> None:
    buf = io.StringIO()
    configure_logging(fmt="json", stream=buf)
    get_logger("t").info("s", value=SecretStr("abcdefgh"), api_secret="x" * 8, fine="visible", token=None)
    (line,) = json_lines(buf)
    assert line["value"] == MASK
    assert line["api_secret"] == MASK
    assert line["fine"] == "visible"
    assert line["token"] is None  # "not configured" stays readable
