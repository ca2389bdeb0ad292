"""The one-command demo: a 3-host VPC on this machine, in network namespaces, driven exactly as
an admin drives real hosts (vpcctl over SSH to an sshd per host; wireguard-go per host).

    sudo scripts/demo.sh            # set up, run, tear down
    sudo scripts/demo.sh --keep     # leave the lab running (prints how to enter it)

Nothing leaves the machine: the underlay is 192.0.2.0/24 inside a private switch namespace.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.harness import Lab, LabContainer, LabError, ping  # noqa: E402
from tests.lab.mesh import wait_ping  # noqa: E402
from tests.lab.sshmesh import SshMesh  # noqa: E402


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(m: SshMesh, *args: str) -> str:
    print(f"$ vpcctl {' '.join(args)}", flush=True)
    res = m.vpcctl(*args)
    out = (res.stdout + res.stderr).rstrip()
    if out:
        print(out, flush=True)
    return res.stdout


def container(m: SshMesh, name: str) -> LabContainer:
    c = next(
        x for x in json.loads(m.vpcctl("container", "ls", "--json").stdout) if x["name"] == name
    )
    gw = c["ip"].rsplit(".", 1)[0] + ".1"
    lc = m.lab.add_container(m.hosts[c["host"]], name, f"vb-{c['vpc']}", f"{c['ip']}/24", gw)
    lc.resolv_conf(gw, f"{c['vpc']}.vpc.internal vpc.internal", "ndots:1")
    return lc


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--keep", action="store_true", help="keep the lab running at the end")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vpcctl-demo-"))
    lab = Lab(work)
    try:
        step("3 hosts (network namespaces with sshd + wireguard-go), 1 admin namespace")
        m = SshMesh(lab, name="demo")
        print(f"inventory: {m.inventory}")
        for name in ("nas", "vps1", "vps2"):
            m.add_host(name, join=False)
        step("vpcctl join x3: over SSH, keys born on each host, public keys recorded")
        for name, nat in (("nas", True), ("vps1", False), ("vps2", False)):
            m.join(name, nat=nat)
            print(f"joined {name}" + (" (behind NAT)" if nat else ""))
        show(m, "host", "ls")
        step("a VPC, three containers, a service with two backends")
        show(m, "vpc", "add", "prod", "--cidr", "10.100.0.0/16")
        show(m, "container", "add", "web-1", "--vpc", "prod", "--host", "nas")
        show(m, "container", "add", "db-1", "--vpc", "prod", "--host", "vps1")
        show(m, "container", "add", "db-2", "--vpc", "prod", "--host", "vps2")
        show(m, "service", "add", "db", "--vpc", "prod", "--port", "postgres=5432/tcp",
             "--backend", "db-1", "--backend", "db-2")  # fmt: skip
        step("vpcctl up: every host converged over SSH, in parallel")
        show(m, "up")
        step("vpcctl plan --exit-code: nothing left to do")
        show(m, "plan", "--exit-code")
        step("containers plugged into the VPC bridges")
        web = container(m, "web-1")
        for n in ("db-1", "db-2"):
            container(m, n)
        for name in m.hosts:
            for other in m.hosts:
                if name != other:
                    wait_ping(lab, m.hosts[name], m.address(other))
        step("vpcctl status: handshakes and the mesh matrix")
        show(m, "status")
        step("names, resolved and pinged from web-1 (on nas)")
        for q in ("db", "db-1", "db-2.prod", "db.prod.vpc.internal"):
            res = lab.run(web, ["getent", "hosts", q], check=False)
            print(
                f"web-1$ getent hosts {q}\n{res.stdout.strip() or '(no answer: ' + res.stderr.strip() + ')'}"
            )
        for q in ("db-1", "db-2"):
            sent, got = ping(lab, web, q, count=3)
            print(f"web-1$ ping {q}: {got}/{sent} replies")
        ok = ping(lab, web, "db-1", count=1)[1] == 1
        if args.keep:
            step("lab kept running")
            print(f"enter a host:      nsenter -t {m.hosts['nas'].pid} -m -n bash")
            print(f"enter a container: ip netns exec {web.netns} bash")
            print(f"admin commands:    VPCCTL_INVENTORY={m.inventory} HOME={m.home} "
                  f"ip netns exec {m.admin.netns} {sys.executable} -m vpcctl status")  # fmt: skip
            print("stop it: kill this process (Ctrl-C)")
            while True:
                time.sleep(3600)
        step("done" if ok else "FAILED")
        return 0 if ok else 1
    except (LabError, KeyboardInterrupt) as exc:
        print(f"demo stopped: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.close()


if __name__ == "__main__":
    sys.exit(main())
