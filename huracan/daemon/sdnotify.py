"""sd_notify(3) without libsystemd: one datagram per state change to $NOTIFY_SOCKET.

A name starting with '@' is an abstract socket (a leading NUL byte on the wire). Outside systemd
the variable is unset and every call is a cheap no-op, so the daemon runs the same from a shell.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from huracan.logs import get_logger

log = get_logger("huracan.daemon.sdnotify")


class Notifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        name = environ.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if name.startswith("@"):
            self._address = b"\0" + name[1:].encode()
        elif name.startswith("/"):
            self._address = name
        self._socket: socket.socket | None = None
        self.watchdog_interval_s = _watchdog_interval(environ)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *lines: str) -> bool:
        """Send `KEY=VALUE` lines as one message; False (and a log line) if it could not be sent."""
        if self._address is None:
            return False
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._socket.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            # Losing a notification must never take the daemon down; systemd's own timeouts
            # (start, watchdog) are the safety net.
            log.warning("sd_notify failed", error=str(exc), message=lines[0])
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def reloading(self) -> bool:
        # Type=notify-reload requires MONOTONIC_USEC; plain Type=notify accepts it too.
        return self.notify(
            "RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"
        )

    def stopping(self, status: str = "stopping") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """The watchdog period systemd expects, if it is watching this very process."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None
