"""The merged live table on disk, and the declared state seen through it.

The agent daemon (`vpcctl agent run`) writes ``live.json`` in the state directory: every endpoint
this host knows right now (its own and every reachable peer's, validated). `agent apply` reads it
so that a full apply writes the same merged zone and loads the same live service backends as the
daemon: an apply never wipes discovered names or regresses the DNAT sets. Without a daemon there
is no ``live.json`` and everything is as declared. Light on imports (the apply fast path uses it).
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address
from typing import Any

from vpcctl.core.endpoints import Endpoint
from vpcctl.core.spec import HostSpec, ZoneData, zone_file_text
from vpcctl.host.state import StateDir


def endpoint_to_json(e: Endpoint) -> dict[str, Any]:
    return {
        "host": e.host,
        "vpc": e.vpc,
        "name": e.name,
        "address": str(e.address),
        "labels": dict(e.labels),
        "ready": e.ready,
    }


def live_text(endpoints: tuple[Endpoint, ...]) -> str:
    ordered = sorted(endpoints, key=lambda e: (e.vpc, e.name, e.host, int(e.address)))
    return json.dumps({"endpoints": [endpoint_to_json(e) for e in ordered]}, indent=2) + "\n"


def read_live(state: StateDir) -> tuple[Endpoint, ...]:
    """The daemon's current merged table; () when no daemon runs (then nothing is live)."""
    from vpcctl.host import processes

    if processes.running(state.daemon_pid) is None:
        return ()
    try:
        raw = json.loads(state.live.read_text(encoding="utf-8"))
        return tuple(
            Endpoint(
                host=str(r["host"]),
                vpc=str(r["vpc"]),
                name=str(r["name"]),
                address=IPv4Address(str(r["address"])),
                labels=tuple(sorted((str(k), str(v)) for k, v in dict(r["labels"]).items())),
                ready=bool(r["ready"]),
            )
            for r in raw["endpoints"]
        )
    except (OSError, ValueError, KeyError, TypeError):
        return ()


def merged_zone(
    spec: HostSpec, endpoints: tuple[Endpoint, ...]
) -> tuple[ZoneData, tuple[str, ...]]:
    if not endpoints:
        return spec.dns, ()
    from vpcctl.core.running import merge_zone

    return merge_zone(spec.dns, endpoints)


def zone_text(spec: HostSpec, endpoints: tuple[Endpoint, ...]) -> tuple[str, int]:
    """The resolver's zone file: declared names plus discovered ones (declared wins)."""
    return zone_file_text(merged_zone(spec, endpoints)[0])


def backends(
    spec: HostSpec, endpoints: tuple[Endpoint, ...]
) -> dict[tuple[str, str], tuple[IPv4Address, ...]]:
    from vpcctl.core.running import live_backends

    return live_backends(spec, endpoints)
