"""The remote wrapper of every SSH command (ssh.remote_command), run by a real /bin/sh here:
stdin, both output streams and the exit code pass through; a command that overruns its time is
ended; a command whose reader went away (the SSH channel closed: Ctrl-C, our own timeout) is
ended within seconds, not left running."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from vpcctl.admin.ssh import remote_command


def test_stdin_both_streams_and_the_exit_code_pass_through() -> None:
    line = remote_command(["sh", "-c", "cat; echo out; echo err >&2; exit 3"], 5)
    started = time.monotonic()
    done = subprocess.run(line, shell=True, input=b"IN\n", capture_output=True, timeout=10)
    assert (done.returncode, done.stdout, done.stderr) == (3, b"IN\nout\n", b"err\n")
    assert time.monotonic() - started < 1.0  # the watchdog delays nothing


def test_a_command_that_overruns_is_ended() -> None:
    started = time.monotonic()
    done = subprocess.run(remote_command(["sleep", "60"], 1), shell=True, capture_output=True,
                          timeout=20)  # fmt: skip
    assert done.returncode == 124 and time.monotonic() - started < 5


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.split(") ", 1)[1][0] != "Z"


def test_a_command_whose_reader_went_away_is_ended(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    script = f"echo $$ > {pidfile}; exec sleep 60"
    proc = subprocess.Popen(remote_command(["sh", "-c", script], 120), shell=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while not pidfile.exists() or not pidfile.read_text().strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid = int(pidfile.read_text())
        assert _alive(pid)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # what sshd does when the channel closes
        proc.stderr.close()
        deadline = time.monotonic() + 5
        while _alive(pid):
            assert time.monotonic() < deadline, "the command outlived its channel"
            time.sleep(0.1)
        assert proc.wait(5) != 0
    finally:
        proc.kill()
        proc.wait()
