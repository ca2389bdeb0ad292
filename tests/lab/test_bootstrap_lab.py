"""`vpcctl host bootstrap`: installs the running version on a host over SSH (offline, from a
wheelhouse, since lab hosts have no network), records it as the host's agent, and `join` then
works through it."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest

from tests.lab.harness import Lab
from tests.lab.sshmesh import SshMesh
from vpcctl import __version__

pytestmark = pytest.mark.lab


def test_bootstrap_installs_this_version_and_join_uses_it(lab: Lab, tmp_path: Path) -> None:
    wheelhouse = tmp_path / "wheels"
    deps = [r for r in requires("vpcctl") or [] if "extra ==" not in r]
    # the admin machine fetches the dependency wheels once (package registry); hosts stay offline
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--only-binary", ":all:",
         "--python-version", "3.11", "-d", str(wheelhouse), *deps],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    m = SshMesh(lab)
    host = m.add_host("b1", join=False)
    m.vpcctl("host", "add", "b1", "--ssh", f"root@{host.underlay_ip}")
    prefix = "/var/lib/vpcctl/venv"  # private to the lab host
    res = m.vpcctl("host", "bootstrap", "b1", "--prefix", prefix, "--wheelhouse", str(wheelhouse),
                   "--accept-new", timeout=900)  # fmt: skip
    assert f"agent command {prefix}/bin/vpcctl" in res.stderr
    hosts = {h["name"]: h for h in m.vpcctl_json("host", "ls")}
    assert hosts["b1"]["agent"] == f"{prefix}/bin/vpcctl"
    out = lab.run(host, [f"{prefix}/bin/vpcctl", "--version"]).stdout
    assert out.strip() == f"vpcctl {__version__}"
    res = m.vpcctl("join", "b1", "--ssh", f"root@{host.underlay_ip}", "--json")
    assert json.loads(res.stdout)["public_key"]
    assert lab.run(host, ["stat", "-c", "%a", "/etc/vpcctl/private.key"]).stdout.strip() == "600"
