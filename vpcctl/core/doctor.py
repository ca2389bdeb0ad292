"""`vpcctl doctor`: verdicts from facts (pure).

The host gathers its facts (``vpcctl agent doctor --json``, :mod:`vpcctl.host.doctor`), the admin
adds what only it knows (its own version, its clock around the SSH round trip); every verdict and
every fix is computed here from those values, so each check is unit-tested without a host.

A check is ``pass``, ``fail`` or ``skip`` (not applicable here, e.g. the ``ipip`` module when the
mesh routes with WireGuard). A failing check always carries the exact fix: the command to run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

STALE = 180.0  # seconds: WireGuard re-handshakes every 2 minutes on a live tunnel
MAX_SKEW = 5.0  # seconds of clock difference between a host and the admin
IP_ICMP_HEADERS = 28  # IPv4 (20) + ICMP (8): ping -s SIZE sends SIZE + 28 bytes


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: str  # "pass" | "fail" | "skip"
    detail: str
    fix: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "fix": self.fix}


def _ok(name: str, detail: str) -> Check:
    return Check(name, "pass", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "fail", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "skip", detail)


def _verdict(name: str, passed: object, detail: str, failure: str, fix: str) -> Check:
    """The check passes with ``detail`` when ``passed`` is truthy, else fails with ``failure``."""
    return _ok(name, detail) if passed else _fail(name, failure, fix)


def ping_size(mtu: int) -> int:
    """The ICMP payload that fills a packet of ``mtu`` bytes (``ping -M do -s SIZE``)."""
    return mtu - IP_ICMP_HEADERS


def wireguard(f: Mapping[str, Any]) -> Check:
    wg = f.get("wireguard") or {}
    if wg.get("kernel"):
        return _ok("wireguard", "kernel module")
    if wg.get("userspace"):
        return _ok("wireguard", f"wireguard-go at {wg['userspace']}")
    running = (
        f" (the running interface uses {wg['in_use']}; it cannot be recreated)"
        if wg.get("in_use")
        else ""
    )
    return _fail(
        "wireguard",
        f"neither the kernel module nor wireguard-go on PATH{running}",
        "modprobe wireguard  # or: apt-get install --no-install-recommends wireguard-go",
    )


def ipip(f: Mapping[str, Any]) -> Check:
    if f.get("routing") != "ipip":
        return _skip("ipip", f"not needed (routing {f.get('routing') or 'not applied yet'})")
    return _verdict(
        "ipip",
        f.get("ipip"),
        "ipip module loaded",
        "the mesh routes with ipip but this kernel has no ipip module",
        "modprobe ipip  # (Debian's kernel ships it; a cloud kernel may not: linux-image-amd64)",
    )


def nftables(f: Mapping[str, Any]) -> Check:
    nft = f.get("nft") or {}
    if not nft.get("present"):
        return _fail(
            "nftables", "nft not found", "apt-get install --no-install-recommends nftables"
        )
    if not nft.get("usable"):
        return _fail(
            "nftables",
            f"nft cannot list the ruleset: {nft.get('error') or 'unknown error'}",
            "run the agent as root on a kernel with nf_tables (modprobe nf_tables)",
        )
    return _ok("nftables", "nft works")


def forwarding(f: Mapping[str, Any]) -> Check:
    return _verdict(
        "ip_forward",
        f.get("forwarding"),
        "net.ipv4.ip_forward = 1",
        "net.ipv4.ip_forward = 0: this host routes no VPC traffic",
        "sysctl -w net.ipv4.ip_forward=1",
    )


def _up(f: Mapping[str, Any]) -> str:
    return f"vpcctl up {f.get('host') or 'HOST'}"


def resolver(f: Mapping[str, Any]) -> Check:
    if not f.get("applied"):
        return _skip("resolver", "nothing applied yet")
    return _verdict("resolver", f.get("resolver"), "running",
                    "vpcctl's resolver is not running", _up(f))  # fmt: skip


def daemon(f: Mapping[str, Any]) -> Check:
    d = f.get("daemon") or {}
    if not f.get("applied") or not d.get("enabled"):
        return _skip("daemon", "the agent daemon is not enabled (vpcctl mesh set --daemon)")
    return _verdict("daemon", d.get("running"), "running",
                    "the agent daemon is not running", _up(f))  # fmt: skip


def peer(p: Mapping[str, Any], stale: float) -> Check:
    """One peer: the mesh ping answers (a real round trip through WireGuard's UDP) and the
    handshake is younger than ``stale``."""
    name = f"peer {p.get('name')}"
    age = p.get("handshake_age")
    where = p.get("endpoint") or "no endpoint (it dials in)"
    seen = "never" if age is None else f"{age:.0f} s ago"
    if p.get("ping") and age is not None and age < stale:
        return _ok(name, f"{p.get('address')} answers; handshake {seen} ({where})")
    why = "no answer over the mesh" if not p.get("ping") else f"handshake {seen} (> {stale:g} s)"
    udp = f"UDP {where}" if p.get("endpoint") else "UDP from that host to this one"
    return _fail(
        name,
        f"{why}; handshake {seen}",
        f"let {udp} through every firewall on the path (e.g. nft list ruleset | grep "
        f"{str(where).rsplit(':', 1)[-1] if p.get('endpoint') else 'udp'}); then "
        f"`vpcctl doctor {p.get('name')}`",
    )


def mtu(p: Mapping[str, Any], size: int) -> Check:
    name = f"mtu {p.get('name')}"
    if not p.get("ping"):
        return _skip(name, "peer unreachable")
    packet = size + IP_ICMP_HEADERS
    if p.get("mtu_ok"):
        return _ok(name, f"{packet}-byte packets pass unfragmented")
    return _fail(
        name,
        f"{packet}-byte packets (the interface MTU) do not pass unfragmented; smaller ones do",
        f"vpcctl mesh set --mtu {packet - 80} && vpcctl up  # or give the underlay path an MTU "
        f"of at least {packet + 80} (WireGuard adds 80 bytes)",
    )


def docker(f: Mapping[str, Any]) -> list[Check]:
    d = f.get("docker") or {}
    if not d.get("present"):
        return [_skip("docker", "no dockerd here")]
    if not d.get("reachable"):
        return [_fail("docker", f"dockerd does not answer: {d.get('error')}",
                      "systemctl restart docker")]  # fmt: skip
    out = [_ok("docker", f"dockerd {d.get('version')}")]
    missing = [n for n in f.get("docker_wanted") or [] if n not in (d.get("networks") or [])]
    if missing:
        out.append(_fail("docker networks", f"missing: {', '.join(missing)}", _up(f)))
    else:
        out.append(_ok("docker networks", ", ".join(d.get("networks") or []) or "none wanted"))
    dns = d.get("dns") or {}
    rows = [r for r in dns.get("networks") or [] if r.get("without")]
    if not rows:
        out.append(_ok("container dns", str(dns.get("containers_get_resolver", "no containers"))))
    else:
        fixes = "; ".join(f"docker run --dns {r['gateway']} --network {r['network']} ... "
                          f"(recreate {', '.join(r['without'])})" for r in rows)  # fmt: skip
        out.append(_fail("container dns", "containers without vpcctl's resolver: "
                         + ", ".join(w for r in rows for w in r["without"]), fixes))  # fmt: skip
    return out


def host_checks(f: Mapping[str, Any], stale: float = STALE) -> list[Check]:
    """Every check that the host's own facts decide."""
    out = [wireguard(f), ipip(f), nftables(f), forwarding(f), resolver(f), daemon(f)]
    size = ping_size(int(f.get("mtu") or 1420))
    for p in f.get("peers") or []:
        out += [peer(p, stale), mtu(p, size)]
    return out + docker(f)


def version(found: str | None, admin: str) -> Check:
    if found == admin:
        return _ok("version", f"vpcctl {found}")
    return _fail("version", f"agent is vpcctl {found}, the admin runs {admin}",
                 "vpcctl host bootstrap HOST")  # fmt: skip


def clock(host_time: float | None, before: float, after: float, limit: float = MAX_SKEW) -> Check:
    """The host's clock against the admin's, taken at the middle of the round trip (the error is
    at most half the round trip, which is added to the limit)."""
    if host_time is None:
        return _skip("clock", "the agent did not say its time")
    skew = host_time - (before + after) / 2
    slack = (after - before) / 2
    if abs(skew) <= limit + slack:
        return _ok("clock", f"{skew:+.1f} s from the admin's clock")
    return _fail("clock", f"{skew:+.1f} s from the admin's clock (limit {limit:g} s)",
                 "timedatectl set-ntp true  # or: apt-get install chrony")  # fmt: skip


def admin_checks(
    f: Mapping[str, Any], admin_version: str, before: float, after: float, stale: float = STALE
) -> list[Check]:
    """All checks of one host: the admin's (version, clock) and the host's."""
    checks = [version(f.get("version"), admin_version), clock(f.get("time"), before, after)]
    return [*checks, *host_checks(f, stale)]


def failed(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if c.failed]
