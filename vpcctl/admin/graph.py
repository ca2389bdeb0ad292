"""`vpcctl graph`: the mesh as a picture. Pure: the inventory (and, with ``--live``, what the
hosts said) -> a :class:`Graph` value -> Graphviz DOT text. No disk, network or clock.

Every name is data, never syntax: node and edge ids are made up here (``host0``, ``link0``,
``svc0``, ``backend0``), and every label is an HTML-like label whose text is escaped
(:func:`quote`), so a container name a host announces cannot add a node, an edge or an attribute
to the picture.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

from vpcctl.core.model import Inventory, Mesh, Service

LinkState = Literal["declared", "fresh", "stale", "never", "unknown", "impossible"]
FORMATS = ("text", "dot", "svg", "png")
FRESH = 180.0  # seconds: WireGuard re-handshakes every 2 minutes on a live tunnel

# colour and style per link state (the legend of --live)
LINK_STYLE: Mapping[LinkState, tuple[str, str]] = {
    "declared": ("gray40", "solid"),
    "fresh": ("forestgreen", "bold"),
    "stale": ("orange", "solid"),
    "never": ("red", "dashed"),
    "unknown": ("gray60", "dotted"),
    "impossible": ("red", "dotted"),
}
LINK_TEXT: Mapping[LinkState, str] = {
    "declared": "WireGuard peers (declared)",
    "fresh": "fresh handshake",
    "stale": "handshake stale",
    "never": "no handshake yet",
    "unknown": "not known (host not asked)",
    "impossible": "both behind NAT: no direct path",
}


@dataclass(frozen=True, slots=True)
class HostNode:
    name: str
    address: str
    endpoint: str | None  # None: behind NAT
    slices: tuple[tuple[str, str], ...]  # (vpc, cidr)
    reachable: bool | None = None  # None: not asked (offline graph)


@dataclass(frozen=True, slots=True)
class Link:
    a: str
    b: str
    state: LinkState
    age: float | None = None  # seconds since the latest handshake either side saw


@dataclass(frozen=True, slots=True)
class BackendRef:
    name: str | None
    address: str
    host: str | None


@dataclass(frozen=True, slots=True)
class ServiceNode:
    service: Service  # as declared
    backends: tuple[BackendRef, ...]  # declared, or live ones


@dataclass(frozen=True, slots=True)
class Graph:
    mesh: Mesh
    hosts: tuple[HostNode, ...]
    links: tuple[Link, ...]
    services: tuple[ServiceNode, ...]
    live: bool = False


def link_state(age: float | None, asked: bool) -> LinkState:
    if not asked:
        return "unknown"
    if age is None:
        return "never"
    return "fresh" if age < FRESH else "stale"


def handshake_ages(statuses: Mapping[str, Sequence[Mapping[str, Any]]], inv: Inventory) -> dict[
    frozenset[str], float | None
]:  # fmt: skip
    """Per host pair, the youngest handshake age either side reported (``fanout.status_one``'s
    ``peers``: name or public key, ``handshake_age``); only pairs some side reported."""
    by_key = {h.public_key: h.name for h in inv.hosts.values() if h.public_key}
    ages: dict[frozenset[str], float | None] = {}
    for host, peers in statuses.items():
        for p in peers:
            other = p.get("name") or by_key.get(p.get("public_key") or "")
            if not isinstance(other, str) or other == host or other not in inv.hosts:
                continue
            pair = frozenset((host, other))
            age = p.get("handshake_age")
            age = float(age) if isinstance(age, (int, float)) else None
            old = ages.get(pair)
            ages[pair] = age if old is None else (old if age is None else min(old, age))
    return ages


def build(
    inv: Inventory,
    backends: Mapping[tuple[str, str], Iterable[Any]],
    statuses: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    unreachable: Iterable[str] = (),
) -> Graph:
    """The graph of ``inv``. ``backends``: (vpc, service) -> backends (``views.Backend``:
    address, name, host), declared or live. ``statuses``: with ``--live``, each answering
    host's peers (see :func:`handshake_ages`); ``unreachable``: hosts that could not be asked."""
    down = set(unreachable)
    live = statuses is not None
    hosts = tuple(
        HostNode(
            name=n,
            address=str(h.address),
            endpoint=h.endpoint,
            slices=tuple((v, str(s)) for v, s in sorted(h.slices.items())),
            reachable=(n not in down) if live else None,
        )
        for n, h in sorted(inv.hosts.items())
    )
    ages = handshake_ages(statuses or {}, inv)
    links = []
    for a, b in combinations(sorted(inv.hosts), 2):
        if inv.hosts[a].endpoint is None and inv.hosts[b].endpoint is None:
            state: LinkState = "impossible"
            age = None
        elif not live:
            state, age = "declared", None
        else:
            age = ages.get(frozenset((a, b)))
            state = link_state(age, not ({a, b} <= down))
        links.append(Link(a, b, state, age))
    services = tuple(
        ServiceNode(
            service=s,
            backends=tuple(
                BackendRef(b.name, str(b.address), b.host)
                for b in backends.get((s.vpc, s.name), ())
            ),
        )
        for _, s in sorted(inv.services.items())
    )
    return Graph(
        mesh=inv.mesh,
        hosts=hosts,
        links=tuple(links),
        services=services,
        live=live,
    )


# ------------------------------------------------------------------------------------- DOT


_ENTITIES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    '"': "&quot;",
    "'": "&#39;",
    "\\": "&#92;&#92;",
}
# Graphviz expands its escapes (\N: the node's id, \G, \E, ...) in HTML-like labels too, after
# the entities: a backslash is doubled so that it shows as one.


def escape(text: str) -> str:
    """``text`` as the content of a Graphviz HTML-like label that shows exactly ``text``:
    XML's special characters and ``\\`` as entities (the backslash doubled: Graphviz's own
    escape), and every character XML cannot carry (control characters, U+FFFE, U+FFFF) as
    visible ``\\uXXXX`` text. (A DOT quoted string
    cannot carry every text: ``"a\\"`` leaves the string open.)"""
    out = []
    for ch in text:
        o = ord(ch)
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif o < 0x20 or 0x7F <= o < 0xA0 or o in (0xFFFE, 0xFFFF) or 0xD800 <= o < 0xE000:
            out.append(f"&#92;&#92;u{o:04x}")
        else:
            out.append(ch)
    return "".join(out)


def quote(*lines: str) -> str:
    """Lines of text as one DOT label value (an HTML-like label, ``<BR/>`` between lines;
    a line break inside a line is one too)."""
    parts = [escape(part) for line in lines for part in line.split("\n")]
    return "<" + "<BR/>".join(parts) + ">" if any(parts) else '""'


def host_lines(h: HostNode) -> list[str]:
    where = f"endpoint {h.endpoint}" if h.endpoint else "behind NAT"
    lines = [h.name, h.address, where]
    lines += [f"{vpc} {cidr}" for vpc, cidr in h.slices]
    if h.reachable is False:
        lines.append("UNREACHABLE")
    return lines


def link_text(link: Link) -> str:
    text = LINK_TEXT[link.state]
    if link.age is not None:
        text += f" ({link.age:.0f} s ago)"
    return text


def title(g: Graph) -> str:
    return f"mesh {g.mesh.name} {g.mesh.cidr}, routing {g.mesh.routing}"


def service_lines(s: ServiceNode) -> list[str]:
    return [s.service.key, str(s.service.vip), *(str(p) for p in s.service.ports)]


def backend_text(b: BackendRef) -> str:
    return f"{b.name}@{b.address}" if b.name else b.address


def to_dot(g: Graph) -> str:
    """Graphviz source: one node per host (``host<i>``), one edge per host pair
    (``link<i>``), one node per service (``svc<i>``) with an edge to the host of each backend
    (``backend<i>``; a backend on no known host gets a small node of its own)."""
    ids = {h.name: f"host{i}" for i, h in enumerate(g.hosts)}
    out = [
        "graph vpcctl {",
        f"  graph [label={quote(title(g))}, "
        'labelloc="t", fontname="Helvetica", overlap=false, splines=true];',
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for h in g.hosts:
        colour = "red" if h.reachable is False else ("gray20" if h.endpoint else "steelblue")
        style = "rounded,dashed" if h.endpoint is None else "rounded"
        out.append(f'  {ids[h.name]} [id="{ids[h.name]}", class="host", shape=box, style="{style}",'
                   f' color="{colour}", label={quote(*host_lines(h))}];')  # fmt: skip
    for i, link in enumerate(g.links):
        colour, style = LINK_STYLE[link.state]
        label = "" if link.state == "declared" else link_text(link)  # offline: no news to tell
        out.append(f'  {ids[link.a]} -- {ids[link.b]} [id="link{i}", class="link {link.state}", '
                   f'color="{colour}", style="{style}", label={quote(label)}];')  # fmt: skip
    n = 0
    for i, s in enumerate(g.services):
        sid = f"svc{i}"
        out.append(f'  {sid} [id="{sid}", class="service", shape=ellipse, color="darkorchid", '
                   f"label={quote(*service_lines(s))}];")  # fmt: skip
        for b in s.backends:
            target = ids.get(b.host or "")
            if target is None:
                target = f"orphan{n}"
                out.append(f'  {target} [id="{target}", class="orphan", shape=plaintext, '
                           f"label={quote(backend_text(b))}];")  # fmt: skip
            out.append(f'  {sid} -- {target} [id="backend{n}", class="backend", '
                       f'color="darkorchid", style="dashed", label={quote(backend_text(b))}];')  # fmt: skip
            n += 1
    out.append("}")
    return "\n".join(out) + "\n"
