"""The pure verdicts of `vpcctl doctor` (vpcctl/core/doctor.py)."""

from __future__ import annotations

from typing import Any

import pytest

from vpcctl.core import doctor as d


def healthy(**over: Any) -> dict[str, Any]:
    f: dict[str, Any] = {
        "host": "h1", "version": "1.0", "time": 1000.0, "applied": True, "routing": "wireguard",
        "wireguard": {"kernel": False, "userspace": "/usr/bin/wireguard-go", "in_use": "userspace"},
        "ipip": None, "nft": {"present": True, "usable": True, "error": None},
        "forwarding": True, "resolver": True, "daemon": {"enabled": False, "running": False},
        "mtu": 1420,
        "peers": [{"name": "h2", "endpoint": "192.0.2.2:51820", "address": "10.90.0.2",
                   "handshake_age": 3.0, "ping": True, "mtu_ok": True}],
        "docker": {"present": False}, "docker_wanted": [],
    }  # fmt: skip
    f.update(over)
    return f


def fails(f: dict[str, Any], **kw: Any) -> dict[str, str | None]:
    return {c.name: c.fix for c in d.admin_checks(f, "1.0", 999.9, 1000.1, **kw) if c.failed}


def test_a_healthy_host_passes_every_check() -> None:
    checks = d.admin_checks(healthy(), "1.0", 999.9, 1000.1)
    assert [c.name for c in checks if c.status != "pass"] == ["ipip", "daemon", "docker"]
    assert not d.failed(checks)


@pytest.mark.parametrize(
    ("over", "name", "fix"),
    [
        ({"wireguard": {"kernel": False, "userspace": None}}, "wireguard",
         "modprobe wireguard  # or: apt-get install --no-install-recommends wireguard-go"),
        ({"routing": "ipip", "ipip": False}, "ipip", "modprobe ipip"),
        ({"nft": {"present": False}}, "nftables", "apt-get install --no-install-recommends nftables"),
        ({"nft": {"present": True, "usable": False, "error": "Operation not permitted"}},
         "nftables", "run the agent as root"),
        ({"forwarding": False}, "ip_forward", "sysctl -w net.ipv4.ip_forward=1"),
        ({"resolver": False}, "resolver", "vpcctl up h1"),
        ({"daemon": {"enabled": True, "running": False}}, "daemon", "vpcctl up h1"),
        ({"version": "0.9"}, "version", "vpcctl host bootstrap HOST"),
        ({"time": 1100.0}, "clock", "timedatectl set-ntp true"),
    ],
)  # fmt: skip
def test_each_failure_names_its_fix(over: dict[str, Any], name: str, fix: str) -> None:
    got = fails(healthy(**over))
    assert list(got) == [name]
    assert str(got[name]).startswith(fix)


def test_peer_unreachable_names_its_udp_endpoint_and_skips_mtu() -> None:
    peer = {"name": "h2", "endpoint": "192.0.2.2:51820", "address": "10.90.0.2",
            "handshake_age": 400.0, "ping": False, "mtu_ok": None}  # fmt: skip
    checks = {c.name: c for c in d.host_checks(healthy(peers=[peer]))}
    assert checks["peer h2"].failed and "UDP 192.0.2.2:51820" in str(checks["peer h2"].fix)
    assert checks["mtu h2"].status == "skip"


def test_a_stale_handshake_fails_only_past_the_threshold() -> None:
    peer = {"name": "h2", "endpoint": None, "handshake_age": 30.0, "ping": True, "mtu_ok": True}
    assert not d.failed(d.host_checks(healthy(peers=[peer]), stale=60))
    bad = d.failed(d.host_checks(healthy(peers=[peer]), stale=10))
    assert [c.name for c in bad] == ["peer h2"] and "from that host" in str(bad[0].fix)


def test_mtu_failure_gives_the_underlay_size() -> None:
    peer = {"name": "h2", "endpoint": "x:1", "handshake_age": 1.0, "ping": True, "mtu_ok": False}
    (bad,) = d.failed(d.host_checks(healthy(peers=[peer])))
    assert bad.name == "mtu h2" and str(bad.fix).startswith("vpcctl mesh set --mtu 1340")
    assert d.ping_size(1420) == 1392


def test_docker_networks_missing_and_containers_without_the_resolver() -> None:
    dk = {"present": True, "reachable": True, "version": "20.10", "networks": [],
          "dns": {"containers_get_resolver": "some", "networks": [
              {"network": "vpc-prod", "gateway": "10.100.1.1", "without": ["web"]}]}}  # fmt: skip
    got = fails(healthy(docker=dk, docker_wanted=["vpc-prod"]))
    assert got["docker networks"] == "vpcctl up h1"
    assert "--dns 10.100.1.1 --network vpc-prod" in str(got["container dns"])
    assert list(fails(healthy(docker={"present": True, "reachable": False}))) == ["docker"]


def test_clock_allows_half_the_round_trip() -> None:
    assert d.clock(1006.0, 990.0, 1010.0).status == "pass"  # 6 s off, round trip 20 s
    assert d.clock(1006.0, 999.9, 1000.1).failed
    assert d.clock(None, 0, 1).status == "skip"


@pytest.mark.parametrize(
    ("text", "want"),
    [("127.0.0.1:9586", "127.0.0.1:9586"), ("mesh:09586", "mesh:9586"), ("off", None)],
)
def test_metrics_address_loopback_or_mesh(text: str, want: str | None) -> None:
    from vpcctl.core.model import parse_metrics

    assert parse_metrics(text, "--metrics") == want


@pytest.mark.parametrize(
    "text", ["0.0.0.0:9586", "192.0.2.1:9586", "127.0.0.1", "mesh:0", "mesh:70000", "x:1", 9586]
)
def test_metrics_address_refuses_anything_else(text: object) -> None:
    from vpcctl.core.errors import ValidationError
    from vpcctl.core.model import parse_metrics

    with pytest.raises(ValidationError) as err:
        parse_metrics(text, "--metrics")
    assert err.value.hint and "loopback" in err.value.hint
