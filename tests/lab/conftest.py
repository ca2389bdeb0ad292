"""Fixtures for lab tests: ``lab`` yields a :class:`Lab` and tears it down afterwards.

Lab tests carry ``@pytest.mark.lab``.  When the machine cannot run them (not root, ``ip netns``
unusable, wireguard-go missing, ...) they are skipped -- except under ``CI=true``, where a
skipped lab test would hide a broken CI machine, so they fail instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from tests.gate import require
from tests.lab.harness import LAB_PATH, Lab

REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "wireguard-go", "wg", "tcpdump", "sshd", "ssh",
                  "ssh-keygen", "ping", "ss")  # fmt: skip


@cache
def _lab_problem(extra_tools: tuple[str, ...] = ()) -> str | None:
    """Why lab tests cannot run here, or None if they can."""
    if os.geteuid() != 0:
        return "lab tests need root"
    tools = (*REQUIRED_TOOLS, *extra_tools)
    missing = [t for t in tools if shutil.which(t, path=LAB_PATH) is None]
    if missing:
        return f"lab tests need {', '.join(missing)}"
    if not os.path.exists("/dev/net/tun"):
        return "lab tests need /dev/net/tun (wireguard-go)"
    probe = f"Lprobe{secrets.token_hex(3)}"
    try:
        subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "add", probe], check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"ip netns unusable: {exc}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=False)
    return None


def require_lab(*extra_tools: str) -> None:
    """Skip (or, with CI=true, fail) the calling test when the lab cannot run here (root,
    ip netns, /dev/net/tun, the lab's tools and ``extra_tools``)."""
    require(_lab_problem(tuple(extra_tools)))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    require_lab()
    with Lab(tmp_path / "lab") as the_lab:
        yield the_lab
