"""The nftables table owned by vpcctl: build (pure) and load atomically (edge: the `nft` binary).

One table, ``inet vpcctl``, replaced as a whole in one ``nft -f`` transaction (the file deletes
the old table and defines the new one, so the kernel swaps them atomically):

* VPC isolation: a packet from one VPC to another VPC is dropped (forward and input hooks);
* service VIPs: ``VIP:port`` is DNAT-ed to the live backends, spread with ``numgen random``
  (kube-proxy style), for clients of the service's own VPC (prerouting) and for the host itself
  (output); a VIP:port that is not served is rejected;
* hairpin: a client whose chosen backend sits on the same bridge is SNAT-ed to the bridge's
  gateway, the one case where VPC traffic is rewritten (otherwise the backend would answer the
  client directly and the connection would break). No other VPC traffic is ever masqueraded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from vpcctl.core import run
from vpcctl.core.errors import KernelError
from vpcctl.core.spec import HostSpec

TABLE_FAMILY = "inet"
TABLE_NAME = "vpcctl"


def ruleset(spec: HostSpec) -> str:
    """The whole table as nft text. Deterministic: same spec, same bytes."""
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
    lines += [
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        *isolation,
        *reject_vips,
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
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
        if not svc.backends:
            continue
        backends = sorted(svc.backends)
        if len(backends) == 1:
            target = str(backends[0])
        else:
            pairs = ", ".join(f"{i} : {b}" for i, b in enumerate(backends))
            target = f"numgen random mod {len(backends)} map {{ {pairs} }}"
        for port in sorted(svc.ports):
            match = f"ip daddr {svc.vip} {port.proto} dport {port.port}"
            action = f"dnat ip to {target}"
            if svc.vpc in cidr_of:
                dnat_pre.append(f"\t\tip saddr {cidr_of[svc.vpc]} {match} {action}")
            dnat_out.append(f"\t\t{match} {action}")
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

    def delete(self) -> None:
        if self.list_table() is None:
            return
        done = self._run(["-f", "-"], stdin=delete_script())
        if done.rc != 0:
            raise KernelError(
                f"nft could not delete the vpcctl table: {done.stderr.strip()}",
                "check `nft list ruleset`",
            )
