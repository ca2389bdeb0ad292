"""A vpcctl mesh on a :class:`~tests.lab.harness.Lab`: inventory on the test side, the real
agent (``python -m vpcctl agent ...``) inside each lab host."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from tests.builders import empty
from tests.lab.harness import Lab, LabContainer, LabHost, LabNode, ping
from tests.paths import ROOT
from vpcctl.admin import edits, inventory
from vpcctl.admin.render import render
from vpcctl.core.model import Inventory, SshTarget
from vpcctl.core.spec import HostSpec, to_json

ENV = {"PYTHONPATH": str(ROOT)}


class Mesh:
    def __init__(self, lab: Lab, routing: str = "wireguard") -> None:
        self.lab = lab
        self.dir = lab.workdir / "mesh"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "vpc.toml"
        self.hosts: dict[str, LabHost] = {}
        self.env: dict[str, dict[str, str]] = {}  # extra environment per host (e.g. DOCKER_HOST)
        inventory.create(self.path, empty(routing=routing, name="lab"))

    # inventory ------------------------------------------------------------------------------
    @property
    def inv(self) -> Inventory:
        return inventory.load(self.path)

    def change(self, fn: Any) -> Inventory:
        return inventory.update(self.path, fn)

    def add_host(
        self, name: str, *, nat: bool = False, behind: LabHost | None = None,
        underlay_ip: str | None = None,
    ) -> LabHost:  # fmt: skip
        host = self.lab.add_host(name, underlay_ip, behind=behind)
        self.hosts[name] = host
        out = self.agent(host, "keygen", "--json")
        public = json.loads(out.stdout)["public_key"]
        endpoint = None if nat else f"{host.underlay_ip}:51820"
        self.change(
            lambda inv: edits.add_host(
                inv, name, SshTarget(host.underlay_ip), endpoint=endpoint, public_key=public
            )
        )
        return host

    def add_vpc(self, name: str, cidr: str) -> None:
        self.change(lambda inv: edits.add_vpc(inv, name, IPv4Network(cidr)))

    def add_container(self, vpc: str, name: str, host: str, *, mtu: bool = False) -> LabContainer:
        """A declared container plugged into its bridge; ``mtu=True`` gives its veth the VPC
        MTU, as a Docker network made by the agent does."""
        inv = self.change(lambda inv: edits.add_container(inv, name, vpc, host))
        c = inv.containers[f"{vpc}/{name}"]
        s = inv.hosts[host].slices[vpc]
        gw = s.network_address + 1
        vspec = render(inv, host).vpcs[sorted(inv.vpcs).index(vpc)]
        return self.lab.add_container(
            self.hosts[host],
            f"{name}"[:12],
            bridge=vspec.bridge,
            ip=f"{c.ip}/{s.prefixlen}",
            gateway=str(gw),
            mtu=vspec.mtu if mtu else None,
        )

    def spec(self, host: str) -> HostSpec:
        return render(self.inv, host)

    def spec_file(self, host: str, spec: HostSpec | None = None, text: str | None = None) -> Path:
        path = self.dir / f"{host}.json"
        path.write_text(text if text is not None else to_json(spec or self.spec(host)))
        return path

    # agent ----------------------------------------------------------------------------------
    def agent(
        self, host: LabHost, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.lab.run(
            host, [sys.executable, "-m", "vpcctl", "agent", *args], check=check,
            env={**ENV, **self.env.get(host.name, {})}, timeout=timeout,
        )  # fmt: skip

    def apply(self, name: str, *extra: str, check: bool = True) -> dict[str, Any]:
        res = self.agent(self.hosts[name], "apply", str(self.spec_file(name)), "--json", *extra,
                         check=check)  # fmt: skip
        return (
            json.loads(res.stdout)
            if res.returncode == 0
            else {"rc": res.returncode, "stderr": res.stderr}
        )

    def apply_all(self) -> dict[str, dict[str, Any]]:
        return {name: self.apply(name) for name in self.hosts}

    def status(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.agent(self.hosts[name], "status", "--json").stdout)
        return data

    def snapshot(self, name: str) -> dict[str, str]:
        """Everything networking on a host, minus counters and timers."""
        host = self.hosts[name]

        def run(cmd: str) -> str:
            return self.lab.run(host, cmd, check=False).stdout

        links = json.loads(run("ip -j -d link show") or "[]")
        for link in links:
            for k in ("stats64", "stats", "operstate", "linkmode", "carrier_changes",
                      "carrier_up_count", "carrier_down_count", "flags"):  # fmt: skip
                link.pop(k, None)
            (link.get("linkinfo") or {}).get("info_data", {}).pop("tcn_timer", None)
            info = (link.get("linkinfo") or {}).get("info_data", {})
            for k in list(info):
                if "timer" in k:
                    info.pop(k)
        wg_lines = []
        for line in run("wg show all dump").splitlines():
            fields = line.split("\t")
            # interface lines carry the private key (index 1): never keep it, never print it;
            # peer lines: drop handshake time and transfer counters
            drop = (1,) if len(fields) == 5 else (5, 6, 7)
            wg_lines.append("\t".join(f for i, f in enumerate(fields) if i not in drop))
        wg = "\n".join(sorted(wg_lines))
        return {
            "links": json.dumps(
                sorted(
                    (
                        lk["ifname"],
                        lk.get("linkinfo", {}).get("info_kind"),
                        lk.get("mtu"),
                        lk.get("ifalias"),
                    )
                    for lk in links
                )
            ),
            "addrs": run("ip -4 -o addr show | awk '{print $2, $4}'"),
            "routes": run("ip -4 route show table all"),
            "wg": wg,
            "nft": run("nft list ruleset"),
        }


def with_endpoint(spec: HostSpec, peer: str, endpoint: str) -> HostSpec:
    peers = tuple(replace(p, endpoint=endpoint) if p.name == peer else p for p in spec.peers)
    return replace(spec, peers=peers)


def wait_ping(lab: Lab, who: LabNode, dst: str, timeout: float = 20.0) -> bool:
    """Ping until one answer comes back (a fresh tunnel may still be handshaking)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ping(lab, who, dst, count=1, interval=0.2)[1] == 1:
            return True
        time.sleep(0.2)
    return False
