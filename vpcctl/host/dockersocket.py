"""Where dockerd listens, and whether it (still) runs there: stdlib only, no Docker client.

Split from :mod:`vpcctl.host.docker` so the agent's no-change fast path (the fingerprint) can ask
"did a dockerd (re)start since?" for the price of one ``stat``, without importing anything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

DEFAULT_URL = "unix:///var/run/docker.sock"


def docker_url(env: Mapping[str, str] | None = None) -> str:
    """Where dockerd listens: ``$DOCKER_HOST`` (Docker's own convention), else the default."""
    env = os.environ if env is None else env
    return env.get("DOCKER_HOST") or DEFAULT_URL


def socket_path(url: str | None = None) -> Path | None:
    """The unix socket of ``url`` (None for tcp:// daemons)."""
    url = url or docker_url()
    if url.startswith("unix://"):
        return Path(url[len("unix://") :])
    return None


def socket_stamp(url: str | None = None) -> list[object] | None:
    """A cheap token that changes whenever dockerd (re)creates its socket (inode and ctime), or
    None without one. Part of the agent's fingerprint: a started or restarted dockerd makes the
    next apply take the full path, which (re)creates the networks."""
    path = socket_path(url)
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_ino, st.st_ctime_ns]


def present(url: str | None = None) -> bool:
    """Docker seems to run here (its socket exists); no import, no connection."""
    path = socket_path(url)
    return path.exists() if path is not None else True
