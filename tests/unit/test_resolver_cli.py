"""`vpcctl dns serve` as a real process, the agent's command line, and the systemd example."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from tests.dns_helpers import (
    PROD_CLIENT,
    UPSTREAM_ANSWER,
    FakeUpstream,
    addresses,
    ask,
    free_port,
    wait_answering,
    write_zone,
)
from tests.gate import require_tools
from tests.paths import ROOT
from vpcctl.core.spec import VpcSpec
from vpcctl.dns.resolver import (
    listen_addresses,
    resolver_command,
    serve_args,
    systemd_env,
    zone_from_text,
)

UNIT = ROOT / "examples" / "systemd" / "vpcctl-dns.service"
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream("127.0.0.55") as up:
        yield up


def test_the_agents_command_line_runs_the_resolver(tmp_path: Path, upstream: FakeUpstream) -> None:
    zone_file = tmp_path / "zone.json"
    write_zone(zone_file)
    port = free_port()
    argv = resolver_command([f"127.0.0.1:{port}"], zone_file, upstreams=[upstream.spec])
    assert argv[:5] == [sys.executable, "-m", "vpcctl", "dns", "serve"]
    proc = subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE)
    try:
        wait_answering(port, proc)
        assert addresses(ask(port, "db", source=PROD_CLIENT)) == ["127.100.255.1"]
        assert addresses(ask(port, "www.example.org", tcp=True)) == [UPSTREAM_ANSWER]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    text = err.decode()
    assert f"listening on 127.0.0.1:{port}" in text and "stopped" in text


def test_a_bad_zone_file_is_a_clear_error(tmp_path: Path) -> None:
    zone_file = tmp_path / "zone.json"
    zone_file.write_text("[1, 2]")
    argv = resolver_command([f"127.0.0.1:{free_port()}"], zone_file, upstreams=["127.0.0.9"])
    done = subprocess.run(argv, env=ENV, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: {zone_file}") and "\nhint: " in done.stderr


@pytest.mark.parametrize(
    ("option", "value"),
    [("--listen", "localhost"), ("--upstream", "10.0.0.1:99999"), ("--ttl", "-1")],
)
def test_bad_options_are_rejected(tmp_path: Path, option: str, value: str) -> None:
    argv = [sys.executable, "-m", "vpcctl", "dns", "serve", "--zone", str(tmp_path / "z")]
    done = subprocess.run([*argv, option, value], env=ENV, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.startswith(f"error: {option}")


def test_the_cli_default_zone_file_is_the_resolvers() -> None:
    from vpcctl.cli import dns
    from vpcctl.dns import resolver

    assert dns.DEFAULT_ZONE == resolver.DEFAULT_ZONE_FILE


def test_listen_addresses_are_the_gateways_and_loopback() -> None:
    vpcs = tuple(
        VpcSpec(n, IPv4Network(c), IPv4Network(s), IPv4Interface(g), f"vpc-{n}", 1400)
        for n, c, s, g in (
            ("prod", "10.100.0.0/16", "10.100.1.0/24", "10.100.1.1/24"),
            ("dev", "10.101.0.0/16", "10.101.1.0/24", "10.101.1.1/24"),
        )
    )

    class Spec:  # the only field listen_addresses reads
        def __init__(self) -> None:
            self.vpcs = vpcs

    assert listen_addresses(Spec()) == ["10.100.1.1", "10.101.1.1", "127.0.0.1"]  # type: ignore[arg-type]


def unit_lines() -> dict[str, str]:
    lines: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            lines.setdefault(key, value)
    return lines


def test_the_systemd_example_runs_the_same_command() -> None:
    unit = unit_lines()
    exec_start = shlex.split(unit["ExecStart"])
    assert exec_start[0].endswith("/vpcctl") and exec_start[-1] == "$VPCCTL_DNS_ARGS"
    default = shlex.split(unit["Environment"])[0].partition("=")[2]
    args = exec_start[1:-1] + default.split()
    assert args == resolver_command([], Path("/etc/vpcctl/zone.json"))[3:]
    assert args[4:] == serve_args([])
    env = systemd_env(["10.100.1.1", "10.101.1.1"])
    assert env == "VPCCTL_DNS_ARGS=--listen 10.100.1.1 --listen 10.101.1.1 --listen 127.0.0.1\n"
    assert unit["EnvironmentFile"] == "-/etc/vpcctl/dns.env"


def test_the_systemd_example_verifies(tmp_path: Path) -> None:
    require_tools("systemd-analyze")
    vpcctl = shutil.which("vpcctl") or sys.executable  # verify wants an existing executable
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/vpcctl", vpcctl))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and UNIT.name not in done.stderr, done.stderr


def test_the_benchmark_zone_and_hosts_file_agree() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_dns", ROOT / "bench" / "dns.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_dns"] = bench
    try:
        spec.loader.exec_module(bench)
        data = zone_from_text(bench.zone_json(300), "bench")
    finally:
        del sys.modules["bench_dns"]
    containers = dict(data.vpcs[0].containers)
    assert len(containers) == 300 and str(containers["c299"]) == bench.ip_of(299) == "10.100.1.45"
