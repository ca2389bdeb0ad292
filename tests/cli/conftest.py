from __future__ import annotations

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
