"""Real dockerd in lab hosts (LAB.md section 4), reusable by every lab test that needs Docker.

* :func:`image_tarball` builds, once per test session, a tiny offline image rootfs: busybox-static
  (sh, ping, nc, nslookup, wget, ...) plus glibc's ``getent`` with its two libraries and an
  ``nsswitch.conf``, so ``getent hosts db`` inside a container goes through the real resolver path
  (Docker's embedded DNS -> the ``--dns`` server);
* :class:`DockerLab` starts one dockerd per lab host inside that host's network namespace with its
  own data root, exec root, socket and pid file (``nsenter --net=... unshare -m``: NOT ``ip netns
  exec``, which remounts /sys and hides the cgroups), imports the image, runs containers through
  the docker CLI, and on :meth:`DockerLab.close` (also from the fixture's teardown on failure)
  removes every container, stops every daemon and deletes its data and exec roots.

Use it as a context manager next to a :class:`~tests.lab.harness.Lab`::

    with Lab(tmp) as lab, DockerLab(lab, image_tarball(tmp_factory)) as dl:
        d1 = dl.start(lab.add_host("h1"))
        d1.run("--network", "vpc-prod", "--name", "db-1", IMAGE, "sleep", "1000")

The agent finds a daemon through ``DOCKER_HOST`` (Docker's own convention): pass
:attr:`Dockerd.env` to the agent's environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.conftest import require_lab
from tests.lab.harness import LAB_PATH, Lab, LabError, LabHost
from tests.lab.mesh import Mesh

IMAGE = "local/vpclab:1"
BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ping", "ip", "nc", "wget", "nslookup", "sleep", "cat", "echo", "true", "false",
           "test", "ls", "hostname", "kill", "ps", "rm", "touch", "grep", "timeout")  # fmt: skip
GETENT = "/usr/bin/getent"


def require_docker() -> None:
    """Skip (or, with CI=true, fail) when the lab or a real dockerd cannot run here."""
    require_lab("dockerd", "docker", "iptables")
    problem = docker_problem()
    if problem is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {problem}", pytrace=False)
    pytest.skip(problem)


def docker_problem() -> str | None:
    """Why a real dockerd cannot run here, or None."""
    for tool in ("dockerd", "docker", "containerd", "runc", "iptables"):
        if shutil.which(tool, path=LAB_PATH) is None:
            return f"the Docker lab needs {tool} (apt-get install docker.io)"
    if not Path(BUSYBOX).exists():
        return "the Docker lab needs /bin/busybox (apt-get install busybox-static)"
    if not Path(GETENT).exists():
        return "the Docker lab needs getent (libc-bin)"
    return None


def _libs(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
                break
    return libs


def build_tarball(path: Path) -> Path:
    """The image's root filesystem as a tar (busybox applets, getent + glibc, nsswitch.conf)."""
    root = path.parent / "rootfs"
    if root.exists():
        shutil.rmtree(root)
    (root / "bin").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "tmp").mkdir(mode=0o1777)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for a in APPLETS:
        (root / "bin" / a).symlink_to("busybox")
    shutil.copy2(GETENT, root / "bin" / "getent")
    for lib in _libs(GETENT):
        dst = root / lib.lstrip("/")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(lib), dst)
    (root / "etc" / "nsswitch.conf").write_text("hosts: files dns\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/:/bin/sh\n")
    tmp = path.with_suffix(".part")
    with tarfile.open(tmp, "w") as tar:
        tar.add(root, arcname=".")
    tmp.replace(path)
    shutil.rmtree(root)
    return path


def image_tarball(factory: pytest.TempPathFactory) -> Path:
    """The session's image tarball (built on first use, then reused)."""
    base = factory.getbasetemp() / "docker-image"
    base.mkdir(exist_ok=True)
    path = base / "vpclab-rootfs.tar"
    if not path.exists():
        build_tarball(path)
    return path


class Dockerd:
    """One dockerd serving one lab host. Its CLI runs from the root namespace over the socket."""

    def __init__(self, dl: DockerLab, host: LabHost, args: tuple[str, ...]) -> None:
        self.dl, self.host, self.args = dl, host, args
        name = f"vpclab-{dl.lab.tag}-{host.name}"
        self.data_root = Path("/var/lib") / name  # overlay2 needs a real filesystem, not tmpfs
        self.exec_root = Path("/run") / name
        self.sock = self.exec_root / "docker.sock"
        self.pidfile = self.exec_root / "docker.pid"
        self.log = host.dir / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    @property
    def env(self) -> dict[str, str]:
        """What a process needs to talk to this daemon (the agent, the docker CLI)."""
        return {"DOCKER_HOST": self.url}

    # daemon ---------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            raise LabError(f"dockerd of {self.host.name} is already running")
        self.data_root.mkdir(parents=True, exist_ok=True)
        self.exec_root.mkdir(parents=True, exist_ok=True)
        script = (
            'exec dockerd --data-root "$1" --exec-root "$2" -H "$3" --pidfile "$4" '
            "--storage-driver overlay2 --log-level warn --shutdown-timeout 1 " + " ".join(self.args)
        )
        argv = [
            shutil.which("nsenter") or "nsenter", f"--net=/run/netns/{self.host.netns}",
            shutil.which("unshare") or "unshare", "-m", "--propagation", "private",
            "/bin/sh", "-c", script, "dockerd", str(self.data_root), str(self.exec_root),
            self.url, str(self.pidfile),
        ]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env={"PATH": LAB_PATH, "HOME": "/root"}, start_new_session=True,
            )  # fmt: skip
        self.dl.lab._started_pids.append(self.proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"dockerd of {self.host.name} exited: {self.tail()}")
            if self.sock.exists() and self.cli("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)
        raise LabError(f"dockerd of {self.host.name} did not answer in {timeout} s: {self.tail()}")

    def tail(self, n: int = 8) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, remove_containers: bool = True, timeout: float = 20.0) -> None:
        """Stop the daemon (first removing its containers, so it need not wait for them)."""
        if self.proc is None:
            return
        if remove_containers and self.proc.poll() is None:
            ids = self.cli("ps", "-aq", check=False, timeout=20).stdout.split()
            if ids:
                self.cli("rm", "-f", *ids, check=False, timeout=60)
        if self.proc.poll() is None:
            # dockerd only: it stops its containers and then its own containerd (a TERM to the
            # whole group would take containerd away first and make dockerd wait for it)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # leftovers of its group (containerd)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL the daemon (a crash: its containers' shims keep running)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        self.stop(remove_containers=False)
        self.start()

    def purge(self) -> None:
        """Remove the data and exec roots (after the daemon and its shims are gone)."""
        for root in (self.data_root, self.exec_root):
            if not root.exists():
                continue
            # overlay/shm mounts lived in the daemon's private mount namespace and are gone
            # with it; anything still mounted here would be a leak of the root namespace
            subprocess.run(["umount", "-R", "-l", str(root)], capture_output=True, check=False)
            shutil.rmtree(root, ignore_errors=True)

    # CLI ------------------------------------------------------------------------------------
    def cli(self, *args: str, check: bool = True, timeout: float = 60,
            input: str | bytes | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
        argv = [shutil.which("docker", path=LAB_PATH) or "docker", "-H", self.url, *args]
        res = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=timeout,
            check=False, input=input, env={"PATH": LAB_PATH, "HOME": "/root",
                                           "DOCKER_CONFIG": str(self.exec_root / "cli")},
        )  # fmt: skip
        if check and res.returncode != 0:
            raise LabError(f"docker {' '.join(args)} on {self.host.name}: rc {res.returncode}: "
                           f"{res.stderr.strip()}")  # fmt: skip
        return res

    def run(self, *args: str, timeout: float = 60) -> str:
        """``docker run -d ARGS``; returns the container id."""
        return self.cli("run", "-d", *args, timeout=timeout).stdout.strip()

    def exec(self, container: str, *cmd: str, check: bool = False,
             timeout: float = 30) -> subprocess.CompletedProcess[str]:  # fmt: skip
        return self.cli("exec", container, *cmd, check=check, timeout=timeout)

    def inspect(self, *what: str, kind: str | None = None) -> list[dict[str, Any]]:
        args = ["inspect", *(["--type", kind] if kind else []), *what]
        data: list[dict[str, Any]] = json.loads(self.cli(*args).stdout)
        return data

    def network(self, name: str) -> dict[str, Any] | None:
        res = self.cli("network", "inspect", name, check=False)
        if res.returncode != 0:
            return None
        data: list[dict[str, Any]] = json.loads(res.stdout)
        return data[0]

    def networks(self) -> list[str]:
        return self.cli("network", "ls", "--format", "{{.Name}}").stdout.split()

    def ip_of(self, container: str, network: str) -> str:
        data = self.inspect(container, kind="container")[0]
        return str(data["NetworkSettings"]["Networks"][network]["IPAddress"])

    def load_image(self, tarball: Path) -> None:
        self.cli("import", "--change", 'CMD ["sh"]', str(tarball), IMAGE, timeout=120)


class DockerLab:
    """Every dockerd of one :class:`Lab`; closes them all (also on failure)."""

    def __init__(self, lab: Lab, tarball: Path) -> None:
        self.lab, self.tarball = lab, tarball
        self.daemons: dict[str, Dockerd] = {}

    def __enter__(self) -> DockerLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self, host: LabHost, *args: str) -> Dockerd:
        """A dockerd in ``host``'s network namespace (extra dockerd ``args``, e.g.
        ``--bridge=none``), with the lab image loaded."""
        if host.name in self.daemons:
            raise LabError(f"{host.name} already has a dockerd")
        d = Dockerd(self, host, tuple(args))
        self.daemons[host.name] = d
        d.start()
        d.load_image(self.tarball)
        return d

    def close(self) -> None:
        for d in self.daemons.values():
            try:
                d.stop()
            except (OSError, subprocess.SubprocessError, LabError) as exc:
                print(f"[docker lab] stopping dockerd of {d.host.name}: {exc}")
                d.kill()
        # shims and containers live in the host's network namespace: the Lab kills whatever is
        # left there; wait for that before deleting the roots
        for d in self.daemons.values():
            d.purge()
        self.daemons.clear()


@contextlib.contextmanager
def docker_mesh(factory: pytest.TempPathFactory, tag: str) -> Iterator[tuple[Lab, DockerLab, Mesh]]:
    """A lab (skipped without Docker) with its dockerds and an empty :class:`Mesh` in it."""
    require_docker()
    image = image_tarball(factory)
    with Lab(factory.mktemp(tag)) as lab, DockerLab(lab, image) as dl:
        yield lab, dl, Mesh(lab)
