"""Running state: the containers a host runs right now, as pure values (README "Discovery").

Declared state is ``vpc.toml``; running state is where containers run now. Each host is the only
authority for its own containers: its agent discovers them from the container runtime and serves
them as an :class:`EndpointSet`; every peer's agent watches every other host's set over the mesh.
The receiver sets :attr:`Endpoint.host` from the mesh address the set arrived from (what WireGuard
authenticated), never from what the message says.

Consumers (pure): the zone (discovered names next to declared ones, declared wins on a clash) and
the service backends (selector match, ready only). Nothing here is ever written into ``vpc.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

Labels = tuple[tuple[str, str], ...]  # sorted by key, keys unique


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One running container on a vpcctl network."""

    host: str  # the announcing host: set by the receiver from the authenticated source address
    vpc: str
    name: str  # the container's name, a DNS label
    address: IPv4Address  # inside ``host``'s slice of ``vpc``
    labels: Labels = ()
    ready: bool = True  # False while a HEALTHCHECK says starting or unhealthy


@dataclass(frozen=True, slots=True)
class EndpointSet:
    """Everything one host announces. ``(boot, counter)`` orders versions from one writer."""

    host: str
    boot: str
    counter: int
    endpoints: tuple[Endpoint, ...] = ()
