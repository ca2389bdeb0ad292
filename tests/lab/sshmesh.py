"""A mesh driven the way an admin drives it: `vpcctl` in an admin namespace, over real SSH to
an sshd in every lab host. Used by the push lab tests and by the demo."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from typing import Any

from tests.lab.harness import Lab, LabHost, SshdInfo
from tests.paths import ROOT


def agent_command() -> str:
    """How hosts run vpcctl: the same interpreter and source tree (hosts share this machine's
    files; only /etc/vpcctl, /var/lib/vpcctl and the WireGuard socket dir are private)."""
    return (f"env PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={shlex.quote(str(ROOT))} "
            f"{shlex.quote(sys.executable)} -m vpcctl")  # fmt: skip


class SshMesh:
    def __init__(self, lab: Lab, name: str = "lab", routing: str = "wireguard") -> None:
        self.lab = lab
        self.admin = lab.add_admin()
        self.home = lab.workdir / "admin-home"
        (self.home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
        key = lab.client_key()
        shutil.copy(key, self.home / ".ssh" / "id_ed25519")
        (self.home / ".ssh" / "id_ed25519").chmod(0o600)
        self.inventory = lab.workdir / "net" / "vpc.toml"
        self.inventory.parent.mkdir(parents=True, exist_ok=True)
        self.hosts: dict[str, LabHost] = {}
        self.sshd: dict[str, SshdInfo] = {}
        self.vpcctl("init", name, "--routing", routing)

    @property
    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "PYTHONPATH": str(ROOT),
            "VPCCTL_INVENTORY": str(self.inventory),
        }

    def vpcctl(
        self, *args: str, check: bool = True, timeout: float = 300, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.lab.run(
            self.admin, [sys.executable, "-m", "vpcctl", *args], check=check, env=self.env,
            timeout=timeout, input=input,
        )  # fmt: skip

    def vpcctl_json(self, *args: str) -> Any:
        return json.loads(self.vpcctl(*args, "--json").stdout)

    def add_host(self, name: str, *, nat: bool = False, join: bool = True) -> LabHost:
        host = self.lab.add_host(name)
        self.hosts[name] = host
        self.sshd[name] = self.lab.start_sshd(host)
        if join:
            self.join(name, nat=nat)
        return host

    def join(
        self, name: str, *, nat: bool = False, accept_new: bool = True, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        host = self.hosts[name]
        args = ["join", name, "--ssh", f"root@{host.underlay_ip}", "--agent", agent_command()]
        if not nat:
            args += ["--endpoint", f"{host.underlay_ip}:51820"]
        if accept_new:
            args.append("--accept-new")
        return self.vpcctl(*args, check=check)

    def address(self, name: str) -> str:
        hosts = {h["name"]: h for h in self.vpcctl_json("host", "ls")}
        return str(hosts[name]["address"])
