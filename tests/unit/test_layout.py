"""The package's layout rules, read from the source (ast): each external system has exactly one
module that imports it, and the sides depend on each other only one way.

ruff's banned-API rule (TID251, pyproject.toml) enforces the same bans while editing, but its
per-file exemptions lift every ban at once; this test pins each system to its own module."""

from __future__ import annotations

import ast

import pytest

from tests.paths import ROOT

PACKAGE = ROOT / "vpcctl"

OWNERS = {
    "subprocess": {"core/run.py"},
    "paramiko": {"admin/ssh.py"},
    "pyroute2": {"host/netlink.py"},
    "dnslib": {"dns/resolver.py", "dns/zone.py"},
    "docker": {"host/docker.py"},
    "segno": {"admin/qr.py"},
    "prometheus_client": {"host/metrics.py"},
}


def _modules() -> dict[str, ast.Module]:
    return {
        str(p.relative_to(PACKAGE)): ast.parse(p.read_text(encoding="utf-8"))
        for p in sorted(PACKAGE.rglob("*.py"))
    }


def _imports(tree: ast.Module) -> set[str]:
    """Every module imported anywhere in the file (also inside functions), by full name."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


MODULES = _modules()


@pytest.mark.parametrize("system", sorted(OWNERS))
def test_each_external_system_is_imported_by_its_module_only(system: str) -> None:
    users = {
        name
        for name, tree in MODULES.items()
        if any(m == system or m.startswith(system + ".") for m in _imports(tree))
    }
    assert users <= OWNERS[system], (
        f"{system} imported outside its module: {users - OWNERS[system]}"
    )


def test_one_which_the_runners() -> None:
    users = {
        name
        for name, tree in MODULES.items()
        if "shutil.which" in _imports(tree)
        or any(
            isinstance(n, ast.Attribute) and n.attr == "which" and isinstance(n.value, ast.Name)
            and n.value.id == "shutil"
            for n in ast.walk(tree)
        )
    }  # fmt: skip
    assert users == {"core/run.py"}


@pytest.mark.parametrize(
    ("side", "never"),
    [
        ("core/", ("vpcctl.admin", "vpcctl.host", "vpcctl.dns", "vpcctl.cli")),
        ("host/", ("vpcctl.admin", "vpcctl.cli")),
        ("dns/", ("vpcctl.admin", "vpcctl.host", "vpcctl.cli")),
        ("admin/", ("vpcctl.host", "vpcctl.cli")),
    ],
)
def test_sides_depend_one_way(side: str, never: tuple[str, ...]) -> None:
    wrong = {
        (name, m)
        for name, tree in MODULES.items()
        if name.startswith(side)
        for m in _imports(tree)
        if m.startswith(never)
    }
    assert not wrong


def test_the_rules_look_at_the_real_package() -> None:
    assert {"core/run.py", "admin/ssh.py", "host/netlink.py", "dns/resolver.py"} <= set(MODULES)
    assert "subprocess" in _imports(MODULES["core/run.py"])
    assert any(m.startswith("pyroute2") for m in _imports(MODULES["host/netlink.py"]))
