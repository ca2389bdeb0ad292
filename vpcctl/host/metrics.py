"""The agent daemon's Prometheus metrics: the only prometheus_client user.

Imported only when ``[mesh] metrics`` is set (the idle daemon stays within its memory budget
otherwise). Served on loopback or the host's mesh address only (``core.model.parse_metrics``
refuses anything else). Every value is read at scrape time: per peer the WireGuard handshake age
and bytes (``wg show IFACE dump``) and whether the mesh table hears it, per service the live
backend count the daemon pushed into nftables, whether the resolver runs and its UDP queries by
result (``resolver-stats.json`` beside the zone, written by the resolver), and the applies
(``apply-stats.json`` in the state directory).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from vpcctl.core import run
from vpcctl.core.spec import HostSpec
from vpcctl.host import processes
from vpcctl.host.state import StateDir, read_apply_stats

Source = Callable[[], tuple[HostSpec | None, dict[tuple[str, str], int], list[dict[str, Any]]]]


def wg_dump(interface: str) -> list[list[str]]:
    """The peer lines of ``wg show IFACE dump`` (kernel and wireguard-go alike); [] without wg."""
    text = run.output(["wg", "show", interface, "dump"], timeout=5)
    return [ln.split("\t") for ln in (text or "").splitlines()[1:] if ln.count("\t") >= 7]


class DaemonCollector(Collector):
    def __init__(self, state: StateDir, source: Source) -> None:
        self.state, self.source = state, source

    def collect(self) -> Iterator[Any]:
        spec, backends, peers = self.source()
        names = {p.public_key: p.name for p in spec.peers} if spec else {}
        age = GaugeMetricFamily("vpcctl_peer_handshake_age_seconds",
                                "Seconds since the last WireGuard handshake with the peer",
                                labels=["peer"])  # fmt: skip
        rx = CounterMetricFamily("vpcctl_peer_receive_bytes", "Bytes received from the peer",
                                 labels=["peer"])  # fmt: skip
        tx = CounterMetricFamily("vpcctl_peer_transmit_bytes", "Bytes sent to the peer",
                                 labels=["peer"])  # fmt: skip
        now = time.time()
        for f in wg_dump(spec.interface) if spec else []:
            peer = names.get(f[0], f[0][:12])
            if f[4].isdigit() and int(f[4]):
                age.add_metric([peer], now - int(f[4]))
            rx.add_metric([peer], float(f[5]) if f[5].isdigit() else 0.0)
            tx.add_metric([peer], float(f[6]) if f[6].isdigit() else 0.0)
        yield from (age, rx, tx)
        heard = GaugeMetricFamily("vpcctl_mesh_peer_reachable",
                                  "1 when the mesh table hears the peer's agent daemon",
                                  labels=["peer"])  # fmt: skip
        for p in peers:
            heard.add_metric([str(p.get("name"))], 1.0 if p.get("reachable") else 0.0)
        yield heard
        svc = GaugeMetricFamily("vpcctl_service_backends", "Live backends of a service",
                                labels=["vpc", "service"])  # fmt: skip
        for (vpc, name), n in sorted(backends.items()):
            svc.add_metric([vpc, name], float(n))
        yield svc
        up = processes.running(self.state.resolver_pid) is not None
        yield GaugeMetricFamily("vpcctl_resolver_up", "1 when the resolver runs", value=float(up))
        yield self._queries()
        yield from self._applies()

    def _queries(self) -> Any:
        q = CounterMetricFamily("vpcctl_resolver_queries", "UDP queries the resolver answered, "
                                "by result (noerror, nxdomain, forwarded, ...)",
                                labels=["result"])  # fmt: skip
        try:
            raw = json.loads(self.state.read(self.state.resolver_stats) or "{}")
        except ValueError:
            raw = {}
        for kind, n in sorted(raw.items() if isinstance(raw, dict) else []):
            if isinstance(n, int) and not isinstance(n, bool):
                q.add_metric([str(kind)], float(n))
        return q

    def _applies(self) -> Iterator[Any]:
        s = read_apply_stats(self.state)
        yield CounterMetricFamily("vpcctl_applies", "Applies that changed something",
                                  value=s["applies"])  # fmt: skip
        yield CounterMetricFamily("vpcctl_apply_failures", "Applies that failed (rolled back)",
                                  value=s["failures"])  # fmt: skip
        yield CounterMetricFamily("vpcctl_apply_seconds", "Seconds spent in applies",
                                  value=s["seconds_sum"])  # fmt: skip
        yield GaugeMetricFamily("vpcctl_apply_last_seconds", "Duration of the last apply",
                                value=s["last_seconds"])  # fmt: skip


def serve(address: str, port: int, state: StateDir, source: Source) -> Any:
    """Start the HTTP endpoint (its own thread); returns the server (``.shutdown()``)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(state, source))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server
