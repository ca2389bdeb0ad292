"""The hunt (issue 10 item 9), kept in the project: hypothesis generates hostile values for every
argument and option of the offline commands and for every field of a hand-edited inventory, and
checks the three promises each time:

1. the exit code is 0 (the value was fine), or 1 or 2 with exactly one ``error:`` line (and at
   most one ``hint:`` line) on stderr;
2. no traceback, ever (no exception escapes the app);
3. a refused command leaves the inventory byte-for-byte unchanged (and creates no file).

Commands run in-process through typer's CliRunner for speed; ``test_real_processes`` repeats a
handful through ``python -m vpcctl``. ``VPCCTL_HUNT_EXAMPLES`` sets the examples per test (default
60; the runs behind issue 10 used 300 and 700, see CHANGELOG).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from tests.builders import homelab, public_key
from tests.cli.conftest import VPCCTL, error_lines, process_env
from tests.fake_transport import FakeNet
from vpcctl.admin import inventory
from vpcctl.cli.app import State
from vpcctl.cli.commands import app

EXAMPLES = int(os.environ.get("VPCCTL_HUNT_EXAMPLES", "60"))
HUNT = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def hunted() -> Any:
    """The homelab with every optional inventory field set away from its default (a default is
    not written, so a hand edit could not reach it): the mesh's mtu, metrics and psk, and a
    roaming client."""
    from vpcctl.admin import edits

    inv = edits.set_mesh(homelab(), mtu=1380, metrics="127.0.0.1:9586", psk=True)
    return edits.add_client(inv, "phone", "vps1", ("prod",), public_key("phone"))


ORIGINAL = inventory.dump(hunted()).encode()

# values that broke something in the probes of issue 10, or sit on an edge of a rule
TRICKY = [
    "",
    " ",
    "-",
    "--",
    "-1",
    "-0",
    "0",
    "1",
    "nan",
    "-nan",
    "inf",
    "-inf",
    "1e309",
    "1.5",
    "99999999999999999999",
    "65536",
    "2147483648",
    "0x10",
    "true",
    "None",
    "0.0.0.0",
    "::",
    "[::]",
    "1.2.3",
    "01.2.3.4",
    "256.1.1.1",
    "255.255.255.255",
    "127.0.0.1",
    "224.0.0.1",
    "169.254.1.1",
    "10.90.0.1",
    "203.0.113.10",
    "1.2.3:51820",
    "0.0.0.0:51820",
    "[::]:51820",
    "[::1]:0",
    "h:65536",
    "h:",
    ":1",
    "root@",
    "@h",
    "a@b@c",
    "-oProxyCommand=x",
    "0.0.0.0/0",
    "10.0.0.0/33",
    "10.0.0.1/24",
    "127.0.0.0/8",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "10.100.0.0/16",
    "203.0.113.0/24",
    "10.100.255.0/31",
    "10.100.255.0/32",
    "lo",
    "docker0",
    "eth0",
    "wg0",
    "tunl0",
    "vb-prod",
    "vpc0-ipip",
    "a" * 16,
    "a" * 64,
    "a" * 300,
    "prod",
    "staging",
    "nas",
    "vps1",
    "prod/db-1",
    "prod/",
    "/db-1",
    "a/b/c",
    "web-1",
    "db",
    "in-addr.arpa",
    "10.in-addr.arpa",
    "ip6.arpa",
    "x." * 130,
    "vpc.internal.",
    "A" * 43 + "=",
    public_key("hunt"),
    public_key("nas"),
    "=",
    "[",
    "#",
    "'",
    '"',
    "\\",
    "\x00",
    "\n",
    "x\ny",
    "\r",
    "\t",
    "\x1b[2J",
    "\u202e",
    "\ufeff",
    "ＡＢ",
    "dé",
    "١٢",
    "²",
    "../x",
    "/",
    ".",
    "5432/sctp",
    "postgres=5432/tcp",
    "=80",
    "80/",
    "AAAA",
    "PTR",
    "BOGUS",
    "wg-quick",
    "json",
    "yaml",
]
hostile = st.one_of(
    st.sampled_from(TRICKY),
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.text(alphabet="abcz019-./:@[]=_", max_size=30),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)

KEY2 = public_key("hunt")
# Each offline command with a baseline that works, as (option or None for a positional, value);
# a value of True is a flag. The hunt replaces some of them with hostile values, drops others.
COMMANDS: dict[str, tuple[list[str], list[tuple[str | None, str | bool]]]] = {
    "init": (["init"], [(None, "lab"), ("--mesh-cidr", "10.91.0.0/24"),
        ("--domain", "vpc.internal"), ("--port", "51820"), ("--interface", "vpc0"),
        ("--routing", "ipip"), ("--psk", True)]),
    "host add": (["host", "add"], [(None, "vps3"), ("--ssh", "root@192.0.2.30"),
        ("--endpoint", "192.0.2.30:51820"), ("--public-key", KEY2), ("--address", "10.90.0.9"),
        ("--agent", "vpcctl"), ("--wait", "5"), ("--json", True)]),
    "host set": (["host", "set"], [(None, "vps1"), ("--public-key", KEY2),
        ("--endpoint", "192.0.2.31:51820"), ("--no-endpoint", True), ("--agent", "vpcctl"),
        ("--wait", "5")]),
    "host rm": (["host", "rm"], [(None, "vps2"), ("--force", True), ("--wait", "5")]),
    "host ls": (["host", "ls"], [("--json", True)]),
    "vpc add": (["vpc", "add"], [(None, "dev"), ("--cidr", "10.150.0.0/16"),
        ("--slice-prefix", "24"), ("--services", "10.150.255.0/24"), ("--wait", "5"),
        ("--json", True)]),
    "vpc rm": (["vpc", "rm"], [(None, "staging"), ("--force", True), ("--wait", "5")]),
    "vpc ls": (["vpc", "ls"], [("--json", True)]),
    "container add": (["container", "add"], [(None, "web-2"), ("--vpc", "prod"),
        ("--host", "vps1"), ("--ip", "10.100.2.9"), ("--wait", "5"), ("--json", True)]),
    "container rm": (["container", "rm"], [(None, "db-2"), ("--vpc", "prod"), ("--force", True),
        ("--wait", "5")]),
    "container ls": (["container", "ls"], [("--vpc", "prod"), ("--host", "nas"),
        ("--json", True)]),
    "service add": (["service", "add"], [(None, "web"), ("--vpc", "prod"), ("--port", "80"),
        ("--port", "https=443/tcp"), ("--backend", "web-1"), ("--selector", "app=web"),
        ("--vip", "10.100.255.9"),
        ("--wait", "5"), ("--json", True)]),
    "service rm": (["service", "rm"], [(None, "db"), ("--vpc", "prod"), ("--wait", "5")]),
    "service ls": (["service", "ls"], [("--vpc", "prod"), ("--json", True)]),
    "check": (["check"], [("--json", True)]),
    "render": (["render"], [(None, "nas"), ("--format", "json")]),
    "resolve": (["resolve"], [(None, "db"), ("--from", "prod/web-1"), ("--type", "A"),
        ("--json", True)]),
    "mesh set": (["mesh", "set"], [("--mtu", "1380"), ("--metrics", "127.0.0.1:9586"),
        ("--daemon", True), ("--daemon-port", "51900"), ("--grace", "8"), ("--psk", True),
        ("--no-psk", True), ("--wait", "5")]),
    "graph": (["graph"], [("--format", "dot")]),  # -o: test_hostile_output_files
    "client add": (["client", "add"], [(None, "laptop"), ("--via", "vps1"), ("--vpc", "prod"),
        ("--vpc", "staging"), ("--wait", "5")]),  # --png: test_hostile_output_files
    "client rm": (["client", "rm"], [(None, "phone"), ("--wait", "5")]),
    "client ls": (["client", "ls"], [("--json", True)]),
}  # fmt: skip


@pytest.fixture(scope="module")
def place() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="vpcctl-hunt-"))
    yield directory
    shutil.rmtree(directory)


def _reset(place: Path, content: bytes = ORIGINAL) -> Path:
    for child in place.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
    path = place / "vpc.toml"
    path.write_bytes(content)
    return path


def _files(place: Path) -> dict[str, bytes]:
    """Every file the inventory's directory holds (the lock file may come and stay)."""
    return {
        str(p.relative_to(place)): p.read_bytes()
        for p in sorted(place.rglob("*"))
        if p.is_file() and p.name != ".vpc.toml.lock"
    }


def _invoke(args: list[str]) -> Result:
    return CliRunner().invoke(app, args, prog_name="vpcctl", env={"VPCCTL_INVENTORY": None})


def promises(result: Result, before: dict[str, bytes], after: dict[str, bytes], what: Any) -> None:
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (what, repr(exc), result.stderr)
    assert "Traceback" not in result.stderr, (what, result.stderr)
    if result.exit_code == 0:
        return
    assert result.exit_code in (1, 2), (what, result.exit_code, result.stderr)
    lines = result.stderr.splitlines()
    errors = error_lines(result.stderr)
    hints = [line for line in lines if line.startswith("hint: ")]
    if what[0] == "check --json":  # the problems are the JSON on stdout
        report = json.loads(result.stdout) if result.stdout else None
        assert report is None or report["ok"] is False, (what, result.stdout)
        assert report is not None or len(errors) == 1, (what, result.stderr)
    elif what[0] == "check":  # check lists every problem: one error line each, each with a hint
        assert errors and all(line.startswith(("error: ", "hint: ", "warning: ")) for line in lines)
    else:
        assert len(errors) == 1 and len(hints) <= 1 and len(lines) == 1 + len(hints), (
            what,
            result.stderr,
        )
    assert after == before, (what, "the inventory changed although the command failed")


@st.composite
def command_lines(draw: st.DrawFn, commands: Any = None) -> tuple[str, list[str]]:
    commands = COMMANDS if commands is None else commands
    name = draw(st.sampled_from(sorted(commands)))
    words, baseline = commands[name]
    argv = list(words)
    hostile_at = draw(st.sets(st.integers(0, len(baseline) - 1), min_size=1))
    for index, (option, value) in enumerate(baseline):
        if index in hostile_at:
            bad = draw(hostile)
            if option is None:
                argv.append(bad)
            elif value is True:  # a flag given a value, or repeated
                argv += draw(
                    st.sampled_from([[option, bad], [option, option], [f"{option}={bad}"]])
                )
            else:
                argv += [option, bad]
        elif option is None:
            argv.append(str(value))
        elif draw(st.booleans()):
            argv += [option] if value is True else [option, str(value)]
    if draw(st.integers(0, 9)) == 0:
        argv.append(draw(hostile))  # a stray extra argument
    return name, argv


@HUNT
@given(case=command_lines())
def test_hostile_arguments_and_options(place: Path, case: tuple[str, list[str]]) -> None:
    name, argv = case
    path = _reset(place)
    new = place / "new.toml"
    args = ["-i", str(new if name == "init" else path), *argv]
    before = _files(place)
    result = _invoke(args)
    promises(result, before, _files(place), (name, args))


# ---------------------------------------------------------------------------------------------
# commands that talk to hosts, through the fake transport: options are checked before any host

SSH = [("--connect-timeout", "10"), ("--timeout", "300"), ("--known-hosts", "known_hosts")]
REMOTE: dict[str, tuple[list[str], list[tuple[str | None, str | bool]]]] = {
    "down": (["down"], [(None, "vps2"), ("--forget-key", True), ("--parallel", "4"),
        ("--json", True), ("--wait", "5"), *SSH]),
    "host rm --purge": (["host", "rm"], [(None, "vps2"), ("--purge", True), ("--force", True),
        ("--wait", "5"), *SSH]),
    "doctor": (["doctor"], [(None, "vps1"), ("--stale", "180"), ("--parallel", "4"),
        ("--json", True), *SSH[:1], SSH[2]]),
    "graph --live": (["graph"], [("--live", True), ("--format", "dot"), *SSH[:1], SSH[2]]),
    "up --confirm": (["up"], [(None, "vps1"), ("--confirm", "30"), ("--parallel", "4"),
        ("--json", True), ("--wait", "5"), *SSH]),
    "rotate-psk": (["rotate-psk"], [(None, "vps1"), ("--parallel", "4"), ("--json", True),
        ("--wait", "5"), *SSH]),
    "host rotate-key": (["host", "rotate-key"], [(None, "vps1"), ("--parallel", "4"),
        ("--json", True), ("--wait", "5"), *SSH]),
}  # fmt: skip


def remote_promises(result: Result, before: dict[str, bytes], after: dict[str, bytes],
                    net: FakeNet, what: Any) -> None:  # fmt: skip
    """A refusal (exit 1 or 2 with an ``error:`` line) is the usual one error and at most one
    hint, the inventory as it was, and no host connected to; anything else is a run (0, 1 for a
    failing check, 4 for a host that failed), never a traceback."""
    exc = result.exception
    assert exc is None or isinstance(exc, SystemExit), (what, repr(exc), result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, (what, result.stderr)
    if result.exit_code not in (1, 2) or not error_lines(result.stderr):
        assert result.exit_code in (0, 1, 4), (what, result.exit_code, result.stderr)
        return
    promises(result, before, after, what)
    assert not net.transports, (what, "a refused command connected to a host")


@HUNT
@given(case=command_lines(REMOTE))
def test_hostile_options_of_remote_commands(place: Path, case: tuple[str, list[str]]) -> None:
    name, argv = case
    path = _reset(place)
    before = _files(place)
    net = FakeNet()
    result = CliRunner().invoke(app, ["-i", str(path), *argv], prog_name="vpcctl",
                                env={"VPCCTL_INVENTORY": None}, obj=State(connect=net.connect))  # fmt: skip
    remote_promises(result, before, _files(place), net, (name, argv))


# ---------------------------------------------------------------------------------------------
# commands that write a file where told: only there (inside the directory), 0600 from birth


@HUNT
@given(
    where=st.one_of(st.sampled_from(["vpc.toml", ".", "", "sub", "sub/", "sub/x", "x/y", "-",
                                     "--json", "~x", "a" * 300, "\x00"]),
                    hostile).filter(lambda p: ".." not in p and not p.startswith(("/", "~/"))),
    fmt=st.one_of(st.sampled_from(["text", "dot", "svg", "png"]), hostile),
    client=st.booleans(),
)  # fmt: skip
def test_hostile_output_files(place: Path, where: str, fmt: str, client: bool) -> None:
    """graph -o FILE, and client add --png FILE (the QR code holds the client's private key)."""
    _reset(place)
    (place / "sub").mkdir()
    cwd = os.getcwd()
    os.chdir(place)
    try:
        before = _files(place)
        args = ["client", "add", "laptop", "--via", "vps1", "--png", where] if client else [
            "graph", "--format", fmt, "-o", where]  # fmt: skip
        result = _invoke(["-i", "vpc.toml", *args])
        after = _files(place)
    finally:
        os.chdir(cwd)
    what = (args[:2], fmt, where)
    if client and result.exit_code == 0:  # the client is in the inventory now
        del before["vpc.toml"], after["vpc.toml"]
    if result.exit_code != 0:
        promises(result, before, after, what)
        return
    assert "Traceback" not in result.stderr, (what, result.stderr)
    assert {k: v for k, v in after.items() if k in before} == before, (what, "overwrote a file")
    made = [place / k for k in after if k not in before]
    assert len(made) == 1, (what, sorted(after))
    assert made[0].stat().st_mode & 0o777 == 0o600, (what, oct(made[0].stat().st_mode))


# ---------------------------------------------------------------------------------------------
# the agent's new subcommands: only their parsing is hunted (running them changes this machine)

AGENT: dict[str, tuple[list[str], list[tuple[str | None, str | bool]]]] = {
    "agent down": (["down"], [("--forget-key", True), ("--json", True), ("--state-dir", "s")]),
    "agent confirm": (["confirm"], [("--token", "0123abcd"), ("--wait", "60"), ("--json", True),
        ("--state-dir", "s")]),
}  # fmt: skip


@HUNT
@given(case=command_lines(AGENT))
def test_hostile_options_of_agent_commands(case: tuple[str, list[str]]) -> None:
    """Parsed into their typed values, or argparse's usage error (exit 2), never a traceback."""
    from vpcctl.cli.agent import parser

    name, argv = case
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            args = parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code in (0, 2), (name, argv, exc.code)  # 0: a hostile value was --help
        assert exc.code == 0 or ": error: " in err.getvalue(), err.getvalue()
        return
    assert args.command == argv[0] and isinstance(args.json, bool), (name, argv)
    assert isinstance(getattr(args, "forget_key", False), bool), (name, argv)


# ---------------------------------------------------------------------------------------------
# hand-edited inventories


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _leaves(sub, (*path, key))
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            yield from _leaves(sub, (*path, index))


RAW = inventory.to_dict(hunted())
PATHS = [p for p in _leaves(RAW) if p]
toml_values = st.recursive(
    st.one_of(
        hostile,
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.sampled_from([0, 1, -1, 65535, 65536, 2**31, True, False, 1.0, math.inf, math.nan]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.datetimes(),
        st.dates(),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(["x", "ssh", "cidr", "host", "", "a.b", "\n"]), inner,
                        max_size=3),
    ),
    max_leaves=5,
)  # fmt: skip


def _set(raw: Any, path: tuple[Any, ...], value: Any, mode: str) -> None:
    *parents, last = path
    holder = raw
    for key in parents:
        holder = holder[key]
    if mode == "delete":
        del holder[last]
    elif mode == "rename" and isinstance(holder, dict):
        holder[value if isinstance(value, str) else str(value)] = holder.pop(last)
    else:
        holder[last] = value


@st.composite
def edited_files(draw: st.DrawFn) -> bytes:
    import copy

    raw = copy.deepcopy(RAW)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _leaves(raw) if p]
        path = draw(st.sampled_from(paths))
        mode = draw(st.sampled_from(["replace", "replace", "replace", "delete", "rename"]))
        _set(raw, path, draw(toml_values), mode)
    try:
        text = tomli_w.dumps(raw)
    except (TypeError, ValueError):  # not expressible in TOML: write what a hand edit could
        text = ORIGINAL.decode() + draw(hostile)
    if draw(st.integers(0, 4)) == 0:  # a byte-level slip of the hand (or a merge marker)
        data = bytearray(text.encode("utf-8", "surrogatepass"))
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\x00", b"<<<<<<< HEAD\n", b"[", b'"', b"\n[["]))
        data[at:at] = junk
        return bytes(data)
    return text.encode("utf-8", "surrogatepass")


READERS = [
    ["check"],
    ["check", "--json"],
    ["host", "ls"],
    ["render", "nas"],
    ["resolve", "db"],
    ["graph", "--format", "dot"],
]
# (" ".join of the first two words names the case: "check --json", "host ls", "vpc add"...)
WRITERS = [
    ["vpc", "add", "dev", "--cidr", "10.150.0.0/16"],
    ["host", "rm", "vps2"],
    ["mesh", "set", "--mtu", "1400", "--metrics", "mesh:9586"],
]


@HUNT
@given(content=edited_files(), command=st.sampled_from(READERS + WRITERS))
def test_hostile_hand_edits(place: Path, content: bytes, command: list[str]) -> None:
    path = _reset(place, content)
    before = _files(place)
    result = _invoke(["-i", str(path), *command])
    promises(result, before, _files(place), (" ".join(command[:2]), content[:300]))


@HUNT
@given(where=hostile.filter(lambda p: ".." not in p and not p.startswith(("/", "~"))))
def test_hostile_inventory_paths(place: Path, where: str) -> None:
    _reset(place)
    cwd = os.getcwd()
    os.chdir(place)
    try:
        for command in (["host", "ls"], ["check"], ["init", "x"]):
            before = _files(place)
            result = _invoke(["-i", where, *command])
            after = _files(place)
            if command[0] == "init" and result.exit_code == 0:
                continue  # a new file where asked: fine
            promises(result, before, after, (command[0], where))
    finally:
        os.chdir(cwd)


# ---------------------------------------------------------------------------------------------
# the same promises through real processes


@pytest.mark.parametrize(
    "argv",
    [
        ["vpc", "add", "x\x1b[2J", "--cidr", "10.9.0.0/16"],
        ["vpc", "add", "x", "--cidr", "0.0.0.0/0"],
        ["host", "add", "h", "--ssh", "root@1.2.3"],
        ["host", "set", "vps1", "--endpoint", "192.0.2.1:1", "--no-endpoint"],
        ["container", "ls", "--vpc", "nope"],
        ["resolve", "", "--type", "BOGUS"],
        ["up", "--timeout", "nan"],
        ["--bogus"],
    ],
)
def test_real_processes(place: Path, argv: list[str]) -> None:
    path = _reset(place)
    before = _files(place)
    done = subprocess.run(
        [*VPCCTL, "-i", str(path), *argv],
        env=process_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (1, 2), done.stderr
    lines = done.stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["error", "hint"], done.stderr
    assert "\x1b" not in done.stderr and "Traceback" not in done.stderr
    assert _files(place) == before
