"""`vpcctl agent ...`: the host side, run on each host as root (by `vpcctl up` over SSH, by cron,
or by hand).

This is a small argparse front-end on purpose: `vpcctl up` runs it on every host on every sync, so
its start-up time is the mesh's convergence time. `vpcctl agent ...` is dispatched here before the
typer application (and pydantic, rich) is even imported; the typer app only lists it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vpcctl import __version__
from vpcctl.core.errors import ExitCode, SpecError, UsageError, VpcctlError

if TYPE_CHECKING:
    from vpcctl.core.spec import HostSpec

EPILOG = {
    "keygen": (
        "Examples:\n  vpcctl agent keygen\n  vpcctl agent keygen --json\n"
        "  vpcctl agent keygen --rotate --json   # the next key (run by `vpcctl host rotate-key`)"
    ),
    "follow": (
        "Example (run by `vpcctl host rotate-key` on every peer of the host):\n"
        "  vpcctl agent follow NEWKEY --old OLDKEY --json"
    ),
    "psk": (
        "Examples (run by `vpcctl up` and `vpcctl rotate-psk`, the request on stdin):\n"
        '  echo \'{"own": "KEY", "peers": ["PEER"]}\' | vpcctl agent psk offer --json\n'
        '  echo \'{"own": "KEY", "sealed": {"PEER": "SEALED"}}\' | vpcctl agent psk accept --json'
    ),
    "apply": (
        "Examples:\n  vpcctl render vps1 | ssh root@vps1 vpcctl agent apply -\n"
        "  vpcctl agent apply /etc/vpcctl/spec.json --dry-run\n"
        "  vpcctl agent apply spec.json --confirm 60   # reverts unless `agent confirm` in 60 s"
    ),
    "status": "Example:\n  vpcctl agent status --json",
    "check": "Example:\n  vpcctl agent check --json",
    "down": (
        "Examples:\n  vpcctl agent down                 # the key stays: `vpcctl up` rebuilds it\n"
        "  vpcctl agent down --forget-key --json"
    ),
    "run": (
        "Examples:\n  vpcctl agent run                    # in the foreground (systemd: "
        "examples/systemd/vpcctl-agent.service)\n"
        "  vpcctl agent run --state-dir /etc/vpcctl -v"
    ),
    "table": "Examples:\n  vpcctl agent table\n  vpcctl agent table --json",
    "confirm": (
        "Examples:\n  vpcctl agent confirm                # keep what `up --confirm` applied\n"
        "  vpcctl agent confirm --token 3f2a9c1e --json"
    ),
    "revert": "Example:\n  vpcctl agent revert                 # revert the pending apply now",
    "doctor": "Examples:\n  vpcctl agent doctor\n  vpcctl agent doctor --json --stale 30",
}


def _info(message: str) -> None:
    sys.stderr.write(message + "\n")


def _json(data: object) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vpcctl agent",
        description="The host agent: converge this host to its HostSpec (run as root).",
        epilog="Example:\n  vpcctl agent apply /etc/vpcctl/spec.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(
            name, help=help_, description=help_, epilog=EPILOG[name],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        sp.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help="where the key and the agent's history live "
            "(default: $VPCCTL_STATE_DIR or /etc/vpcctl)",
        )
        sp.add_argument("--json", action="store_true", help="print JSON (for scripts)")
        return sp

    kp = add("keygen", "Create this host's WireGuard private key (mode 0600) if missing; print "
                       "the public key. Running it again prints the same key.")  # fmt: skip
    kp.add_argument("--rotate", action="store_true",
                    help="make the next key beside the current one (used once an apply expects "
                         "it: `vpcctl host rotate-key`)")  # fmt: skip
    pp = add("psk", "Preshared keys of this host's pairs: `offer` makes the ones this host makes "
                    "and prints them sealed to each peer's key; `accept` stores the ones peers "
                    "made (sealed to this host's key). Requests come on stdin as JSON.")  # fmt: skip
    pp.add_argument("action", choices=("offer", "accept"))
    fp = add(
        "follow",
        "A peer's new WireGuard key: add it beside the old one (no allowed IPs) "
        "and move the old peer's allowed IPs to it at its first handshake.",
    )
    fp.add_argument("new", help="the peer's new public key")
    fp.add_argument("--old", required=True, help="its old public key")
    pp.add_argument("--rotate", action="store_true", help="offer: make new keys for these pairs")
    ap = add(
        "apply", "Converge this host to a HostSpec: observe, plan, apply; roll back on failure."
    )
    ap.add_argument("spec", help="HostSpec JSON file, or - for stdin")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    ap.add_argument(
        "--backend", choices=("kernel", "userspace"), help="force the WireGuard backend"
    )
    ap.add_argument(
        "--save",
        metavar="PATH",
        nargs="?",
        const="",
        help="also store the spec (atomically, 0600) at PATH; without PATH as spec.json in the "
        "state directory",
    )
    ap.add_argument(
        "--expect-version", metavar="V", help="refuse to do anything unless this agent is version V"
    )
    ap.add_argument(
        "--confirm",
        metavar="SECONDS",
        help="revert to the previous state by itself unless `agent confirm` comes within SECONDS "
        "of the end of the apply (what `vpcctl up --confirm` does)",
    )
    ap.add_argument("--token", help="the confirmed apply's token (default: a new one)")
    cp = add("confirm", "Confirm the pending confirmed apply: it stays, its revert is cancelled.")
    cp.add_argument("--token", help="only the apply with this token (what `up --confirm` passes)")
    cp.add_argument("--wait", type=float, default=60.0, help=argparse.SUPPRESS)
    vp = add("revert", "Revert the pending confirmed apply now (what happens by itself when it "
                       "is not confirmed in time).")  # fmt: skip
    vp.add_argument("--token", help=argparse.SUPPRESS)
    vp.add_argument("--when-due", action="store_true", help=argparse.SUPPRESS)
    add("status", "Show this host's observed state: interface, peers (handshakes, transfer), "
                  "routes, tunnel, bridges, firewall.")  # fmt: skip
    add("check", "Check that this host can run the agent: root, WireGuard (kernel or "
                 "wireguard-go), nftables.")  # fmt: skip
    dp = add("down", "Remove everything vpcctl owns on this host and nothing else: the "
                     "WireGuard interface (and wireguard-go), the tunnel, the VPC bridges, its "
                     "routes, its nftables table and DOCKER-USER rules, the Docker networks it "
                     "made, the resolver and the agent daemon, its state files; sysctls go back "
                     "to their values before vpcctl. The key stays unless --forget-key.")  # fmt: skip
    dp.add_argument("--forget-key", action="store_true",
                    help="also delete this host's private key (it must `vpcctl join` again)")  # fmt: skip
    rp = add("run", "Run the agent daemon: discover this host's containers, serve them to the "
                    "peers over the mesh, watch every peer's, keep the zone and the service "
                    "backends current. Runs until SIGTERM/SIGINT.")  # fmt: skip
    rp.add_argument("-v", "--verbose", action="store_true", help="log every change")
    rp.add_argument("--managed", action="store_true", help=argparse.SUPPRESS)
    add("table", "Print the merged live table: every running endpoint this host knows "
                 "(its own and every reachable peer's), from the agent daemon.")  # fmt: skip
    dp = add("doctor", "Diagnose this host: every check of `vpcctl doctor` with the exact fix "
                       "for each failure (the admin's `vpcctl doctor` also checks version and clock).")  # fmt: skip
    dp.add_argument("--stale", type=_seconds, default=180.0,
                    help="seconds after which a peer's handshake counts as stale (default 180)")  # fmt: skip
    return p


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 < SECONDS <= 86400")
    return value


def _read_spec(source: str) -> tuple[str, str]:
    if source == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(source).read_text(encoding="utf-8"), source
    except OSError as exc:
        raise SpecError(
            f"{source}: cannot read ({exc.strerror})", "pass a file from `vpcctl render HOST`"
        ) from None


def cmd_keygen(args: argparse.Namespace) -> int:
    from vpcctl.host.agent import keygen
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    public, created = keygen(state, rotate=args.rotate)
    if args.json:
        _json({"public_key": public, "created": created, "key_file": str(state.key())})
    else:
        sys.stdout.write(public + "\n")
        _info(f"{'created' if created else 'existing'} key {state.key()}")
    return 0


def cmd_psk(args: argparse.Namespace) -> int:
    import json

    from vpcctl.host import psk
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    try:
        request = json.loads(sys.stdin.read(1 << 24))
    except (ValueError, UnicodeDecodeError):
        raise SpecError(
            f"psk {args.action}: the request on stdin is not JSON", "`vpcctl up` sends it; run it"
        ) from None
    if args.action == "offer":
        out = psk.offer(state, request, rotate=args.rotate)
    else:
        out = psk.accept(state, request)
    if args.json:  # sealed keys only: nobody but the peer they are sealed to can open them
        _json(out)
    else:
        _info(f"psk {args.action}: {out.get('made', out.get('changed'))} changed")
    return 0


def cmd_follow(args: argparse.Namespace) -> int:
    from vpcctl.host.rotation import follow
    from vpcctl.host.state import StateDir

    out = follow(StateDir.default(args.state_dir), args.new, args.old)
    if args.json:
        _json(out)
    else:
        _info("following" if out["following"] else "nothing to follow")
    return 0


def _spec(args: argparse.Namespace) -> tuple[str, HostSpec]:
    """The HostSpec to apply (its text as given, and the parsed value), after the version guard."""
    from vpcctl.core.spec import from_json

    if args.expect_version and args.expect_version != __version__:
        raise VpcctlError(
            f"agent is vpcctl {__version__}, the admin runs vpcctl {args.expect_version}; "
            "nothing changed",
            f"install vpcctl {args.expect_version} here (`vpcctl host bootstrap NAME` from the admin)",
        )
    text, source = _read_spec(args.spec)
    if not text.strip():
        raise SpecError(f"{source}: empty HostSpec", "pass the output of `vpcctl render HOST`")
    return text, from_json(text, source)


def cmd_apply(args: argparse.Namespace) -> int:
    from vpcctl.host.agent import converge
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    confirm = _confirm_request(args, state)  # options first: nothing is read on bad input
    text, spec = _spec(args)
    if args.save is not None and confirm is None:
        state.save_spec(text, Path(args.save) if args.save else None)
    quiet = args.json or args.dry_run
    progress = None if quiet else (lambda c: _info(f"  {c.describe()}"))
    result = converge(spec, state, dry_run=args.dry_run, progress=progress, backend=args.backend,
                      confirm=confirm)  # fmt: skip
    if result.confirm is not None and not args.json:
        from vpcctl.host.confirm import clock

        _info(f"{spec.host}: reverts at {clock(result.confirm.deadline)} unless confirmed "
              f"(`vpcctl agent confirm --token {result.confirm.token}`)")  # fmt: skip
    for line in [] if args.json else result.messages:
        _info(line)
    if args.json:
        _json(result.to_json())
    elif result.plan.empty:
        _info(f"{spec.host}: up to date")
    elif args.dry_run:
        for line in result.plan.describe():
            sys.stdout.write(line + "\n")
        _info(f"{spec.host}: {len(result.plan.changes)} changes planned (dry run)")
    else:
        n = result.applied
        _info(f"{spec.host}: applied {n} change{'' if result.zone_only else 's'} in "
              f"{result.seconds:.2f} s")  # fmt: skip
    return 0


def _confirm_request(args: argparse.Namespace, state: Any) -> Any:
    """The Confirm of `apply --confirm SECONDS [--token T]` (validated), or None."""
    if args.confirm is None:
        if args.token is not None:
            raise UsageError("--token: only with --confirm", "add --confirm SECONDS")
        return None
    import secrets

    from vpcctl.core.confirm import AGENT_MIN_SECONDS, parse_seconds, parse_token
    from vpcctl.host.agent import Confirm

    seconds = parse_seconds(args.confirm, "--confirm", AGENT_MIN_SECONDS)
    if args.dry_run:
        raise UsageError("--confirm with --dry-run: a dry run changes nothing", "drop one")
    token = parse_token(args.token) if args.token is not None else secrets.token_hex(8)
    save = None if args.save is None else (Path(args.save) if args.save else state.spec)
    return Confirm(token=token, seconds=seconds, save=save)


def cmd_confirm(args: argparse.Namespace) -> int:
    import math

    from vpcctl.core.confirm import parse_token
    from vpcctl.host import confirm
    from vpcctl.host.state import StateDir

    token = parse_token(args.token) if args.token is not None else None
    if not (math.isfinite(args.wait) and args.wait >= 0):
        raise UsageError(f"--wait: {args.wait!r} is not a number of seconds", "e.g. --wait 30")
    answer = confirm.confirm(StateDir.default(args.state_dir), token, args.wait)
    if args.json:
        _json(answer)
    elif answer["confirmed"]:
        _info(answer["message"])
    else:
        raise VpcctlError(answer["message"], "see `vpcctl agent status`")
    return 0 if answer["confirmed"] else int(ExitCode.ERROR)


def cmd_revert(args: argparse.Namespace) -> int:
    import signal

    from vpcctl.host import confirm
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    if not args.when_due:  # by hand: now, under the lock
        with state.locked():
            p = confirm.pending(state)
            if p is None:
                _info("nothing to revert")
                return 0
            _info(confirm.revert(state, p))
        return 0

    def ignore() -> None:  # from here on the revert finishes whatever comes
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)

    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # confirmed or replaced
    _info(confirm.revert_when_due(state, args.token or "", ignore))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vpcctl.host import docker, resolved
    from vpcctl.host.agent import status
    from vpcctl.host.kernel import LinuxSystem
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    system = LinuxSystem()
    try:
        data = status(system, state)
    finally:
        system.close()
    data["docker"] = docker.status(state.applied_spec())
    from vpcctl.host import confirm

    data["confirm"] = confirm.status(state)
    data["resolved"] = resolved.status(state.applied_spec())
    if args.json:
        _json(data)
        return 0
    _print_mesh(data.get("daemon"))
    _print_confirm(data["confirm"])
    sys.stdout.write(data["resolved"]["summary"] + "\n")
    iface = data["interface"]
    if iface is None:
        _info("no vpcctl interface on this host (nothing applied yet?)")
        return 0
    sys.stdout.write(
        f"{data['host']} in mesh {data['mesh']}: {iface['name']} ({iface['backend']}) "
        f"{', '.join(iface['addresses'])} port {iface['listen_port']}\n"
    )
    for p in data["peers"]:
        age = p["handshake_age"]
        sys.stdout.write(
            f"  peer {p['name'] or p['public_key'][:12]:<16} {p['endpoint'] or '-':<22} "
            f"{(f'{age:.0f}s ago' if age is not None else 'never'):>10}  "
            f"rx {p['rx_bytes']} tx {p['tx_bytes']}\n"
        )
    sys.stdout.write(_docker_line(data["docker"]) + "\n")
    return 0


def _print_confirm(c: dict[str, Any]) -> None:
    if c.get("pending"):
        running = "" if c.get("reverter_running") else " (its reverter is not running!)"
        sys.stdout.write(
            f"confirmed apply pending: reverts to {c['reverts_to']} at {c['deadline_text']} "
            f"(in {c['seconds_left']:.0f} s) unless `vpcctl agent confirm`{running}\n"
        )


def _print_mesh(m: dict[str, object] | None) -> None:
    if not m:
        return
    if not m.get("running"):
        _info("agent daemon: not running")
        return
    peers = m.get("peers") or []
    assert isinstance(peers, list)
    own = m.get("own") or []
    assert isinstance(own, list)
    sys.stdout.write(
        f"agent daemon (pid {m.get('pid')}): version {m.get('version')}, "
        f"{len(own)} own endpoints, grace {m.get('grace')} s\n"
    )
    for p in peers:
        age = p.get("last_seen_age")
        sys.stdout.write(
            f"  mesh peer {p['name']:<16} {'reachable' if p['reachable'] else 'unreachable':<11} "
            f"{'never' if age is None else f'{age:.1f}s ago':>10}  version {p['version'] or '-'}  "
            f"{p['records']} records  {p['rejected']} rejected\n"
        )


def cmd_run(args: argparse.Namespace) -> int:
    import logging
    import signal

    from vpcctl.host.daemon import Daemon
    from vpcctl.host.state import StateDir

    logging.basicConfig(
        level=logging.INFO if args.verbose or args.managed else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    daemon = Daemon(StateDir.default(args.state_dir))

    def stop(signum: int, frame: object) -> None:
        daemon.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    daemon.run()
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from vpcctl.host import live
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    endpoints = live.read_live(state)
    if args.json:
        _json({"daemon": bool(endpoints) or _daemon_running(state),
               "endpoints": [live.endpoint_to_json(e) for e in endpoints]})  # fmt: skip
        return 0
    if not _daemon_running(state):
        _info("the agent daemon is not running here (`vpcctl agent run`)")
    for e in endpoints:
        labels = ",".join(f"{k}={v}" for k, v in e.labels)
        sys.stdout.write(f"{e.vpc:<12} {e.name:<24} {e.address!s:<16} {e.host:<16} "
                         f"{'ready' if e.ready else 'not-ready':<9} {labels}\n")  # fmt: skip
    return 0


def _daemon_running(state: object) -> bool:
    from vpcctl.host import processes
    from vpcctl.host.state import StateDir

    assert isinstance(state, StateDir)
    return processes.running(state.daemon_pid) is not None


def _docker_line(d: dict[str, Any]) -> str:
    if not d.get("present"):
        return "  docker: not running here"
    if not d.get("reachable"):
        return f"  docker: not reachable ({d.get('error')})"
    dns = d.get("dns")
    verdict = dns.get("containers_get_resolver") if isinstance(dns, dict) else None
    text = {"all": "all containers get vpcctl's resolver",
            "some": "some containers lack vpcctl's resolver (run them with --dns <gateway>)",
            "none": "no container gets vpcctl's resolver (run them with --dns <gateway>)",
            "no containers": "no containers on vpcctl's networks"}.get(str(verdict), "")  # fmt: skip
    nets = d.get("networks") or []
    return f"  docker {d.get('version')}: networks {', '.join(map(str, nets)) or '-'}; {text}"


def cmd_check(args: argparse.Namespace) -> int:
    from vpcctl.host.agent import check

    data = check()
    problems = data["problems"]
    if args.json:
        _json(data)
    else:
        for p in problems:
            _info(f"problem: {p['message']} (hint: {p['hint']})")
        if not problems:
            _info(f"ok: vpcctl {__version__}, WireGuard {data['wireguard']}, nftables")
    return int(ExitCode.ERROR) if problems else 0


def cmd_down(args: argparse.Namespace) -> int:
    from vpcctl.host import docker, resolved
    from vpcctl.host.agent import down
    from vpcctl.host.kernel import LinuxSystem
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    applied = state.applied_spec()
    dk = docker.Report()
    names = False

    def networks() -> None:  # after the daemon stopped, before the bridges go; only vpcctl's
        nonlocal dk, names
        dk = docker.remove_networks(applied.mesh if applied else None)
        names = resolved.remove(applied)

    system = LinuxSystem()
    try:
        with state.locked():
            result = down(system, state, forget_key=args.forget_key, before_links=networks)
            from vpcctl.host.confirm import disarm

            disarm(state)  # nothing that was removed may come back
    finally:
        system.close()
    if args.forget_key and state.discard():
        result.messages.append(f"remove state directory {state.path}")
    if args.json:
        _json({"removed": result.plan.to_json(), "docker": dk.to_json(),
               "files": [m.removeprefix("remove state file ") for m in result.messages
                         if m.startswith("remove state file ")],
               "resolved_reverted": names,
               "key": "removed" if args.forget_key else "kept"})  # fmt: skip
        return 0
    lines = ["revert systemd-resolved settings of the mesh domain"] if names else []
    lines += [f"remove Docker network {n}" for n in dk.removed] + result.plan.describe()
    lines += [f"docker: warning: {p}" for p in dk.problems] + result.messages
    for line in lines:
        _info(f"  {line}")
    n = len(dk.removed) + len(result.plan.changes)
    _info(f"removed {n} objects{'' if args.forget_key else '; the key stays'}"
          if n else "nothing to remove")  # fmt: skip
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from vpcctl.core.doctor import failed, host_checks
    from vpcctl.host.doctor import facts
    from vpcctl.host.state import StateDir

    data = facts(StateDir.default(args.state_dir))
    checks = host_checks(data, args.stale)
    if args.json:
        _json({**data, "checks": [c.to_json() for c in checks]})
    else:
        for c in checks:
            sys.stdout.write(f"  {c.status:<4}  {c.name:<18} {c.detail}\n")
            if c.fix:
                sys.stdout.write(f"        fix: {c.fix}\n")
    return int(ExitCode.ERROR) if failed(checks) else 0


COMMANDS = {
    "keygen": cmd_keygen,
    "psk": cmd_psk,
    "follow": cmd_follow,
    "apply": cmd_apply,
    "status": cmd_status,
    "check": cmd_check,
    "down": cmd_down,
    "run": cmd_run,
    "table": cmd_table,
    "confirm": cmd_confirm,
    "revert": cmd_revert,
    "doctor": cmd_doctor,
}


class Terminated(VpcctlError):
    """SIGTERM or SIGHUP (`vpcctl up` gave up: its timeout, Ctrl-C, a cut connection)."""

    exit_code = ExitCode.INTERRUPTED


def _terminate_as_error() -> None:
    """SIGTERM and SIGHUP raise :class:`Terminated`, once: an apply under way then rolls back
    like any failure (a second signal during the rollback is ignored; SIGKILL still works)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(
            f"stopped by signal {signal.Signals(signum).name}",
            "the admin side gave up (timeout or Ctrl-C): run `vpcctl up` again",
        )

    with contextlib.suppress(ValueError):  # not the main thread (tests): leave signals alone
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, handler)


def run(argv: Sequence[str]) -> int:
    """Parse and run; the agent's one error boundary (same messages and codes as the CLI)."""
    try:
        args = parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    _terminate_as_error()
    try:
        return COMMANDS[args.command](args)
    except VpcctlError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return int(exc.exit_code)
    except OSError as exc:  # a file outside an apply (--save, the key, the lock): say which
        from vpcctl.host.state import StateDir, as_error

        err = as_error(exc, StateDir.default(getattr(args, "state_dir", None)))
        sys.stderr.write(f"error: {err.message}\n")
        if err.hint:
            sys.stderr.write(f"hint: {err.hint}\n")
        return int(ExitCode.ERROR)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return int(ExitCode.INTERRUPTED)
