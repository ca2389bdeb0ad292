"""Choose the WireGuard backend: the kernel module if present, else wireguard-go."""

from __future__ import annotations

import logging
from pathlib import Path

from vpcctl.core import run
from vpcctl.core.errors import KernelError, ProgramError
from vpcctl.host.netlink import KernelWireGuard, kernel_wireguard_available, probe_wireguard_link
from vpcctl.host.wgtypes import WireGuardBackend
from vpcctl.host.wguapi import HINT_INSTALL, UserspaceWireGuard

log = logging.getLogger(__name__)

SYS_MODULE = Path("/sys/module/wireguard")
BACKENDS = ("kernel", "userspace")


def _modprobe_wireguard() -> bool:
    try:
        return run.run(["modprobe", "wireguard"], timeout=10).ok
    except ProgramError as exc:
        log.debug("modprobe wireguard failed: %s", exc)
        return False


def kernel_has_wireguard(*, modprobe: bool = True, link_probe: bool = True) -> bool:
    """Whether the running kernel can do WireGuard.

    In order: the "wireguard" generic netlink family resolves; /sys/module/wireguard
    exists; ``modprobe wireguard`` succeeds (then the family must resolve); creating
    a throwaway wireguard link succeeds (the kernel autoloads the module even when
    there is no modprobe binary, e.g. in a container) — that probe link is always
    deleted again.
    """
    if kernel_wireguard_available() or SYS_MODULE.exists():
        return True
    if modprobe and _modprobe_wireguard() and kernel_wireguard_available():
        return True
    if link_probe:
        try:
            return probe_wireguard_link()
        except KernelError as exc:
            log.debug("wireguard link probe impossible: %s", exc.message)
    return False


def detect_backend(
    prefer: str | None = None,
    *,
    userspace_binary: str = "wireguard-go",
    modprobe: bool = True,
    link_probe: bool = True,
) -> WireGuardBackend:
    """The kernel backend if the kernel has WireGuard, else wireguard-go if on PATH.

    ``prefer`` ("kernel" / "userspace") forces one backend and fails with a hint
    if it is unavailable.
    """
    if prefer is not None and prefer not in BACKENDS:
        raise ValueError(f"unknown WireGuard backend {prefer!r}; expected one of {BACKENDS}")
    if prefer != "userspace" and kernel_has_wireguard(modprobe=modprobe, link_probe=link_probe):
        return KernelWireGuard()
    if prefer == "kernel":
        raise KernelError(
            "the kernel WireGuard backend was requested but the kernel has no WireGuard",
            "modprobe wireguard (Linux >= 5.6 ships it) — or use the userspace backend "
            "(apt-get install wireguard-go)",
        )
    if run.which(userspace_binary) is not None:
        return UserspaceWireGuard(binary=userspace_binary)
    if prefer == "userspace":
        raise KernelError(
            f"the userspace WireGuard backend was requested but {userspace_binary} is not on PATH",
            "apt-get install wireguard-go",
        )
    raise KernelError("no WireGuard implementation is available", HINT_INSTALL)


__all__ = ["detect_backend", "kernel_has_wireguard"]
