"""Secret redaction: registered values, secret-named keys, SecretStr, and passwords inside DSNs.

Runs after exceptions have been rendered to text or dicts and before the renderer, so it sees every
string that will be written. A masked value is replaced by MASK; the argument that a secret cannot
survive (or be formed anew) relies on MASK's character not occurring in the secret, see redact_text.
"""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

from pydantic import SecretBytes, SecretStr
from structlog.typing import EventDict, WrappedLogger

MASK = "**********"
MIN_SECRET_LEN = 4
_MAX_DEPTH = 8

_SECRET_KEY = re.compile(
    r"(?:^|_)(?:api_?key|api_?secret|secrets?|secret_?key|client_?secret|passwords?|passwd|pwd|passphrase"
    r"|tokens?|access_?token|refresh_?token|auth_?token|authorization|signature|private_?key|credentials?"
    r"|cookie|x_mbx_apikey)(?:$|_)"
)
# userinfo password of any scheme://user:password@host. Greedy up to the last "@" of the token, so a
# password with an unescaped "@" is masked whole; a URL without userinfo may lose its port, which is safe.
_DSN_PASSWORD = re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^:/?#@\s]*:)[^\s]*@")
# libpq keyword form: "host=db password=... user=x"
_KW_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    return _SECRET_KEY.search(key.lower().replace("-", "_")) is not None


class Redactor:
    __slots__ = ("_key_cache", "_lock", "_min_len", "_numeric", "_pattern", "_secrets")

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._min_len = MIN_SECRET_LEN
        self._numeric = False
        self._key_cache: dict[str, tuple[bool, str]] = {}
        self._lock = threading.Lock()

    def register(self, values: Iterable[str | SecretStr | None]) -> None:
        new: set[str] = set()
        for value in values:
            raw = value.get_secret_value() if isinstance(value, SecretStr) else value
            if not raw or len(raw) < MIN_SECRET_LEN:
                continue
            new.add(raw)
            # A DSN is registered whole, but its password alone also shows up (asyncpg error messages).
            if "://" in raw:
                try:
                    password = urlsplit(raw).password
                except ValueError:
                    password = None
                for part in (password, unquote(password or "")):
                    if part and len(part) >= MIN_SECRET_LEN:
                        new.add(part)
        with self._lock:
            if new <= self._secrets:
                return
            self._secrets |= new
            # Longest first: when one secret contains another the whole of it is masked.
            ordered = sorted(self._secrets, key=lambda s: (-len(s), s))
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))
            self._min_len = min(len(s) for s in self._secrets)
            self._numeric = any(s.lstrip("-").replace(".", "", 1).isdigit() for s in self._secrets)
            self._key_cache = {}

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._pattern = None
            self._numeric = False
            self._key_cache = {}

    def redact_text(self, text: str) -> str:
        """Mask registered secrets and DSN passwords.

        One left-to-right pass is enough: an occurrence that survived would lie inside unmatched text,
        where the scan tried every start position, and one formed across a replacement would contain
        MASK's character, which a secret (other than a degenerate one made of "*") does not.
        """
        pattern = self._pattern
        if pattern is not None and len(text) >= self._min_len:
            text = pattern.sub(MASK, text)
        if "://" in text:
            text = _DSN_PASSWORD.sub(r"\1" + MASK + "@", text)
        if "=" in text:
            text = _KW_PASSWORD.sub(r"\1" + MASK, text)
        return text

    def secret_key(self, key: str) -> bool:
        return self._key(key)[0]

    def _key(self, key: str) -> tuple[bool, str]:
        # Keys repeat on every event: decide once whether each is secret-named, and redact it once.
        found = self._key_cache.get(key)
        if found is None:
            found = (is_secret_key(key), self.redact_text(key))
            if len(self._key_cache) < 10_000:
                self._key_cache[key] = found
        return found

    def redact_value(self, value: Any, depth: int = 0) -> Any:
        kind = type(value)
        if kind is str:
            return self.redact_text(value)
        if value is None or kind is bool:
            return value
        if kind is int or kind is float:
            if not self._numeric:
                return value
            text = repr(value)
            masked = self.redact_text(text)
            return value if masked == text else masked
        if isinstance(value, SecretStr | SecretBytes):
            return MASK
        if depth >= _MAX_DEPTH:
            return self.redact_text(_safe_repr(value))
        if isinstance(value, Mapping):
            return self.redact_mapping(value, depth + 1)
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(item, depth + 1) for item in value]
        if isinstance(value, str):
            return self.redact_text(str(value))
        if isinstance(value, bytes | bytearray):
            return self.redact_text(bytes(value).decode("utf-8", "backslashreplace"))
        if isinstance(value, dt.datetime | dt.date | dt.time):
            return value.isoformat()
        # Everything else leaves as text, so neither orjson nor the console renderer ever sees an
        # object whose own serialisation could carry a secret past us (dataclasses, exceptions, ...).
        return self.redact_text(_safe_repr(value))

    def redact_mapping(self, mapping: Mapping[Any, Any], depth: int = 0) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        numeric = self._numeric
        for key, value in mapping.items():
            if type(key) is str:
                secret, key = self._key(key)
                if secret and value is not None and type(value) is not bool:
                    out[key] = MASK
                    continue
            elif not isinstance(key, int | float | bool) and key is not None:
                key = self.redact_text(_safe_repr(key))
            kind = type(value)
            # The common cases inline: this loop runs for every field of every event.
            if kind is str:
                out[key] = self.redact_text(value)
            elif value is None or kind is bool or (not numeric and (kind is int or kind is float)):
                out[key] = value
            else:
                out[key] = self.redact_value(value, depth)
        return out

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        return self.redact_mapping(event_dict)


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except Exception:  # a broken __repr__ must not take the log line (or the caller) down
        return f"<unrepresentable {type(value).__name__}>"


REDACTOR = Redactor()


def register_secrets(values: Iterable[str | SecretStr | None]) -> None:
    """Add secret values to the redaction set; None, empty and values under 4 characters are ignored
    (masking every "abc" in every line would hide more than it protects)."""
    REDACTOR.register(values)
