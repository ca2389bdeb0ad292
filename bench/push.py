"""Benchmark: `vpcctl up` over N lab hosts (real sshd + wireguard-go per host namespace).

Targets (issue 4): a no-change `up` over 20 hosts <= 3 s wall, compared with `--parallel 1` in
the same run; one container added, `up` over 20 hosts <= 5 s. Needs root.

    python bench/push.py [--hosts 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.harness import Lab  # noqa: E402
from tests.lab.sshmesh import SshMesh  # noqa: E402


def timed(m: SshMesh, *args: str) -> tuple[float, list[dict[str, object]]]:
    t = time.perf_counter()
    res = m.vpcctl(*args, "--json", timeout=600)
    return time.perf_counter() - t, json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Lab(Path(tmp)) as lab:
        m = SshMesh(lab)
        t0 = time.perf_counter()
        for i in range(args.hosts):
            m.add_host(f"n{i}", join=False)
        joins = time.perf_counter()
        for i in range(args.hosts):
            m.join(f"n{i}")
        joined = time.perf_counter() - joins
        m.vpcctl("vpc", "add", "prod", "--cidr", "10.100.0.0/16")
        t, res = timed(m, "up")
        assert all(r["ok"] and r["changed"] for r in res), res
        first = t
        nochange = []
        for _ in range(3):
            t, res = timed(m, "up")
            assert all(r["ok"] and not r["changed"] for r in res), res
            nochange.append(t)
        serial = []
        for _ in range(2):
            t, res = timed(m, "up", "--parallel", "1")
            assert all(r["ok"] and not r["changed"] for r in res), res
            serial.append(t)
        added = []
        for k in range(2):
            m.vpcctl("container", "add", f"c{k}", "--vpc", "prod", "--host", "n0")
            t, res = timed(m, "up")
            assert all(r["ok"] and r["changed"] for r in res), res
            added.append(t)
        setup = time.perf_counter() - t0
    print(f"vpcctl up over {args.hosts} lab hosts (sshd + wireguard-go each; 2 cores)")
    print(f"  lab setup {setup:.1f} s in all; {args.hosts} joins took {joined:.1f} s")
    print(f"  first up (everything created)          {first:6.2f} s")
    best = min(nochange)
    print(f"  no-change up, --parallel 16            {best:6.2f} s best of 3 "
          f"(target <= 3.0 s: {'PASS' if best <= 3 else 'MISS'})")  # fmt: skip
    print(f"  no-change up, --parallel 1 (baseline)  {min(serial):6.2f} s best of 2 "
          f"(speed-up x{min(serial) / best:.1f})")  # fmt: skip
    print(f"  container added, up                    {min(added):6.2f} s best of 2 "
          f"(target <= 5.0 s: {'PASS' if min(added) <= 5 else 'MISS'})")  # fmt: skip


if __name__ == "__main__":
    main()
