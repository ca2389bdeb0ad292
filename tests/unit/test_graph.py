"""`vpcctl graph`: the pure graph and its DOT text; hostile names through real Graphviz."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from ipaddress import IPv4Address, IPv4Network
from itertools import combinations
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import empty, homelab, public_key
from tests.gate import require_tools
from tests.paths import ROOT
from vpcctl.admin import edits, inventory, views
from vpcctl.admin.graph import (
    BackendRef,
    Graph,
    HostNode,
    Link,
    ServiceNode,
    build,
    escape,
    quote,
    to_dot,
)
from vpcctl.core.model import Mesh, PortSpec, Service, SshTarget

SVG = "{http://www.w3.org/2000/svg}"


def svg_of(dot: str) -> ET.Element:
    require_tools("dot")
    res = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60,
                         check=False)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return ET.fromstring(res.stdout)


def groups(svg: ET.Element, kind: str) -> dict[str, ET.Element]:
    """SVG groups by id whose class list has ``kind`` (node/edge) and a role class."""
    out = {}
    for g in svg.iter(f"{SVG}g"):
        classes = (g.get("class") or "").split()
        if classes and classes[0] == kind:
            out[g.get("id") or ""] = g
    return out


def texts(g: ET.Element) -> list[str]:
    return [t.text or "" for t in g.iter(f"{SVG}text")]


def test_the_example_inventory_as_svg_one_node_per_host_one_edge_per_pair() -> None:
    inv = inventory.load(ROOT / "examples" / "homelab" / "vpc.toml")
    svg = svg_of(to_dot(build(inv, views.service_backends(inv, ()))))
    nodes, edges = groups(svg, "node"), groups(svg, "edge")
    hosts = {i: g for i, g in nodes.items() if "host" in (g.get("class") or "").split()}
    links = {i: g for i, g in edges.items() if "link" in (g.get("class") or "").split()}
    assert sorted(texts(g)[0] for g in hosts.values()) == sorted(inv.hosts)
    assert len(links) == len(list(combinations(inv.hosts, 2))) == 3
    # the edge's <title> names its two nodes: every pair once
    names = {f"host{i}": n for i, n in enumerate(sorted(inv.hosts))}
    pairs = set()
    for g in links.values():
        title = g.find(f"{SVG}title")
        assert title is not None and title.text is not None
        a, b = title.text.split("--")
        pairs.add(frozenset((names[a], names[b])))
    assert pairs == {frozenset(p) for p in combinations(inv.hosts, 2)}
    nas = next(g for g in hosts.values() if texts(g)[0] == "nas")
    assert "behind NAT" in texts(nas)
    vps1 = next(g for g in hosts.values() if texts(g)[0] == "vps1")
    assert "endpoint 203.0.113.10:51820" in texts(vps1) and "prod 10.100.1.0/24" in texts(vps1)
    svc = [g for g in nodes.values() if "service" in (g.get("class") or "").split()]
    assert len(svc) == 1 and texts(svc[0])[0] == "prod/db"
    backends = [texts(g) for g in edges.values() if "backend" in (g.get("class") or "")]
    assert sorted(t[0] for t in backends) == ["db-1@10.100.1.2", "db-2@10.100.2.2"]


def test_two_hosts_behind_nat_have_no_direct_link() -> None:
    inv = empty()
    for n in ("a", "b"):
        inv = edits.add_host(inv, n, SshTarget(f"{n}.lan"), public_key=public_key(n))
    g = build(inv, {})
    assert [(x.a, x.b, x.state) for x in g.links] == [("a", "b", "impossible")]
    assert "both behind NAT" in to_dot(g)


def test_live_links_by_handshake_age_from_either_side() -> None:
    inv = homelab()
    statuses: dict[str, list[dict[str, Any]]] = {
        "nas": [{"name": "vps1", "handshake_age": 12.0}, {"name": "vps2", "handshake_age": None}],
        "vps1": [
            {"public_key": public_key("nas"), "handshake_age": 30.0},
            {"name": "vps2", "handshake_age": 600.0},
        ],
    }
    g = build(inv, {}, statuses, unreachable=["vps2"])
    states = {(x.a, x.b): (x.state, x.age) for x in g.links}
    assert states[("nas", "vps1")] == ("fresh", 12.0)  # the youngest of both sides
    assert states[("nas", "vps2")] == ("never", None)  # nas answered: it saw none
    assert states[("vps1", "vps2")] == ("stale", 600.0)
    assert [h.reachable for h in g.hosts] == [True, True, False]
    assert "UNREACHABLE" in to_dot(g)
    g2 = build(inv, {}, {}, unreachable=["nas", "vps1", "vps2"])
    assert {x.state for x in g2.links} == {"unknown"}


def test_offline_graph_shows_declared_backends() -> None:
    inv = homelab()
    g = build(inv, views.service_backends(inv, ()))
    db = next(s for s in g.services if s.service.name == "db")
    assert db.backends and all(b.host for b in db.backends)
    assert {x.state for x in g.links} == {"declared"}


# --------------------------------------------------------------------------- hostile names

printable = st.text(min_size=1, max_size=30)


def _shown(s: str) -> str:
    """What a label shows for ``s``: XML cannot carry control characters; they are written."""
    out = []
    for ch in s:
        o = ord(ch)
        bad = o < 0x20 or 0x7F <= o < 0xA0 or o in (0xFFFE, 0xFFFF) or 0xD800 <= o < 0xE000
        out.append(f"\\u{o:04x}" if bad else ch)
    return "".join(out)


@given(st.text(max_size=60))
def test_escape_is_xml_text_that_reads_back_as_the_name(s: str) -> None:
    e = escape(s.replace("\n", " "))
    assert "<" not in e and ">" not in e and '"' not in e and "\\" not in e
    parsed = ET.fromstring(f"<t>{e}</t>").text or ""
    # Graphviz then reads its own escapes: a doubled backslash shows as one
    assert parsed == _shown(s.replace("\n", " ")).replace("\\", "\\\\")


@given(st.lists(st.text(max_size=20), max_size=4))
def test_quote_is_one_html_label_lines_become_br(lines: list[str]) -> None:
    q = quote(*lines)
    if not any(x for line in lines for x in line.split("\n")):
        assert q == '""'
        return
    assert q.startswith("<") and q.endswith(">")
    inner = q[1:-1]
    assert inner.replace("<BR/>", "").count("<") == 0
    assert inner.count("<BR/>") == sum(line.count("\n") for line in lines) + len(lines) - 1


def _hostile_graph(names: list[str], backend: str) -> Graph:
    hosts = tuple(
        HostNode(
            n,
            f"10.90.0.{i + 1}",
            None if i == 0 else f"192.0.2.{i}:51820",
            (("prod", f"10.100.{i}.0/24"),),
        )
        for i, n in enumerate(names)
    )
    links = tuple(Link(a, b, "fresh", 1.0) for a, b in combinations(names, 2))
    svc = ServiceNode(Service("prod", backend, IPv4Address("10.100.255.1"), (PortSpec(80),), ()),
                      (BackendRef(backend, "10.100.1.2", names[-1]),
                       BackendRef(backend, "10.100.1.3", None)))  # fmt: skip
    mesh = Mesh(backend, IPv4Network("10.90.0.0/24"))
    return Graph(mesh, hosts, links, (svc,), live=True)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(printable, min_size=2, max_size=4, unique=True), printable)
def test_hostile_names_through_graphviz_add_no_node_or_edge(names: list[str], backend: str) -> None:
    g = _hostile_graph(names, backend)
    svg = svg_of(to_dot(g))
    nodes, edges = groups(svg, "node"), groups(svg, "edge")
    assert sorted(nodes) == sorted([f"host{i}" for i in range(len(names))] + ["svc0", "orphan1"])
    n_links = len(names) * (len(names) - 1) // 2
    assert sorted(edges) == sorted([f"link{i}" for i in range(n_links)] + ["backend0", "backend1"])
    for i, n in enumerate(names):
        shown = " ".join(texts(nodes[f"host{i}"]))
        for word in _shown(n.replace("\n", " ")).split():  # lines are trimmed; words stay
            assert word in shown, (n, shown)


@pytest.mark.parametrize("name", ["a\\", '"];\nevil -- x [', "<b>x</b>", "a\\nb", "&amp;"])
def test_known_traps_reach_graphviz_as_text(name: str) -> None:
    svg = svg_of(to_dot(_hostile_graph(["h1", name], name)))
    assert len(groups(svg, "node")) == 4 and len(groups(svg, "edge")) == 3
