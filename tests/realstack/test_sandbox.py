"""The sandbox on a machine without udev: libvirt must keep its qemu capabilities cache."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import libvirt
import pytest

from libvm.testing import Sandbox
from libvm.testing.sandbox import grant_kvm, restore_kvm
from tests.realstack.conftest import Stack

CACHE = Path("/var/cache/libvirt/qemu/capabilities")


def test_kvm_device_has_udev_ownership_while_the_sandbox_runs(sandbox: Sandbox | None) -> None:
    if sandbox is None:
        pytest.skip("LIBVM_TEST_URI names a daemon this sandbox did not start")
    if not Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm on this machine")
    st = os.stat("/dev/kvm")
    assert stat.S_ISCHR(st.st_mode)
    assert st.st_gid == grp.getgrnam("kvm").gr_gid
    assert stat.S_IMODE(st.st_mode) & 0o060 == 0o060


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


def test_grant_and_restore_leave_the_device_as_found(tmp_path: Path) -> None:
    try:
        kvm_gid = grp.getgrnam("kvm").gr_gid
    except KeyError:
        pytest.skip("no kvm group (libvirt-daemon-system creates it)")
    device, record = tmp_path / "kvm", tmp_path / "state" / "kvm.original"
    device.touch(mode=0o600)
    os.chown(device, 0, 0)
    grant_kvm(device, record)
    assert (device.stat().st_gid, stat.S_IMODE(device.stat().st_mode)) == (kvm_gid, 0o660)
    grant_kvm(device, record)  # a second sandbox must not record the granted state as the original
    assert record.read_text().split() == ["0", "0", "600"]
    restore_kvm(device, record)
    assert (device.stat().st_uid, device.stat().st_gid, stat.S_IMODE(device.stat().st_mode)) == (0, 0, 0o600)
    assert not record.exists()
    restore_kvm(device, record)  # idempotent
