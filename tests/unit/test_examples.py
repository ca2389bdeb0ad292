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


def test_homelab_readme_commands_build_the_example(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    build = _blocks((HOMELAB / "README.md").read_text(), "sh")[0]
    assert build[0] == "vpcctl init homelab" and len(build) == 9
    monkeypatch.chdir(tmp_path)
    for line in build:
        _vpcctl(runner, line)
    assert (tmp_path / "vpc.toml").read_bytes() == (HOMELAB / "vpc.toml").read_bytes()


def test_homelab_readme_shows_real_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, runner: CliRunner
) -> None:
    shutil.copy(HOMELAB / "vpc.toml", tmp_path / "vpc.toml")
    monkeypatch.chdir(tmp_path)
    sessions = _blocks((HOMELAB / "README.md").read_text(), "console")
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
