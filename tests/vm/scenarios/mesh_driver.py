"""Issue 6: a vpcctl mesh on a real kernel (kernel WireGuard + routing "ipip"), inside the VM.

Started by ``mesh.sh`` in the VM made by ``tests/vm/run_vm.py``; refuses to run elsewhere.

Under TCG every process start costs ~0.2 s (more on a busy machine), a Python start 2-4 s and
``import pyroute2`` 8-18 s. So this is ONE long-lived Python process that imports vpcctl, typer and
pyroute2 once and then:

* builds the lab with :class:`tests.lab.harness.Lab` (a switch netns, hosts = netns + private
  mount ns with tmpfs ``/etc/vpcctl`` etc.), subclassed as :class:`VmLab` so that commands enter
  a namespace with ``setns()`` in the forked child right before ``exec`` (no ``nsenter`` or
  ``ip netns exec`` in between), host keepers are one ``sleep`` and containers are made with a
  few ``ip -batch`` runs;
* runs every agent command (``vpcctl agent keygen|apply|status ...``) in a forked child that
  ``setns()`` into the host's network and mount namespaces and calls the real CLI in-process (the
  click command that ``python -m vpcctl`` runs), stdout/stderr to files, exit code as its status.
  Agents of different hosts run in parallel. Keys are born in each host's private
  ``/etc/vpcctl``;
* checks with plain tools (ip, wg, tcpdump, ping, busybox nc), independent ones in parallel.

Each check writes ``PASS name`` or ``FAIL name: output`` to ``$VPCCTL_VM_OUT/results.txt``;
``INFO`` lines carry timings and details. Exit status 1 if any check failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

T0 = time.monotonic()
if os.environ.get("VPCCTL_VM") != "1":
    sys.exit(
        "mesh_driver.py runs inside the VM: "
        "python3 tests/vm/run_vm.py --script tests/vm/scenarios/mesh.sh --out DIR"
    )
REPO = Path(os.environ.get("VPCCTL_REPO") or Path(__file__).resolve().parents[3])
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
OUT = Path(os.environ.get("VPCCTL_VM_OUT", "/out"))

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
AGENT_TIMEOUT = 120.0
PROFILE = os.environ.get("VPCCTL_VM_PROFILE") == "1"  # cProfile each agent call (artifacts/)
HOSTS = ("h1", "h2", "h3")


def uptime() -> float:
    with open("/proc/uptime") as f:
        return float(f.read().split()[0])


# --------------------------------------------------------------------------- results


class Results:
    """PASS/FAIL/INFO lines to results.txt (and the console); phase timings; cost counters."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.write_text("")
        self.failed: list[str] = []
        self.passed = 0
        self.phases: list[tuple[str, float]] = []
        self.cost: dict[str, list[float]] = {}  # what -> [count, seconds]

    def _write(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")
        print(f"mesh: {line}", flush=True)

    def record(self, name: str, ok: object, output: str = "") -> bool:
        if ok:
            self.passed += 1
            self._write(f"PASS {name}")
        else:
            self.failed.append(name)
            self._write(f"FAIL {name}: {' '.join(str(output).split())[:2000]}")
        return bool(ok)

    def info(self, name: str, text: str) -> None:
        self._write(f"INFO {name}: {' '.join(str(text).split())[:2000]}")

    def check(self, name: str, fn: Callable[[], tuple[object, str]]) -> bool:
        """PASS if ``fn()`` returns (truthy, _); FAIL with its output, or its traceback."""
        try:
            ok, out = fn()
        except Exception:
            return self.record(name, False, traceback.format_exc(limit=4))
        return self.record(name, ok, out)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            took = time.monotonic() - start
            self.phases.append((name, took))
            self.info(f"phase_{name}", f"{took:.1f}s (driver t={time.monotonic() - T0:.1f}s)")

    def count(self, what: str, seconds: float, n: int = 1) -> None:
        c = self.cost.setdefault(what, [0, 0.0])
        c[0] += n
        c[1] += seconds


R = Results(OUT / "results.txt")

# --------------------------------------------------------------------------- imports

with R.phase("imports"):
    # vpcctl.host.agent ... vpcctl.host.wireguard: what the agent imports lazily, imported here once so
    # that the forked children import nothing
    import vpcctl.cli.agent
    import vpcctl.dns.resolver
    import vpcctl.host.agent
    import vpcctl.host.fingerprint
    import vpcctl.host.firewall
    import vpcctl.host.kernel
    import vpcctl.host.netlink
    import vpcctl.host.state
    import vpcctl.host.wguapi
    import vpcctl.host.wireguard
    from tests.lab.harness import PRIVATE_DIRS, Lab, LabContainer, LabHost, LabNode
    from tests.lab.mesh import Mesh
    from tests.snapshot import diff as snapshot_diff
    from tests.snapshot import snapshot
    from vpcctl.admin import edits, inventory
    from vpcctl.core.model import Inventory, SshTarget, parse_portspec

    # `vpcctl agent ...` is the lean argparse front-end (no typer, pydantic or rich), the same
    # function `vpcctl agent` dispatches to
    AGENT_RUN = vpcctl.cli.agent.run
    # pyroute2 imports more on first use: warm it up (sockets in the VM's own netns, closed)
    with vpcctl.host.netlink.Netlink() as _nl:
        _nl.links()
    vpcctl.host.netlink.kernel_wireguard_available()
    gc.collect()
    gc.freeze()  # forked children then do not copy-on-write the whole heap when gc runs


# --------------------------------------------------------------------------- namespaces

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_PRIVATE = 1 << 18
MS_REC = 16384
MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                        ctypes.c_char_p]  # fmt: skip
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]


def _ok(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(path: str, nstype: int) -> None:
    """Join a namespace (Python 3.11 has no os.setns). Mount ns: only when single-threaded."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _ok(_libc.setns(fd, nstype), f"setns {path}")
    finally:
        os.close(fd)


def _mount(src: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    _ok(
        _libc.mount(src.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                    data.encode() if data else None),
        f"mount {target}",
    )  # fmt: skip


def enter(node: LabNode) -> None:
    """In a forked, single-threaded child: what ``nsenter -t PID -m -n`` (hosts) or
    ``ip netns exec`` (containers, the switch) would do before running a command."""
    if isinstance(node, LabHost):
        setns(f"/proc/{node.pid}/ns/net", CLONE_NEWNET)
        setns(f"/proc/{node.pid}/ns/mnt", CLONE_NEWNS)
        os.chdir("/")
    else:
        setns(f"/run/netns/{node.netns}", CLONE_NEWNET)


def _keeper_setup(netns: str, tag: str) -> Callable[[], None]:
    """preexec_fn of a host keeper: the harness's ``ip netns exec NS unshare -m --propagation
    private sh -c 'mount -t tmpfs ... PRIVATE_DIRS'`` without the five processes."""

    def setup() -> None:
        setns(f"/run/netns/{netns}", CLONE_NEWNET)
        _ok(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _mount("none", "/", None, MS_REC | MS_PRIVATE, None)
        # sysfs shows the netns of whoever mounts it (as ip netns exec does)
        _ok(_libc.umount2(b"/sys", MNT_DETACH), "umount /sys")
        _mount("sysfs", "/sys", "sysfs", 0, None)
        for d in PRIVATE_DIRS:
            _mount(f"vpclab-{tag}", d, "tmpfs", 0, "mode=0755")
        os.chdir("/")

    return setup


@dataclass
class Ran:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return (self.out + self.err).strip()


class VmLab(Lab):
    """The namespace lab with process starts cut to the minimum (see the module docstring)."""

    def _argv(self, who: LabNode, cmd: str | Sequence[str]) -> list[str]:
        self._check_open()
        if isinstance(who, LabHost) and self.hosts.get(who.name) is not who:
            raise RuntimeError(f"{who.name} is not a host of this lab")
        return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)

    def _start_keeper(self, host: LabHost) -> int:
        for d in PRIVATE_DIRS:
            os.makedirs(os.path.realpath(d), exist_ok=True)
        proc = subprocess.Popen(
            [self.tool("sleep"), "infinity"], preexec_fn=_keeper_setup(host.netns, self.tag),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, text=True,
        )  # fmt: skip
        self._keepers.append(proc)
        self._started_pids.append(proc.pid)
        return proc.pid

    def popen(self, who: LabNode, cmd: Any, **kw: Any) -> subprocess.Popen[str]:
        kw.setdefault("preexec_fn", lambda: enter(who))
        return super().popen(who, cmd, **kw)

    def run(  # type: ignore[override]
        self, who: LabNode, cmd: str | Sequence[str], *, check: bool = False, timeout: float = 60,
        input: str | None = None, env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:  # fmt: skip
        r = self.run_many([(who, cmd)], timeout=timeout, input=input, env=env)[0]
        res = subprocess.CompletedProcess(cmd, r.rc, r.out, r.err)
        if check and r.rc != 0:
            raise RuntimeError(f"{cmd!r} in {who.name} exited {r.rc}: {r.text}")
        return res

    def run_many(
        self, items: Sequence[tuple[LabNode, str | Sequence[str]]], *, timeout: float = 60,
        input: str | None = None, env: dict[str, str] | None = None,
    ) -> list[Ran]:  # fmt: skip
        """Start all commands, then collect them: independent checks overlap their waits."""
        started = time.monotonic()
        procs = []
        for who, cmd in items:
            procs.append(
                subprocess.Popen(
                    self._argv(who, cmd),
                    preexec_fn=functools.partial(enter, who),
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    errors="replace",
                    env=self._env(env),
                    start_new_session=True,
                )
            )
        out = []
        for p in procs:
            try:
                o, e = p.communicate(input, timeout=max(1.0, started + timeout - time.monotonic()))
                out.append(Ran(p.returncode, o, e))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                o, e = p.communicate()
                out.append(Ran(-9, o, e + f"\n(timed out after {timeout:.0f}s)"))
        R.count("exec", time.monotonic() - started, len(items))
        return out

    def _batch(self, netns: str | None, lines: list[str]) -> None:
        argv = [self.tool("ip"), *(["-n", netns] if netns else []), "-b", "-"]
        res = subprocess.run(argv, input="\n".join(lines) + "\n", capture_output=True, text=True,
                             timeout=60, check=False)  # fmt: skip
        if res.returncode != 0:
            raise RuntimeError(f"ip -b in {netns or 'root'} failed: {res.stderr} {lines}")

    def add_containers(
        self, items: Sequence[tuple[LabHost, str, str, str, str, int]]
    ) -> dict[str, LabContainer]:
        """Containers (host, name, bridge, ip/prefix, gateway, mtu) like Lab.add_container, all
        with 1 + hosts + containers ``ip -batch`` runs instead of ~10 processes each."""
        made: dict[str, LabContainer] = {}
        per_host: dict[str, list[str]] = {}
        per_ctr: dict[str, list[str]] = {}
        for host, name, bridge, ip, gateway, mtu in items:
            netns = self._claim_name(name)
            hveth = f"v{next(self._counter)}-{name}"[:15]
            iface = IPv4Interface(ip)
            made[name] = LabContainer(
                name=name, netns=netns, host=host, ip=str(iface.ip), cidr=str(iface),
                gateway=gateway, bridge=bridge, host_veth=hveth,
            )  # fmt: skip
            per_host.setdefault(host.netns, []).extend([
                f"link add {hveth} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {netns}",
                f"link set {hveth} master {bridge} up",
            ])  # fmt: skip
            per_ctr[netns] = ["link set lo up", f"addr add {iface} dev eth0",
                              "link set eth0 up", f"route add default via {gateway} dev eth0"]  # fmt: skip
        self._batch(None, [f"netns add {c.netns}" for c in made.values()])
        for c in made.values():
            self._netns.append(c.netns)
            c.netns_inode = os.stat(f"/run/netns/{c.netns}").st_ino
            self._inodes.add(c.netns_inode)
            self.containers[c.name] = c
        for netns, lines in [*per_host.items(), *per_ctr.items()]:
            self._batch(netns, lines)
        return made


# --------------------------------------------------------------------------- the agent


@dataclass
class _Call:
    host: LabHost
    argv: list[str]
    pid: int
    out: Path
    err: Path
    started: float


class ForkMesh(Mesh):
    """tests.lab.mesh.Mesh with the agent run in forked children inside the hosts, and the
    inventory cached between changes (loading it costs real time under TCG)."""

    def __init__(self, lab: Lab) -> None:
        super().__init__(lab, routing="ipip")
        self._inv: Inventory | None = None
        self.calls = 0
        self.log = lab.workdir / "agent"
        self.log.mkdir(exist_ok=True)

    @property
    def inv(self) -> Inventory:
        if self._inv is None:
            self._inv = inventory.load(self.path)
        return self._inv

    def change(self, fn: Any) -> Inventory:
        t = time.monotonic()
        self._inv = inventory.update(self.path, fn)
        R.count("inventory", time.monotonic() - t)
        return self._inv

    def _start(self, host: LabHost, args: Sequence[str]) -> _Call:
        self.calls += 1
        base = self.log / f"{self.calls:02d}-{host.name}-{args[0]}"
        call = _Call(host, ["agent", *args], 0, Path(f"{base}.out"), Path(f"{base}.err"),
                     time.monotonic())  # fmt: skip
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: single-threaded, as setns(CLONE_NEWNS) requires
            code = 70
            try:
                gc.disable()
                for fd, path in ((1, call.out), (2, call.err)):
                    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(f, fd)
                    os.close(f)
                enter(host)
                prof = None
                if PROFILE:
                    import cProfile

                    prof = cProfile.Profile()
                    prof.enable()
                try:
                    assert call.argv[:1] == ["agent"], call.argv
                    code = AGENT_RUN(call.argv[1:])
                except SystemExit as exc:
                    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if prof is not None:
                    prof.disable()
                    prof.dump_stats(f"{base}.prof")
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(BaseException):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        call.pid = pid
        return call

    def _finish(self, call: _Call, deadline: float) -> subprocess.CompletedProcess[str]:
        while True:
            done, status = os.waitpid(call.pid, os.WNOHANG)
            if done:
                rc = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                os.kill(call.pid, signal.SIGKILL)
                os.waitpid(call.pid, 0)
                rc = -9
                break
            time.sleep(0.01)
        took = time.monotonic() - call.started
        R.count("agent", took)
        print(f"mesh: vpcctl {' '.join(call.argv[:2])} on {call.host.name}: rc={rc} {took:.1f}s",
              flush=True)  # fmt: skip
        return subprocess.CompletedProcess(
            ["vpcctl", *call.argv], rc, call.out.read_text(errors="replace"),
            call.err.read_text(errors="replace"),
        )  # fmt: skip

    def agents(
        self, items: Sequence[tuple[LabHost, Sequence[str]]], timeout: float = AGENT_TIMEOUT
    ) -> list[subprocess.CompletedProcess[str]]:
        """Run agent commands on several hosts at once."""
        calls = [self._start(h, a) for h, a in items]
        deadline = time.monotonic() + timeout
        return [self._finish(c, deadline) for c in calls]

    def agent(
        self, host: LabHost, *args: str, check: bool = True, timeout: float = AGENT_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        res = self.agents([(host, args)], timeout)[0]
        if check and res.returncode != 0:
            raise RuntimeError(f"vpcctl agent {' '.join(args)} on {host.name} exited "
                               f"{res.returncode}: {res.stdout} {res.stderr}")  # fmt: skip
        return res

    def apply_many(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        paths = {n: str(self.spec_file(n)) for n in names}
        res = self.agents([(self.hosts[n], ("apply", paths[n], "--json")) for n in names])
        return {n: _json_or_error(r) for n, r in zip(names, res, strict=True)}

    def statuses(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        res = self.agents([(self.hosts[n], ("status", "--json")) for n in names])
        return {n: _json_or_error(r) for n, r in zip(names, res, strict=True)}

    def add_hosts(self, names: Sequence[str]) -> None:
        """Lab hosts, keys born in each (in parallel), one inventory change for all."""
        hosts = [self.lab.add_host(n) for n in names]
        keys = self.agents([(h, ("keygen", "--json")) for h in hosts])
        for h, k in zip(hosts, keys, strict=True):
            if k.returncode != 0:
                raise RuntimeError(f"keygen on {h.name}: {k.stdout} {k.stderr}")
            self.hosts[h.name] = h

        def add(inv: Inventory) -> Inventory:
            for h, k in zip(hosts, keys, strict=True):
                inv = edits.add_host(inv, h.name, SshTarget(h.underlay_ip),
                                   endpoint=f"{h.underlay_ip}:51820",
                                   public_key=json.loads(k.stdout)["public_key"])  # fmt: skip
            return inv

        self.change(add)


def _json_or_error(res: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    if res.returncode == 0:
        with contextlib.suppress(ValueError):
            data: dict[str, Any] = json.loads(res.stdout)
            return data
    return {"rc": res.returncode, "stdout": res.stdout[-800:], "stderr": res.stderr[-800:]}


# --------------------------------------------------------------------------- helpers

PING_RE = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")


def pinged(r: Ran, want: int, first_contact: bool = False) -> tuple[bool, str]:
    """``want`` answers and none lost; on first contact (peers still handshaking, maybe both
    at once) a lost echo request is fine as long as ``want`` answers came."""
    m = PING_RE.search(r.out)
    got = m is not None and int(m.group(2)) == want
    ok = r.rc == 0 and got and (first_contact or int(m.group(1)) == want)  # type: ignore[union-attr]
    return ok, r.text[-600:]


def not_pinged(r: Ran) -> tuple[bool, str]:
    m = PING_RE.search(r.out)
    return m is not None and m.group(2) == "0", r.text[-600:]


def ping_cmd(dst: str, count: int = 3, extra: str = "") -> str:
    # -w: a fresh peer may still be handshaking; ping stops at `count` answers
    return f"ping -n -q -c {count} -i 0.2 -w 30 {extra} {dst}"


def nc_cmd(addr: str, port: int, n: int, wait: int = 10) -> str:
    """``n`` TCP connections in a row; one output line per connection: the answer, or ERR.
    ``wait``: connect timeout (short where the connection is meant to fail)."""
    return (f"for i in $(seq {n}); do r=$({BUSYBOX} nc -w {wait} {addr} {port} </dev/null 2>/dev/null)"
            f" || r=ERR; echo \"${{r:-EMPTY}}\"; done")  # fmt: skip


# busybox nc listens on an IPv6 socket (dual stack): /proc/net/tcp6
LISTEN_CMD = """
for i in $(seq 300); do
    for f in /proc/net/tcp6 /proc/net/tcp; do
        while read -r _ local _ st _; do
            [ "${{local##*:}}" = "{port:04X}" ] && [ "$st" = 0A ] && exit 0
        done < $f
    done
    sleep 0.1
done
exit 1
"""


def serve(lab: VmLab, servers: Sequence[tuple[LabNode, int, str]]) -> list[subprocess.Popen[str]]:
    """Persistent busybox nc servers (node, port, answer), returned once they listen."""
    procs = [
        lab.popen(who, [BUSYBOX, "nc", "-ll", "-p", str(port), "-e", "/bin/echo", answer])
        for who, port, answer in servers
    ]
    waits = lab.run_many([(who, ["bash", "-c", LISTEN_CMD.format(port=port)])
                          for who, port, _ in servers], timeout=60)  # fmt: skip
    for (who, port, _), w in zip(servers, waits, strict=True):
        if w.rc != 0:  # the checks using it fail next; say why
            R.record(f"nc_server_{who.name}_{port}_listening", False, w.text)
    return procs


def stop(lab: VmLab, procs: Sequence[subprocess.Popen[str]]) -> None:
    for p in procs:
        lab.kill(p)


OBJECTS_CMD = "; echo @@@; ".join([
    "ip -d link show dev vpc0", "ip -d link show dev vpc0-ipip", "ip -4 route show proto 211",
    "wg show vpc0 allowed-ips", "wg show vpc0 listen-port",
])  # fmt: skip

SNAPSHOT_CMD = (
    # links (kind, mtu, alias, ifindex; no operstate or timers), addresses, routes, the wg
    # configuration without counters, handshakes or the private key, the nft ruleset
    "ip -o -d link show | sed -E 's/ state [A-Z]+//; s/[a-z_]*timer +[0-9.]+//g';"
    "ip -4 -br addr show; ip -4 route show table all;"
    "wg show all dump | awk -F'\\t' 'NF==5 {print $1, $3, $4} NF==9 {print $1, $2, $4, $5, $9}';"
    "nft list ruleset"
)


def ipip_lines(lines: list[str]) -> list[str]:
    return [
        ln for ln in lines if re.search(r"IP 10\.90\.0\.\d+ > 10\.90\.0\.\d+: IP 10\.10[01]\.", ln)
    ]


def no_wireguard_go_process() -> tuple[bool, str]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                comm = Path(f"/proc/{entry.name}/comm").read_text().strip()
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
                if "wireguard" in comm or b"wireguard-go" in cmdline:
                    found.append(f"{entry.name}:{comm}")
    return not found, " ".join(found)


def ping_loss(out: str) -> tuple[bool, str]:
    """0 lost: every echo request answered, bar the last 3 (in flight at SIGINT, ~1 s after
    the last apply returned)."""
    m = PING_RE.search(out)
    if m is None:
        return False, out[-400:]
    sent = int(m.group(1))
    replied = {int(s) for s in re.findall(r"icmp_seq=(\d+) ttl=", out)}
    lost = [s for s in range(1, sent - 2) if s not in replied]
    summary = f"sent {sent}, answered {len(replied)}, lost before the last 3: {lost[:20]}"
    return sent > 40 and not lost, summary + ("" if not lost else " " + out[-300:])


def diff(a: str, b: str) -> str:
    al, bl = a.splitlines(), b.splitlines()
    return " | ".join([f"-{x}" for x in al if x not in bl] + [f"+{x}" for x in bl if x not in al])


# --------------------------------------------------------------------------- scenario


def scenario(lab: VmLab) -> None:
    mesh = ForkMesh(lab)
    addr: dict[str, str] = {}
    c: dict[str, LabContainer] = {}

    def H(name: str) -> LabHost:
        return mesh.hosts[name]

    R.check("vpcctl_from_worktree", lambda: (
        Path(vpcctl.host.agent.__file__).resolve().is_relative_to(REPO.resolve()),
        f"vpcctl.host.agent is {vpcctl.host.agent.__file__}, want it under {REPO}"))  # fmt: skip
    R.check("wireguard_go_unavailable", lambda: (
        shutil.which("wireguard-go") is None, f"found {shutil.which('wireguard-go')}"))  # fmt: skip

    # -- 3 hosts, keys born in each; VPCs, containers and a service in the inventory ----------
    with R.phase("hosts_and_keys"):
        mesh.add_hosts(HOSTS)
        addr.update({h: str(mesh.inv.hosts[h].address) for h in HOSTS})

        def build(inv: Inventory) -> Inventory:
            inv = edits.add_vpc(inv, "prod", IPv4Network("10.100.0.0/16"))
            inv = edits.add_vpc(inv, "dev", IPv4Network("10.101.0.0/16"))
            for name, vpc, host in [("web-1", "prod", "h1"), ("db-1", "prod", "h2"),
                                    ("db-2", "prod", "h3"), ("app-1", "dev", "h1"),
                                    ("app-3", "dev", "h3")]:  # fmt: skip
                inv = edits.add_container(inv, name, vpc, host)
            return edits.add_service(inv, "db", "prod", (parse_portspec("pg=5432", "t"),),
                                   ("db-1", "db-2"))  # fmt: skip

        mesh.change(build)

        def keys_private() -> tuple[bool, str]:
            rs = lab.run_many([(H(h), "stat -c '%a %s' /etc/vpcctl/private.key") for h in HOSTS])
            outs = [f"{h}: {r.text}" for h, r in zip(HOSTS, rs, strict=True)]
            keys = {mesh.inv.hosts[h].public_key for h in HOSTS}
            in_vm_root = Path("/etc/vpcctl/private.key").exists()
            ok = all(r.rc == 0 and r.out.startswith("600 ") for r in rs) and len(keys) == 3
            return ok and not in_vm_root, f"{' '.join(outs)}; in the VM's root: {in_vm_root}"

        R.check("keygen_in_each_host_0600", keys_private)

    # -- first apply, the 3 hosts in parallel --------------------------------------------------
    with R.phase("apply_1"):
        first = mesh.apply_many(HOSTS)
        for h in HOSTS:
            res = first[h]
            R.info(f"apply1_{h}", f"{res.get('applied')} changes, {res.get('seconds')}s agent-side")
            wg = [ch for ch in res.get("changes", []) if ch["op"] == "CreateWireGuard"]
            ops_ = [ch["op"] for ch in res.get("changes", [])]
            R.record(f"apply_{h}_kernel_wireguard_and_ipip_tunnel",
                     res.get("changed") and "CreateTunnel" in ops_ and wg
                     and all(ch["backend"] == "kernel" for ch in wg), json.dumps(res)[:1500])  # fmt: skip

    # -- what the agent made, seen with ip and wg ------------------------------------------------
    with R.phase("objects"):
        objs = lab.run_many([(H(h), OBJECTS_CMD) for h in HOSTS])
        sts = mesh.statuses(HOSTS)
        for h, r in zip(HOSTS, objs, strict=True):
            parts = (r.out.split("@@@\n") + [""] * 5)[:5]
            link_wg, link_ipip, routes, allowed, port = parts
            others = [addr[o] for o in HOSTS if o != h]
            R.record(f"{h}_vpc0_is_kernel_wireguard",
                     "wireguard" in link_wg and "mtu 1420" in link_wg and port.strip() == "51820",
                     link_wg + port)  # fmt: skip
            R.record(f"{h}_ipip_nbma_remote_any_local_mesh_addr",
                     re.search(rf"ipip remote any local {re.escape(addr[h])}\s", link_ipip)
                     and "mtu 1400" in link_ipip and "alias vpcctl:lab" in link_ipip, link_ipip)  # fmt: skip
            R.record(f"{h}_routes_onlink_via_tunnel",
                     len(routes.strip().splitlines()) == 4 and all(
                         len(re.findall(rf"via {re.escape(a)} dev vpc0-ipip .*onlink", routes)) == 2
                         for a in others), routes)  # fmt: skip
            R.record(f"{h}_wg_peers_allowed_mesh_addr_32",
                     sorted(ip for ln in allowed.strip().splitlines() for ip in ln.split()[1:])
                     == sorted(f"{a}/32" for a in others),
                     allowed)  # fmt: skip
            st = sts[h]
            iface, tun = st.get("interface") or {}, st.get("tunnel") or {}
            R.record(f"{h}_status_json_kernel",
                     iface.get("kind") == "wireguard" and iface.get("backend") == "kernel"
                     and tun.get("present") and tun.get("local") == addr[h]
                     and {b["name"] for b in st.get("bridges", [])} == {"vb-prod", "vb-dev"}
                     and st["firewall"]["present"] and st["forwarding"]
                     and all(x["dev"] == "vpc0-ipip" and x["onlink"] for x in st["routes"]),
                     json.dumps({k: st.get(k) for k in ("interface", "tunnel", "rc", "stderr")}))  # fmt: skip
        R.check("no_wireguard_go_process", no_wireguard_go_process)

    # -- containers in the agent's bridges ---------------------------------------------------
    with R.phase("containers"):
        inv = mesh.inv
        items = []
        for ct in sorted(inv.containers.values(), key=lambda x: x.name):
            s = inv.hosts[ct.host].slices[ct.vpc]
            vpc_mtu = next(v.mtu for v in mesh.spec(ct.host).vpcs if v.name == ct.vpc)
            items.append((H(ct.host), ct.name, f"vb-{ct.vpc}", f"{ct.ip}/{s.prefixlen}",
                          str(s.network_address + 1), vpc_mtu))  # fmt: skip
        c.update(lab.add_containers(items))

    # -- the data plane: mesh, VPC over IPIP in WireGuard, captures --------------------------------
    with R.phase("dataplane"):
        pairs = [(a, b) for a in HOSTS for b in HOSTS if a != b]
        rs = lab.run_many([(H(a), ping_cmd(addr[b], 2)) for a, b in pairs], timeout=60)
        for (a, b), r in zip(pairs, rs, strict=True):
            R.record(f"mesh_ping_{a}_{b}", *pinged(r, 2, first_contact=True))
        cap = lab.capture(H("h1"), "vpc0", "ip proto 4")
        under = lab.capture(lab.switch, "br0")
        vpc = [("web-1", "db-1", ""), ("db-2", "web-1", ""), ("db-1", "db-2", ""),
               ("web-1", "db-1", "-M do -s 1372")]  # fmt: skip
        rs = lab.run_many([(c[a], ping_cmd(c[b].ip, 3, x)) for a, b, x in vpc], timeout=60)
        for (a, b, x), r in zip(vpc, rs, strict=True):
            name = f"vpc_ping_{a}_{b}".replace("-", "")
            # 1400-byte packets with DF set fit: VPC MTU 1400 = 1420 (WireGuard) - 20 (IPIP)
            R.record(name + ("_1400_bytes_df" if x else ""), *pinged(r, 3))
        # one byte more does not fit; and the MSS clamp is in the table (README "MTU")
        over, fwd = lab.run_many([
            (c["web-1"], f"ping -n -q -c 1 -W 2 -M do -s 1373 {c['db-1'].ip}"),
            (H("h1"), "nft list chain inet vpcctl forward"),
        ])  # fmt: skip
        R.record("vpc_ping_1401_bytes_df_refused", *not_pinged(over))
        clamp = "tcp flags syn tcp option maxseg size set rt mtu"
        R.record("mss_clamp_rule_on_vpc0_and_tunnel",
                 f'oifname {{ "vpc0", "vpc0-ipip" }} {clamp}' in fwd.out
                 and f'iifname {{ "vpc0", "vpc0-ipip" }} {clamp}' in fwd.out, fwd.text)  # fmt: skip
        srv = serve(lab, [(c["db-1"], 7001, "tcp-db-1"), (c["web-1"], 7002, "tcp-web-1")])
        try:
            rs = lab.run_many([(c["web-1"], nc_cmd(c["db-1"].ip, 7001, 2)),
                               (c["db-2"], nc_cmd(c["web-1"].ip, 7002, 2))])  # fmt: skip
            R.record("vpc_tcp_web1_db1", rs[0].out.split() == ["tcp-db-1"] * 2, rs[0].text)
            R.record("vpc_tcp_db2_web1", rs[1].out.split() == ["tcp-web-1"] * 2, rs[1].text)
        finally:
            stop(lab, srv)
        lines, ulines = cap.stop(), under.stop()

        def captured_ipip() -> tuple[bool, str]:
            found = ipip_lines(lines)
            to2 = [ln for ln in found if f"IP {addr['h1']} > {addr['h2']}: IP 10.100." in ln]
            from3 = [ln for ln in found if f"IP {addr['h3']} > {addr['h1']}: IP 10.100." in ln]
            R.info("capture_vpc0_h1", " | ".join(found[:2]))
            return bool(to2 and from3), f"{len(lines)} lines: " + " | ".join(lines[:6])

        def underlay_only_wireguard() -> tuple[bool, str]:
            ip_lines = [ln for ln in ulines if " IP " in f" {ln} "]
            bad = [ln for ln in ip_lines if not re.search(r"\.51820[ :].*UDP|\.51820: UDP", ln)
                   or re.search(r"10\.(90|100|101)\.", ln)]  # fmt: skip
            return bool(ip_lines) and not bad, f"{len(ip_lines)} IP lines; not WireGuard: {bad[:4]}"

        R.check("capture_vpc0_ipip_proto4_between_mesh_addrs", captured_ipip)
        R.check("capture_underlay_only_wireguard_udp", underlay_only_wireguard)
        rx = lab.run(H("h2"), "cat /sys/class/net/vpc0-ipip/statistics/rx_packets")
        R.record("ipip_rx_counter_h2", rx.returncode == 0 and int(rx.stdout or 0) > 0,
                 f"h2 vpc0-ipip rx_packets {rx.stdout} {rx.stderr}")  # fmt: skip

    # -- VPCs are isolated ------------------------------------------------------------------
    with R.phase("isolation"):
        srv = serve(lab, [(c["db-2"], 7003, "tcp-db-2")])
        try:
            rs = lab.run_many([
                (c["app-1"], ping_cmd(c["web-1"].ip, 2).replace("-w 30", "-W 1")),
                (c["app-3"], ping_cmd(c["db-1"].ip, 2).replace("-w 30", "-W 1")),
                (c["web-1"], ping_cmd(c["app-3"].ip, 2).replace("-w 30", "-W 1")),
                (c["app-3"], nc_cmd(c["db-2"].ip, 7003, 1, wait=3)),
                (c["db-1"], nc_cmd(c["db-2"].ip, 7003, 1)),
                (c["app-1"], ping_cmd(c["app-3"].ip, 2)),
            ])  # fmt: skip
        finally:
            stop(lab, srv)
        R.record("vpc_isolation_ping_dev_to_prod_same_host", *not_pinged(rs[0]))
        R.record("vpc_isolation_ping_dev_to_prod_across", *not_pinged(rs[1]))
        R.record("vpc_isolation_ping_prod_to_dev_across", *not_pinged(rs[2]))
        R.record("vpc_isolation_tcp_dev_to_prod_same_host", rs[3].out.split() == ["ERR"],
                 rs[3].text)  # fmt: skip
        R.record("vpc_tcp_prod_to_that_server_works", rs[4].out.split() == ["tcp-db-2"],
                 rs[4].text)  # fmt: skip
        R.record("vpc_dev_itself_works_across", *pinged(rs[5], 2))

    # -- service VIP: backends on h2 and h3, client on h1 ----------------------------------------
    with R.phase("service_vip"):
        vip = str(mesh.inv.services["prod/db"].vip)
        srv = serve(lab, [(c["db-1"], 5432, "db-1"), (c["db-2"], 5432, "db-2")])
        try:
            rs = lab.run_many([(c["web-1"], nc_cmd(vip, 5432, 16)),
                               (c["app-1"], nc_cmd(vip, 5432, 2, wait=3))], timeout=120)  # fmt: skip
        finally:
            stop(lab, srv)
        seen = rs[0].out.split()
        R.info("vip_answers", f"{vip}:5432 from web-1 (h1): {' '.join(seen)}")
        R.record("service_vip_reaches_both_backends_on_two_hosts",
                 len(seen) == 16 and set(seen) == {"db-1", "db-2"}, rs[0].text)  # fmt: skip
        R.record("service_vip_not_for_other_vpc", rs[1].out.split() == ["ERR", "ERR"], rs[1].text)

    # -- the same spec again: nothing planned, nothing touched ------------------------------------
    with R.phase("reapply_same_spec"):
        before = lab.run_many([(H(h), SNAPSHOT_CMD) for h in HOSTS])
        again = mesh.apply_many(HOSTS)
        after = lab.run_many([(H(h), SNAPSHOT_CMD) for h in HOSTS])
        for h, was, now in zip(HOSTS, before, after, strict=True):
            res = again[h]
            R.record(f"reapply_{h}_up_to_date",
                     res.get("up_to_date") is True and res.get("changed") is False
                     and res.get("changes") == [], json.dumps(res)[:1500])  # fmt: skip
            R.record(
                f"reapply_{h}_nothing_touched",
                was.out == now.out and was.rc == 0,
                diff(was.out, now.out),
            )

    # -- a 4th host joins; the others re-apply; pings between h1 and h2 run all along -----------
    with R.phase("join_h4"):
        idx_cmd = "cat /sys/class/net/vpc0/ifindex /sys/class/net/vpc0-ipip/ifindex"
        idx_before = [r.out.split() for r in lab.run_many([(H(h), idx_cmd) for h in HOSTS])]
        key2 = mesh.inv.hosts["h2"].public_key
        hs_before = {p["public_key"]: p for p in mesh.statuses(["h1"])["h1"]["peers"]}[key2]
        pingers = {
            "vpc_web1_db1": lab.popen(c["web-1"], ["ping", "-n", "-i", "0.05", c["db-1"].ip],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
            "mesh_h1_h2": lab.popen(H("h1"), ["ping", "-n", "-i", "0.05", addr["h2"]],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT),
        }  # fmt: skip
        time.sleep(1.0)
        t_join = time.monotonic()
        mesh.add_hosts(["h4"])
        before_h4 = snapshot(lab, H("h4"))  # issue 12: compared after its `agent down`
        addr["h4"] = str(mesh.inv.hosts["h4"].address)
        results = mesh.apply_many(["h4", *HOSTS])
        R.info("join_seconds", f"host + keygen + inventory + 4 applies: "
                               f"{time.monotonic() - t_join:.1f}s")  # fmt: skip
        time.sleep(1.0)
        for p in pingers.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGINT)
        outs = {}
        for name, p in pingers.items():
            try:
                outs[name] = p.communicate(timeout=20)[0]
            except subprocess.TimeoutExpired:
                lab.kill(p)
                outs[name] = "(ping did not stop)"
        R.record("join_h4_applied", results["h4"].get("changed"), json.dumps(results["h4"])[:800])
        for h in HOSTS:
            ops_ = [ch["op"] for ch in results[h].get("changes", [])]
            R.record(f"join_{h}_peer_and_route_changes_only",
                     "SetPeer" in ops_ and "AddRoute" in ops_
                     and not {"CreateWireGuard", "DeleteLink", "CreateTunnel", "CreateBridge",
                              "LoadFirewall", "RemovePeer", "DelRoute"} & set(ops_),
                     " ".join(ops_) or json.dumps(results[h])[:800])  # fmt: skip
        for name, out in outs.items():
            ok, summary = ping_loss(out)
            R.info(f"join_ping_{name}", summary.split(" PING")[0])
            R.record(f"join_zero_loss_{name}", ok, summary)
        idx_after = [r.out.split() for r in lab.run_many([(H(h), idx_cmd) for h in HOSTS])]
        R.record("join_interfaces_not_recreated", idx_before == idx_after and idx_before[0],
                 f"ifindex vpc0, vpc0-ipip per host: {idx_before} -> {idx_after}")  # fmt: skip
        hs_after = {p["public_key"]: p for p in mesh.statuses(["h1"])["h1"]["peers"]}[key2]
        R.info("join_h1_h2_latest_handshake",
               f"{hs_before['latest_handshake']} -> {hs_after['latest_handshake']} (a change "
               "can only be WireGuard's regular rekey after 120 s)")  # fmt: skip
        gw4 = str(mesh.inv.hosts["h4"].slices["prod"].network_address + 1)
        probes: list[tuple[LabNode, str, str]] = [
            (H(h), addr["h4"], f"join_{h}_reaches_h4") for h in HOSTS
        ]
        probes.append((c["web-1"], gw4, "join_web1_reaches_h4_prod_gateway_over_ipip"))
        rs = lab.run_many([(who, ping_cmd(dst, 2)) for who, dst, _ in probes], timeout=60)
        for (_, _, name), r in zip(probes, rs, strict=True):
            R.record(name, *pinged(r, 2, first_contact=True))
        st4 = mesh.statuses(["h4"])["h4"]
        R.record("join_h4_status_kernel_backend",
                 (st4.get("interface") or {}).get("backend") == "kernel",
                 json.dumps(st4.get("interface")))  # fmt: skip

    # -- h4 leaves: `agent down` there, peer removal (kernel genl) on the others ------------------
    with R.phase("leave_h4"):
        pinger = lab.popen(c["web-1"], ["ping", "-n", "-i", "0.05", c["db-1"].ip],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
        time.sleep(1.0)
        down = mesh.agent(H("h4"), "down", check=False)
        R.record("leave_h4_agent_down", down.returncode == 0, down.stdout + down.stderr)
        gone = lab.run(H("h4"), "ip -br link show; ip -4 route show proto 211; nft list tables; "
                             "test -s /etc/vpcctl/private.key && echo key-kept")  # fmt: skip
        R.record("leave_h4_down_removed_everything_kept_key",
                 not re.search(r"^(vpc0|vpc0-ipip|vb-\S+)\s", gone.stdout, re.M)
                 and "proto" not in gone.stdout and "vpcctl" not in gone.stdout
                 and "key-kept" in gone.stdout, gone.stdout + gone.stderr)  # fmt: skip
        after_h4 = snapshot(lab, H("h4"))
        R.record("leave_h4_snapshot_equal_to_before_its_first_apply", after_h4 == before_h4,
                 snapshot_diff(before_h4, after_h4)[:4000])  # fmt: skip
        mesh.change(lambda inv: edits.rm_host(inv, "h4"))
        left = mesh.apply_many(HOSTS)
        time.sleep(1.0)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pinger.pid, signal.SIGINT)
        try:
            out = pinger.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            lab.kill(pinger)
            out = "(ping did not stop)"
        for h in HOSTS:
            ops_ = [ch["op"] for ch in left[h].get("changes", [])]
            R.record(f"leave_{h}_peer_removed_routes_deleted",
                     "RemovePeer" in ops_ and "DelRoute" in ops_
                     and not {"CreateWireGuard", "DeleteLink", "CreateTunnel", "SetPeer",
                              "LoadFirewall"} & set(ops_),
                     " ".join(ops_) or json.dumps(left[h])[:800])  # fmt: skip
        rs = lab.run_many([(H(h), "wg show vpc0 peers; ip -4 route show proto 211") for h in HOSTS])
        for h, r in zip(HOSTS, rs, strict=True):
            lines = r.out.strip().splitlines()
            R.record(f"leave_{h}_two_peers_four_routes",
                     len([ln for ln in lines if "via" not in ln]) == 2
                     and len([ln for ln in lines if "via" in ln]) == 4
                     and addr["h4"] not in r.out, r.text)  # fmt: skip
        ok, summary = ping_loss(out)
        R.info("leave_ping_vpc_web1_db1", summary.split(" PING")[0])
        R.record("leave_zero_loss_vpc_web1_db1", ok, summary)

    # -- h1 goes behind NAT: an in-place peer update (update_only, keepalive) over genl -----------
    with R.phase("h1_behind_nat"):
        mesh.change(lambda inv: edits.set_host(inv, "h1", clear_endpoint=True))
        nat = mesh.apply_many(HOSTS)
        ops1 = [ch for ch in nat["h1"].get("changes", []) if ch["op"] == "SetPeer"]
        R.record("nat_h1_keepalive_set_in_place",
                 len(ops1) == 2 and all(not ch["new"] and ch["keepalive"] == 25 for ch in ops1)
                 and {ch["op"] for ch in nat["h1"]["changes"]} <= {"SetPeer", "WriteZone"},
                 json.dumps(nat["h1"])[:1500])  # fmt: skip
        R.record(
            "nat_others_unchanged",
            all(nat[h].get("up_to_date") for h in ("h2", "h3")),
            json.dumps({h: nat[h].get("changes") for h in ("h2", "h3")})[:1500],
        )
        rs = lab.run_many([(H("h1"), "wg show vpc0 persistent-keepalive"),
                           (c["web-1"], ping_cmd(c["db-2"].ip, 3))])  # fmt: skip
        R.record("nat_h1_wg_keepalive_25",
                 sorted(ln.split()[-1] for ln in rs[0].out.strip().splitlines()) == ["25", "25"],
                 rs[0].text)  # fmt: skip
        R.record("nat_vpc_ping_web1_db2", *pinged(rs[1], 3))
        again = mesh.apply_many(["h1"])["h1"]
        R.record("nat_h1_reapply_up_to_date", again.get("up_to_date"), json.dumps(again)[:1500])
        R.check("no_wireguard_go_process_at_end", no_wireguard_go_process)

    with R.phase("many_peers"):
        R.check("kernel_wg_dump_150_peers_multi_message_merged", many_peers_kernel)


def many_peers_kernel() -> tuple[object, str]:
    """Issue 3 item 5 on a real kernel: a WireGuard dump of 150 peers with 20 allowed IPs each
    (about 100 KB) arrives in several netlink messages, some peers split across two; the
    KernelWireGuard.get merges all of them."""
    from ipaddress import IPv4Network

    from pyroute2 import WireGuard

    from vpcctl.core.keys import PrivateKey
    from vpcctl.host.netlink import KernelWireGuard, Netlink
    from vpcctl.host.wgtypes import PeerUpdate

    name = "wgmany"
    backend = KernelWireGuard()
    with Netlink() as nl:
        nl.add_wireguard(name, mtu=1420, alias="vpcctl:test")
    try:
        backend.set_device(name, private_key=PrivateKey.generate().raw, listen_port=51999)
        want = {}
        for i in range(150):
            key = PrivateKey.generate().public_key()
            ips = tuple(IPv4Network(f"10.200.{i}.{j}/32") for j in range(20))
            want[key] = set(ips)
            backend.update_peer(name, PeerUpdate(public_key=key, create=True, keepalive=0,
                                                 replace_allowed_ips=True, allowed_ips=ips))  # fmt: skip
        wg = WireGuard()
        try:
            raw = list(wg.info(name))
        finally:
            wg.close()
        dev = backend.get(name)
        got = {k: set(p.allowed_ips) for k, p in dev.peers.items()}
        n_ips = sum(len(v) for v in got.values())
        return (
            got == want and len(got) == 150 and n_ips == 3000,
            f"{len(got)} peers and {n_ips} allowed IPs read back (pyroute2 returned {len(raw)} "
            f"dump item(s)); equal to what was set: {got == want}",
        )
    finally:
        with Netlink() as nl:
            nl.delete_link(name)


def keep_artifacts(work: Path) -> None:
    """Agent outputs and tcpdump logs to OUT/artifacts (small; for when a check failed)."""
    dest = OUT / "artifacts"
    dest.mkdir(exist_ok=True)
    for sub in ("agent", "captures", "logs"):
        src = work / sub
        if src.is_dir():
            for f in src.iterdir():
                if f.is_file() and f.stat().st_size < 2_000_000 and f.suffix != ".pcap":
                    shutil.copyfile(f, dest / f"{sub}-{f.name}")


def main() -> int:
    R.info("start", f"VM uptime {uptime():.1f}s at driver start (imports {R.phases[0][1]:.1f}s), "
                    f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")  # fmt: skip
    lab = VmLab(Path("/tmp/vmmesh-lab"))
    try:
        with R.phase("scenario"):
            scenario(lab)
    except Exception:
        R.record("scenario_completed", False, traceback.format_exc(limit=8))
    with contextlib.suppress(Exception):
        keep_artifacts(lab.workdir)
    costs = ", ".join(f"{k} {int(n)}x {s:.1f}s" for k, (n, s) in sorted(R.cost.items()))
    R.info("summary", f"{R.passed} passed, {len(R.failed)} failed; driver "
                      f"{time.monotonic() - T0:.1f}s, VM uptime {uptime():.1f}s; phases: " +
                      ", ".join(f"{n} {t:.1f}s" for n, t in R.phases) + f"; costs: {costs}")  # fmt: skip
    if R.failed:
        R.info("failed", " ".join(R.failed))
    return 1 if R.failed else 0


if __name__ == "__main__":
    rc = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # No teardown: the VM powers off right after, taking every namespace and process with it
    # (Lab.close would cost ~20 process starts). os._exit also skips Lab's atexit hook.
    os._exit(rc)
