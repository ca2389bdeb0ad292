"""The value parsers: what they accept, how they refuse, and that nothing they accept can inject a
line into a rendered configuration."""

from __future__ import annotations

import re
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import public_key
from vpcctl.core.errors import ValidationError
from vpcctl.core.model import (
    PortSpec,
    SshTarget,
    parse_address,
    parse_domain,
    parse_endpoint,
    parse_ifname,
    parse_int,
    parse_label,
    parse_network,
    parse_port,
    parse_portspec,
    parse_public_key,
    parse_ssh,
    split_key,
)
from vpcctl.core.names import bridge_name, tunnel_name

KEY = public_key("model")

# ---------------------------------------------------------------------------------------------
# what is accepted, and what it becomes


@pytest.mark.parametrize(
    ("parse", "text", "expected"),
    [
        (parse_label, "db-1", "db-1"),
        (parse_label, "a", "a"),
        (parse_label, "a" * 63, "a" * 63),
        (parse_label, "0web", "0web"),
        (parse_domain, "vpc.internal", "vpc.internal"),
        (parse_domain, "vpc.internal.", "vpc.internal"),
        (parse_domain, "internal", "internal"),
        (parse_ifname, "vpc0", "vpc0"),
        (parse_ifname, "wg_mesh.1-a", "wg_mesh.1-a"),
        (parse_ifname, "a" * 15, "a" * 15),
        (parse_endpoint, "203.0.113.10:51820", "203.0.113.10:51820"),
        (parse_endpoint, "vps1.example.com:1", "vps1.example.com:1"),
        (parse_endpoint, "[2001:db8::1]:51820", "[2001:db8::1]:51820"),
        (parse_endpoint, "[fe80::1%eth0]:51820", "[fe80::1%eth0]:51820"),
        (parse_endpoint, "host:0051820", "host:51820"),
        (parse_ssh, "nas", SshTarget("nas")),
        (parse_ssh, "root@203.0.113.10", SshTarget("203.0.113.10", "root")),
        (parse_ssh, "admin@nas.lan:2222", SshTarget("nas.lan", "admin", 2222)),
        (parse_ssh, "[2001:db8::1]:22", SshTarget("[2001:db8::1]", None, 22)),
        (parse_ssh, "deploy@[2001:db8::1]", SshTarget("[2001:db8::1]", "deploy")),
        (parse_public_key, KEY, KEY),
        (parse_portspec, "5432", PortSpec(5432, "tcp")),
        (parse_portspec, "53/udp", PortSpec(53, "udp")),
        (parse_portspec, "postgres=5432/tcp", PortSpec(5432, "tcp", "postgres")),
        (parse_port, 65535, 65535),
        (parse_network, "10.100.0.0/16", IPv4Network("10.100.0.0/16")),
        (parse_address, "10.90.0.1", IPv4Address("10.90.0.1")),
    ],
)
def test_accepts(parse: Callable[[object, str], Any], text: object, expected: object) -> None:
    assert parse(text, "where") == expected


def test_ssh_target_prints_back_what_was_parsed() -> None:
    for text in ("nas", "root@203.0.113.10", "admin@nas.lan:2222", "deploy@[2001:db8::1]:22"):
        assert str(parse_ssh(text, "--ssh")) == text


def test_portspec_prints_back_canonically() -> None:
    assert str(parse_portspec("5432", "--port")) == "5432/tcp"
    assert str(parse_portspec("dns=53/udp", "--port")) == "dns=53/udp"


# ---------------------------------------------------------------------------------------------
# what is refused, and how


@pytest.mark.parametrize(
    ("parse", "value", "says"),
    [
        # names that are not DNS labels
        (parse_label, "Nas", "not a valid name"),
        (parse_label, "-nas", "not a valid name"),
        (parse_label, "nas-", "not a valid name"),
        (parse_label, "na_s", "not a valid name"),
        (parse_label, "na.s", "not a valid name"),
        (parse_label, "a" * 64, "not a valid name"),
        (parse_label, "", "not a valid name"),
        (parse_label, 7, "not a valid name"),
        (parse_domain, "vpc..internal", "not a valid domain"),
        (parse_domain, "Vpc.internal", "not a valid domain"),
        (parse_domain, "a." * 125, "too long"),
        (parse_domain, "10.in-addr.arpa", "reverse-DNS"),
        (parse_domain, "ip6.arpa", "reverse-DNS"),
        # interface names: Linux allows 15 characters
        (parse_ifname, "a" * 16, "not a valid interface name"),
        (parse_ifname, "vpc 0", "not a valid interface name"),
        (parse_ifname, "-vpc0", "not a valid interface name"),
        (parse_ifname, "", "not a valid interface name"),
        # CIDRs and addresses
        (parse_network, "10.100.0.0/33", "not a valid IPv4 CIDR"),
        (parse_network, "10.100.0.1/16", "not a valid IPv4 CIDR"),
        (parse_network, "10.100.0.0", "has no prefix length"),
        (parse_network, "2001:db8::/32", "not a valid IPv4 CIDR"),
        (parse_network, 10, "not a CIDR"),
        (parse_address, "10.90.0.256", "not a valid IPv4 address"),
        (parse_address, "10.90.0.1/24", "not a valid IPv4 address"),
        # endpoints
        (parse_endpoint, "203.0.113.10", "not a HOST:PORT endpoint"),
        (parse_endpoint, "203.0.113.10:", "not a HOST:PORT endpoint"),
        (parse_endpoint, ":51820", "not a HOST:PORT endpoint"),
        (parse_endpoint, "203.0.113.10:0", "out of range"),
        (parse_endpoint, "203.0.113.10:65536", "out of range"),
        (parse_endpoint, "bad host:51820", "invalid host name"),
        (parse_endpoint, "[2001:db8::zz]:51820", "invalid IPv6 address"),
        (parse_endpoint, "2001:db8::1:51820", "invalid host name"),
        # SSH targets
        (parse_ssh, "", "not an SSH target"),
        (parse_ssh, "-oProxyCommand=x@nas", "invalid user name"),
        (parse_ssh, "root@-oProxyCommand=x", "invalid host name"),
        (parse_ssh, "root@nas:ssh", "non-numeric port"),
        (parse_ssh, "root@nas:70000", "out of range"),
        (parse_ssh, "[2001:db8::1", "unclosed"),
        # public keys
        (parse_public_key, KEY[:-2] + "=", "not a WireGuard public key"),
        (parse_public_key, "!" * 43 + "=", "not valid base64"),
        (parse_public_key, KEY[:-2] + "B=", "not a WireGuard public key"),  # non-canonical
        (parse_public_key, None, "not a WireGuard public key"),
        # ports
        (parse_portspec, "5432/sctp", "not a port spec"),
        (parse_portspec, "99999", "out of range"),
        (parse_portspec, "0", "out of range"),
        (parse_portspec, "Postgres=5432", "not a port spec"),
        (parse_port, 0, "not a port number"),
        (parse_port, True, "not a port number"),
        (parse_port, "51820", "not a port number"),
    ],
)
def test_refuses_with_one_line_naming_where_and_a_hint(
    parse: Callable[[object, str], Any], value: object, says: str
) -> None:
    with pytest.raises(ValidationError) as info:
        parse(value, "vpc.toml: hosts.nas.key")
    err = info.value
    assert err.message.startswith("vpc.toml: hosts.nas.key: ")
    assert says in err.message
    assert "\n" not in err.message
    assert err.hint and "\n" not in err.hint


def test_host_bits_set_suggests_the_network() -> None:
    with pytest.raises(ValidationError) as info:
        parse_network("10.100.0.1/16", "--cidr")
    assert info.value.hint == 'host bits are set: did you mean "10.100.0.0/16"?'


def test_int_range_names_the_range() -> None:
    with pytest.raises(ValidationError) as info:
        parse_int(31, "vpcs.prod.slice_prefix", 17, 30)
    assert info.value.hint == "use an integer from 17 to 30"


def test_split_key() -> None:
    assert split_key("prod/db-1", "k") == ("prod", "db-1")
    for bad in ("prod", "prod/", "/db", "prod/db/1", "Prod/db"):
        with pytest.raises(ValidationError):
            split_key(bad, "k")


# ---------------------------------------------------------------------------------------------
# derived kernel names always fit in 15 characters and stay stable


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63).filter(
        lambda s: not s.startswith("-") and not s.endswith("-")
    )
)
@settings(max_examples=100, deadline=None)
def test_bridge_names_fit_and_are_stable(vpc: str) -> None:
    name = bridge_name(vpc)
    assert parse_ifname(name, "bridge") == name
    assert name == bridge_name(vpc)
    if len(vpc) <= 12:
        assert name == f"vb-{vpc}"


def test_long_vpc_names_get_distinct_bridges() -> None:
    a, b = bridge_name("production-east"), bridge_name("production-west")
    assert a != b and len(a) == len(b) == 15


def test_tunnel_name() -> None:
    assert tunnel_name("vpc0") == "vpc0-ipip"
    assert len(tunnel_name("a" * 10)) == 15


# ---------------------------------------------------------------------------------------------
# injection: nothing a parser accepts can carry a line break, '=', '[', '#', quotes...

UNSAFE = set("\n\r\0\t\x0b\x0c \"'`#;=[]\\$")
PUBLIC_KEY_RE = re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=")
PORTSPEC_RE = re.compile(r"(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?=)?[0-9]{1,5}/(?:tcp|udp)")


def assert_safe(text: str, *, ipv6_brackets: bool = False) -> None:
    """Printable ASCII with no character that could end a line, start a section, a key or a
    comment. Brackets are allowed only around an IPv6 address (``[2001:db8::1]:51820``)."""
    assert text.isascii() and text.isprintable(), text
    rest = text
    if ipv6_brackets and rest.startswith("["):
        inner, close, tail = rest[1:].partition("]")
        assert close, text
        IPv6Address(inner)
        rest = inner + tail
    assert not set(rest) & UNSAFE, text


def _check_label(v: str) -> None:
    assert isinstance(v, str) and re.fullmatch(r"[a-z0-9-]{1,63}", v)
    assert_safe(v)


def _check_domain(v: str) -> None:
    assert isinstance(v, str) and re.fullmatch(r"[a-z0-9.-]{1,200}", v)
    assert_safe(v)


def _check_ifname(v: str) -> None:
    assert isinstance(v, str) and len(v) <= 15
    assert_safe(v)


def _check_endpoint(v: str) -> None:
    host, _, port = v.rpartition(":")
    assert port.isascii() and port.isdigit() and 1 <= int(port) <= 65535
    assert_safe(v, ipv6_brackets=True)
    assert_safe(host, ipv6_brackets=True)


def _check_ssh(v: SshTarget) -> None:
    assert isinstance(v, SshTarget)
    assert_safe(v.host, ipv6_brackets=True)
    if v.user is not None:
        assert_safe(v.user)
        assert "@" not in v.user
    assert v.port is None or 1 <= v.port <= 65535
    assert_safe(str(v).replace(v.host, "h"))


def _check_public_key(v: str) -> None:
    assert PUBLIC_KEY_RE.fullmatch(v), v


def _check_portspec(v: PortSpec) -> None:
    assert isinstance(v, PortSpec) and v.proto in ("tcp", "udp") and 1 <= v.port <= 65535
    if v.name is not None:
        _check_label(v.name)
    assert PORTSPEC_RE.fullmatch(str(v)), str(v)


PARSERS: dict[str, tuple[Callable[[object, str], Any], Callable[[Any], None], list[str]]] = {
    "parse_label": (parse_label, _check_label, ["db-1", "a", "web"]),
    "parse_domain": (parse_domain, _check_domain, ["vpc.internal", "a.b.c."]),
    "parse_ifname": (parse_ifname, _check_ifname, ["vpc0", "wg_mesh.1-a"]),
    "parse_endpoint": (
        parse_endpoint,
        _check_endpoint,
        ["203.0.113.10:51820", "vps1.example.com:51820", "[2001:db8::1]:51820", "[fe80::1%eth0]:1"],
    ),
    "parse_ssh": (
        parse_ssh,
        _check_ssh,
        ["root@203.0.113.10:22", "admin@nas.lan", "nas", "deploy@[fe80::1%eth0]:2222"],
    ),
    "parse_public_key": (parse_public_key, _check_public_key, [KEY]),
    "parse_portspec": (parse_portspec, _check_portspec, ["postgres=5432/tcp", "53/udp", "80"]),
}
BAD_BITS = [
    "\n",
    "\n[Peer]\nAllowedIPs = 0.0.0.0/0\n",
    "\r",
    "\r\n",
    "\0",
    "\u2028",
    "\x85",
    "=",
    "[",
    "]",
    "#",
    '"',
    "'",
    " ",
    "\t",
    "\\",
    ";",
    "%",
    "%\n",
    "%=",
    "²",
    "١",
    "é",
    ".",
    "-",
    ":",
    "@",
    "/",
]
ALPHABET = "".join(sorted(set("".join(BAD_BITS) + "abcxyz019ABf:.@[]%/=-_")))


def _splice(text: str, at: int, bit: str) -> str:
    at = at % (len(text) + 1)
    return text[:at] + bit + text[at:]


def _splice_at_boundary(text: str, which: int, bit: str) -> str:
    """Insert next to a separator or at an end: where a parser splits its input."""
    spots = {0, len(text)} | {i + d for i, c in enumerate(text) if c in ":@=/.]%" for d in (0, 1)}
    at = sorted(spots)[which % len(spots)]
    return text[:at] + bit + text[at:]


def nasty(valid: list[str]) -> st.SearchStrategy[object]:
    """Valid values with bad characters spliced in where it hurts, and arbitrary junk."""
    samples, where, bits = st.sampled_from(valid), st.integers(0, 100), st.sampled_from(BAD_BITS)
    spliced = st.builds(_splice_at_boundary, samples, where, bits)
    return st.one_of(
        spliced,
        spliced,
        st.builds(_splice, samples, where, bits),
        st.builds(_splice_at_boundary, spliced, where, bits),
        samples,
        st.text(max_size=60),
        st.text(alphabet=ALPHABET, max_size=40),
        st.none() | st.booleans() | st.integers() | st.floats() | st.lists(st.text(), max_size=2),
    )


NASTY = {name: nasty(valid) for name, (_, _, valid) in PARSERS.items()}


@pytest.mark.parametrize("parser", sorted(PARSERS))
@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_no_parser_accepts_an_injection(parser: str, data: st.DataObject) -> None:
    parse, check, _ = PARSERS[parser]
    value = data.draw(NASTY[parser], label="value")
    try:
        parsed = parse(value, "--option")
    except ValidationError as exc:
        assert exc.message.startswith("--option: ")
        assert "\n" not in exc.message and exc.hint
        return
    check(parsed)


@pytest.mark.parametrize(
    ("parse", "value"),
    [
        # "$" in a regex matches before a trailing newline: each of these used to pass
        (parse_label, "db\n"),
        (parse_domain, "vpc.internal\n"),
        (parse_ifname, "vpc0\n"),
        (parse_endpoint, "vps1\n:51820"),
        (parse_ssh, "root@nas\n"),
        (parse_ssh, "root\n@nas"),
        (parse_portspec, "5432\n"),
        # ipaddress accepts any text as an IPv6 scope id
        (parse_endpoint, "[fe80::1%\n[Peer]]:51820"),
        (parse_ssh, "[fe80::1%a=b#c]:22"),
        # str.isdigit accepts digits int() cannot read (used to raise ValueError)
        (parse_endpoint, "vps1:²"),
        (parse_ssh, "nas:²"),
        (parse_ssh, "[2001:db8::1]:²"),
    ],
)
def test_regressions_are_refused(parse: Callable[[object, str], Any], value: str) -> None:
    with pytest.raises(ValidationError):
        parse(value, "--option")
