"""sd_notify messages, read from sockets the test owns (a path and an abstract name)."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from huracan.daemon.sdnotify import Notifier


class NotifySocket:
    """What systemd does for a Type=notify service: a datagram socket that collects messages."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(2)

    def receive(self) -> list[str]:
        return self.sock.recv(4096).decode().split("\n")

    def nothing_pending(self) -> bool:
        self.sock.setblocking(False)
        try:
            self.sock.recv(4096)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(2)
        return False


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    address = str(tmp_path / "notify") if request.param == "path" else f"@huracan-test-{uuid.uuid4().hex}"
    listener = NotifySocket(address)
    yield listener
    listener.sock.close()


def test_lifecycle_messages(notify_socket: NotifySocket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": notify_socket.address})
    assert notifier.enabled
    assert notifier.ready("running: mode=replay")
    assert notify_socket.receive() == ["READY=1", "STATUS=running: mode=replay"]
    notifier.status("starting: database")
    assert notify_socket.receive() == ["STATUS=starting: database"]
    notifier.reloading()
    reloading, monotonic = notify_socket.receive()
    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=")
    assert int(monotonic.split("=")[1]) > 0
    notifier.watchdog()
    assert notify_socket.receive() == ["WATCHDOG=1"]
    notifier.stopping()
    assert notify_socket.receive() == ["STOPPING=1", "STATUS=stopping"]
    notifier.close()
    assert notify_socket.nothing_pending()


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert not notifier.ready("x")
    assert notifier.watchdog_interval_s is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    assert notifier.enabled
    assert not notifier.ready("x")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_from_environment(environ: dict[str, str], expected: float | None) -> None:
    assert Notifier(environ).watchdog_interval_s == expected
