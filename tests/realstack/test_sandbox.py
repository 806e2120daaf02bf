"""The sandbox on a machine without udev: libvirt must keep its qemu capabilities cache."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import libvirt
import pytest

from libvm.testing import Sandbox
from tests.realstack.conftest import Stack

CACHE = Path("/var/cache/libvirt/qemu/capabilities")


def test_daemon_sees_no_kvm_and_the_host_device_is_untouched(stack: Stack, sandbox: Sandbox | None) -> None:
    if sandbox is None:
        pytest.skip("LIBVM_TEST_URI names a daemon this sandbox did not start")
    pid = int((sandbox.state_dir / "libvirtd.pid").read_text())
    if Path("/dev/kvm").exists():
        host = os.stat("/dev/kvm")
        assert stat.S_ISCHR(host.st_mode), "the host's /dev/kvm must stay the device"
        seen = os.stat(f"/proc/{pid}/root/dev/kvm")  # /dev/kvm in libvirtd's mount namespace
        assert not stat.S_ISCHR(seen.st_mode), "libvirtd must not see the kvm device"
    assert "domain type='kvm'" not in stack.hv.handle.getCapabilities()
    assert stack.hv.default_virt_type == "qemu" or os.environ.get("LIBVM_VIRT_TYPE")


def test_capabilities_cache_is_not_reprobed_per_call(stack: Stack, sandbox: Sandbox | None) -> None:
    """On a fresh machine (/dev/kvm root:root 0600) libvirt re-probed qemu on every call."""
    if sandbox is None:
        pytest.skip("LIBVM_TEST_URI names a daemon this sandbox did not start")
    conn: libvirt.virConnect = stack.hv.handle
    conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
    before = {p.name: p.stat().st_mtime_ns for p in CACHE.glob("*.xml")}
    assert before, "libvirt wrote no capabilities cache"
    for _ in range(3):
        conn.getDomainCapabilities(None, "x86_64", None, "qemu", 0)
    after = {p.name: p.stat().st_mtime_ns for p in CACHE.glob("*.xml")}
    assert after == before, "libvirt rewrote its qemu capabilities cache: it re-probed qemu"
