"""Pure tests of the wireguard-go UAPI backend: parse/format and a fake UAPI socket."""

from __future__ import annotations

import os
import socket
import threading
from base64 import b64encode
from collections.abc import Callable, Iterator
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path

import pytest
from nacl.public import PrivateKey

from vpcctl.core.errors import KernelError
from vpcctl.host.wgtypes import PeerConfig, PeerUpdate, WgPeer, key_to_hex, plan_peer_update
from vpcctl.host.wguapi import (
    GET_REQUEST,
    UserspaceWireGuard,
    format_remove_peer,
    format_set_device,
    format_set_peer,
    parse_errno,
    parse_get,
    uapi_exchange,
)


def rand_key() -> str:
    return b64encode(os.urandom(32)).decode()


PRIV = PrivateKey.generate()
PRIV_HEX = bytes(PRIV).hex()
PUB_B64 = b64encode(bytes(PRIV.public_key)).decode()
PEER1 = rand_key()
PEER2 = rand_key()

GET_ANSWER = f"""private_key={PRIV_HEX}
listen_port=51820
fwmark=0
public_key={key_to_hex(PEER1)}
preshared_key={"0" * 64}
protocol_version=1
endpoint=192.0.2.2:51821
last_handshake_time_sec=1700000000
last_handshake_time_nsec=500000000
tx_bytes=1234
rx_bytes=5678
persistent_keepalive_interval=25
allowed_ip=10.90.0.2/32
allowed_ip=10.1.0.0/24
allowed_ip=fd00::/64
public_key={key_to_hex(PEER2)}
preshared_key={"0" * 64}
protocol_version=1
last_handshake_time_sec=0
last_handshake_time_nsec=0
tx_bytes=0
rx_bytes=0
persistent_keepalive_interval=0
errno=0

"""


# ------------------------------------------------------------------------- parse


def test_parse_get_full() -> None:
    dev = parse_get(GET_ANSWER, "wg0")
    assert dev.name == "wg0"
    assert dev.backend == "userspace"
    assert dev.public_key == PUB_B64  # derived from the private key
    assert dev.listen_port == 51820
    assert set(dev.peers) == {PEER1, PEER2}
    p1 = dev.peers[PEER1]
    assert p1.endpoint == "192.0.2.2:51821"
    assert p1.allowed_ips == (IPv4Network("10.1.0.0/24"), IPv4Network("10.90.0.2/32"))
    assert p1.allowed_ips_v6 == (IPv6Network("fd00::/64"),)
    assert p1.last_handshake == pytest.approx(1700000000.5)
    assert (p1.rx_bytes, p1.tx_bytes, p1.keepalive) == (5678, 1234, 25)
    p2 = dev.peers[PEER2]
    assert p2.endpoint is None
    assert p2.last_handshake is None
    assert p2.allowed_ips == ()
    assert (p2.rx_bytes, p2.tx_bytes, p2.keepalive) == (0, 0, 0)


def test_parse_get_never_keeps_private_key() -> None:
    dev = parse_get(GET_ANSWER, "wg0")
    text = repr(dev) + str(dev)
    assert PRIV_HEX not in text
    assert b64encode(bytes(PRIV)).decode() not in text


def test_parse_get_empty_device() -> None:
    dev = parse_get("errno=0\n\n", "wg1")
    assert dev.public_key is None
    assert dev.listen_port == 0
    assert dict(dev.peers) == {}


def test_parse_get_ipv6_endpoint() -> None:
    text = f"public_key={key_to_hex(PEER1)}\nendpoint=[2001:db8::1]:51820\nerrno=0\n\n"
    assert parse_get(text, "wg0").peers[PEER1].endpoint == "[2001:db8::1]:51820"


def test_parse_get_many_peers() -> None:
    keys = [rand_key() for _ in range(150)]
    lines = ["listen_port=1"]
    for i, key in enumerate(keys):
        lines += [
            f"public_key={key_to_hex(key)}",
            f"allowed_ip=10.{i // 256}.{i % 256}.0/24",
            f"allowed_ip=172.16.{i}.1/32",
        ]
    dev = parse_get("\n".join(lines) + "\nerrno=0\n\n", "wg0")
    assert len(dev.peers) == 150
    assert all(len(p.allowed_ips) == 2 for p in dev.peers.values())


@pytest.mark.parametrize(
    "text",
    [
        "listen_port=1\n",  # truncated: no errno
        "garbage line\nerrno=0\n\n",
        "errno=-22\n\n",
        f"public_key={key_to_hex(PEER1)}\nallowed_ip=10.0.0.0/33\nerrno=0\n\n",
        "private_key=zz\nerrno=0\n\n",
    ],
)
def test_parse_get_errors(text: str) -> None:
    with pytest.raises(KernelError) as exc:
        parse_get(text, "wg0")
    assert exc.value.hint


def test_parse_get_bad_private_key_not_echoed() -> None:
    bad = "ab" * 31 + "zz"
    with pytest.raises(KernelError) as exc:
        parse_get(f"private_key={bad}\nerrno=0\n\n", "wg0")
    assert bad not in exc.value.message and bad not in str(exc.value)


def test_parse_errno() -> None:
    assert parse_errno("errno=0\n\n") == 0
    assert parse_errno("a=b\nerrno=-98\n\n") == 98
    with pytest.raises(ValueError):
        parse_errno("a=b\n")


# ------------------------------------------------------------------------ format


def test_format_set_device() -> None:
    raw = bytes(range(32))
    assert format_set_device(private_key=raw, listen_port=51820) == (
        f"set=1\nprivate_key={raw.hex()}\nlisten_port=51820\n\n"
    )
    assert format_set_device(listen_port=0) == "set=1\nlisten_port=0\n\n"
    with pytest.raises(ValueError):
        format_set_device(private_key=b"short")
    with pytest.raises(ValueError):
        format_set_device(listen_port=70000)


def test_format_set_peer_new() -> None:
    cfg = PeerConfig(
        PEER1,
        "192.0.2.2:51820",
        (IPv4Network("10.90.0.2/32"), IPv4Network("10.1.0.0/24")),
        25,
    )
    update = plan_peer_update(None, cfg)
    assert update is not None
    text = format_set_peer(update)
    assert text == (
        f"set=1\npublic_key={key_to_hex(PEER1)}\n"
        "endpoint=192.0.2.2:51820\npersistent_keepalive_interval=25\n"
        "replace_allowed_ips=true\nallowed_ip=10.1.0.0/24\nallowed_ip=10.90.0.2/32\n\n"
    )
    assert "update_only" not in text  # would silently drop a new peer


def test_format_set_peer_update_in_place() -> None:
    update = PeerUpdate(public_key=PEER1, create=False, endpoint="192.0.2.9:1")
    lines = format_set_peer(update).split("\n")
    # update_only must directly follow public_key (wireguard-go drops a freshly
    # created peer when it sees update_only)
    assert lines[:4] == [
        "set=1",
        f"public_key={key_to_hex(PEER1)}",
        "update_only=true",
        "endpoint=192.0.2.9:1",
    ]
    assert "replace_allowed_ips=true" not in lines
    assert format_set_peer(update).endswith("\n\n")


def test_format_remove_peer() -> None:
    assert format_remove_peer(PEER2) == (
        f"set=1\npublic_key={key_to_hex(PEER2)}\nupdate_only=true\nremove=true\n\n"
    )


# ------------------------------------------------------------- plan_peer_update


def _peer(allowed: list[str], endpoint: str | None = "192.0.2.2:51820", ka: int = 25) -> WgPeer:
    return WgPeer(PEER1, endpoint, tuple(IPv4Network(a) for a in allowed), ka, 1.0, 1, 1)


def _cfg(allowed: list[str], endpoint: str | None = "192.0.2.2:51820", ka: int = 25) -> PeerConfig:
    return PeerConfig(PEER1, endpoint, tuple(IPv4Network(a) for a in allowed), ka)


def test_plan_noop() -> None:
    assert plan_peer_update(_peer(["10.0.0.0/24"]), _cfg(["10.0.0.0/24"])) is None
    # endpoint None never clears an endpoint (the APIs cannot)
    assert plan_peer_update(_peer(["10.0.0.0/24"]), _cfg(["10.0.0.0/24"], None)) is None


def test_plan_add_only_without_replace() -> None:
    upd = plan_peer_update(_peer(["10.0.0.0/24"]), _cfg(["10.0.0.0/24", "10.0.1.0/24"]))
    assert upd == PeerUpdate(PEER1, False, None, None, False, (IPv4Network("10.0.1.0/24"),))


def test_plan_removal_replaces() -> None:
    upd = plan_peer_update(_peer(["10.0.0.0/24", "10.0.1.0/24"]), _cfg(["10.0.1.0/24"]))
    assert upd is not None
    assert upd.replace_allowed_ips and upd.allowed_ips == (IPv4Network("10.0.1.0/24"),)
    assert not upd.create


def test_plan_v6_leftovers_replace() -> None:
    cur = WgPeer(
        PEER1, None, (IPv4Network("10.0.0.0/24"),), 0, None, 0, 0, (IPv6Network("fd00::/64"),)
    )
    upd = plan_peer_update(cur, _cfg(["10.0.0.0/24"], None, 0))
    assert upd is not None and upd.replace_allowed_ips


def test_plan_endpoint_and_keepalive() -> None:
    upd = plan_peer_update(_peer(["10.0.0.0/24"]), _cfg(["10.0.0.0/24"], "192.0.2.3:1", 0))
    assert upd == PeerUpdate(PEER1, False, "192.0.2.3:1", 0, False, ())


def test_peerconfig_validation() -> None:
    with pytest.raises(ValueError):
        PeerConfig("not-a-key", None, (), 0)
    with pytest.raises(ValueError):
        PeerConfig(PEER1, "example.com:51820", (), 0)
    with pytest.raises(ValueError):
        PeerConfig(PEER1, None, (), 70000)
    cfg = PeerConfig(PEER1, "[2001:db8:0::1]:51820", (IPv4Network("10.0.0.0/8"),) * 2, 0)
    assert cfg.endpoint == "[2001:db8::1]:51820"
    assert cfg.allowed_ips == (IPv4Network("10.0.0.0/8"),)


# --------------------------------------------------------------- fake UAPI socket


class FakeUapi:
    """A tiny wireguard-go stand-in: answers ``get`` with a fixed text, records sets."""

    def __init__(self, path: Path, get_answer: Callable[[], str]) -> None:
        self.path = path
        self.get_answer = get_answer
        self.requests: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                buf = b""
                while not buf.endswith(b"\n\n"):
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                req = buf.decode()
                self.requests.append(req)
                if req == GET_REQUEST:
                    answer = self.get_answer()
                    # split the answer to exercise the reader's reassembly
                    conn.sendall(answer[:7].encode())
                    conn.sendall(answer[7:].encode())
                else:
                    conn.sendall(b"errno=0\n\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[UserspaceWireGuard, FakeUapi]]:
    srv = FakeUapi(tmp_path / "wg0.sock", lambda: GET_ANSWER)
    backend = UserspaceWireGuard(socket_dir=tmp_path, log_dir=tmp_path / "log", timeout=2)
    yield backend, srv
    srv.close()


def test_uapi_exchange_reassembles(fake: tuple[UserspaceWireGuard, FakeUapi]) -> None:
    _, srv = fake
    assert uapi_exchange(srv.path, GET_REQUEST, timeout=2) == GET_ANSWER


def test_backend_get_and_exists(fake: tuple[UserspaceWireGuard, FakeUapi]) -> None:
    backend, _ = fake
    assert backend.exists("wg0")
    assert not backend.exists("wg9")
    assert set(backend.get("wg0").peers) == {PEER1, PEER2}


def test_backend_set_peer_existing_is_update_only(
    fake: tuple[UserspaceWireGuard, FakeUapi],
) -> None:
    backend, srv = fake
    cfg = PeerConfig(
        PEER1,
        "192.0.2.2:51821",
        (IPv4Network("10.90.0.2/32"), IPv4Network("10.1.0.0/24"), IPv4Network("10.2.0.0/24")),
        25,
    )
    backend.set_peer("wg0", cfg)
    assert srv.requests[0] == GET_REQUEST
    assert srv.requests[1] == (
        f"set=1\npublic_key={key_to_hex(PEER1)}\nupdate_only=true\n"
        # fd00::/64 (not managed) must go, so the allowed ips are replaced
        "replace_allowed_ips=true\n"
        "allowed_ip=10.1.0.0/24\nallowed_ip=10.2.0.0/24\nallowed_ip=10.90.0.2/32\n\n"
    )


def test_backend_set_peer_unchanged_sends_nothing(
    fake: tuple[UserspaceWireGuard, FakeUapi],
) -> None:
    backend, srv = fake
    backend.set_peer("wg0", PeerConfig(PEER2, None, (), 0))
    assert srv.requests == [GET_REQUEST]


def test_backend_set_device_and_remove(fake: tuple[UserspaceWireGuard, FakeUapi]) -> None:
    backend, srv = fake
    backend.set_device("wg0", private_key=bytes(32), listen_port=1)
    backend.remove_peer("wg0", PEER2)
    assert srv.requests[0] == f"set=1\nprivate_key={'00' * 32}\nlisten_port=1\n\n"
    assert srv.requests[1] == format_remove_peer(PEER2)


def test_backend_errno_raises(tmp_path: Path) -> None:
    srv_sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv_sock.bind(str(tmp_path / "wg0.sock"))
    srv_sock.listen(1)

    def serve() -> None:
        conn, _ = srv_sock.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"errno=-98\n\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    backend = UserspaceWireGuard(socket_dir=tmp_path, log_dir=tmp_path, timeout=2)
    secret = os.urandom(32)
    with pytest.raises(KernelError) as exc:
        backend.set_device("wg0", private_key=secret, listen_port=51820)
    assert "listen port" in (exc.value.hint or "")
    assert secret.hex() not in str(exc.value) and secret.hex() not in repr(exc.value)
    t.join(2)
    srv_sock.close()


def test_backend_missing_socket(tmp_path: Path) -> None:
    backend = UserspaceWireGuard(socket_dir=tmp_path, log_dir=tmp_path, timeout=1)
    with pytest.raises(KernelError) as exc:
        backend.get("wg0")
    assert exc.value.hint and "create the device first" in exc.value.hint


def test_invalid_ifname() -> None:
    backend = UserspaceWireGuard()
    for bad in ("", "x" * 16, "a/b", "a b", ".."):
        with pytest.raises(ValueError):
            backend.socket_path(bad)
