"""`vpcctl agent ...`: the host side, run on each host as root (by `vpcctl up` over SSH, or by
hand)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from vpcctl.cli.app import new_app
from vpcctl.cli.output import info, print_json

agent_app = new_app("The host agent: converge this host to its HostSpec (run as root).")

STATE_OPT = typer.Option(
    None,
    "--state-dir",
    help="Where the key and the agent's history live (default: $VPCCTL_STATE_DIR or /etc/vpcctl).",
)
JSON_OPT = typer.Option(False, "--json", help="Print JSON (for scripts).")


@agent_app.command("keygen")
def keygen_cmd(state_dir: Path | None = STATE_OPT, as_json: bool = JSON_OPT) -> None:
    """Create this host's WireGuard private key (mode 0600) if missing; print the public key.

    Running it again prints the same key. The private key never leaves this host.

    [bold]Example[/]

      vpcctl agent keygen
    """
    from vpcctl.agent import StateDir, keygen

    state = StateDir.default(state_dir)
    public, created = keygen(state)
    if as_json:
        print_json({"public_key": public, "created": created, "key_file": str(state.key())})
    else:
        sys.stdout.write(public + "\n")
        info(f"{'created' if created else 'existing'} key {state.key()}")


def _read_spec(source: str) -> tuple[str, str]:
    from vpcctl.errors import SpecError

    if source == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(source).read_text(encoding="utf-8"), source
    except OSError as exc:
        raise SpecError(
            f"{source}: cannot read ({exc.strerror})", "pass a file from `vpcctl render HOST`"
        ) from None


@agent_app.command("apply")
def apply_cmd(
    spec: str = typer.Argument(..., help="HostSpec JSON file, or - for stdin."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan, change nothing."),
    state_dir: Path | None = STATE_OPT,
    backend: str | None = typer.Option(
        None, "--backend", help='Force the WireGuard backend: "kernel" or "userspace".'
    ),
    as_json: bool = JSON_OPT,
) -> None:
    """Converge this host to a HostSpec: observe, plan, apply; roll back on failure.

    [bold]Examples[/]

      vpcctl render vps1 | ssh root@vps1 vpcctl agent apply -

      vpcctl agent apply /etc/vpcctl/spec.json --dry-run
    """
    from vpcctl.agent import StateDir, apply, load_spec
    from vpcctl.errors import ValidationError
    from vpcctl.system import LinuxSystem

    if backend not in (None, "kernel", "userspace"):
        raise ValidationError(
            f"--backend: {backend!r} is not a backend", 'use "kernel" or "userspace"'
        )
    text, source = _read_spec(spec)
    if not text.strip():
        from vpcctl.errors import SpecError

        raise SpecError(f"{source}: empty HostSpec", "pass the output of `vpcctl render HOST`")
    host_spec = load_spec(text, source)
    state = StateDir.default(state_dir)
    system = LinuxSystem(prefer_backend=backend)
    try:
        if dry_run:
            result = apply(host_spec, system, state, dry_run=True)
        else:
            with state.locked():
                result = apply(
                    host_spec,
                    system,
                    state,
                    progress=None if as_json else (lambda c: info(f"  {c.describe()}")),
                )
    finally:
        system.close()
    if as_json:
        print_json(result.to_json())
        return
    if result.plan.empty:
        info(f"{host_spec.host}: up to date")
    elif dry_run:
        for line in result.plan.describe():
            sys.stdout.write(line + "\n")
        info(f"{host_spec.host}: {len(result.plan.changes)} changes planned (dry run)")
    else:
        info(f"{host_spec.host}: applied {result.applied} changes in {result.seconds:.2f} s")


@agent_app.command("status")
def status_cmd(state_dir: Path | None = STATE_OPT, as_json: bool = JSON_OPT) -> None:
    """Show this host's observed state: interface, peers (handshakes, transfer), routes, tunnel,
    bridges, firewall.

    [bold]Example[/]

      vpcctl agent status --json
    """
    from vpcctl.agent import StateDir, status
    from vpcctl.cli.output import table
    from vpcctl.system import LinuxSystem

    system = LinuxSystem()
    try:
        data = status(system, StateDir.default(state_dir))
    finally:
        system.close()
    if as_json:
        print_json(data)
        return
    iface = data["interface"]
    if iface is None:
        info("no vpcctl interface on this host (nothing applied yet?)")
        return
    info(
        f"{data['host']} in mesh {data['mesh']}: {iface['name']} ({iface['backend']}) "
        f"{', '.join(iface['addresses'])} port {iface['listen_port']}"
    )
    table(
        ["PEER", "ENDPOINT", "HANDSHAKE", "RX", "TX"],
        [
            (
                p["name"] or p["public_key"][:12],
                p["endpoint"],
                f"{p['handshake_age']:.0f}s ago" if p["handshake_age"] is not None else "never",
                p["rx_bytes"],
                p["tx_bytes"],
            )
            for p in data["peers"]
        ],
        "no peers",
    )


@agent_app.command("down")
def down_cmd(state_dir: Path | None = STATE_OPT) -> None:
    """Remove everything vpcctl owns on this host: its interface, tunnel, bridges, routes and
    nftables table. Nothing else is touched; the key stays.

    [bold]Example[/]

      vpcctl agent down
    """
    from vpcctl.agent import StateDir, down
    from vpcctl.system import LinuxSystem

    state = StateDir.default(state_dir)
    system = LinuxSystem()
    try:
        with state.locked():
            result = down(system, state)
    finally:
        system.close()
    for line in result.plan.describe():
        info(f"  {line}")
    info(
        f"removed {len(result.plan.changes)} objects"
        if result.plan.changes
        else "nothing to remove"
    )


@agent_app.command("check")
def check_cmd(as_json: bool = JSON_OPT) -> None:
    """Check that this host can run the agent: root, WireGuard (kernel or wireguard-go),
    nftables, iproute2. Exit 1 with the first problem.

    [bold]Example[/]

      vpcctl agent check --json
    """
    import os
    import shutil

    from vpcctl import __version__
    from vpcctl.errors import ExitCode

    problems: list[dict[str, str]] = []
    root = os.geteuid() == 0
    if not root:
        problems.append(
            {
                "message": "the agent must run as root",
                "hint": "log in as root or give the login passwordless sudo",
            }
        )
    kernel = False
    if root:
        from vpcctl.wireguard import kernel_has_wireguard

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
    if as_json:
        print_json(data)
    else:
        for p in problems:
            info(f"problem: {p['message']} (hint: {p['hint']})")
        if not problems:
            info(f"ok: vpcctl {__version__}, WireGuard {data['wireguard']}, nftables")
    if problems:
        raise typer.Exit(int(ExitCode.ERROR))
