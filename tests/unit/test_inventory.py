"""The inventory file: canonical and deterministic, validated with errors that name file and key,
written atomically under a lock."""

from __future__ import annotations

import difflib
import fcntl
import os
import tomllib
from dataclasses import replace
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from tests.builders import homelab, public_key
from vpcctl.admin import edits, inventory
from vpcctl.core.errors import InventoryError, LockError, NotFoundError, ValidationError
from vpcctl.core.model import SshTarget

SOURCE = "net/vpc.toml"


@pytest.fixture
def text() -> str:
    return inventory.dump(homelab())


def _changed_lines(old: str, new: str) -> list[str]:
    return [
        line[1:]
        for line in difflib.unified_diff(old.splitlines(), new.splitlines(), n=0, lineterm="")
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]


def _block(text: str, header: str) -> list[str]:
    """The lines of table ``header`` and its sub-tables (up to the next unrelated table)."""
    lines = text.splitlines()
    start = lines.index(f"[{header}]")
    out = [lines[start]]
    prefix = f"[{header}."
    for line in lines[start + 1 :]:
        if line.startswith("[") and not line.startswith(prefix):
            break
        out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# canonical and deterministic


def test_load_then_dump_is_byte_identical(tmp_path: Path, text: str) -> None:
    path = tmp_path / "vpc.toml"
    inventory.create(path, homelab())
    assert path.read_bytes() == text.encode()
    assert inventory.dump(inventory.load(path)).encode() == path.read_bytes()
    assert inventory.load(path) == homelab()


def test_dump_is_stable_whatever_the_insertion_order(text: str) -> None:
    inv = homelab()
    shuffled = replace(
        inv,
        hosts=dict(reversed(list(inv.hosts.items()))),
        vpcs=dict(reversed(list(inv.vpcs.items()))),
        containers=dict(reversed(list(inv.containers.items()))),
        services=dict(reversed(list(inv.services.items()))),
    )
    assert inventory.dump(shuffled) == text


def test_hand_written_file_is_read_and_rewritten_canonically(text: str) -> None:
    hand = """
# my network
version = 1
[services."prod/db"]   # the database
backends = ["db-1", "db-2"]
ports = ["postgres=5432/tcp", "9187"]
vip = "10.100.255.1"
[mesh]
routing = "ipip"
name = "home"
cidr = "10.90.0.0/24"
[vpcs.staging]
cidr = "10.200.0.0/16"
services = "10.200.255.0/24"
[vpcs.prod]
services = "10.100.255.0/24"
cidr = "10.100.0.0/16"
[hosts.vps2]
ssh = "root@198.51.100.20"
address = "10.90.0.3"
endpoint = "198.51.100.20:51820"
public_key = "%(vps2)s"
slices = { staging = "10.200.2.0/24", prod = "10.100.2.0/24" }
[hosts.nas]
ssh = "admin@nas.lan:2222"
address = "10.90.0.1"
public_key = "%(nas)s"
slices = { prod = "10.100.0.0/24", staging = "10.200.0.0/24" }
[hosts.vps1]
ssh = "root@203.0.113.10"
address = "10.90.0.2"
endpoint = "203.0.113.10:51820"
public_key = "%(vps1)s"
slices.prod = "10.100.1.0/24"
slices.staging = "10.200.1.0/24"
[containers."staging/web-1"]
host = "vps1"
ip = "10.200.1.2"
[containers."prod/web-1"]
host = "nas"
ip = "10.100.0.2"
[containers."prod/db-2"]
ip = "10.100.2.2"
host = "vps2"
[containers."prod/db-1"]
host = "vps1"
ip = "10.100.1.2"
[containers."staging/cache-1"]
host = "vps2"
ip = "10.200.2.2"
[services."staging/cache"]
vip = "10.200.255.1"
ports = ["redis=6379"]
backends = ["cache-1"]
""" % {n: public_key(n) for n in ("nas", "vps1", "vps2")}
    inv = inventory.parse(hand)
    assert inv == homelab()
    assert inventory.dump(inv) == text


def test_selector_inline_or_as_a_table_reads_the_same_and_dumps_canonically(text: str) -> None:
    cache = 'backends = [\n    "cache-1",\n]\n'
    assert text.endswith(cache)
    inline = text + 'selector = { role = "cache", app = "redis" }\n'
    as_table = text + '\n[services."staging/cache".selector]\nrole = "cache"\napp = "redis"\n'
    no_backends = inline.replace(cache, "")
    for hand in (inline, as_table):
        inv = inventory.parse(hand)
        svc = inv.services["staging/cache"]
        assert svc.selector == (("app", "redis"), ("role", "cache"))
        assert svc.backends == ("cache-1",)
        canonical = inventory.dump(inv)
        assert inventory.dump(inventory.parse(canonical)) == canonical
        assert canonical.endswith(
            '[services."staging/cache".selector]\napp = "redis"\nrole = "cache"\n'
        )
    inv = inventory.parse(no_backends)
    assert inv.services["staging/cache"].backends == ()
    assert 'backends = []\n\n[services."staging/cache".selector]' in inventory.dump(inv)
    # a service without a selector is written exactly as before selectors existed
    assert "selector" not in text


def test_changing_one_host_changes_only_its_lines(text: str) -> None:
    inv = homelab()
    changed = inventory.dump(edits.set_host(inv, "vps1", endpoint="192.0.2.7:51820"))
    lines = _changed_lines(text, changed)
    assert lines == ['endpoint = "203.0.113.10:51820"', 'endpoint = "192.0.2.7:51820"']

    rekeyed = inventory.dump(edits.set_host(inv, "nas", public_key=public_key("nas-2")))
    block = _block(text, "hosts.nas") + _block(rekeyed, "hosts.nas")
    lines = _changed_lines(text, rekeyed)
    assert len(lines) == 2 and all(line in block for line in lines)


def test_adding_a_host_only_inserts_its_lines(text: str) -> None:
    inv = edits.add_host(homelab(), "mini", SshTarget("mini.lan"), public_key=public_key("mini"))
    new = inventory.dump(inv)
    diff = [
        d
        for d in difflib.unified_diff(text.splitlines(), new.splitlines(), n=0, lineterm="")
        if d[:1] in "+-" and not d.startswith(("+++", "---"))
    ]
    assert all(d.startswith("+") for d in diff)
    block = _block(new, "hosts.mini")
    assert [d[1:] for d in diff if d[1:]] == [line for line in block if line]


def test_removing_a_container_only_removes_its_lines(text: str) -> None:
    inv = edits.rm_container(homelab(), "web-1", "staging")
    new = inventory.dump(inv)
    lines = _changed_lines(text, new)
    assert [line for line in lines if line] == [
        '[containers."staging/web-1"]',
        'host = "vps1"',
        'ip = "10.200.1.2"',
    ]


# ---------------------------------------------------------------------------------------------
# validation: one line naming file and key, and a hint


def _swap(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


def _dup_table(text: str) -> str:
    return text + '\n[containers."prod/db-1"]\nhost = "vps1"\nip = "10.100.1.9"\n'


_DB_BACKENDS = 'backends = [\n    "db-1",\n    "db-2",\n]'

CASES = [
    # unknown keys
    ("unknown top-level key", lambda t: "colour = 1\n" + t, "colour: unknown key"),
    ("unknown mesh key", lambda t: _swap(t, "[mesh]\n", "[mesh]\nmss = 1400\n"), "mesh.mss"),
    ("mesh mtu too small", lambda t: _swap(t, "[mesh]\n", "[mesh]\nmtu = 1000\n"), "mesh.mtu"),
    ("mesh mtu not a number", lambda t: _swap(t, "[mesh]\n", '[mesh]\nmtu = "1400"\n'), "mesh.mtu"),
    (
        "unknown host key",
        lambda t: _swap(t, "[hosts.nas]\n", "[hosts.nas]\nport = 22\n"),
        "hosts.nas.port: unknown key",
    ),
    (
        "unknown container key",
        lambda t: _swap(t, 'host = "vps1"\n', 'host = "vps1"\nimage = "pg"\n'),
        'containers."prod/db-1".image: unknown key',
    ),
    ("missing key", lambda t: _swap(t, 'name = "home"\n', ""), "mesh: missing key 'name'"),
    # wrong types
    ("port as string", lambda t: _swap(t, "port = 51820", 'port = "51820"'), "mesh.port"),
    (
        "address as int",
        lambda t: _swap(t, 'address = "10.90.0.1"', "address = 167378945"),
        "hosts.nas.address",
    ),
    (
        "slice prefix as string",
        lambda t: _swap(t, "slice_prefix = 24", 'slice_prefix = "24"'),
        "vpcs.prod.slice_prefix",
    ),
    (
        "hosts not a table",
        lambda t: t[: t.index("[hosts.nas]")] + "[hosts]\nnas = 3\n",
        "hosts.nas: expected a table, got int",
    ),
    (
        "ports not a list",
        lambda t: _swap(
            t, 'ports = [\n    "postgres=5432/tcp",\n    "9187/tcp",\n]', 'ports = "x"'
        ),
        'services."prod/db".ports: expected a non-empty list',
    ),
    (
        "backends not a list",
        lambda t: _swap(t, 'backends = [\n    "db-1",\n    "db-2",\n]', 'backends = "db-1"'),
        'services."prod/db".backends: expected a list',
    ),
    ("unsupported version", lambda t: _swap(t, "version = 1", "version = 2"), "version"),
    # malformed CIDRs
    (
        "mesh prefix 33",
        lambda t: _swap(t, 'cidr = "10.90.0.0/24"', 'cidr = "10.90.0.0/33"'),
        "mesh.cidr",
    ),
    (
        "host bits set",
        lambda t: _swap(t, 'cidr = "10.100.0.0/16"', 'cidr = "10.100.0.1/16"'),
        "vpcs.prod.cidr",
    ),
    (
        "no prefix",
        lambda t: _swap(t, 'services = "10.100.255.0/24"', 'services = "10.100.255.0"'),
        "vpcs.prod.services",
    ),
    (
        "bad slice",
        lambda t: _swap(t, 'prod = "10.100.1.0/24"', 'prod = "10.100.1/24"'),
        "hosts.vps1.slices.prod",
    ),
    # overlapping CIDRs
    (
        "overlapping VPCs",
        lambda t: _swap(t, 'cidr = "10.200.0.0/16"', 'cidr = "10.100.0.0/15"'),
        "overlaps",
    ),
    (
        "VPC overlapping the mesh",
        lambda t: _swap(t, 'cidr = "10.90.0.0/24"', 'cidr = "10.100.7.0/24"'),
        "overlaps",
    ),
    # duplicate addresses
    (
        "duplicate host address",
        lambda t: _swap(t, 'address = "10.90.0.2"', 'address = "10.90.0.1"'),
        "hosts.vps1.address: 10.90.0.1 is also the address of host nas",
    ),
    (
        "duplicate container ip",
        lambda t: _swap(t, 'ip = "10.100.2.2"', 'ip = "10.100.1.2"').replace(
            '[containers."prod/db-2"]\nhost = "vps2"', '[containers."prod/db-2"]\nhost = "vps1"'
        ),
        'containers."prod/db-2".ip: 10.100.1.2 is also the address of container prod/db-1',
    ),
    (
        "duplicate VIP",
        lambda t: (
            t + '\n[services."prod/db2"]\nvip = "10.100.255.1"\nports = ["1"]\nbackends = []\n'
        ),
        "is also the VIP of service",
    ),
    (
        "duplicate slice",
        lambda t: _swap(t, 'prod = "10.100.2.0/24"', 'prod = "10.100.1.0/24"'),
        "overlaps",
    ),
    (
        "duplicate public key",
        lambda t: _swap(t, public_key("vps2"), public_key("vps1")),
        "hosts.vps2.public_key: same public key as host vps1",
    ),
    # bad endpoints
    (
        "endpoint without port",
        lambda t: _swap(t, '"203.0.113.10:51820"', '"203.0.113.10"'),
        "hosts.vps1.endpoint",
    ),
    (
        "endpoint port out of range",
        lambda t: _swap(t, '"203.0.113.10:51820"', '"203.0.113.10:70000"'),
        "hosts.vps1.endpoint",
    ),
    (
        "endpoint with a newline",
        lambda t: _swap(t, '"203.0.113.10:51820"', '"203.0.113.10:51820\\n[Peer]"'),
        "hosts.vps1.endpoint",
    ),
    # invalid public keys
    (
        "short public key",
        lambda t: _swap(t, public_key("nas"), public_key("nas")[:-4] + "="),
        "hosts.nas.public_key",
    ),
    (
        "private-looking garbage",
        lambda t: _swap(t, public_key("nas"), "PrivateKey = " + public_key("nas")),
        "hosts.nas.public_key",
    ),
    # names that are not DNS labels
    ("upper-case host", lambda t: _swap(t, "[hosts.nas]", "[hosts.Nas]"), "hosts.Nas"),
    (
        "host name with a newline",
        lambda t: _swap(t, "[hosts.nas]", '[hosts."nas\\n[Peer]\\u001b[31m"]'),
        "hosts.\"nas\\n[Peer]\\u001b[31m\": 'nas\\n[Peer]\\x1b[31m' is not a valid host name",
    ),
    (
        "unknown key with a newline",
        lambda t: _swap(t, "[mesh]\n", '[mesh]\n"a\\nb" = 1\n'),
        'mesh."a\\nb": unknown key',
    ),
    (
        "long container name",
        lambda t: _swap(t, '"prod/db-1"]', f'"prod/{"d" * 64}"]'),
        'containers."prod/ddd',
    ),
    (
        "container without VPC",
        lambda t: _swap(t, '[containers."prod/db-1"]', '[containers."db-1"]'),
        "containers.db-1: 'db-1' is not VPC/NAME",
    ),
    ("bad mesh name", lambda t: _swap(t, 'name = "home"', 'name = "-home"'), "mesh.name"),
    (
        "bad domain",
        lambda t: _swap(t, 'domain = "vpc.internal"', 'domain = "vpc..internal"'),
        "mesh.domain",
    ),
    (
        "bad backend name",
        lambda t: _swap(t, '    "db-2",\n', '    "DB_2",\n'),
        'services."prod/db".backends',
    ),
    # interface names
    (
        "interface over 15 characters",
        lambda t: _swap(t, 'interface = "vpc0"', 'interface = "wireguard-mesh-0"'),
        "mesh.interface",
    ),
    # references
    (
        "container on an unknown host",
        lambda t: _swap(t, 'host = "vps1"', 'host = "vps9"'),
        'containers."prod/db-1".host: no host named',
    ),
    (
        "unknown backend",
        lambda t: _swap(t, '    "db-2",\n', '    "db-9",\n'),
        "no container 'db-9' in VPC prod",
    ),
    (
        "container outside its slice",
        lambda t: _swap(t, 'ip = "10.100.1.2"', 'ip = "10.100.1.1"'),
        'containers."prod/db-1".ip: 10.100.1.1 is not a container address',
    ),
    (
        "duplicated table from a merge",
        _dup_table,
        "Cannot declare",
    ),
    # selectors
    (
        "selector not a table",
        lambda t: _swap(t, _DB_BACKENDS, _DB_BACKENDS + '\nselector = "app=db"'),
        'services."prod/db".selector: expected a table',
    ),
    (
        "selector key in upper case",
        lambda t: _swap(t, _DB_BACKENDS, _DB_BACKENDS + '\nselector = { App = "db" }'),
        """services."prod/db".selector: 'App' is not a valid label key""",
    ),
    (
        "selector key with a newline",
        lambda t: _swap(t, _DB_BACKENDS, _DB_BACKENDS + '\nselector = { "a\\nb" = "db" }'),
        """services."prod/db".selector: 'a\\nb' is not a valid label key""",
    ),
    (
        "selector value with a newline",
        lambda t: _swap(t, _DB_BACKENDS, _DB_BACKENDS + '\nselector = { app = "d\\nb" }'),
        """services."prod/db".selector.app: 'd\\nb' is not a valid label value""",
    ),
    (
        "selector value not a string",
        lambda t: _swap(t, _DB_BACKENDS, _DB_BACKENDS + "\nselector = { app = 5 }"),
        'services."prod/db".selector.app: 5 is not a valid label value',
    ),
]


@pytest.mark.parametrize(("mutate", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_inventory_is_refused_with_file_key_and_hint(text: str, mutate, says: str) -> None:  # type: ignore[no-untyped-def]
    bad = mutate(text)
    with pytest.raises(InventoryError) as info:
        inventory.parse(bad, SOURCE)
    err = info.value
    assert err.message.startswith(f"{SOURCE}: "), err.message
    assert says in err.message, err.message
    assert err.message.isprintable(), err.message  # one line, no terminal escapes
    assert err.hint and err.hint.isprintable()


def test_duplicated_table_says_it_may_be_a_merge(text: str) -> None:
    with pytest.raises(InventoryError) as info:
        inventory.parse(_dup_table(text), SOURCE)
    assert "line" in info.value.message
    assert "git merge" in (info.value.hint or "")


def test_problems_lists_every_problem_not_just_the_first(text: str) -> None:
    bad = _swap(text, 'address = "10.90.0.2"', 'address = "10.90.0.1"')
    bad = _swap(bad, 'ip = "10.100.2.2"', 'ip = "10.100.2.1"')
    inv = inventory.from_dict(tomllib.loads(bad), SOURCE)
    found = [p.message for p in inventory.problems(inv, SOURCE)]
    assert len(found) == 2
    assert any("hosts.vps1.address" in m for m in found)
    assert any('containers."prod/db-2".ip' in m for m in found)


def test_warnings_for_nat_pairs_and_missing_keys() -> None:
    inv = homelab()
    assert inventory.warnings(inv) == []
    inv = edits.add_host(inv, "pi", SshTarget("pi.lan"))
    notes = inventory.warnings(inv)
    assert len(notes) == 2
    assert "nas, pi are behind NAT" in notes[0] and "relay (nas via vps1, pi via vps1)" in notes[0]
    assert "without a public key yet: pi" in notes[1]


# ---------------------------------------------------------------------------------------------
# on disk: atomic, locked, all or nothing


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    path = tmp_path / "vpc.toml"
    inventory.create(path, homelab())
    return path


def _state(path: Path) -> tuple[bytes, int, list[str]]:
    return path.read_bytes(), path.stat().st_mtime_ns, sorted(p.name for p in path.parent.iterdir())


def test_update_writes_the_change(saved: Path) -> None:
    after = inventory.update(saved, lambda inv: edits.add_host(inv, "mini", SshTarget("mini.lan")))
    assert inventory.load(saved) == after
    assert saved.read_text() == inventory.dump(after)
    assert sorted(p.name for p in saved.parent.iterdir()) == [".vpc.toml.lock", "vpc.toml"]


@pytest.mark.parametrize(
    "change",
    [
        lambda inv: edits.add_host(inv, "nas", SshTarget("x")),  # exists
        lambda inv: edits.rm_host(inv, "vps1"),  # still runs containers
        lambda inv: edits.add_container(inv, "x", "nope", "nas"),  # no such VPC
        lambda inv: edits.add_vpc(inv, "dev", IPv4Network("10.100.0.0/24"), slice_prefix=28),
        lambda inv: edits.add_vpc(inv, "dev", IPv4Network("10.100.0.0/20")),  # overlaps prod
    ],
    ids=["exists", "in-use", "missing", "too-small", "overlap"],
)
def test_a_failing_update_leaves_the_file_untouched(saved: Path, change) -> None:  # type: ignore[no-untyped-def]
    before = _state(saved)
    with pytest.raises((ValidationError, NotFoundError, InventoryError)):
        inventory.update(saved, change)
    assert _state(saved) == before


def test_write_atomic_keeps_the_mode_and_leaves_no_temp_file(saved: Path) -> None:
    saved.chmod(0o640)
    inventory.write_atomic(saved, "x = 1\n")
    assert saved.read_text() == "x = 1\n"
    assert saved.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in saved.parent.iterdir()) == [".vpc.toml.lock", "vpc.toml"]


def test_lock_is_exclusive_and_times_out_with_a_hint(saved: Path) -> None:
    fd = os.open(inventory.lock_path(saved), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        before = _state(saved)
        with pytest.raises(LockError) as info:
            inventory.update(saved, lambda inv: inv, wait=0.2)
        assert "another vpcctl is working on the inventory" in info.value.message
        assert info.value.hint
        assert _state(saved) == before
    finally:
        os.close(fd)
    inventory.update(saved, lambda inv: inv, wait=0.2)  # free again


def test_create_refuses_to_overwrite(saved: Path) -> None:
    before = _state(saved)
    with pytest.raises(InventoryError, match="already exists"):
        inventory.create(saved, homelab())
    assert _state(saved) == before


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        inventory.load(tmp_path / "missing.toml")
    assert info.value.message == f"{tmp_path / 'missing.toml'}: no such file"
    assert "vpcctl init" in (info.value.hint or "")
    binary = tmp_path / "vpc.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(InventoryError, match="not UTF-8"):
        inventory.load(binary)
