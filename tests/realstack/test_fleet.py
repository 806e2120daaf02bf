"""A fleet of two real hypervisors: the session's sandbox (local) and the remote one (reached over
qemu+tcp only). Placement spreads, guests on each host boot and hold their reserved addresses,
a failure half-way leaves nothing on either host, and a host that stops answering is reported
and avoided (issue 17)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import libvm
from libvm import Nic
from libvm.testing import GuestImage, RemoteHypervisor
from tests.realstack.conftest import PREFIX, Stack, stack_on

NET = f"{PREFIX}fleet"


@pytest.fixture
def two(stack: Stack, remote: RemoteHypervisor, guest: GuestImage) -> Iterator[tuple[Stack, Stack]]:
    """The real-stack helpers on both hosts, each with network ``NET`` (its own subnet)."""
    with stack_on(remote.tcp_uri, guest) as far:
        for s, subnet in ((stack, "10.214.1"), (far, "10.214.2")):
            s.hv.ensure_network(NET, f"{subnet}.0/24", dhcp_range=(f"{subnet}.30", f"{subnet}.39"), forward="none")
        yield stack, far


def guest_spec(name: str, guest: GuestImage, **extra: object) -> dict[str, object]:
    return {"name": f"{PREFIX}{name}", "memory": "128MiB", "nics": [Nic(NET)], "kernel": guest.kernel,
            "initrd": guest.initrd, "cmdline": guest.cmdline, "virt_type": "qemu", "upload": False, **extra}


def state(s: Stack) -> tuple[list[str], list[str]]:
    net = s.hv.network(NET)
    return sorted(v.name for v in s.hv.vms() if v.name.startswith(PREFIX)), sorted(map(str, net.reservations()))


def test_a_fleet_spreads_guests_that_boot_and_hold_their_addresses(two: tuple[Stack, Stack],
                                                                    guest: GuestImage) -> None:
    near, far = two
    with libvm.Fleet([near.hv, far.hv], timeout=30) as fleet:
        rows = fleet.hosts()
        assert [row.error for row in rows] == [None, None], rows
        vms = fleet.create_vms([guest_spec(f"spread{i}", guest) for i in range(2)], placement="spread")
        assert {vm.hypervisor.uri for vm in vms if vm.hypervisor} == {near.hv.uri, far.hv.uri}  # one each
        macs = [vm.macs[0] for vm in vms]
        assert len(set(macs)) == 2  # unique across the hosts, though the two networks are alike
        for vm in vms:
            reserved = vm.nics[0].ip
            assert reserved is not None and vm.wait_for_ip(timeout=120) == reserved
        assert {vm.name for vm in fleet.vms()} >= {vm.name for vm in vms}
        for vm in vms:
            fleet.delete_vm(vm.name)
    assert state(near)[0] == [] and state(far)[0] == []


def test_a_failure_half_way_leaves_nothing_on_either_host(two: tuple[Stack, Stack], guest: GuestImage) -> None:
    near, far = two
    before = (state(near), state(far))
    # The third VM asks for a name another domain has on the second host: refused there,
    # after the first two were made (one on each host).
    far.hv.create_vm(f"{PREFIX}taken", memory=64, nics=[Nic(NET)], kernel=guest.kernel, initrd=guest.initrd,
                     virt_type="qemu", start=False, upload=False)
    taken = (state(near), state(far))
    with libvm.Fleet([near.hv, far.hv], timeout=30) as fleet, pytest.raises(libvm.LibvmError):
        fleet.create_vms([guest_spec("a", guest, start=False), guest_spec("b", guest, start=False),
                          guest_spec("taken", guest, start=False)])
    assert (state(near), state(far)) == taken
    far.hv.vm(f"{PREFIX}taken").delete()
    assert (state(near), state(far)) == before


def test_a_host_that_stops_answering_is_reported_and_avoided(stack: Stack, remote: RemoteHypervisor,
                                                              guest: GuestImage) -> None:
    relay = remote.relay("tcp", delay_ms=1)
    try:
        assert relay.uri is not None
        with stack_on(relay.uri, guest) as far:
            far.hv.ensure_network(NET, "10.214.3.0/24", dhcp_range=("10.214.3.30", "10.214.3.39"), forward="none")
            stack.hv.ensure_network(NET, "10.214.4.0/24", dhcp_range=("10.214.4.30", "10.214.4.39"),
                                    forward="none")
            with libvm.Fleet([stack.hv, far.hv], timeout=3) as fleet:
                relay.stall()  # the silent kind of outage: calls hang, nothing fails
                rows = {row.uri: row for row in fleet.hosts()}
                assert rows[far.hv.uri].error and rows[stack.hv.uri].error is None
                vm = fleet.create_vm(f"{PREFIX}elsewhere", memory="128MiB", nics=[Nic(NET)],
                                     kernel=guest.kernel, initrd=guest.initrd, virt_type="qemu", start=False,
                                     upload=False, placement="pack")
                assert vm.hypervisor is stack.hv
                listing = fleet.vms()
                assert f"{PREFIX}elsewhere" in [v.name for v in listing] and listing.errors
                relay.restore()
                fleet.delete_vm(f"{PREFIX}elsewhere")
    finally:
        relay.stop()
