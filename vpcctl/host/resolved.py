"""Names on the host itself: systemd-resolved routes the mesh domain to vpcctl's resolver (edge:
``resolvectl``, through :mod:`vpcctl.core.run`).

Where systemd-resolved runs, the agent registers the resolver as the DNS server of one of its own
links, with the mesh domain as a **routing-only** domain (``~vpc.internal``): resolved sends only
names under the domain there, everything else goes where it went before, and the link never
becomes a default DNS route. The link is the bridge of the host's first VPC (by name), the server
its slice gateway: that is an address the resolver listens on, carried by a link vpcctl owns.
(Loopback cannot be a per-link server: resolved binds per-link queries to their link. The
WireGuard interface carries the mesh address, where the resolver does not listen, so that peers
never see it.) The resolver answers a query from one of its own addresses with the host's view:
every VPC's names and the hosts' names, as on loopback.

resolved forgets a link's settings when the link is deleted and created again, so every converge
asserts them again (four idempotent ``resolvectl`` calls); ``agent down`` reverts the link. Where
resolved does not run (no ``resolvectl``, or ``resolvectl status`` fails) nothing is changed, and
:data:`FALLBACK` says what to do instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from vpcctl.core import run
from vpcctl.core.errors import ProgramError
from vpcctl.core.spec import HostSpec

RESOLVECTL = "resolvectl"
TIMEOUT = 5.0
FALLBACK = (
    "without systemd-resolved, put `nameserver 127.0.0.1` first in /etc/resolv.conf, before "
    "the nameservers there (vpcctl's resolver answers the mesh domain and forwards the rest to "
    "them), or point dnsmasq at it: `server=/{domain}/127.0.0.1`"
)


@dataclass(frozen=True, slots=True)
class Registration:
    """What the agent registers with systemd-resolved: server and routing domain on one link."""

    interface: str
    server: IPv4Address
    domain: str  # without the "~"

    @property
    def routing_domain(self) -> str:
        return f"~{self.domain}"

    def commands(self) -> list[list[str]]:
        """The resolvectl calls that assert it (each idempotent)."""
        i = self.interface
        return [
            [RESOLVECTL, "dns", i, str(self.server)],
            [RESOLVECTL, "domain", i, self.routing_domain],
            [RESOLVECTL, "default-route", i, "false"],
            # a negative trust anchor: DNSSEC validation (resolved's default on some systems)
            # would otherwise reject an unsigned private domain that is not a built-in one
            [RESOLVECTL, "nta", i, self.domain],
        ]

    def revert(self) -> list[str]:
        return [RESOLVECTL, "revert", self.interface]


def registration(spec: HostSpec | None) -> Registration | None:
    """The registration for ``spec`` (pure); None when the host has no VPC (no resolver runs)."""
    if spec is None or not spec.vpcs:
        return None
    first = min(spec.vpcs, key=lambda v: v.name)
    return Registration(first.bridge, first.gateway.ip, spec.dns.domain)


def fallback(domain: str) -> str:
    return FALLBACK.format(domain=domain)


def _call(argv: Sequence[str]) -> run.Done | None:
    try:
        return run.run(argv, timeout=TIMEOUT, what="systemd-resolved")
    except ProgramError:
        return None


def running() -> bool:
    """systemd-resolved answers here: resolvectl exists and `resolvectl status` succeeds."""
    if run.which(RESOLVECTL) is None:
        return False
    done = _call([RESOLVECTL, "status"])
    return done is not None and done.ok


def _not_running(spec: HostSpec | None) -> dict[str, Any]:
    domain = spec.dns.domain if spec is not None else "vpc.internal"
    text = fallback(domain)
    return {"mode": "fallback", "running": False, "registered": False, "fallback": text,
            "summary": f"systemd-resolved: not running: fallback: {text}"}  # fmt: skip


def _registered(reg: Registration, ok: bool, problem: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": "systemd-resolved", "running": True, "registered": ok,
        "interface": reg.interface, "server": str(reg.server), "domain": reg.routing_domain,
        "summary": (f"systemd-resolved: registered {reg.routing_domain} on {reg.interface} "
                    f"({reg.server})" if ok else
                    f"systemd-resolved: {reg.routing_domain} not registered on {reg.interface}"
                    + (f": {problem}" if problem else "")),
    }  # fmt: skip
    if problem:
        out["problem"] = problem
    return out


def _no_resolver() -> dict[str, Any]:
    return {"mode": "systemd-resolved", "running": True, "registered": False,
            "summary": "systemd-resolved: nothing registered (no VPC slice here, so no resolver)"}  # fmt: skip


def ensure(spec: HostSpec) -> dict[str, Any]:
    """Assert the registration (on every converge). Never raises: a failure is reported in the
    result (the host converged all the same; only the host's own name lookups are missing)."""
    if not running():
        return _not_running(spec)
    reg = registration(spec)
    if reg is None:
        return _no_resolver()
    for argv in reg.commands():
        done = _call(argv)
        if done is None or not done.ok:
            why = (done.stderr.strip().splitlines() or ["failed"])[0] if done else "did not run"
            return _registered(reg, False, f"`{' '.join(argv)}`: {why}")
    return _registered(reg, True)


def remove(spec: HostSpec | None) -> bool:
    """Revert the link's resolved settings (`agent down`); True when something was reverted."""
    reg = registration(spec)
    if reg is None or not running():
        return False
    done = _call(reg.revert())
    return done is not None and done.ok


def _tokens(done: run.Done | None) -> list[str]:
    if done is None or not done.ok:
        return []
    return done.stdout.split(":", 1)[-1].split()


def status(spec: HostSpec | None) -> dict[str, Any]:
    """Which applies here, read back from resolved: registered on which link, or the fallback."""
    if not running():
        return _not_running(spec)
    reg = registration(spec)
    if reg is None:
        return _no_resolver()
    i = reg.interface
    dns = _tokens(_call([RESOLVECTL, "dns", i]))
    domains = _tokens(_call([RESOLVECTL, "domain", i]))
    ok = str(reg.server) in dns and reg.routing_domain in domains
    return _registered(reg, ok, None if ok else "run `vpcctl agent apply` (or `vpcctl up`)")
