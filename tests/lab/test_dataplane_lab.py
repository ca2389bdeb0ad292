"""The data-plane bench's smoke (issue 12, item 7): `bench/dataplane.py --quick` builds its two
lab hosts with the real agent and measures all three paths. Its figures are the bench's to
print; here only that it produced them (the machine is shared: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.lab.conftest import require_lab
from tests.paths import ROOT

pytestmark = pytest.mark.lab


def test_bench_quick_measures_the_vpc_bare_wireguard_and_underlay_paths() -> None:
    require_lab("iperf3")
    res = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dataplane.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    data = json.loads(res.stdout)
    assert sorted(data["paths"]) == ["underlay", "vpc", "wg"]
    for name, p in data["paths"].items():
        assert p["mbps_median"] > 0 and len(p["mbps"]) == 1, (name, p)
        assert p["rtt_samples"] >= 1 and p["rtt_ms_median"] > 0, (name, p)
    assert data["ratios"]["throughput"] > 0 and data["ratios"]["latency"] > 0
    assert "VPC path TCP throughput >= 0.95 x bare WireGuard" in res.stderr  # the method
