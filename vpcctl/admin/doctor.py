"""`vpcctl doctor` on the admin's side: one host's facts over the Transport, judged here."""

from __future__ import annotations

import json
import time

from vpcctl import __version__
from vpcctl.admin.fanout import HostResult, _json, agent_argv
from vpcctl.admin.transport import Transport
from vpcctl.core.doctor import admin_checks, failed
from vpcctl.core.model import Host


def doctor_one(host: Host, t: Transport, stale: float) -> HostResult:
    """Run `agent doctor --json` on the host (its clock read between two of the admin's) and
    judge every check; ``ok`` is whether the host answered, ``data["checks"]`` the verdicts."""
    argv = agent_argv(host, "agent", "doctor", "--json", "--stale", f"{stale:g}")
    before = time.time()
    done = t.run(argv, timeout=120)
    after = time.time()
    if done.rc == 1 and done.stdout.lstrip().startswith("{"):
        try:  # checks failed there: the JSON still says which
            data = json.loads(done.stdout)
        except ValueError:
            data = _json(host, done, "agent doctor")
    else:
        data = _json(host, done, "agent doctor")
    if not isinstance(data.get("peers", []), list):
        data = {**data, "peers": []}
    data.setdefault("host", host.name)
    checks = admin_checks(data, __version__, before, after, stale)
    return HostResult(
        host.name,
        ok=True,
        changed=bool(failed(checks)),
        data={"checks": [c.to_json() for c in checks]},
    )
