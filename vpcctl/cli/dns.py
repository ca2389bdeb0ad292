"""`vpcctl dns serve`: the resolver every host runs (thin: options -> Config -> resolver.Server)."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType

import typer

from vpcctl.cli.app import new_app
from vpcctl.cli.output import info
from vpcctl.core.model import DEFAULT_STATE_DIR, ZONE_FILE

dns_app = new_app("The resolver: names of containers and services, per VPC.")

DEFAULT_ZONE = DEFAULT_STATE_DIR / ZONE_FILE  # == resolver.DEFAULT_ZONE_FILE (lazy import)


@dns_app.command("serve")
def serve(
    zone: Path = typer.Option(
        DEFAULT_ZONE,
        "--zone",
        "-z",
        help='Zone file: a HostSpec or its "dns" part (JSON). Reloaded when it changes.',
    ),
    listen: list[str] = typer.Option(
        [],
        "--listen",
        "-l",
        help="ADDR[:PORT] to serve on, UDP and TCP; repeat it. Default: 127.0.0.1:53.",
    ),
    upstream: list[str] = typer.Option(
        [],
        "--upstream",
        "-u",
        help="ADDR[:PORT] to forward other names to; repeat it. Default: /etc/resolv.conf.",
    ),
    ttl: int | None = typer.Option(
        None, "--ttl", help="TTL of every answer, seconds (default: the zone file's, 5)."
    ),
) -> None:
    """Run the resolver: each VPC sees its own names, loopback sees them all.

    Other names are forwarded upstream for VPC and loopback clients and refused for anyone
    else. Runs until SIGTERM or Ctrl-C; a changed zone file is picked up within a second.

    [bold]Examples[/]

      vpcctl dns serve --listen 10.100.1.1 --listen 127.0.0.1

      vpcctl dns serve --zone ./zone.json --listen 127.0.0.1:5353 --upstream 192.0.2.53
    """
    from vpcctl.core.model import parse_int
    from vpcctl.dns import resolver

    config = resolver.Config(
        zone_file=zone,
        listen=tuple(resolver.parse_hostport(a, "--listen", any_port=True) for a in listen)
        or (resolver.DEFAULT_LISTEN,),
        upstreams=tuple(resolver.parse_hostport(u, "--upstream") for u in upstream) or None,
        ttl=None if ttl is None else parse_int(ttl, "--ttl", 0, 86400),
    )
    server = resolver.Server(config, log=info)

    def stop(signum: int, frame: FrameType | None) -> None:
        server.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.start()
    server.wait()
    info("stopped")
