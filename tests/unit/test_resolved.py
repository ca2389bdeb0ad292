"""Names on the host (host/resolved.py): the resolvectl calls the agent makes.

systemd-resolved does not run on the project's machines (no systemd as PID 1, no resolvectl), so
these tests put a fake ``resolvectl`` first on PATH: a shell script that records its argv and
keeps per-link settings in files, as resolved keeps them per link (forgotten when the link is
recreated). The agent's code runs it through vpcctl/core/run.py exactly as it would the real one.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from tests.builders import homelab
from tests.fake_resolvectl import FakeResolvectl
from vpcctl.admin.render import render
from vpcctl.host import resolved


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeResolvectl:
    f = FakeResolvectl(tmp_path)
    for key, value in f.env(os.environ["PATH"]).items():
        monkeypatch.setenv(key, value)
    return f


SPEC = render(homelab(), "nas")  # VPCs prod (first by name) and staging


def test_the_registration_is_the_first_vpcs_bridge_and_gateway() -> None:
    reg = resolved.registration(SPEC)
    assert reg == resolved.Registration("vb-prod", SPEC.vpcs[0].gateway.ip, "vpc.internal")
    gw = str(SPEC.vpcs[0].gateway.ip)
    assert reg.commands() == [
        ["resolvectl", "dns", "vb-prod", gw],
        ["resolvectl", "domain", "vb-prod", "~vpc.internal"],
        ["resolvectl", "default-route", "vb-prod", "false"],
        ["resolvectl", "nta", "vb-prod", "vpc.internal"],
    ]
    assert reg.revert() == ["resolvectl", "revert", "vb-prod"]
    assert resolved.registration(None) is None


def test_ensure_registers_a_routing_only_domain_and_status_reads_it_back(
    fake: FakeResolvectl,
) -> None:
    gw = str(SPEC.vpcs[0].gateway.ip)
    out = resolved.ensure(SPEC)
    assert fake.argv == [
        "status",
        f"dns vb-prod {gw}",
        "domain vb-prod ~vpc.internal",
        "default-route vb-prod false",
        "nta vb-prod vpc.internal",
    ]
    assert out["registered"] is True and out["mode"] == "systemd-resolved"
    assert out["summary"] == f"systemd-resolved: registered ~vpc.internal on vb-prod ({gw})"
    assert (fake.link("dns"), fake.link("domain"), fake.link("default-route")) == (
        gw, "~vpc.internal", "false",
    )  # fmt: skip
    assert resolved.status(SPEC) == out


def test_a_recreated_link_loses_its_settings_and_the_next_converge_puts_them_back(
    fake: FakeResolvectl,
) -> None:
    resolved.ensure(SPEC)
    for f in fake.dir.glob("*.vb-prod"):  # what resolved does when the link goes away
        f.unlink()
    stale = resolved.status(SPEC)
    assert stale["registered"] is False
    assert "vpcctl agent apply" in stale["problem"]
    assert resolved.ensure(SPEC)["registered"] is True
    assert fake.link("domain") == "~vpc.internal"


def test_down_reverts_the_link(fake: FakeResolvectl) -> None:
    resolved.ensure(SPEC)
    fake.clear()
    assert resolved.remove(SPEC) is True
    assert fake.argv == ["status", "revert vb-prod"]
    assert fake.link("dns") is None and fake.link("domain") is None
    assert resolved.remove(None) is False


def test_resolved_not_running_changes_nothing_and_names_the_fallback(fake: FakeResolvectl) -> None:
    (fake.dir / "status_rc").write_text("1\n")
    out = resolved.ensure(SPEC)
    assert fake.argv == ["status"]  # asked whether it runs, set nothing
    assert out["mode"] == "fallback" and out["registered"] is False
    assert out["summary"].startswith("systemd-resolved: not running: fallback: ")
    assert "nameserver 127.0.0.1" in out["fallback"]
    assert "server=/vpc.internal/127.0.0.1" in out["fallback"]
    assert resolved.remove(SPEC) is False and fake.argv == ["status", "status"]


def test_no_resolvectl_at_all_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no resolvectl
    assert resolved.running() is False
    assert resolved.ensure(SPEC)["mode"] == "fallback"
    assert resolved.status(SPEC)["mode"] == "fallback"


def test_a_refused_setting_is_reported_not_raised(fake: FakeResolvectl) -> None:
    (fake.dir / "fail.domain").write_text("")
    out = resolved.ensure(SPEC)
    assert out["registered"] is False
    assert out["problem"] == "`resolvectl domain vb-prod ~vpc.internal`: Failed to set domain: boom"
    assert fake.argv[-1] == "domain vb-prod ~vpc.internal"  # stopped there


def test_a_host_without_vpcs_registers_nothing(fake: FakeResolvectl) -> None:
    spec = replace(SPEC, vpcs=())
    out = resolved.ensure(spec)
    assert out["registered"] is False and "no VPC slice" in out["summary"]
    assert fake.argv == ["status"]
