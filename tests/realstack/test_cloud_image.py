"""Cloud-image VMs on the real daemon: a bootable base image in a storage pool, qcow2
overlays, a cloud-init NoCloud seed, DNS names and SSH readiness.

The test guest's disk image (``libvm.testing.build_disk_image``: SYSLINUX, the Debian
cloud kernel and a busybox init that reads the NoCloud seed and answers TCP 22 with an
``SSH-2.0`` banner) stands in for a cloud image: no direct kernel boot anywhere here.
"""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import libvm
from libvm import CloudInit, Disk, Nic
from libvm.testing import Sandbox
from libvm.testing.guest import parse_seed_lines
from tests.realstack.conftest import Stack, unavailable

POOL = "libvmtestpool"
POOL_DIR = "/var/lib/libvirt/images/libvmtestpool"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmdlibvmtestkey00000000000000000000000000 me@host"


@pytest.fixture(scope="module")
def base(uri: str) -> Iterator[str]:
    """The guest's bootable disk image uploaded once into a pool as the base volume."""
    from libvm.testing import build_disk_image

    try:
        image = build_disk_image()
    except Exception as exc:
        unavailable(f"the guest disk image could not be built: {exc}")
        raise
    with libvm.connect(uri) as hv:
        pool = hv.ensure_pool(POOL, POOL_DIR)
        for vol in pool.volumes():
            vol.delete()
        sent: list[int] = []
        vol = pool.upload("base.qcow2", image, progress=lambda done, total: sent.append(done))
        assert sent and sent[-1] == image.stat().st_size
        assert vol.format == "qcow2"
        try:
            yield vol.name
        finally:
            hv.pool(POOL).delete(volumes=True)
            assert POOL not in [p.name for p in hv.pools()]


def in_netns(sandbox: Sandbox | None, uri: str, code: str, timeout: float = 240) -> str:
    """Run Python ``code`` where the guests' bridge is reachable (the sandbox's netns)."""
    argv = [sys.executable, "-c", code, uri]
    if sandbox is not None:
        argv = ["ip", "netns", "exec", sandbox.netns, *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          cwd=Path(__file__).parents[2], env=dict(os.environ))
    if proc.returncode != 0:
        raise AssertionError(f"in netns: exit {proc.returncode}: {proc.stderr[-1500:]}")
    return proc.stdout.strip()


WAIT_SSH = """
import sys, libvm
with libvm.connect(sys.argv[1]) as hv:
    try:
        print(hv.vm({name!r}).wait_for_ssh(timeout={timeout}))
    except libvm.WaitTimeout as exc:
        print("TIMEOUT", exc)
"""

DNS_QUERY = """
import socket, struct, sys
query = struct.pack(">HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
query += b"".join(bytes([len(p)]) + p.encode() for p in {name!r}.split(".")) + b"\\0" + struct.pack(">HH", 1, 1)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    s.settimeout(5)
    s.sendto(query, ({server!r}, 53))
    reply = s.recv(512)
answers = struct.unpack(">H", reply[6:8])[0]
print(socket.inet_ntoa(reply[-4:]) if answers else "NXDOMAIN")
"""


def test_two_vms_from_one_base_get_their_addresses_seed_ssh_and_dns(
        stack: Stack, base: str, sandbox: Sandbox | None, uri: str) -> None:
    net, prefix = stack.network("cloud", forward="none")
    pool = stack.hv.pool(POOL)
    vms = []
    for n in (1, 2):
        label = f"web{n}"
        vms.append(stack.hv.create_vm(
            stack.name(label), memory="256MiB",
            disks=[Disk.from_image(pool.volume(base), size="256MiB")],
            nics=[Nic(net.name, ip=f"{prefix}.{50 + n}", hostname=label, dns=True)],
            # host_key=False: the test guest's port 22 prints a banner, it exchanges no keys.
            cloud_init=CloudInit(hostname=label, ssh_authorized_keys=[KEY], host_key=False),
            serial_log=stack.console_path(label), virt_type="qemu"))
    for n, vm in enumerate(vms, 1):
        assert str(vm.wait_for_ip(timeout=120)) == f"{prefix}.{50 + n}"
        assert vm.spec().kernel is None  # booted from the overlay, not a kernel file
    for n, vm in enumerate(vms, 1):
        stack.console(f"web{n}")
        text = stack.console_path(f"web{n}").read_text(errors="replace")
        seed = parse_seed_lines(text)
        assert seed["hostname"] == f"web{n}" and seed["ssh_keys"] == [KEY] and seed["ssh_listening"], text[-1500:]
        assert seed["instance_id"] == vm.handle.UUIDString()
        got = in_netns(sandbox, uri, WAIT_SSH.format(name=vm.name, timeout=120))
        assert got == f"{prefix}.{50 + n}", got
        resolved = in_netns(sandbox, uri, DNS_QUERY.format(name=f"web{n}", server=f"{prefix}.1"))
        assert resolved == f"{prefix}.{50 + n}"
    overlays = {v.name: v.info() for v in pool.volumes()}
    assert overlays[f"{stack.name('web1')}-disk0.qcow2"].backing == pool.volume(base).path
    vms[0].delete(storage=True)
    names = sorted(v.name for v in pool.volumes())
    assert names == sorted([base, f"{stack.name('web2')}-disk0.qcow2", f"{stack.name('web2')}-seed.iso"])
    assert in_netns(sandbox, uri, DNS_QUERY.format(name="web1", server=f"{prefix}.1")) == "NXDOMAIN"


def test_wait_for_ssh_names_the_stage_when_nothing_listens(
        stack: Stack, base: str, sandbox: Sandbox | None, uri: str) -> None:
    net, prefix = stack.network("nossh", forward="none")
    pool = stack.hv.pool(POOL)
    vm = stack.hv.create_vm(
        stack.name("quiet"), memory="256MiB", disks=[Disk.from_image(pool.volume(base))],
        nics=[Nic(net.name, ip=f"{prefix}.60")],
        cloud_init=CloudInit(user_data={"libvm_no_ssh": True}),
        serial_log=stack.console_path("quiet"), virt_type="qemu")
    assert str(vm.wait_for_ip(timeout=120)) == f"{prefix}.60"
    stack.console("quiet")
    got = in_netns(sandbox, uri, WAIT_SSH.format(name=vm.name, timeout=8))
    assert got.startswith("TIMEOUT") and "stage 2 of 2" in got and "connection refused" in got, got


def test_failure_after_the_overlay_leaves_no_volume(stack: Stack, base: str) -> None:
    net, prefix = stack.network("down", forward="none")
    net.stop()  # libvirt refuses to start a guest on a network that is not running
    pool = stack.hv.pool(POOL)
    before = sorted(v.name for v in pool.volumes())
    with pytest.raises(libvm.LibvirtFailure):
        stack.hv.create_vm(stack.name("down"), memory="256MiB", disks=[Disk.from_image(pool.volume(base))],
                           nics=[Nic(net.name, ip=f"{prefix}.70", dns=True)],
                           cloud_init=CloudInit(hostname="down"), virt_type="qemu")
    assert sorted(v.name for v in pool.volumes()) == before
    assert stack.name("down") not in [v.name for v in stack.hv.vms()]
    assert net.reservations() == [] and net.dns_hosts() == []


def test_cloud_image_example_runs_end_to_end(stack: Stack, sandbox: Sandbox | None, uri: str) -> None:
    """examples/cloud_image.py against this daemon, as a user would run it (CI runs it here)."""
    env = dict(os.environ, LIBVM_URI=uri)
    if sandbox is not None:
        env["LIBVM_NETNS"] = sandbox.netns
    example = Path(__file__).parents[2] / "examples" / "cloud_image.py"
    try:
        proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=600,
                              env=env, check=False)
    except subprocess.TimeoutExpired as exc:  # run() killed it; the stack fixture removes its objects
        raise AssertionError(f"the example hung: {exc.stdout!r}") from exc
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK: the cloud-image VM is ready" in proc.stdout
    assert "libvmexample" not in [p.name for p in stack.hv.pools()]  # it cleaned up after itself


def test_interrupt_with_volumes_seed_and_dns_leaves_all_or_nothing(stack: Stack, base: str, ctrl_c: None) -> None:
    """A real Ctrl-C at many points of a create_vm that makes an overlay, a seed, a DHCP
    reservation and a DNS entry: afterwards all of them exist, or none."""
    net, prefix = stack.network("cloudint", forward="none")
    pool = stack.hv.pool(POOL)
    outcomes = []
    for step, delay in enumerate([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7, 2.2]):
        name = stack.name(f"int{step}")
        ip = f"{prefix}.{100 + step}"
        timer = threading.Timer(delay, _thread.interrupt_main)
        try:
            timer.start()
            stack.hv.create_vm(name, memory="256MiB", disks=[Disk.from_image(pool.volume(base))],
                               nics=[Nic(net.name, ip=ip, hostname=f"int{step}", dns=True)],
                               cloud_init=CloudInit(hostname=f"int{step}"), virt_type="qemu", start=False)
            time.sleep(3)  # a late interrupt lands here, after create_vm returned
        except KeyboardInterrupt:
            pass
        timer.join()
        parts = {
            "domain": name in [v.name for v in stack.hv.vms()],
            "overlay": pool.has(f"{name}-disk0.qcow2"),
            "seed": pool.has(f"{name}-seed.iso"),
            "reservation": any(str(r.ip) == ip for r in net.reservations()),
            "dns": any(h.ip == ip for h in net.dns_hosts()),
        }
        assert len(set(parts.values())) == 1, f"half-made VM after an interrupt at {delay} s: {parts}"
        outcomes.append(parts["domain"])
    assert True in outcomes and False in outcomes, outcomes  # both sides of the race were hit


def test_static_network_guest_holds_its_address_without_dhcp(
        stack: Stack, base: str, sandbox: Sandbox | None, uri: str) -> None:
    net, prefix = stack.network("static", forward="none")
    pool = stack.hv.pool(POOL)
    vm = stack.hv.create_vm(
        stack.name("pinned"), memory="256MiB", disks=[Disk.from_image(pool.volume(base))],
        nics=[Nic(net.name, ip=f"{prefix}.80")], cloud_init=CloudInit(hostname="pinned", static_network=True),
        serial_log=stack.console_path("pinned"), virt_type="qemu")
    got = in_netns(sandbox, uri, WAIT_SSH.format(name=vm.name, timeout=120))
    assert got == f"{prefix}.80", got
    stack.console("pinned")
    seed = parse_seed_lines(stack.console_path("pinned").read_text(errors="replace"))
    assert seed["static"] == {vm.macs[0]: f"{prefix}.80"}
    assert [x for x in net.leases() if str(x.mac) == vm.macs[0]] == []  # it never asked DHCP
    reservation = net.reservation_for(vm.macs[0])  # named as the guest names itself, not after the VM
    assert reservation is not None and reservation.hostname == "pinned"
    with pytest.raises(libvm.LibvmError, match="no DHCP lease to wait for"):
        vm.wait_for_ip(timeout=1)
    assert vm.shutdown(timeout=2) is False  # the test guest ignores ACPI: destroyed after 2 s
    assert vm.state is libvm.VMState.SHUTOFF


def test_uefi_without_firmware_is_refused_before_anything_changes(stack: Stack) -> None:
    """OVMF is not installed on these machines: libvirt's domain capabilities list no UEFI firmware."""
    net, prefix = stack.network("uefi", forward="none")
    if "<value>efi</value>" in stack.hv.handle.getDomainCapabilities(None, "x86_64", None, "qemu", 0):
        pytest.skip("this host has UEFI firmware for qemu guests")
    with pytest.raises(libvm.InvalidSpec, match="ovmf") as info:
        stack.hv.create_vm(stack.name("uefi"), nics=[Nic(net.name, ip=f"{prefix}.90")], firmware="efi",
                           virt_type="qemu")
    assert info.value.field == "firmware"
    assert net.reservations() == [] and stack.name("uefi") not in [v.name for v in stack.hv.vms()]
