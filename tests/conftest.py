"""Suite-wide settings and fixtures.

The guard: a unit or CLI test never reaches a real SSH server or the kernel's netlink by
accident. Outside ``tests/lab`` and ``tests/vm`` (and tests marked ``lab``), opening an
``AF_NETLINK`` socket, connecting any socket to port 22, or starting a paramiko SSH client fails
the test (also when the code under test catches the error: the attempt is recorded and fails
the test at teardown). Tests that need a host's answers pass a fake Transport
(tests/fake_transport.py); tests of the agent pass a fake System (tests/fakes.py).
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paramiko
import pytest
from hypothesis import configuration, settings

# Nothing is written into the checkout: no bytecode (here and in the processes tests start), and
# hypothesis keeps its example database and caches in a temporary directory, removed at exit.
# (scripts/test.sh and pytest's addopts also set PYTHONDONTWRITEBYTECODE and -p no:cacheprovider.)
sys.dont_write_bytecode = True
os.environ["PYTHONDONTWRITEBYTECODE"] = "1"
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="vpcctl-hypothesis-")
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)
configuration.set_hypothesis_home_dir(_HYPOTHESIS_HOME)
settings.register_profile("vpcctl", database=None)
settings.load_profile("vpcctl")

EXEMPT = tuple(str(Path(__file__).resolve().parent / d) for d in ("lab", "vm"))
SSH_PORT = 22

_socket_init = socket.socket.__init__
_socket_connect = socket.socket.connect
_socket_connect_ex = socket.socket.connect_ex


class RealEdgeUsed(BaseException):
    """Raised by the guard (a BaseException so that ``except Exception`` in the code under test
    does not hide it)."""


def _exempt(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker("lab") is not None or str(request.path).startswith(
        EXEMPT
    )


@pytest.fixture(autouse=True)
def no_real_ssh_or_netlink(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[list[str]]:
    """Yields the list of refused attempts (empty unless the test is failing)."""
    attempts: list[str] = []
    if _exempt(request):
        yield attempts
        return

    def refuse(what: str) -> RealEdgeUsed:
        attempts.append(what)
        return RealEdgeUsed(
            f"{request.node.nodeid}: a unit/CLI test tried {what}; pass a fake "
            "(tests/fake_transport.py, tests/fakes.py) or make it a lab test"
        )

    def init(self: socket.socket, family: Any = -1, type: Any = -1, proto: Any = -1,
             fileno: Any = None) -> None:  # fmt: skip
        if family == socket.AF_NETLINK:
            raise refuse("to open a netlink socket")
        _socket_init(self, family, type, proto, fileno)
        if fileno is not None and self.family == socket.AF_NETLINK:
            self.detach()
            raise refuse("to wrap a netlink socket")

    def to_ssh(address: Any) -> bool:
        return isinstance(address, tuple) and len(address) >= 2 and address[1] == SSH_PORT

    def connect(self: socket.socket, address: Any) -> None:
        if to_ssh(address):
            raise refuse(f"to connect to {address[0]} port {SSH_PORT}")
        _socket_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if to_ssh(address):
            raise refuse(f"to connect to {address[0]} port {SSH_PORT}")
        return _socket_connect_ex(self, address)

    def ssh_client_connect(self: paramiko.SSHClient, hostname: str, *a: Any, **kw: Any) -> None:
        raise refuse(f"a paramiko SSH connection to {hostname}")

    def ssh_transport_start(self: paramiko.Transport, *a: Any, **kw: Any) -> None:
        raise refuse("a paramiko SSH handshake")

    monkeypatch.setattr(socket.socket, "__init__", init)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(paramiko.SSHClient, "connect", ssh_client_connect)
    monkeypatch.setattr(paramiko.Transport, "start_client", ssh_transport_start)
    yield attempts
    if attempts:
        pytest.fail(f"the test tried {'; '.join(attempts)} (refused by tests/conftest.py)")
