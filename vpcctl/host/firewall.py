"""The nftables table owned by vpcctl: build (pure) and load atomically (edge: the `nft` binary).

One table, ``inet vpcctl``, replaced as a whole in one ``nft -f`` transaction (the file deletes
the old table and defines the new one, so the kernel swaps them atomically):

* VPC isolation: a packet from one VPC to another VPC is dropped (forward and input hooks);
* service VIPs: ``VIP:port`` jumps to the service's own chain ``svc_<vpc>_<name>``, which DNATs
  to the live backends, spread with ``numgen random`` (kube-proxy style), for clients of the
  service's own VPC (prerouting) and for the host itself (output); a VIP:port that is not served
  (no live backend) is rejected. The agent daemon replaces the backends of every changed service
  in one ``nft -f`` transaction that flushes and refills only those chains
  (:func:`backends_script`); the rest of the table is not touched;
* the agent daemon's port (TCP, on the mesh address) is accepted only from the WireGuard
  interface;
* roaming clients this host is the gateway of (README "Roaming clients"): a client's address may
  reach only its VPCs (forward) and, on this host, only the resolver (input, port 53), and only
  its VPCs may reach it; their service VIPs are DNAT-ed for it too;
* MSS clamp: a TCP SYN (or SYN-ACK) forwarded into or out of the tunnels (the WireGuard
  interface and, with routing ``ipip``, the IPIP tunnel) gets its MSS option lowered to what the
  route it takes can carry (``rt mtu``: the route's MTU minus 40), so TCP between containers never
  sends segments the tunnel would have to fragment or drop, even where ICMP "fragmentation needed"
  never comes back. The host's own connections need no clamp: their MSS already comes from the
  route they leave by;
* hairpin: a client whose chosen backend sits on the same bridge is SNAT-ed to the bridge's
  gateway, the one case where VPC traffic is rewritten (otherwise the backend would answer the
  client directly and the connection would break). No other VPC traffic is ever masqueraded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address

from vpcctl.core import run
from vpcctl.core.errors import KernelError
from vpcctl.core.spec import HostSpec, ServiceSpec

TABLE_FAMILY = "inet"
TABLE_NAME = "vpcctl"

Backends = Mapping[tuple[str, str], tuple[IPv4Address, ...]]  # (vpc, service) -> live backends


def service_chain(svc: ServiceSpec) -> str:
    """The chain holding one service's DNAT (labels have no "_", so the name is unique)."""
    return f"svc_{svc.vpc}_{svc.name}"


def _dnat_rule(backends: Sequence[IPv4Address]) -> str | None:
    ordered = sorted(set(backends))
    if not ordered:
        return None
    if len(ordered) == 1:
        return f"dnat ip to {ordered[0]}"
    pairs = ", ".join(f"{i} : {b}" for i, b in enumerate(ordered))
    return f"dnat ip to numgen random mod {len(ordered)} map {{ {pairs} }}"


def _backends_of(
    spec: HostSpec, backends: Backends | None
) -> dict[tuple[str, str], tuple[IPv4Address, ...]]:
    if backends is None:
        return {(s.vpc, s.name): s.backends for s in spec.services}
    return {(s.vpc, s.name): tuple(backends.get((s.vpc, s.name), ())) for s in spec.services}


def backends_script(spec: HostSpec, backends: Backends) -> str:
    """One transaction that replaces the backends of every service of ``spec`` (flush + refill of
    the service chains only). Fails as a whole when the table is not loaded."""
    lines = []
    for svc in sorted(spec.services, key=lambda s: (s.vpc, s.name)):
        chain = service_chain(svc)
        lines.append(f"flush chain {TABLE_FAMILY} {TABLE_NAME} {chain}")
        rule = _dnat_rule(backends.get((svc.vpc, svc.name), ()))
        if rule is not None:
            lines.append(f"add rule {TABLE_FAMILY} {TABLE_NAME} {chain} {rule}")
    return "\n".join(lines) + "\n" if lines else ""


def _client_rules(spec: HostSpec) -> tuple[list[str], list[str]]:
    """(forward, input) rules confining each roaming client to its VPCs and its resolver."""
    forward: list[str] = []
    inputs: list[str] = []
    for c in spec.clients:
        nets = "{ " + ", ".join(str(n) for _v, n in c.vpcs) + " }"
        forward += [
            f"\t\tip saddr {c.address} ip daddr != {nets} drop",
            f"\t\tip daddr {c.address} ip saddr != {nets} drop",
        ]
        inputs += [
            *(
                f"\t\tip saddr {c.address} ip daddr {c.dns} {p} dport 53 accept"
                for p in ("udp", "tcp")
            ),
            f"\t\tip saddr {c.address} drop",
        ]
    return forward, inputs


def tunnels(spec: HostSpec) -> tuple[str, ...]:
    """The interfaces VPC traffic crosses between hosts: the WireGuard interface and the tunnel."""
    return (spec.interface, *((spec.tunnel.name,) if spec.tunnel else ()))


def mss_clamp(spec: HostSpec) -> list[str]:
    """Forward-hook rules clamping the MSS of TCP SYNs into and out of the tunnels to the path
    MTU (``rt mtu``), like iptables' ``TCPMSS --clamp-mss-to-pmtu``."""
    devs = ", ".join(f'"{d}"' for d in tunnels(spec))
    clamp = "tcp flags syn tcp option maxseg size set rt mtu"
    return [f"\t\toifname {{ {devs} }} {clamp}", f"\t\tiifname {{ {devs} }} {clamp}"]


def ruleset(spec: HostSpec, backends: Backends | None = None) -> str:
    """The whole table as nft text. Deterministic: same spec (and backends), same bytes.

    ``backends`` are the live backends by (vpc, service) (the agent daemon's mesh table); None
    means the declared ones (``ServiceSpec.backends``)."""
    live = _backends_of(spec, backends)
    vpc_cidrs = sorted({str(v.cidr) for v in spec.vpcs})
    lines = [f"table {TABLE_FAMILY} {TABLE_NAME} {{"]
    lines.append(f'\tcomment "managed by vpcctl (mesh {spec.mesh}, host {spec.host}); do not edit"')
    if vpc_cidrs:
        lines += [
            "\tset vpcs {",
            "\t\ttype ipv4_addr",
            "\t\tflags interval",
            f"\t\telements = {{ {', '.join(vpc_cidrs)} }}",
            "\t}",
        ]
    vips = sorted({str(s.vip) for s in spec.services})
    if vips:
        lines += [
            "\tset vips {",
            "\t\ttype ipv4_addr",
            f"\t\telements = {{ {', '.join(vips)} }}",
            "\t}",
        ]
    isolation = [
        f"\t\tip saddr {cidr} ip daddr @vpcs ip daddr != {cidr} drop" for cidr in vpc_cidrs
    ]
    reject_vips = (
        ["\t\tip daddr @vips meta l4proto tcp reject with tcp reset", "\t\tip daddr @vips reject"]
        if vips
        else []
    )
    client_forward, client_input = _client_rules(spec)
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *client_forward,
        *mss_clamp(spec),
        *isolation,
        *reject_vips,
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f'\t\ttcp dport {spec.daemon.port} iifname != "{spec.interface}" drop',
        *client_input,
        *isolation,
        "\t}",
        "\tchain output_filter {",
        "\t\ttype filter hook output priority filter; policy accept;",
        *reject_vips,
        "\t}",
    ]
    dnat_pre: list[str] = []
    dnat_out: list[str] = []
    cidr_of = {v.name: v.cidr for v in spec.vpcs}
    for svc in sorted(spec.services, key=lambda s: (s.vpc, s.name)):
        chain = service_chain(svc)
        rule = _dnat_rule(live[(svc.vpc, svc.name)])
        lines += [f"\tchain {chain} {{", *([f"\t\t{rule}"] if rule else []), "\t}"]
        for port in sorted(svc.ports):
            match = f"ip daddr {svc.vip} {port.proto} dport {port.port}"
            if svc.vpc in cidr_of:
                dnat_pre.append(f"\t\tip saddr {cidr_of[svc.vpc]} {match} jump {chain}")
            dnat_pre += [
                f"\t\tip saddr {c.address} {match} jump {chain}"
                for c in spec.clients
                if svc.vpc in dict(c.vpcs)
            ]
            dnat_out.append(f"\t\t{match} jump {chain}")
    lines += [
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        *dnat_pre,
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        *dnat_out,
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        *(
            f'\t\tct status dnat ip saddr {v.slice} ip daddr {v.slice} oifname "{v.bridge}" '
            f"snat ip to {v.gateway.ip}"
            for v in spec.vpcs
            if spec.services
        ),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_script(table_text: str, exists: bool) -> str:
    """One transaction: delete our table (if present) and create it anew."""
    prefix = f"delete table {TABLE_FAMILY} {TABLE_NAME}\n" if exists else ""
    return prefix + table_text


def delete_script() -> str:
    return f"delete table {TABLE_FAMILY} {TABLE_NAME}\n"


# ---------------------------------------------------------------------------------------------
# edge: the nft binary


@dataclass(frozen=True, slots=True)
class Nft:
    binary: str = "nft"

    def _run(self, args: Sequence[str], stdin: str | None = None) -> run.Done:
        return run.run([self.binary, *args], input=stdin, hint="apt-get install nftables")

    def list_table(self) -> str | None:
        """Our table as nft lists it, or None when it does not exist."""
        done = self._run(["list", "table", TABLE_FAMILY, TABLE_NAME])
        if done.rc != 0:
            if "No such file" in done.stderr or "does not exist" in done.stderr:
                return None
            raise KernelError(
                f"nft list table {TABLE_FAMILY} {TABLE_NAME} failed: {done.stderr.strip()}",
                "is nftables usable here (run as root; nf_tables module)?",
            )
        return done.stdout

    def load(self, table_text: str) -> None:
        script = load_script(table_text, self.list_table() is not None)
        done = self._run(["-f", "-"], stdin=script)
        if done.rc != 0:
            raise KernelError(
                f"nft could not load the vpcctl table: {done.stderr.strip().splitlines()[0] if done.stderr.strip() else 'error'}",
                "the kernel may lack nf_tables NAT support (modprobe nft_nat nft_chain_nat)",
            )

    def run_script(self, script: str) -> None:
        """Run one nft transaction (all of it or nothing)."""
        done = self._run(["-f", "-"], stdin=script)
        if done.rc != 0:
            raise KernelError(
                f"nft transaction failed: {done.stderr.strip() or 'error'}",
                "is the vpcctl table loaded (`vpcctl agent apply`)?",
            )

    def delete(self) -> None:
        if self.list_table() is None:
            return
        done = self._run(["-f", "-"], stdin=delete_script())
        if done.rc != 0:
            raise KernelError(
                f"nft could not delete the vpcctl table: {done.stderr.strip()}",
                "check `nft list ruleset`",
            )
