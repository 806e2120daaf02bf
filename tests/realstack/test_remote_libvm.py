"""Every libvm feature on a hypervisor reached only over the network (issue 16), over qemu+tcp and
qemu+ssh: the guests' networks live in the remote's namespaces, so this process cannot route to
them, its files are not the hypervisor's, and dnsmasq runs on the other side."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import libvm
from libvm import CloudInit, Disk, Nic
from libvm.ssh import SshTarget
from libvm.testing import GuestImage, RemoteHypervisor, build_disk_image
from libvm.testing.remote import Transport
from tests.realstack.conftest import PREFIX, Stack, stack_on

TRANSPORTS: list[Transport] = ["tcp", "ssh"]
SCRATCH = "/var/lib/libvirt/images/libvm-scratch/"


@pytest.fixture(params=TRANSPORTS)
def far(request: pytest.FixtureRequest, remote: RemoteHypervisor, guest: GuestImage) -> Iterator[Stack]:
    """The real-stack helpers on the remote daemon, over each transport."""
    with stack_on(remote.uri(request.param), guest) as s:
        yield s


def hop(remote: RemoteHypervisor, stack: Stack) -> SshTarget | str:
    """How this process reaches the remote's guests: through its SSH (automatic for qemu+ssh)."""
    if stack.uri.startswith("qemu+ssh"):
        return "auto"
    return SshTarget(remote.address, "root", keyfile=str(remote.client_key), known_hosts=str(remote.known_hosts))


def test_a_vm_boots_from_this_machines_kernel_and_answers_through_the_hypervisor(
        far: Stack, remote: RemoteHypervisor) -> None:
    net, base = far.network("kern")
    vm = far.vm("kern", [Nic(net.name, ip=f"{base}.50")])
    spec = vm.spec()
    # The kernel and initrd were files here: copies in the remote's scratch pool boot the guest.
    assert str(spec.kernel).startswith(SCRATCH) and str(spec.initrd).startswith(SCRATCH), spec
    assert len(spec.scratch) == 2
    assert str(vm.wait_for_ip(timeout=120)) == f"{base}.50"
    with pytest.raises(libvm.WaitTimeout):  # not routable from here: the direct probe cannot get there
        vm.wait_for_ssh(timeout=3, via=None)
    assert str(vm.wait_for_ssh(timeout=120, via=hop(remote, far))) == f"{base}.50"
    scratch = far.hv.pool("libvm-scratch")
    assert {v.path for v in scratch.volumes()} >= set(spec.scratch)
    vm.delete()
    assert not {v.path for v in scratch.volumes()} & set(spec.scratch)  # removed with the VM
    assert net.reservations() == []


def test_a_cloud_image_vm_from_a_pool_overlay_with_a_seed(far: Stack, remote: RemoteHypervisor) -> None:
    net, base = far.network("cloud")
    pool = far.hv.ensure_pool(f"{PREFIX}remote", f"/var/lib/libvirt/images/{PREFIX}remote")
    try:
        image = pool.upload("base.qcow2", build_disk_image())  # a libvirt stream over the link
        vm = far.hv.create_vm(
            far.name("cloud"), memory="256MiB", disks=[Disk.from_image(image)], virt_type="qemu",
            nics=[Nic(net.name, ip=f"{base}.60")], cloud_init=CloudInit(hostname="far-cloud"),
            serial_log=far.console_path("cloud"))
        assert str(vm.wait_for_ssh(timeout=180, via=hop(remote, far))) == f"{base}.60"
        assert net.reservation_for(vm.macs[0]) == libvm.Reservation(vm.macs[0], f"{base}.60", "far-cloud")
        vm.delete(storage=True)
        assert [v.name for v in pool.volumes()] == ["base.qcow2"]
    finally:
        pool.delete(volumes=True)


def test_a_stale_lease_is_released_over_ssh_and_refused_with_advice_over_tcp(far: Stack) -> None:
    net, base = far.network("stale")
    old = far.vm("stale-old", [Nic(net.name, ip=f"{base}.70")])
    assert str(old.wait_for_ip(timeout=120)) == f"{base}.70"
    old_mac = old.macs[0]
    old.delete(release=False)  # gone, its lease is not: what a crashed script leaves behind
    net.release(old_mac)
    assert [str(x.ip) for x in net.leases() if str(x.mac) == old_mac] == [f"{base}.70"]
    if far.uri.startswith("qemu+ssh"):
        net.reserve("52:54:00:77:00:01", f"{base}.70")  # dhcp_release ran on the host, through the SSH
        assert [x for x in net.leases() if str(x.mac) == old_mac] == []
    else:
        with pytest.raises(libvm.IpLeased) as info:
            net.reserve("52:54:00:77:00:01", f"{base}.70")
        assert isinstance(info.value.__cause__, libvm.DnsmasqFailure)
        assert "qemu+ssh" in str(info.value.__cause__) and "dhcp_release" in str(info.value.__cause__)


def test_a_link_lost_in_the_middle_of_create_vm_is_rolled_back_on_reconnect(
        remote: RemoteHypervisor, guest: GuestImage) -> None:
    """The relay drops every connection at some point of a create_vm and comes back a second
    later: the journal's rollback reconnects and undoes what was made, so the VM is all or nothing."""
    relay = remote.relay("tcp", delay_ms=10)
    outcomes = []
    try:
        assert relay.uri is not None
        with stack_on(remote.tcp_uri, guest) as s:
            net, base = s.network("cut")
            for step, delay in enumerate([0.03, 0.08, 0.15, 0.25, 0.4]):
                ips = [f"{base}.{100 + 3 * step + k}" for k in range(3)]
                hv = libvm.connect(relay.uri)

                def cut(wait: float = delay) -> None:
                    time.sleep(wait)
                    relay.cut()
                    time.sleep(1.0)
                    relay.restore()

                cutter = threading.Thread(target=cut)
                cutter.start()
                try:
                    hv.create_vm(s.name(f"cut{step}"), memory=64, nics=[Nic(net.name, ip=ip) for ip in ips],
                                 kernel=guest.kernel, initrd=guest.initrd, virt_type="qemu", start=False,
                                 upload=False)
                    created = True
                except libvm.LibvmError:
                    created = False
                cutter.join()
                hv.close()
                exists = s.name(f"cut{step}") in [v.name for v in s.hv.vms()]
                reserved = {str(r.ip) for r in net.reservations()} & set(ips)
                assert (exists, reserved) in [(True, set(ips)), (False, set())], f"half a VM at {delay} s"
                assert exists == created
                outcomes.append(exists)
    finally:
        relay.stop()
    assert False in outcomes, outcomes  # at least one cut hit create_vm mid-way


def _helpers(remote: RemoteHypervisor) -> list[int]:
    """The libvirt SSH helpers running in the remote's namespace (one per open qemu+ssh connection)."""
    import subprocess

    pids = subprocess.run(["ip", "netns", "pids", remote.netns], capture_output=True, text=True).stdout.split()
    comms = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in pids if Path(f"/proc/{pid}").exists()}
    return [int(pid) for pid, comm in comms.items() if comm in ("virt-ssh-helper", "nc")]


def test_closing_an_ssh_connection_ends_its_session_on_the_host(remote: RemoteHypervisor) -> None:
    before = _helpers(remote)
    for _ in range(2):
        hv = libvm.connect(remote.ssh_uri)
        hv.networks()
        hv.close()
    deadline = time.monotonic() + 10
    while _helpers(remote) != before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _helpers(remote) == before


def test_reads_at_once_after_a_lost_link_reconnect_once(remote: RemoteHypervisor) -> None:
    """A lost link noticed by several parallel reads (over a link they go out at once) is reopened
    once, and the new connection reports the next loss too."""
    relay = remote.relay("tcp", delay_ms=5)
    try:
        assert relay.uri is not None
        with libvm.connect(relay.uri) as hv:
            for _ in range(2):
                hv.networks()
                relay.cut()
                deadline = time.monotonic() + 10
                while hv._live.lost is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert hv._live.lost is not None, "the close callback never ran"
                relay.restore()
                generation = hv._live.generation
                assert hv._live.fan_out(*(hv._live.networks for _ in range(4)))  # four reads at once
                assert hv._live.generation == generation + 1  # one reconnect, not four
    finally:
        relay.stop()


def test_a_sparse_image_travels_as_its_data(far: Stack, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A 256 MiB raw image holding 1 MiB of data: libvirt's sparse stream carries the data and
    the holes' lengths, and the volume on the hypervisor stays sparse."""
    image = tmp_path_factory.mktemp("sparse") / "disk.raw"
    with open(image, "wb") as out:
        out.truncate(256 * 2**20)
        out.seek(100 * 2**20)
        out.write(b"\xa5" * 2**20)
    pool = far.hv.ensure_pool(f"{PREFIX}sparse", f"/var/lib/libvirt/images/{PREFIX}sparse")
    try:
        started = time.monotonic()
        vol = pool.upload("disk.raw", image)
        took = time.monotonic() - started
        info = vol.info()
        assert (info.format, info.capacity) == ("raw", 256 * 2**20)
        assert info.allocation < 16 * 2**20, info  # holes stayed holes
        print(f"\nTIMING sparse upload of 256 MiB (1 MiB data) over {far.uri.split(':')[0]}: {took:.2f} s")
    finally:
        pool.delete(volumes=True)
