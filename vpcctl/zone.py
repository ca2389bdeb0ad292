"""Names -> records, and what the resolver answers to whom. Pure.

Views (README "Names"):

* a client inside VPC X (its source address is in X's CIDR) sees X's names only, in full
  (``db.prod.vpc.internal``) and short (``db``, ``db.prod``) form, and PTR for X's addresses;
* the host itself (loopback) sees every VPC's full names, every host name (``nas.vpc.internal``)
  and every PTR;
* anyone else is refused.

Names never leak across VPCs: a name of VPC X does not exist in VPC Y's view (NXDOMAIN), in full
or short form; short forms are never forwarded upstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from vpcctl.spec import ZoneData

Rcode = Literal["NOERROR", "NXDOMAIN", "REFUSED", "FORWARD"]
LOOPBACK = IPv4Network("127.0.0.0/8")
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 86400


@dataclass(frozen=True, slots=True)
class Record:
    name: str  # lower case, no trailing dot
    rtype: str  # "A", "PTR", "SRV", "SOA", "NS"
    ttl: int
    data: tuple[str | int, ...]  # A: (ip,); PTR/NS: (target,); SRV: (prio, weight, port, target)

    def text(self) -> str:
        """Zone-file style presentation, e.g. ``db.prod.vpc.internal. 5 IN A 10.100.1.2``."""
        names_are_fqdns = self.rtype != "A"
        shown = [f"{d}." if isinstance(d, str) and names_are_fqdns else str(d) for d in self.data]
        return f"{self.name}. {self.ttl} IN {self.rtype} " + " ".join(shown)


@dataclass(frozen=True, slots=True)
class View:
    """name -> rtype -> records. Names with no records are empty non-terminals (NOERROR/NODATA)."""

    names: Mapping[str, Mapping[str, tuple[Record, ...]]]
    suffixes: tuple[str, ...]  # names at or under these are authoritative in this view
    bare: bool = False  # single-label names are this view's short names: never forwarded


@dataclass(frozen=True, slots=True)
class Zone:
    domain: str
    ttl: int
    soa: Record
    ns: Record
    vpc_views: tuple[tuple[IPv4Network, str, View], ...]
    host_view: View
    reverse_nets: tuple[IPv4Network, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: Rcode
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()


def reverse_name(ip: IPv4Address) -> str:
    return ".".join(reversed(str(ip).split("."))) + ".in-addr.arpa"


def _parse_reverse(name: str) -> IPv4Address | None:
    if not name.endswith(".in-addr.arpa"):
        return None
    parts = name[: -len(".in-addr.arpa")].split(".")
    if len(parts) != 4 or not all(
        p.isascii() and p.isdigit() and int(p) < 256 and str(int(p)) == p for p in parts
    ):
        return None
    return IPv4Address(".".join(reversed(parts)))


class _Builder:
    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.names: dict[str, dict[str, list[Record]]] = {}

    def add(self, name: str, rtype: str, *data: str | int) -> None:
        self.names.setdefault(name, {}).setdefault(rtype, []).append(
            Record(name, rtype, self.ttl, tuple(data))
        )

    def add_record(self, record: Record) -> None:
        self.names.setdefault(record.name, {}).setdefault(record.rtype, []).append(record)

    def view(self, apexes: Iterable[str], bare: bool = False) -> View:
        apex_list = tuple(apexes)
        # every ancestor of a name, up to its apex, exists as an empty non-terminal
        for name in list(self.names):
            for apex in apex_list:
                if name == apex or name.endswith("." + apex):
                    labels = name.split(".")
                    for i in range(1, len(labels)):
                        parent = ".".join(labels[i:])
                        if len(parent) < len(apex):
                            break
                        self.names.setdefault(parent, {})
                    break
        return View(
            names={n: {t: tuple(rs) for t, rs in types.items()} for n, types in self.names.items()},
            suffixes=apex_list,
            bare=bare,
        )


def build(data: ZoneData) -> Zone:
    d, ttl = data.domain, data.ttl
    soa = Record(
        d, "SOA", ttl, (f"ns.{d}", f"hostmaster.{d}", 1, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, ttl)
    )
    ns = Record(d, "NS", ttl, (f"ns.{d}",))

    def vpc_records(b: _Builder, vpc_name: str, fqdn_only: bool) -> None:
        v = next(v for v in data.vpcs if v.name == vpc_name)
        forms = (
            (lambda n: [f"{n}.{v.name}.{d}"])
            if fqdn_only
            else (lambda n: [f"{n}.{v.name}.{d}", f"{n}.{v.name}", n])
        )
        for name, ip in v.containers:
            for form in forms(name):
                b.add(form, "A", str(ip))
            b.add(reverse_name(ip), "PTR", f"{name}.{v.name}.{d}")
        for name, vip, ports in v.services:
            target = f"{name}.{v.name}.{d}"
            for form in forms(name):
                b.add(form, "A", str(vip))
                for p in ports:
                    if p.name:
                        b.add(f"_{p.name}._{p.proto}.{form}", "SRV", 0, 0, p.port, target)
            b.add(reverse_name(vip), "PTR", target)

    def apex(b: _Builder) -> None:
        b.add_record(soa)
        b.add_record(ns)

    views = []
    vpc_names = tuple(v.name for v in data.vpcs)
    reverse_suffix = "in-addr.arpa"
    for v in data.vpcs:
        b = _Builder(ttl)
        apex(b)
        vpc_records(b, v.name, fqdn_only=False)
        # every VPC name is authoritative in every VPC view, and so are bare names: another
        # VPC's short forms (``db``, ``db.prod``) get NXDOMAIN and are never forwarded upstream
        views.append((v.cidr, v.name, b.view((d, *vpc_names, reverse_suffix), bare=True)))
    hb = _Builder(ttl)
    apex(hb)
    for v in data.vpcs:
        vpc_records(hb, v.name, fqdn_only=True)
    for name, ip in data.hosts:
        hb.add(f"{name}.{d}", "A", str(ip))
        hb.add(reverse_name(ip), "PTR", f"{name}.{d}")
    # a short name whose only label is a VPC or a name also a real TLD is still forwarded for the
    # host view: the host view has no short forms.
    return Zone(
        domain=d,
        ttl=ttl,
        soa=soa,
        ns=ns,
        vpc_views=tuple(views),
        host_view=hb.view((d, reverse_suffix)),
        reverse_nets=(data.mesh_cidr, *(v.cidr for v in data.vpcs)),
    )


def view_for(zone: Zone, client: IPv4Address) -> View | None:
    """The view a client gets by its source address; None means "refuse"."""
    for cidr, _name, view in zone.vpc_views:
        if client in cidr:
            return view
    if client in LOOPBACK:
        return zone.host_view
    return None


def normalize(qname: str) -> str:
    return qname.rstrip(".").lower()


def _authoritative(zone: Zone, view: View, name: str) -> bool:
    if name.endswith(".in-addr.arpa"):
        ip = _parse_reverse(name)
        return ip is not None and any(ip in net for net in zone.reverse_nets)
    if view.bare and name and "." not in name:
        return True
    return any(name == s or name.endswith("." + s) for s in view.suffixes if s != "in-addr.arpa")


def answer_in_view(zone: Zone, view: View, qname: str, qtype: str) -> Answer:
    name = normalize(qname)
    types = view.names.get(name)
    if types is None:
        if _authoritative(zone, view, name):
            return Answer("NXDOMAIN", authority=(zone.soa,))
        return Answer("FORWARD")
    if qtype == "ANY":  # RFC 8482: one RRset is enough
        for rtype in ("A", "SRV", "PTR", "SOA", "NS"):
            if rtype in types:
                return Answer("NOERROR", answers=types[rtype])
        return Answer("NOERROR", authority=(zone.soa,))
    records = types.get(qtype)
    if records:
        return Answer("NOERROR", answers=records)
    return Answer("NOERROR", authority=(zone.soa,))


def answer(zone: Zone, qname: str, qtype: str, client: IPv4Address) -> Answer:
    """What the resolver says to ``client`` asking ``qname``/``qtype``.

    ``FORWARD`` means: not ours, ask upstream (the client is allowed to recurse)."""
    view = view_for(zone, client)
    if view is None:
        return Answer("REFUSED")
    return answer_in_view(zone, view, qname, qtype)
