"""`vpcctl graph` through the real typer app: formats, files, bad input, --live with fakes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from tests.builders import public_key
from tests.fake_transport import FakeHost, FakeNet, agent_json, unreachable
from tests.gate import require_tools
from vpcctl.cli.app import State
from vpcctl.cli.commands import app


def run(runner: CliRunner, *args: str, net: FakeNet | None = None, **kw: object) -> Result:
    obj = State(connect=net.connect) if net is not None else None
    return runner.invoke(app, list(args), prog_name="vpcctl", obj=obj, **kw)  # type: ignore[arg-type]


def two_lines(result: Result, code: int, says: str) -> None:
    assert result.exit_code == code, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("error: ") and lines[1].startswith("hint: ")
    assert says in result.stderr, result.stderr


def test_text_is_a_tree_of_hosts_links_and_services(runner: CliRunner, net: Path) -> None:
    result = run(runner, "graph")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert out.startswith("mesh home 10.90.0.0/24, routing ipip")
    assert "nas  10.90.0.1  behind NAT" in out and "endpoint 203.0.113.10:51820" in out
    assert "slice prod 10.100.0.0/24" in out
    assert "nas <-> vps1: WireGuard peers (declared)" in out
    assert "prod/db" in out and "db-1@10.100.1.2 on vps1" in out


def test_dot_and_svg_to_a_file(runner: CliRunner, net: Path, tmp_path: Path) -> None:
    before = net.read_bytes()
    result = run(runner, "graph", "--format", "dot", "-o", str(tmp_path / "m.dot"))
    assert result.exit_code == 0 and result.stdout == "", result.stderr
    dot = (tmp_path / "m.dot").read_text()
    assert dot.startswith("graph vpcctl {") and dot.count(" -- host") >= 3
    require_tools("dot")
    result = run(runner, "graph", "-f", "svg", "-o", str(tmp_path / "m.svg"))
    assert result.exit_code == 0, result.stderr
    assert "<svg" in (tmp_path / "m.svg").read_text()
    result = run(runner, "graph", "-f", "png", "-o", str(tmp_path / "m.png"))
    assert result.exit_code == 0 and (tmp_path / "m.png").read_bytes()[:4] == b"\x89PNG"
    assert net.read_bytes() == before


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--format", "jpg"], "--format 'jpg' is not one of text, dot, svg, png"),
        (["--format", "png"], "needs -o FILE"),
        (["-o", "/nonexistent-dir/x.svg"], "not a file in an existing directory"),
        (["-o", "/"], "not a file in an existing directory"),
        (["-o", "vpc.toml"], "that is the inventory"),  # found by the hunt: it was replaced
        (["-f", "dot", "-o", "./vpc.toml"], "that is the inventory"),
    ],
)
def test_bad_options_are_usage_errors(
    runner: CliRunner, net: Path, args: list[str], says: str
) -> None:
    before = net.read_bytes()
    two_lines(run(runner, "graph", *args), 2, says)
    assert net.read_bytes() == before


@pytest.mark.parametrize("fmt", ["text", "dot", "svg", "png"])
def test_a_file_is_born_0600(runner: CliRunner, net: Path, tmp_path: Path, fmt: str) -> None:
    """Found by the hunt: -o wrote with the umask's mode (0644), the endpoints for all to read."""
    if fmt in ("svg", "png"):
        require_tools("dot")
    result = run(runner, "graph", "-f", fmt, "-o", str(tmp_path / "m"))
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_without_graphviz_one_error_and_the_install_hint(
    runner: CliRunner, net: Path, tmp_path: Path
) -> None:
    result = run(runner, "graph", "-f", "svg", "-o", str(tmp_path / "m.svg"),
                 env={"PATH": str(tmp_path)})  # fmt: skip
    two_lines(result, 1, "apt-get install graphviz")
    assert "error: graph: dot not found" in result.stderr
    assert not (tmp_path / "m.svg").exists()


def test_live_colours_links_by_handshake_and_marks_an_unreachable_host(
    runner: CliRunner, net: Path
) -> None:
    now = time.time()
    fakes = FakeNet(
        {
            "nas": FakeHost(peers=[
                {"name": "vps1", "public_key": public_key("vps1"), "latest_handshake": now - 5},
                {"name": "vps2", "public_key": public_key("vps2"), "latest_handshake": 0},
            ], answers={"agent table": agent_json({"daemon": True, "endpoints": []})}),
            "vps1": FakeHost(answers={"agent table": agent_json({"daemon": True, "endpoints": []})}),
            "vps2": FakeHost(refuse=unreachable("root@198.51.100.20")),
        }
    )  # fmt: skip
    result = run(runner, "graph", "--live", "-f", "dot", net=fakes)
    assert result.exit_code == 4, (result.stdout, result.stderr)
    assert "vps2" in result.stderr and "cannot connect" in result.stderr
    dot = result.stdout
    links = [line for line in dot.splitlines() if 'class="link' in line]
    assert len(links) == 3
    assert 'host0 -- host1 [id="link0", class="link fresh", color="forestgreen"' in dot
    assert 'class="link never"' in dot  # nas answered and saw no handshake with vps2
    assert "UNREACHABLE" in dot
    assert fakes.all_closed
