from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.builders import homelab
from tests.paths import ROOT
from vpcctl.admin import inventory


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("VPCCTL_INVENTORY", raising=False)
    return CliRunner()


@pytest.fixture
def net(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory holding the homelab inventory, made the current directory."""
    path = tmp_path / "vpc.toml"
    inventory.create(path, homelab())
    monkeypatch.chdir(tmp_path)
    return path


def process_env() -> dict[str, str]:
    """Environment for `python -m vpcctl` subprocesses: this worktree's code, no inherited
    inventory."""
    env = {k: v for k, v in os.environ.items() if k != "VPCCTL_INVENTORY"}
    env["PYTHONPATH"] = str(ROOT)
    return env


VPCCTL = [sys.executable, "-m", "vpcctl"]


def cells(stdout: str) -> list[list[str]]:
    """A printed table as rows of whitespace-separated cells."""
    return [row.split() for row in stdout.splitlines()]


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines a command printed (one per problem)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def json_keys(stdout: str) -> list[str]:
    """``VPC/NAME`` of each object in a ``--json`` listing."""
    return [f"{o['vpc']}/{o['name']}" for o in json.loads(stdout)]
