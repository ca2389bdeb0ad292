"""`@ssh_options`: the SSH options are defined once and shown by every command that reaches
hosts, in the place of its ``connect`` parameter; the command gets the connector they make."""

from __future__ import annotations

import re
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from vpcctl.cli.app import State
from vpcctl.cli.commands import app
from vpcctl.cli.remote import Connect, ssh_options

SSH = ["--connect-timeout", "--timeout", "--accept-new", "--known-hosts"]


def _options(runner: CliRunner, *command: str) -> list[str]:
    """The long names of the command's options, in the order --help lists them."""
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).stdout
    rows = re.findall(r"^│ [ *]*(--[a-z][a-z-]+)", text, re.MULTILINE)
    return [o for o in rows if o != "--help"]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (("up",), ["--parallel", *SSH, "--json", "--wait", "--confirm"]),
        (("sync",), ["--parallel", "--connect-timeout", "--timeout", "--known-hosts", "--json",
                     "--wait"]),
        (("join",), ["--ssh", "--endpoint", "--agent", *SSH, "--json", "--wait"]),
        (("container", "ls"), ["--vpc", "--host", "--live", "--via", "--connect-timeout",
                               "--known-hosts", "--json"]),
    ],
)  # fmt: skip
def test_the_ssh_options_stand_where_connect_is(
    runner: CliRunner, command: tuple[str, ...], expected: list[str]
) -> None:
    assert _options(runner, *command) == expected


def test_the_command_gets_the_passed_in_connector() -> None:
    got: dict[str, Any] = {}

    def fake(host: Any) -> Any:
        raise AssertionError("not called")

    @ssh_options(accept_new=False, timeout=5.0)
    def probe(ctx: typer.Context, *, connect: Connect) -> None:
        got["connect"] = connect

    one = typer.Typer()
    one.command()(probe)
    done = CliRunner().invoke(one, ["--connect-timeout", "3"], obj=State(connect=fake))
    assert done.exit_code == 0, done.output
    assert got["connect"] is fake


def test_a_command_without_connect_is_refused() -> None:
    def no_connect(ctx: typer.Context) -> None:
        return None

    with pytest.raises(TypeError, match="needs a `connect` parameter"):
        ssh_options()(no_connect)
