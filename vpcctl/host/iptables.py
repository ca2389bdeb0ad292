"""The ``iptables`` binary (edge): vpcctl's accept rules in Docker's ``DOCKER-USER`` chain.

Docker (up to 28, and 29 with its default iptables backend) filters forwarded traffic in the
iptables ``filter`` table; ``DOCKER-USER`` is the chain it documents for the host's own rules and
jumps to first from ``FORWARD``. vpcctl's rules there carry a comment naming the mesh
(``vpcctl:<mesh>``): they are added idempotently at the top and only rules with that comment are
ever removed. The same ``iptables`` command as dockerd's (``iptables-nft`` or ``-legacy``, as the
host's alternatives choose) is used, so both see one ruleset.
"""

from __future__ import annotations

import shlex

from vpcctl.core import run
from vpcctl.core.errors import ProgramError

CHAIN = "DOCKER-USER"


def _run(args: list[str]) -> run.Done | None:
    if run.which("iptables") is None:
        return None
    try:
        return run.run(["iptables", "-w", "5", *args], timeout=20)
    except ProgramError:
        return None


def listed(chain: str = CHAIN) -> list[list[str]] | None:
    """The rules of ``chain`` as ``-A`` argument lists, or None when it does not exist."""
    done = _run(["-S", chain])
    if done is None or done.rc != 0:
        return None
    rules = []
    for line in done.stdout.splitlines():
        words = shlex.split(line)
        if len(words) > 2 and words[0] == "-A" and words[1] == chain:
            rules.append(words[2:])
    return rules


def _comment(rule: list[str]) -> str | None:
    for i, w in enumerate(rule[:-1]):
        if w == "--comment":
            return rule[i + 1]
    return None


def ensure_docker_user(rules: list[list[str]], tag: str) -> str:
    """Make the ``tag``-commented rules of DOCKER-USER exactly ``rules`` (in order, at the top;
    each written as ``iptables -S`` prints it: -s -d -i -o, matches, -j).
    Returns a one-line summary ("" when Docker's chain does not exist: nothing to open)."""
    have = listed()
    if have is None:
        return ""
    ours = [r for r in have if _comment(r) == tag]
    head = have[: len(rules)]
    if ours == rules and head == rules:
        return f"{CHAIN}: {len(rules)} vpcctl rules in place"
    for r in ours:
        _run(["-D", CHAIN, *r])
    for r in reversed(rules):
        done = _run(["-I", CHAIN, "1", *r])
        if done is None or done.rc != 0:
            err = done.stderr.strip() if done is not None else "iptables not found"
            return f"{CHAIN}: could not add a rule: {err}"
    return f"{CHAIN}: {len(rules)} vpcctl rules set"


def remove_docker_user(tag_prefix: str) -> str:
    """Remove every DOCKER-USER rule whose comment starts with ``tag_prefix``."""
    have = listed()
    if have is None:
        return ""
    gone = 0
    for r in have:
        c = _comment(r)
        if c is not None and c.startswith(tag_prefix):
            _run(["-D", CHAIN, *r])
            gone += 1
    return f"{CHAIN}: {gone} vpcctl rules removed"
