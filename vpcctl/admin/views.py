"""What `container ls` and `service ls` show: declared state, and with ``--live`` the running
containers the hosts' agent daemons know (`vpcctl agent table --json` on each host). Pure.

Each host is the authority for its own containers: when several hosts answer, a container's
record comes from the host that runs it if that host answered, else from a peer's table (which
holds what that peer last heard, kept for the grace). Records are validated again here: the admin
prints what hosts say, so a record must be well formed, name a known VPC and host, and lie in that
host's slice of the VPC.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from vpcctl.core.endpoints import Endpoint
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import Inventory, parse_address, parse_label
from vpcctl.core.running import live_backends, merge_zone

MAX_RECORDS = 100_000
MAX_TEXT = 255


@dataclass(frozen=True, slots=True)
class Table:
    """One host's answer: its merged live table, or why it could not be asked."""

    host: str
    endpoints: tuple[Endpoint, ...] = ()
    daemon: bool = False  # an agent daemon runs there (else the table is empty)
    error: str | None = None  # the host could not be asked


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_TEXT or not value.isprintable():
        raise ValidationError(f"{where}: {value!r:.80} is not printable text", None)
    return value


def parse_table(host: str, data: object) -> Table:
    """``agent table --json`` output -> a :class:`Table` (raises ValidationError if malformed)."""
    if not isinstance(data, dict) or not isinstance(data.get("endpoints", []), list):
        raise ValidationError(f"{host}: agent table: expected {{'endpoints': [...]}}", None)
    raw = data.get("endpoints", [])
    if len(raw) > MAX_RECORDS:
        raise ValidationError(f"{host}: agent table: more than {MAX_RECORDS} records", None)
    out = []
    for i, r in enumerate(raw):
        where = f"{host}: agent table: endpoints[{i}]"
        if not isinstance(r, dict):
            raise ValidationError(f"{where}: expected an object", None)
        labels = r.get("labels", {})
        if not isinstance(labels, dict):
            raise ValidationError(f"{where}.labels: expected an object", None)
        ready = r.get("ready", True)
        if not isinstance(ready, bool):
            raise ValidationError(f"{where}.ready: expected true or false", None)
        out.append(
            Endpoint(
                host=parse_label(r.get("host"), f"{where}.host", "host name"),
                vpc=parse_label(r.get("vpc"), f"{where}.vpc", "VPC name"),
                name=_text(r.get("name"), f"{where}.name"),
                address=parse_address(r.get("address"), f"{where}.address"),
                labels=tuple(
                    sorted(
                        (_text(k, f"{where}.labels"), _text(v, f"{where}.labels"))
                        for k, v in labels.items()
                    )
                ),
                ready=ready,
            )
        )
    daemon = data.get("daemon", bool(out))
    return Table(host=host, endpoints=tuple(out), daemon=bool(daemon))


def running(inv: Inventory, tables: Sequence[Table]) -> tuple[tuple[Endpoint, ...], list[str]]:
    """Every running container the answering hosts know, each from its own host when it
    answered; and a note for each record dropped because it does not fit the inventory."""
    answered = {t.host for t in tables if t.error is None}
    notes: list[str] = []
    chosen: dict[tuple[str, str, str, int], Endpoint] = {}
    for t in sorted(tables, key=lambda t: t.host):
        for e in t.endpoints:
            if e.host in answered and e.host != t.host:
                continue  # the owner answered itself: its own record wins
            h = inv.hosts.get(e.host)
            s = h.slices.get(e.vpc) if h is not None else None
            if s is None or e.address not in s:
                notes.append(
                    f"{t.host}: ignored {e.vpc}/{e.name} at {e.address} on {e.host}: "
                    "not in that host's slice of the VPC (is the inventory up to date?)"
                )
                continue
            chosen.setdefault((e.host, e.vpc, e.name, int(e.address)), e)
    return tuple(chosen[k] for k in sorted(chosen)), sorted(set(notes))


@dataclass(frozen=True, slots=True)
class ContainerRow:
    vpc: str
    name: str
    host: str
    ip: IPv4Address
    source: str  # "declared" | "discovered"
    ready: bool | None  # None: not known (a declared container no host reported running)
    running: bool | None  # None: not asked (offline)
    labels: tuple[tuple[str, str], ...] = ()
    note: str | None = None  # e.g. why a discovered name does not resolve

    def to_json(self, domain: str) -> dict[str, Any]:
        return {
            "vpc": self.vpc,
            "name": self.name,
            "host": self.host,
            "ip": str(self.ip),
            "fqdn": f"{self.name}.{self.vpc}.{domain}",
            "source": self.source,
            "running": self.running,
            "ready": self.ready,
            "labels": dict(self.labels),
            "note": self.note,
        }


def container_rows(
    inv: Inventory, live: Iterable[Endpoint] | None, known: Iterable[str] = ()
) -> list[ContainerRow]:
    """Declared containers, and with ``live`` (None = offline) the discovered ones, sorted by
    (vpc, name, host). A declared container that runs under its declared name and address is
    one row (declared, with its live readiness). ``known``: the hosts whose running set is
    known (they answered, or an answering peer holds their records); a declared container of
    another host that no table lists is "not known to run" (None), not "stopped"."""
    rows: list[ContainerRow] = []
    endpoints = tuple(live) if live is not None else ()
    sure = {*known, *(e.host for e in endpoints)}
    seen: dict[tuple[str, str, IPv4Address], Endpoint] = {}
    for one in endpoints:
        key = (one.vpc, one.name, one.address)
        if key not in seen or (one.ready and not seen[key].ready):
            seen[key] = one
    for c in inv.containers.values():
        e = seen.pop((c.vpc, c.name, c.ip), None)
        rows.append(
            ContainerRow(
                vpc=c.vpc,
                name=c.name,
                host=c.host,
                ip=c.ip,
                source="declared",
                ready=None if e is None else e.ready,
                running=(
                    None if live is None or (e is None and c.host not in sure) else e is not None
                ),
                labels=() if e is None else e.labels,
            )
        )
    from vpcctl.admin.render import zone_data

    declared_zone = zone_data(inv)
    merged, _ = merge_zone(declared_zone, endpoints)
    resolving = {(v.name, n, ip) for v in merged.vpcs for n, ip in v.containers}
    for e in endpoints:
        if (e.vpc, e.name, e.address) not in seen or seen[(e.vpc, e.name, e.address)] is not e:
            continue
        note = None
        if (e.vpc, e.name, e.address) not in resolving:
            note = "name not in DNS: it clashes with another name or address"
        rows.append(
            ContainerRow(
                vpc=e.vpc,
                name=e.name,
                host=e.host,
                ip=e.address,
                source="discovered",
                ready=e.ready,
                running=True,
                labels=e.labels,
                note=note,
            )
        )
    return sorted(rows, key=lambda r: (r.vpc, r.name, r.host, int(r.ip), r.source))


@dataclass(frozen=True, slots=True)
class Backend:
    address: IPv4Address
    name: str | None  # the container at that address, declared or discovered
    host: str | None

    def to_json(self) -> dict[str, Any]:
        return {"address": str(self.address), "name": self.name, "host": self.host}

    def __str__(self) -> str:
        return f"{self.name}@{self.address}" if self.name else str(self.address)


def service_backends(
    inv: Inventory, live: Iterable[Endpoint]
) -> Mapping[tuple[str, str], tuple[Backend, ...]]:
    """(vpc, service) -> the backends every host's DNAT set converges to, with names."""
    if not inv.hosts:
        return {}
    from vpcctl.admin.render import render

    endpoints = tuple(live)
    spec = render(inv, sorted(inv.hosts)[0])  # services and zone are the same in every spec
    names: dict[tuple[str, IPv4Address], tuple[str, str]] = {}
    for e in sorted(endpoints, key=lambda e: (not e.ready, e.host, e.name)):
        names.setdefault((e.vpc, e.address), (e.name, e.host))
    for c in inv.containers.values():
        names[(c.vpc, c.ip)] = (c.name, c.host)
    out: dict[tuple[str, str], tuple[Backend, ...]] = {}
    for (vpc, svc), addresses in live_backends(spec, endpoints).items():
        found = [(a, names.get((vpc, a))) for a in addresses]
        out[(vpc, svc)] = tuple(
            Backend(a, n[0] if n else None, n[1] if n else None) for a, n in found
        )
    return out
