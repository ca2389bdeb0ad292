"""How the agent daemon learns which containers this host runs: the Discovery protocol.

An implementation (Docker's Engine API in ``vpcctl/host/docker.py``; a static file for tests and for
hosts without a runtime) calls ``publish`` with the complete set of this host's endpoints every
time it changes (after a relist or an event), from its own thread, until ``stop`` is set. The
daemon (``vpcctl agent run``) turns each publication into a new version of this host's
:class:`~vpcctl.core.endpoints.EndpointSet` and serves it to the peers.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from vpcctl.core.endpoints import Endpoint

Publish = Callable[[tuple[Endpoint, ...]], None]


class Discovery(Protocol):
    def run(self, publish: Publish, stop: threading.Event) -> None:
        """Publish the full endpoint set now and after every change; return when ``stop`` is set."""
        ...


class StaticDiscovery:
    """Endpoints from a JSON file (a list of {vpc, name, address, labels, ready}), re-read when
    its mtime changes. For hosts without a container runtime and for tests."""

    def __init__(self, path: Path, host: str, interval: float = 0.2) -> None:
        self.path, self.host, self.interval = path, host, interval

    def read(self) -> tuple[Endpoint, ...]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return ()
        return tuple(
            Endpoint(
                host=self.host,
                vpc=str(r["vpc"]),
                name=str(r["name"]),
                address=IPv4Address(str(r["address"])),
                labels=tuple(
                    sorted((str(k), str(v)) for k, v in dict(r.get("labels", {})).items())
                ),
                ready=bool(r.get("ready", True)),
            )
            for r in raw
        )

    def run(self, publish: Publish, stop: threading.Event) -> None:
        seen: float | None = -1.0
        while not stop.is_set():
            try:
                mtime: float | None = self.path.stat().st_mtime
            except FileNotFoundError:
                mtime = None
            if mtime != seen:
                seen = mtime
                publish(self.read())
            stop.wait(self.interval)
