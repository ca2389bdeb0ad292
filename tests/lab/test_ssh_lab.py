"""ssh.py against a real sshd: ~/.ssh/config (HostName, User, Port, IdentityFile, ProxyJump),
TCP_NODELAY, atomic 0600 uploads, timeouts. The client runs inside the lab's admin namespace."""

from __future__ import annotations

import json
import sys

import pytest

from tests.lab.harness import Lab
from tests.paths import ROOT

pytestmark = pytest.mark.lab

DRIVER = r"""
import json, socket, sys, time
from pathlib import Path
from vpcctl.core.model import SshTarget, parse_ssh
from vpcctl.admin.ssh import SshOptions, connect
from vpcctl.admin.transport import TransportError
home = Path(sys.argv[1])
opts = SshOptions(accept_new=True, known_hosts=home / "kh", system_known_hosts=None,
                  ssh_config=home / "config", connect_timeout=3, command_timeout=2)
out = {}
t = connect(parse_ssh("h2alias", "t"), opts)
out["addr"] = t.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
sock = t.client.get_transport().sock
out["nodelay"] = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
t.put("/etc/vpcctl/test/secret.json", b'{"x": 1}')
out["put"] = t.run(["stat", "-c", "%a %s", "/etc/vpcctl/test/secret.json"]).stdout.strip()
start = time.monotonic()
try:
    t.run(["sleep", "10"])
    out["timeout"] = "no"
except TransportError as exc:
    out["timeout"] = round(time.monotonic() - start, 1)
t.close()
j = connect(parse_ssh("viajump", "t"), opts)
out["jump_addr"] = j.run(["ip", "-4", "-o", "addr", "show", "eth0"]).stdout
j.close()
start = time.monotonic()
try:
    connect(parse_ssh("root@192.0.2.77", "t"), opts)
    out["unreachable"] = "connected?"
except TransportError as exc:
    out["unreachable"] = [round(time.monotonic() - start, 1), exc.message]
print(json.dumps(out))
"""


def test_ssh_config_proxyjump_nodelay_put_and_timeouts(lab: Lab) -> None:
    admin = lab.add_admin()
    h1 = lab.add_host("j1")
    h2 = lab.add_host("j2")
    s1 = lab.start_sshd(h1)
    s2 = lab.start_sshd(h2, port=2222)
    home = lab.workdir / "sshhome"
    home.mkdir()
    (home / "config").write_text(
        f"Host h2alias\n  HostName {h2.underlay_ip}\n  User root\n  Port 2222\n"
        f"  IdentityFile {s1.client_key}\n"
        f"Host viajump\n  HostName {h2.underlay_ip}\n  Port 2222\n  User root\n"
        f"  IdentityFile {s1.client_key}\n  ProxyJump root@{h1.underlay_ip}\n"
        f"Host *\n  IdentityFile {s1.client_key}\n"
    )
    res = lab.run(admin, [sys.executable, "-c", DRIVER, str(home)], env={"PYTHONPATH": str(ROOT)},
                  timeout=60)  # fmt: skip
    out = json.loads(res.stdout)
    assert h2.underlay_ip in out["addr"]
    assert out["nodelay"] == 1
    assert out["put"] == "600 8"
    assert isinstance(out["timeout"], float) and out["timeout"] < 5
    assert h2.underlay_ip in out["jump_addr"]
    # through the jump host: h2's sshd saw a connection from h1, not from the admin
    assert f"Connection from {h1.underlay_ip} " in s2.log.read_text()
    took, message = out["unreachable"]
    assert took < 6 and "192.0.2.77" in message
    known = (home / "kh").read_text()
    assert f"[{h2.underlay_ip}]:2222" in known and h1.underlay_ip in known
