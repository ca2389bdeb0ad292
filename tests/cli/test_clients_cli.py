"""`vpcctl client add|ls|rm` through the real typer app: the config printed once, the inventory
holding the public key only, the PNG born 0600, and hostile input changing nothing."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from vpcctl.admin import inventory
from vpcctl.cli.commands import app
from vpcctl.core.keys import public_from_private


def vpcctl(runner: CliRunner, *args: str) -> Result:
    return runner.invoke(app, list(args), prog_name="vpcctl")


def test_add_prints_the_config_once_and_stores_only_the_public_key(
    runner: CliRunner, net: Path
) -> None:
    res = vpcctl(runner, "client", "add", "laptop", "--via", "vps1", "--vpc", "prod",
                 "--png", "laptop.png")  # fmt: skip
    assert res.exit_code == 0, res.output
    private = re.search(r"^PrivateKey = (\S+)$", res.stdout, re.M)
    assert private is not None
    assert "█" in res.stdout  # the QR code, drawn after the config
    text = net.read_text()
    assert private.group(1) not in text
    assert public_from_private(private.group(1)) in text
    png = net.parent / "laptop.png"
    assert stat.S_IMODE(png.stat().st_mode) == 0o600
    assert png.read_bytes().startswith(b"\x89PNG")
    listed = json.loads(vpcctl(runner, "client", "ls", "--json").stdout)
    assert listed == [{
        "name": "laptop", "via": "vps1", "address": "10.90.0.254",
        "public_key": public_from_private(private.group(1)), "vpcs": ["prod"], "dns": "10.100.1.1",
    }]  # fmt: skip
    assert private.group(1) not in vpcctl(runner, "client", "ls").stdout
    assert vpcctl(runner, "client", "rm", "laptop").exit_code == 0
    assert inventory.load(net).clients == {}


def test_help_says_the_private_key_is_shown_once(runner: CliRunner) -> None:
    out = vpcctl(runner, "client", "add", "--help").stdout
    assert "ONCE" in out and "PRIVATE KEY" in out and "vpcctl client add laptop" in out


def test_an_existing_png_is_never_replaced(runner: CliRunner, net: Path) -> None:
    (net.parent / "x.png").write_text("mine")
    before = net.read_bytes()
    res = vpcctl(runner, "client", "add", "laptop", "--via", "vps1", "--png", "x.png")
    assert res.exit_code != 0 and "already exists" in res.stderr and "hint:" in res.stderr
    assert net.read_bytes() == before and (net.parent / "x.png").read_text() == "mine"


TRICKY = ["", "-", "nas", "vps1", "prod", "staging", "Laptop", "a" * 64, "a\n", "laptop\nx",
          "../x", "nope", "--json", "é", "a b", "1", "-a"]  # fmt: skip
HOSTILE = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(name=HOSTILE, via=HOSTILE, vpcs=st.lists(HOSTILE, max_size=2),
       png=st.one_of(st.none(), HOSTILE, st.just("nodir/x.png")))  # fmt: skip
def test_hostile_names_and_options_change_nothing(
    runner: CliRunner, net: Path, name: str, via: str, vpcs: list[str], png: str | None
) -> None:
    before = net.read_bytes()
    files = sorted(p.name for p in net.parent.iterdir())
    args = ["client", "add", name, "--via", via]
    for v in vpcs:
        args += ["--vpc", v]
    if png is not None:
        args += ["--png", png]
    res = vpcctl(runner, *args)
    if res.exit_code == 0:  # a valid combination: undo it for the next example
        assert inventory.load(net).clients[name].via == via
        net.write_bytes(before)
        for p in net.parent.iterdir():
            if p.name not in files:
                p.unlink()
        return
    assert res.exit_code in (1, 2), res.output
    lines = res.stderr.splitlines()
    assert lines[0].startswith("error: ") and lines[1].startswith("hint: "), res.stderr
    assert "PrivateKey" not in res.stdout
    assert net.read_bytes() == before
    assert sorted(p.name for p in net.parent.iterdir()) == files
