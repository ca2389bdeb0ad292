"""Every example inventory is valid, canonical and renders; the homelab README is true."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.checks import check_wg_quick
from tests.paths import EXAMPLES
from vpcctl.admin import inventory
from vpcctl.admin.render import render_all, wg_quick
from vpcctl.cli.commands import app
from vpcctl.core.model import gateway
from vpcctl.core.spec import from_json, to_json

INVENTORIES = sorted(EXAMPLES.glob("*/vpc.toml"))
HOMELAB = EXAMPLES / "homelab"


def test_there_are_examples() -> None:
    assert HOMELAB / "vpc.toml" in INVENTORIES


@pytest.mark.parametrize("path", INVENTORIES, ids=[p.parent.name for p in INVENTORIES])
def test_example_loads_checks_and_renders(path: Path) -> None:
    text = path.read_text()
    inv = inventory.load(path)
    assert inventory.problems(inv, str(path)) == []
    assert inventory.dump(inv) == text
    assert "PrivateKey" not in text and "private_key" not in text
    specs = render_all(inv)
    assert sorted(specs) == sorted(inv.hosts)
    for spec in specs.values():
        assert from_json(to_json(spec)) == spec
        check_wg_quick(wg_quick(spec), len(spec.peers))


def _blocks(readme: str, lang: str) -> list[list[str]]:
    return [
        block.strip("\n").splitlines()
        for block in re.findall(rf"^```{lang}\n(.*?)^```$", readme, flags=re.S | re.M)
    ]


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("VPCCTL_INVENTORY", raising=False)
    return CliRunner()


def _vpcctl(runner: CliRunner, line: str) -> str:
    args = shlex.split(line)
    assert args[0] == "vpcctl", line
    result = runner.invoke(app, args[1:], prog_name="vpcctl")
    assert result.exit_code == 0, (line, result.stderr)
    return result.stdout


def _build_matches(
    example: Path,
    build: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    runner: CliRunner,
) -> None:
    """Run the README's build commands in an empty directory: they make the example's vpc.toml."""
    monkeypatch.chdir(tmp_path)
    for line in build:
        _vpcctl(runner, line)
    assert (tmp_path / "vpc.toml").read_bytes() == (example / "vpc.toml").read_bytes()


def _console_in_copy(
    example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[list[str]]:
    """The README's console sessions, with the example's vpc.toml copied to the current dir."""
    shutil.copy(example / "vpc.toml", tmp_path / "vpc.toml")
    monkeypatch.chdir(tmp_path)
    return _blocks((example / "README.md").read_text(), "console")


def test_homelab_readme_commands_build_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    build = _blocks((HOMELAB / "README.md").read_text(), "sh")[0]
    assert build[0] == "vpcctl init homelab" and len(build) == 9
    _build_matches(HOMELAB, build, tmp_path, monkeypatch, runner)


def test_homelab_readme_shows_real_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    sessions = _console_in_copy(HOMELAB, tmp_path, monkeypatch)
    commands = 0
    for session in sessions:
        command, expected = None, []  # type: ignore[var-annotated]
        for line in [*session, "$ end"]:
            if line.startswith("$ "):
                if command is not None:
                    assert _vpcctl(runner, command).splitlines() == expected, command
                    commands += 1
                command, expected = line[2:], []
            else:
                expected.append(line)
    assert commands >= 4


# ---------------------------------------------------------------------------------------------
# examples/compose: a two-host app with Docker Compose

COMPOSE = EXAMPLES / "compose"
COMPOSE_FILES = {"web": "home", "db": "vps"}  # compose project -> the host it runs on


def test_compose_readme_commands_build_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    build = _blocks((COMPOSE / "README.md").read_text(), "sh")[0]
    assert build[0] == "vpcctl init compose" and build[-1].startswith("vpcctl service add db")
    _build_matches(COMPOSE, build, tmp_path, monkeypatch, runner)


def test_compose_readme_shows_real_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    (session,) = _console_in_copy(COMPOSE, tmp_path, monkeypatch)
    command, *expected = session
    assert command == "$ vpcctl service ls"
    shown = [line.rstrip() for line in _vpcctl(runner, command[2:]).splitlines()]
    assert shown == expected


def _yaml_values(text: str) -> dict[str, list[str]]:
    """``key: value`` pairs of a simple YAML file, by key (comments stripped). PyYAML is not a
    dependency; the compose files are kept simple enough for this and for `docker compose config`."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        body = line.split(" #", 1)[0].rstrip()
        if body.lstrip().startswith("#") or ":" not in body:
            continue
        key, _, value = body.strip().partition(":")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("project", sorted(COMPOSE_FILES))
def test_compose_files_join_the_vpc_with_the_resolver_of_their_host(project: str) -> None:
    inv = inventory.load(COMPOSE / "vpc.toml")
    host = inv.hosts[COMPOSE_FILES[project]]
    text = (COMPOSE / project / "compose.yaml").read_text()
    assert "\t" not in text
    values = _yaml_values(text)
    (vpc,) = inv.vpcs
    network = f"vpc-{vpc}"  # the Docker network the agent makes for VPC prod
    # every service joins the VPC network, which is external (vpcctl's, not compose's)
    assert values["networks"][:-1] == [f"[{network}]"] * (len(values["networks"]) - 1)
    assert values["networks"][-1] == ""  # the top-level networks: table
    assert f"\nnetworks:\n  {network}:\n    external: true" in text
    # and asks its own host's slice gateway, where vpcctl's resolver answers
    assert values["dns"] == [f"[{gateway(host.slices[vpc]).ip}]"]
    assert "POSTGRES_PASSWORD:" not in text and "PrivateKey" not in text  # secrets stay out


def test_compose_database_carries_the_label_the_service_selects() -> None:
    inv = inventory.load(COMPOSE / "vpc.toml")
    svc = inv.services["prod/db"]
    assert svc.selector == (("app", "db"),) and svc.backends == ()
    text = (COMPOSE / "db" / "compose.yaml").read_text()
    labels = text.split("    labels:\n", 1)[1].split("\n    healthcheck:", 1)[0]
    assert [line.strip() for line in labels.splitlines()] == [f"{k}: {v}" for k, v in svc.selector]
    assert "healthcheck:" in text  # not a backend until it is healthy
    (port,) = svc.ports
    assert "pg_isready" in text and port.port == 5432
    web = (COMPOSE / "web" / "compose.yaml").read_text()
    assert "ADMINER_DEFAULT_SERVER: db " in web  # the service name, not an address
