"""`vpcctl agent ...`: the host side, run on each host as root (by `vpcctl up` over SSH, by cron,
or by hand).

This is a small argparse front-end on purpose: `vpcctl up` runs it on every host on every sync, so
its start-up time is the mesh's convergence time. `vpcctl agent ...` is dispatched here before the
typer application (and pydantic, rich) is even imported; the typer app only lists it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from vpcctl import __version__
from vpcctl.core.errors import ExitCode, SpecError, VpcctlError

EPILOG = {
    "keygen": "Example:\n  vpcctl agent keygen\n  vpcctl agent keygen --json",
    "apply": (
        "Examples:\n  vpcctl render vps1 | ssh root@vps1 vpcctl agent apply -\n"
        "  vpcctl agent apply /etc/vpcctl/spec.json --dry-run"
    ),
    "status": "Example:\n  vpcctl agent status --json",
    "check": "Example:\n  vpcctl agent check --json",
    "down": "Example:\n  vpcctl agent down",
    "run": (
        "Examples:\n  vpcctl agent run                    # in the foreground (systemd: "
        "examples/systemd/vpcctl-agent.service)\n"
        "  vpcctl agent run --state-dir /etc/vpcctl -v"
    ),
    "table": "Examples:\n  vpcctl agent table\n  vpcctl agent table --json",
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

    add("keygen", "Create this host's WireGuard private key (mode 0600) if missing; print the "
                  "public key. Running it again prints the same key.")  # fmt: skip
    ap = add(
        "apply", "Converge this host to a HostSpec: observe, plan, apply; roll back on failure."
    )
    ap.add_argument("spec", help="HostSpec JSON file, or - for stdin")
    ap.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    ap.add_argument(
        "--backend", choices=("kernel", "userspace"), help="force the WireGuard backend"
    )
    ap.add_argument("--save", metavar="PATH", help="also store the spec there (atomically, 0600)")
    ap.add_argument(
        "--expect-version", metavar="V", help="refuse to do anything unless this agent is version V"
    )
    add("status", "Show this host's observed state: interface, peers (handshakes, transfer), "
                  "routes, tunnel, bridges, firewall.")  # fmt: skip
    add("check", "Check that this host can run the agent: root, WireGuard (kernel or "
                 "wireguard-go), nftables.")  # fmt: skip
    add("down", "Remove everything vpcctl owns on this host (interface, tunnel, bridges, routes, "
                "nftables table) and stop the agent daemon. Nothing else is touched; the key "
                "stays.")  # fmt: skip
    rp = add("run", "Run the agent daemon: discover this host's containers, serve them to the "
                    "peers over the mesh, watch every peer's, keep the zone and the service "
                    "backends current. Runs until SIGTERM/SIGINT.")  # fmt: skip
    rp.add_argument("-v", "--verbose", action="store_true", help="log every change")
    rp.add_argument("--managed", action="store_true", help=argparse.SUPPRESS)
    add("table", "Print the merged live table: every running endpoint this host knows "
                 "(its own and every reachable peer's), from the agent daemon.")  # fmt: skip
    return p


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
    public, created = keygen(state)
    if args.json:
        _json({"public_key": public, "created": created, "key_file": str(state.key())})
    else:
        sys.stdout.write(public + "\n")
        _info(f"{'created' if created else 'existing'} key {state.key()}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    import time

    from vpcctl.core.spec import from_json, to_json
    from vpcctl.host.state import (
        StateDir,
        host_as_recorded,
        only_names_changed,
        record_fingerprint,
        result_json,
        unchanged,
    )

    started = time.monotonic()
    if args.expect_version and args.expect_version != __version__:
        raise VpcctlError(
            f"agent is vpcctl {__version__}, the admin runs vpcctl {args.expect_version}; "
            "nothing changed",
            f"install vpcctl {args.expect_version} here (`vpcctl host bootstrap NAME` from the admin)",
        )
    text, source = _read_spec(args.spec)
    if not text.strip():
        raise SpecError(f"{source}: empty HostSpec", "pass the output of `vpcctl render HOST`")
    spec = from_json(text, source)
    state = StateDir.default(args.state_dir)
    if args.save:
        from vpcctl.core.keys import write_secret

        write_secret(Path(args.save), text.encode())
    canonical = to_json(spec)
    if not args.dry_run and unchanged(spec, canonical, state):
        # the no-change fast path: nothing heavier than spec.py and quick.py was imported
        if args.json:
            _json(result_json(spec.host, [], 0, False, time.monotonic() - started))
        else:
            _info(f"{spec.host}: up to date")
        return 0
    if not args.dry_run and only_names_changed(canonical, state):
        with state.locked():
            if host_as_recorded(spec, state):
                # a container came or went: only the zone file changes (the resolver reloads it)
                from vpcctl.host import live

                # discovered names stay (the agent daemon's live table)
                zone, names = live.zone_text(spec, live.read_live(state))
                change = {"op": "WriteZone", "records": names,
                          "text": f"write resolver zone ({names} names)"}  # fmt: skip
                state.write(state.zone, zone)
                state.write(state.applied, canonical)
                record_fingerprint(spec, state)
                if args.json:
                    _json(result_json(spec.host, [change], 1, False, time.monotonic() - started))
                else:
                    _info(f"  {change['text']}")
                    _info(f"{spec.host}: applied 1 change in {time.monotonic() - started:.2f} s")
                return 0
    from vpcctl.host.agent import apply

    progress = None if args.json or args.dry_run else (lambda c: _info(f"  {c.describe()}"))
    if args.dry_run:
        result = apply(spec, None, state, dry_run=True, backend=args.backend)
    else:
        with state.locked():
            result = apply(spec, None, state, progress=progress, backend=args.backend)
    if args.json:
        _json(result.to_json())
    elif result.plan.empty:
        _info(f"{spec.host}: up to date")
    elif args.dry_run:
        for line in result.plan.describe():
            sys.stdout.write(line + "\n")
        _info(f"{spec.host}: {len(result.plan.changes)} changes planned (dry run)")
    else:
        _info(f"{spec.host}: applied {result.applied} changes in {result.seconds:.2f} s")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from vpcctl.host.agent import status
    from vpcctl.host.kernel import LinuxSystem
    from vpcctl.host.state import StateDir

    system = LinuxSystem()
    try:
        data = status(system, StateDir.default(args.state_dir))
    finally:
        system.close()
    if args.json:
        _json(data)
        return 0
    _print_mesh(data.get("daemon"))
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
    return 0


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


def cmd_check(args: argparse.Namespace) -> int:
    import os
    import shutil

    problems: list[dict[str, str]] = []
    root = os.geteuid() == 0
    if not root:
        problems.append({"message": "the agent must run as root",
                         "hint": "log in as root or give the login passwordless sudo"})  # fmt: skip
    kernel = False
    if root:
        from vpcctl.host.wireguard import kernel_has_wireguard

        kernel = kernel_has_wireguard()
    userspace = shutil.which("wireguard-go") is not None
    if not kernel and not userspace:
        problems.append(
            {
                "message": "no WireGuard: neither the kernel module nor wireguard-go",
                "hint": "modprobe wireguard (Linux >= 5.6), or apt-get install wireguard-go",
            }
        )
    nft = shutil.which("nft") is not None
    if not nft:
        problems.append({"message": "nft not found", "hint": "apt-get install nftables"})
    data = {
        "version": __version__,
        "root": root,
        "wireguard": "kernel" if kernel else ("userspace" if userspace else None),
        "nftables": nft,
        "problems": problems,
    }
    if args.json:
        _json(data)
    else:
        for p in problems:
            _info(f"problem: {p['message']} (hint: {p['hint']})")
        if not problems:
            _info(f"ok: vpcctl {__version__}, WireGuard {data['wireguard']}, nftables")
    return int(ExitCode.ERROR) if problems else 0


def cmd_down(args: argparse.Namespace) -> int:
    from vpcctl.host.agent import down
    from vpcctl.host.kernel import LinuxSystem
    from vpcctl.host.state import StateDir

    state = StateDir.default(args.state_dir)
    system = LinuxSystem()
    try:
        with state.locked():
            result = down(system, state)
    finally:
        system.close()
    if args.json:
        _json({"removed": result.plan.to_json()})
        return 0
    for line in result.plan.describe():
        _info(f"  {line}")
    _info(
        f"removed {len(result.plan.changes)} objects"
        if result.plan.changes
        else "nothing to remove"
    )
    return 0


COMMANDS = {
    "keygen": cmd_keygen,
    "apply": cmd_apply,
    "status": cmd_status,
    "check": cmd_check,
    "down": cmd_down,
    "run": cmd_run,
    "table": cmd_table,
}


def run(argv: Sequence[str]) -> int:
    """Parse and run; the agent's one error boundary (same messages and codes as the CLI)."""
    try:
        args = parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        return COMMANDS[args.command](args)
    except VpcctlError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"hint: {exc.hint}\n")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return int(ExitCode.INTERRUPTED)
