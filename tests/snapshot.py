"""Everything of a lab host's network state that vpcctl could touch, as comparable text: the one
snapshot the teardown tests take before the first `up` and after `down` (namespace lab and
kernel VM alike: both pass their :class:`~tests.lab.harness.Lab` and host).

Sections: links (name, kind, MTU, alias, master, MAC, admin up; counters and timers dropped),
addresses, IPv4 and IPv6 routes of every table, ip rules, the forwarding sysctls (ip_forward and
every interface's), the whole nftables ruleset (`nft -s`: without counter values), `iptables-save`
(counters and timestamps dropped) when there is an iptables, the processes in the host's network
namespace (pid and command line), and Docker's networks when a ``docker`` command is given.
One shell run per snapshot, nine programs in it (the VM pays up to a second per process start).

Left out: the IPv6 link-local entries the kernel makes by itself for every link that is up (its
``fe80::`` address and the routes ``proto kernel`` for it and ``ff00::/8``). They appear some time
after a link gets a carrier, whoever brought it up, so a snapshot taken just after a link came up
would differ from a later one with no change by vpcctl (vpcctl adds no IPv6 address or route;
its own links are compared in the links section).
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable
from typing import Any

from tests.lab.harness import Lab, LabHost, _pids_in_netns

_SCRIPT = r"""
section() { printf '\n### %s\n' "$1"; }
section links; ip -d -j link show
section addresses; ip -o addr show
section routes; ip -4 route show table all; ip -6 route show table all
section rules; ip -4 rule show; ip -6 rule show
section sysctls; grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding
section nftables; nft -s list ruleset
section iptables; if command -v iptables-save >/dev/null; then iptables-save; fi
"""

_COUNTERS = re.compile(r"\[\d+:\d+\]")
_KERNEL_LINK_LOCAL = re.compile(r"(\bfe80::\S*|\bff00::/8\b).*\bproto kernel\b|\binet6 fe80::")


def _without_link_local(lines: list[str]) -> list[str]:
    return [ln for ln in lines if not _KERNEL_LINK_LOCAL.search(ln)]


_VOLATILE_LINK = ("stats64", "stats", "operstate", "linkmode", "carrier_changes",
                  "carrier_up_count", "carrier_down_count", "qdisc", "txqlen")  # fmt: skip


def _links(text: str) -> str:
    rows = []
    for link in json.loads(text or "[]"):
        info = link.get("linkinfo") or {}
        rows.append(
            {
                "name": link.get("ifname"),
                "kind": info.get("info_kind"),
                "slave": info.get("info_slave_kind"),
                "mtu": link.get("mtu"),
                "alias": link.get("ifalias"),
                "master": link.get("master"),
                "mac": link.get("address"),
                "up": "UP" in (link.get("flags") or []),
            }
        )
    return "\n".join(
        json.dumps(r, sort_keys=True) for r in sorted(rows, key=lambda r: str(r["name"]))
    )


def _iptables(text: str) -> str:
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    return "\n".join(_COUNTERS.sub("", ln).rstrip() for ln in lines)


def _processes(host: LabHost) -> str:
    inode = os.stat(f"/proc/{host.pid}/ns/net").st_ino
    rows = []
    for pid in sorted(_pids_in_netns({inode})):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        rows.append(f"{pid} {argv}")
    return "\n".join(rows)


DOCKER_NETWORKS = ("network", "ls", "--format", "{{.ID}} {{.Name}} {{.Driver}}")


def snapshot(lab: Lab, host: LabHost, docker: Callable[..., str] | None = None) -> dict[str, str]:
    """The host's state by section (see the module docstring). ``docker`` runs a docker CLI
    command against this host's daemon and returns its output, if the host has one."""
    out = lab.run(host, _SCRIPT, check=False, timeout=60).stdout
    parts: dict[str, Any] = {}
    for chunk in out.split("\n### ")[1:]:
        name, _, body = chunk.partition("\n")
        parts[name.strip()] = body.strip()
    parts["links"] = _links(parts.get("links", ""))
    # sorted here, not by `sort` processes (every process start costs the VM a second)
    parts["addresses"] = "\n".join(sorted(" ".join(ln.split()[1:4]) for ln in
                                          _without_link_local(parts.get("addresses", "").splitlines())))  # fmt: skip
    parts["routes"] = "\n".join(sorted(_without_link_local(parts.get("routes", "").splitlines())))
    parts["iptables"] = _iptables(parts.get("iptables", ""))
    parts["processes"] = _processes(host)
    if docker is not None:
        parts["docker networks"] = "\n".join(sorted(docker(*DOCKER_NETWORKS).split("\n"))).strip()
    return parts


def diff(before: dict[str, str], after: dict[str, str]) -> str:
    """A unified diff per section that differs ("" when equal): what a failing test prints."""
    out = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key, ""), after.get(key, "")
        if a != b:
            lines = difflib.unified_diff(a.splitlines(), b.splitlines(), f"{key} before",
                                         f"{key} after", lineterm="")  # fmt: skip
            out.append("\n".join(lines))
    return "\n".join(out)
