"""Names -> records, and what the resolver answers to whom. Pure.

Views (README "Names"):

* a client inside VPC X (its source address is in X's CIDR) sees X's names only, in full
  (``db.prod.vpc.internal``) and short (``db``, ``db.prod``) form, and PTR for X's addresses;
* a roaming client (README "Roaming clients"; its mesh address) sees the names of the VPCs it was
  given, short forms in the first of them;
* the host itself (loopback) sees every VPC's full names, every host name (``nas.vpc.internal``)
  and every PTR;
* anyone else is refused.

Names never leak across VPCs: a name of VPC X does not exist in VPC Y's view (NXDOMAIN), in full
or short form; short forms are never forwarded upstream (inside a VPC, single-label names and
names under any VPC's label are ours).

Layout: the records live in *layers* (name -> its records): one for the apexes (SOA and NS of
the domain and of each reverse zone), one per VPC (its full names, its PTRs), one for the hosts.
A view is an ordered tuple of layers, so the host view shares every record with the VPC views
instead of copying them, and short names are expanded at question time rather than stored three
times. That keeps a 10,000-name zone small and quick to build.

Reverse zones: each network whose PTRs we serve (the mesh, every VPC) has its apex at its CIDR
rounded down to a whole octet (``10.100.0.0/16`` -> ``100.10.in-addr.arpa``), with its own SOA
and NS; negative answers under it carry that SOA.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Literal

from vpcctl.core.spec import ZoneData

Rcode = Literal["NOERROR", "NXDOMAIN", "REFUSED", "FORWARD"]
LOOPBACK = IPv4Network("127.0.0.0/8")
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 3600, 600, 86400
REVERSE_SUFFIX = ".in-addr.arpa"

Records = tuple["Record", ...]
Layer = Mapping[str, Records]  # name -> every record at that name; () for an empty non-terminal


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
    """What one kind of client sees.

    ``layers`` are looked up in order: the first layer with records for a name answers; a name
    present with no records anywhere is an empty non-terminal (NOERROR/NODATA). ``vpc`` is the
    VPC whose short names (``db``, ``db.prod``) this view expands, None for the host view."""

    layers: tuple[Layer, ...]
    suffixes: tuple[str, ...]  # forward names at or under these are authoritative in this view
    vpc: str | None = None  # also: single-label names are authoritative (never forwarded)
    domain: str = ""

    def records(self, name: str) -> Records | None:
        """Every record at ``name`` (() for an empty non-terminal), None if no such name."""
        found: Records | None = None
        for layer in self.layers:
            rs = layer.get(name)
            if rs:
                return rs
            if rs is not None:
                found = rs
        return found

    @property
    def names(self) -> Mapping[str, Mapping[str, Records]]:
        """name -> rtype -> records, merged over the layers (for inspection)."""
        merged: dict[str, dict[str, Records]] = {}
        for name in {n for layer in self.layers for n in layer}:
            merged[name] = {}
            for r in self.records(name) or ():
                merged[name][r.rtype] = (*merged[name].get(r.rtype, ()), r)
        return merged


@dataclass(frozen=True, slots=True)
class Zone:
    domain: str
    ttl: int
    soa: Record
    ns: Record
    vpc_views: tuple[tuple[IPv4Network, str, View], ...]
    host_view: View
    reverse_nets: tuple[IPv4Network, ...] = field(default=())
    reverse_soas: tuple[Record, ...] = field(default=())  # most specific apex first


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: Rcode
    answers: tuple[Record, ...] = ()
    authority: tuple[Record, ...] = ()


def reverse_name(ip: IPv4Address) -> str:
    return ".".join(reversed(str(ip).split("."))) + REVERSE_SUFFIX


def reverse_apex(net: IPv4Network) -> str:
    """The reverse zone holding ``net``'s PTRs: its CIDR rounded down to whole octets."""
    octets = str(net.network_address).split(".")[: net.prefixlen // 8]
    return ".".join([*reversed(octets), "in-addr", "arpa"])


def _parse_reverse(name: str) -> IPv4Network | None:
    """``2.1.100.10.in-addr.arpa`` -> 10.100.1.2/32; ``100.10.in-addr.arpa`` -> 10.100.0.0/16."""
    if not name.endswith(REVERSE_SUFFIX):
        return None
    head = name[: -len(REVERSE_SUFFIX)]
    parts = head.split(".") if head else []
    if len(parts) > 4 or not all(
        p.isascii() and p.isdigit() and int(p) < 256 and str(int(p)) == p for p in parts
    ):
        return None
    octets = [*reversed(parts), *["0"] * (4 - len(parts))]
    return IPv4Network(f"{'.'.join(octets)}/{8 * len(parts)}")


class _Layer:
    """A layer under construction: name -> records, plus empty non-terminals."""

    def __init__(self) -> None:
        self.names: dict[str, Records] = {}

    def add(self, record: Record) -> None:
        self.names[record.name] = (*self.names.get(record.name, ()), record)

    def freeze(self, apex_of: Mapping[str, str]) -> Layer:
        """Every ancestor of a name, down to its apex, becomes an empty non-terminal."""
        out = dict(self.names)
        for name in self.names:
            apex = _apex_for(name, apex_of)
            if apex is None:
                continue
            rest = name
            while rest != apex:
                rest = rest.partition(".")[2]
                if rest in out:
                    if rest in self.names:
                        continue  # has records of its own; its ancestors still need a look
                    break  # already added as a non-terminal, and so are its ancestors
                out[rest] = ()
        return out


def _apex_for(name: str, apex_of: Mapping[str, str]) -> str | None:
    """The apex ``name`` is at or under (the longest one), from a map suffix -> apex."""
    labels = name.split(".")
    for i in range(len(labels)):
        apex = apex_of.get(".".join(labels[i:]))
        if apex is not None:
            return apex
    return None


def build(data: ZoneData) -> Zone:
    d, ttl = data.domain, data.ttl

    def soa_at(apex: str) -> Record:
        return Record(
            apex,
            "SOA",
            ttl,
            (f"ns.{d}", f"hostmaster.{d}", 1, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, ttl),
        )

    soa = soa_at(d)
    ns = Record(d, "NS", ttl, (f"ns.{d}",))
    reverse_nets = (data.mesh_cidr, *(v.cidr for v in data.vpcs))
    reverse_apexes = sorted({reverse_apex(n) for n in reverse_nets}, key=lambda a: -len(a))
    reverse_soas = tuple(soa_at(a) for a in reverse_apexes)
    apex_of = {d: d, **{a: a for a in reverse_apexes}}

    apex_layer = _Layer()
    for record in (soa, ns, *reverse_soas):
        apex_layer.add(record)
        if record.rtype == "SOA" and record.name != d:
            apex_layer.add(Record(record.name, "NS", ttl, (f"ns.{d}",)))

    vpc_layers: dict[str, Layer] = {}
    for v in data.vpcs:
        layer = _Layer()
        for name, ip in v.containers:
            fqdn = f"{name}.{v.name}.{d}"
            layer.add(Record(fqdn, "A", ttl, (str(ip),)))
            layer.add(Record(reverse_name(ip), "PTR", ttl, (fqdn,)))
        for name, vip, ports in v.services:
            fqdn = f"{name}.{v.name}.{d}"
            layer.add(Record(fqdn, "A", ttl, (str(vip),)))
            for p in ports:
                if p.name:
                    layer.add(
                        Record(f"_{p.name}._{p.proto}.{fqdn}", "SRV", ttl, (0, 0, p.port, fqdn))
                    )
            layer.add(Record(reverse_name(vip), "PTR", ttl, (fqdn,)))
        vpc_layers[v.name] = layer.freeze(apex_of)

    host_layer = _Layer()
    for name, ip in data.hosts:
        host_layer.add(Record(f"{name}.{d}", "A", ttl, (str(ip),)))
        host_layer.add(Record(reverse_name(ip), "PTR", ttl, (f"{name}.{d}",)))

    apexes = apex_layer.freeze(apex_of)
    # every VPC's label is authoritative in every VPC view: another VPC's short forms
    # (``db.prod`` asked from staging) get NXDOMAIN instead of going upstream
    suffixes = (d, *(v.name for v in data.vpcs))
    views = tuple(
        (v.cidr, v.name, View((apexes, vpc_layers[v.name]), suffixes, v.name, d)) for v in data.vpcs
    )
    # a roaming client (its /32, in the mesh CIDR: never inside a VPC) sees the names of the VPCs
    # it was given, short forms expanded in the first of them; nothing of any other VPC
    views += tuple(
        (
            IPv4Network(f"{address}/32"),
            given[0],
            View((apexes, *(vpc_layers[v] for v in given)), suffixes, given[0], d),
        )
        for address, vpcs in data.clients
        if (given := tuple(v for v in vpcs if v in vpc_layers))
    )
    host_view = View(
        (apexes, *(vpc_layers[v.name] for v in data.vpcs), host_layer.freeze(apex_of)), (d,)
    )
    return Zone(
        domain=d,
        ttl=ttl,
        soa=soa,
        ns=ns,
        vpc_views=views,
        host_view=host_view,
        reverse_nets=reverse_nets,
        reverse_soas=reverse_soas,
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


def _negative_soa(zone: Zone, view: View, name: str) -> Record | None:
    """The SOA of the zone ``name`` is authoritatively in, for this view; None if not ours."""
    if name.endswith(REVERSE_SUFFIX):
        net = _parse_reverse(name)
        if net is None or not any(net.subnet_of(n) for n in zone.reverse_nets):
            return None
        return next(
            (s for s in zone.reverse_soas if name == s.name or name.endswith("." + s.name)), None
        )
    if any(name == s or name.endswith("." + s) for s in view.suffixes):
        return zone.soa
    if view.vpc is not None and name and "." not in name:
        return zone.soa  # a bare name inside a VPC is a short name: ours, never forwarded
    return None


def _in_domain(name: str, domain: str) -> bool:
    return name == domain or name.endswith("." + domain)


def _lookup(view: View, name: str) -> tuple[Records | None, bool]:
    """Records at ``name`` in ``view``, and whether they were found under another (expanded)
    name: a VPC view expands the short forms ``X`` and ``X.<vpc>`` to ``X.<vpc>.<domain>``."""
    records = view.records(name)
    if (
        view.vpc is None
        or records
        or _in_domain(name, view.domain)
        or name.endswith(REVERSE_SUFFIX)
    ):
        return records, False
    short = view.records(f"{name}.{view.vpc}.{view.domain}")
    if not short and _in_domain(name, view.vpc):
        alt = view.records(f"{name}.{view.domain}")
        if alt or short is None:
            short = alt
    if short is None:
        return records, False
    return short, True


def _rrset(records: Records, rtype: str, name: str, renamed: bool) -> Records:
    return tuple(
        Record(name, r.rtype, r.ttl, r.data) if renamed else r for r in records if r.rtype == rtype
    )


def answer_in_view(zone: Zone, view: View, qname: str, qtype: str) -> Answer:
    name = normalize(qname)
    records, renamed = _lookup(view, name)
    if records is None:
        soa = _negative_soa(zone, view, name)
        if soa is not None:
            return Answer("NXDOMAIN", authority=(soa,))
        return Answer("FORWARD")
    for rtype in ("A", "SRV", "PTR", "SOA", "NS") if qtype == "ANY" else (qtype,):
        found = _rrset(records, rtype, name, renamed)
        if found:  # for ANY, the first RRset is enough (RFC 8482)
            return Answer("NOERROR", answers=found)
    return Answer("NOERROR", authority=(_negative_soa(zone, view, name) or zone.soa,))


def answer(zone: Zone, qname: str, qtype: str, client: IPv4Address) -> Answer:
    """What the resolver says to ``client`` asking ``qname``/``qtype``.

    ``FORWARD`` means: not ours, ask upstream (the client is allowed to recurse)."""
    view = view_for(zone, client)
    if view is None:
        return Answer("REFUSED")
    return answer_in_view(zone, view, qname, qtype)


def names(views: Iterable[View]) -> int:
    """How many distinct names the views hold (for logs and tests)."""
    return len({n for v in views for layer in v.layers for n in layer})
