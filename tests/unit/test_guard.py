"""The guard of tests/conftest.py: a unit test cannot reach a real SSH server or netlink."""

from __future__ import annotations

import socket

import paramiko
import pytest

from tests.conftest import RealEdgeUsed
from vpcctl.admin.ssh import SshOptions, connect
from vpcctl.core.errors import VpcctlError
from vpcctl.core.model import SshTarget


@pytest.fixture
def refused(no_real_ssh_or_netlink: list[str]) -> list[str]:
    """The attempts the guard recorded (each test clears them at its end, so that its own
    deliberate attempts do not fail it at teardown)."""
    return no_real_ssh_or_netlink


def test_a_netlink_socket_is_refused(refused: list[str]) -> None:
    from pyroute2 import IPRoute

    with pytest.raises(RealEdgeUsed, match="netlink"):
        socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
    with pytest.raises(RealEdgeUsed, match="netlink"):
        IPRoute()
    assert len(refused) == 2
    refused.clear()


def test_ssh_is_refused_even_where_the_code_catches_errors(refused: list[str]) -> None:
    with pytest.raises(RealEdgeUsed, match="port 22"):
        socket.create_connection(("127.0.0.1", 22), timeout=1)
    with pytest.raises(RealEdgeUsed, match="paramiko SSH connection"):
        paramiko.SSHClient().connect("127.0.0.1", port=2222)
    # the real SSH transport (which maps OSError to TransportError) cannot hide it either
    with pytest.raises(RealEdgeUsed):
        try:
            connect(SshTarget("127.0.0.1", "root"), SshOptions(connect_timeout=1))
        except VpcctlError:
            pytest.fail("the guard's error was turned into a TransportError")
    assert len(refused) == 3
    refused.clear()


def test_ordinary_sockets_still_work() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.connect(("127.0.0.1", s.getsockname()[1]))
    a, b = socket.socketpair()
    a.close()
    b.close()
