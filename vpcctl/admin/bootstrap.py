"""`vpcctl host bootstrap`: install the running vpcctl on a host, in a virtualenv.

The wheel of the running version is built from its source tree (pip wheel --no-deps); with a
wheelhouse, every dependency wheel is uploaded too and pip installs offline."""

from __future__ import annotations

import shlex
import sys
import tempfile
from pathlib import Path

from vpcctl import __version__
from vpcctl.admin.transport import Transport
from vpcctl.core import run
from vpcctl.core.errors import BootstrapError

REMOTE_DIR = "/var/lib/vpcctl/bootstrap"


def source_root() -> Path | None:
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() else None


def collect(wheelhouse: Path | None) -> list[Path]:
    """The wheels to upload: the wheelhouse's, and a vpcctl wheel of the running version built
    from its source tree. Installed from PyPI (no source tree), vpcctl itself comes from the
    wheelhouse or, without one, from the host's package index (``vpcctl==VERSION``)."""
    root = source_root()
    wheels: list[Path] = []
    if wheelhouse is not None:
        wheels += sorted(p for p in wheelhouse.glob("*.whl") if not p.name.startswith("vpcctl-"))
    if root is None:
        found = sorted(wheelhouse.glob(f"vpcctl-{__version__}-*.whl")) if wheelhouse else []
        return [*wheels, *found[:1]]
    out = Path(tempfile.mkdtemp(prefix="vpcctl-wheel-"))
    hint = "pip install setuptools wheel into this environment"
    done = run.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(out), str(root)],
        timeout=600, what="building the vpcctl wheel", hint=hint,
    )  # fmt: skip
    built = sorted(out.glob("vpcctl-*.whl"))
    if done.rc != 0 or not built:
        raise BootstrapError(
            f"building the vpcctl wheel failed: {done.stderr.strip()[-200:]}", hint
        )
    return [*wheels, built[0]]


def install(t: Transport, wheels: list[Path], prefix: str, *, offline: bool) -> str:
    """Upload the wheels, create the venv, install; return the agent command."""
    for w in wheels:
        t.put(f"{REMOTE_DIR}/{w.name}", w.read_bytes())
    pip = f"{prefix}/bin/pip"
    ours = [w for w in wheels if w.name.startswith("vpcctl-")]
    target = f"{REMOTE_DIR}/{ours[0].name}" if ours else f"vpcctl=={__version__}"
    flags = f"--no-index --find-links {shlex.quote(REMOTE_DIR)}" if offline else ""
    script = (
        f"set -e; command -v python3 >/dev/null || {{ echo 'python3 missing' >&2; exit 3; }}; "
        f"[ -x {shlex.quote(pip)} ] || python3 -m venv {shlex.quote(prefix)}; "
        f"{shlex.quote(pip)} install -q {flags} --force-reinstall --no-deps {shlex.quote(target)}; "
        f"{shlex.quote(pip)} install -q {flags} {shlex.quote(target)}; "
        f"{shlex.quote(prefix)}/bin/vpcctl --version"
    )
    done = t.run(["sh", "-c", script], timeout=600)
    if done.rc != 0:
        raise BootstrapError(
            f"installing vpcctl on the host failed: {done.stderr.strip()[-300:]}",
            "the host needs python3 with venv (apt-get install python3-venv) and PyPI access, "
            "or use --wheelhouse",
        )
    if done.stdout.strip().split()[-1:] != [__version__]:
        raise BootstrapError(f"installed agent reports {done.stdout.strip()!r}", "check the host")
    return f"{prefix}/bin/vpcctl"
