"""Every address hazard, on the real daemon: refused loudly, nothing changed.

Each test here fails if the protection it names is removed (see docs/hazards.md).
"""

from __future__ import annotations

import time

import netaddr
import pytest

import libvm
from libvm import Nic, Reservation
from tests.realstack.conftest import Stack


def state(stack: Stack) -> tuple[list[str], list[tuple[str, str]]]:
    """Domains and every network's persistent XML: what a refusal must not change."""
    return (sorted(v.name for v in stack.hv.vms()),
            [(n.name, n.xml(inactive=True)) for n in stack.hv.networks()])


def test_mac_on_another_domain_any_network(stack: Stack) -> None:
    one, base1 = stack.network("mac1")
    two, base2 = stack.network("mac2")
    stack.vm("first", [Nic(one.name, ip=f"{base1}.5", mac="02:00:00:00:aa:01")], start=False)
    before = state(stack)
    with pytest.raises(libvm.MacInUse, match="libvmtest-first") as info:
        stack.vm("second", [Nic(two.name, ip=f"{base2}.5", mac="02:00:00:00:aa:01")])
    assert info.value.other == "libvmtest-first"
    assert state(stack) == before


@pytest.mark.parametrize(
    ("mac", "last", "name", "error"),
    [
        ("02:00:00:00:bb:01", 9, "other", libvm.MacReserved),
        ("02:00:00:00:bb:02", 8, "other", libvm.IpReserved),
        ("02:00:00:00:bb:02", 9, "taken", libvm.HostnameReserved),
    ],
)
def test_reserved_mac_ip_hostname(stack: Stack, mac: str, last: int, name: str,
                                  error: type[libvm.AddressConflict]) -> None:
    net, base = stack.network("resv")
    net.reserve("02:00:00:00:bb:01", f"{base}.8", "taken")
    before = state(stack)
    with pytest.raises(error):
        net.reserve(mac, f"{base}.{last}", name)
    assert state(stack) == before
    assert net.reservations() == [Reservation("02:00:00:00:bb:01", f"{base}.8", "taken")]


def test_ip_in_dynamic_range_refused_when_strict(stack: Stack) -> None:
    net, base = stack.network("dyn", dhcp=(30, 39))
    before = state(stack)
    with pytest.raises(libvm.IpInDhcpRange, match=f"{base}.30-{base}.39"):
        stack.vm("dyn", [Nic(net.name, ip=f"{base}.35")], allow_dynamic=False)
    assert state(stack) == before


def dynamic_client(stack: Stack, net: libvm.Network, label: str, mac: str) -> libvm.VM:
    """A guest whose NIC has no reservation (defined behind libvm's back), booted."""
    spec = libvm.DomainSpec(stack.name(label), memory=256, virt_type="qemu", nics=[Nic(net.name, mac=mac)],
                            kernel=stack.guest.kernel, initrd=stack.guest.initrd,
                            cmdline=stack.guest.cmdline, serial_log=stack.console_path(label))
    stack.hv.handle.defineXML(spec.to_xml()).create()
    return stack.hv.vm(spec.name)


def test_reservation_inside_the_range_is_never_given_to_a_dynamic_client(stack: Stack) -> None:
    """dnsmasq's address_allocate() skips every address a <host> entry names, so a
    reservation inside the dynamic range is safe (libvirt's stock 'default' is all range)."""
    net, base = stack.network("inrange", dhcp=(30, 31))
    rover = "02:00:00:00:dd:01"
    first = dynamic_client(stack, net, "rover", rover)
    natural = first.wait_for_ips()[rover]  # the address dnsmasq picks for this MAC
    first.delete()  # and its lease: dnsmasq would pick the same address for it again
    reserved = stack.vm("pinned", [Nic(net.name, ip=str(natural), mac="02:00:00:00:dd:02")], start=False)
    again = dynamic_client(stack, net, "rover", rover)
    got = again.wait_for_ips()[rover]
    assert got != natural and str(got) in (f"{base}.30", f"{base}.31")
    reserved.start()
    assert reserved.wait_for_ip() == natural
    assert stack.console("pinned") == {"02:00:00:00:dd:02": str(natural)}


def test_ip_leased_to_a_live_guest(stack: Stack) -> None:
    """A guest without reservation holds a dynamic lease: its IP cannot be reserved for another MAC."""
    net, base = stack.network("leased", dhcp=(30, 30))  # one dynamic address: the guest gets .30
    squatter = dynamic_client(stack, net, "squatter", "02:00:00:00:cc:01")
    assert squatter.wait_for_ips() == {"02:00:00:00:cc:01": netaddr.IPAddress(f"{base}.30")}
    before = state(stack)
    with pytest.raises(libvm.IpLeased, match="libvmtest-squatter") as info:
        net.check("02:00:00:00:cc:02", f"{base}.30")  # check() sees the lease too
    with pytest.raises(libvm.IpLeased, match="libvmtest-squatter") as info:
        net.reserve("02:00:00:00:cc:02", f"{base}.30")
    assert info.value.other == "libvmtest-squatter"
    assert state(stack) == before


def test_overlapping_subnet_refused(stack: Stack) -> None:
    net, base = stack.network("wide")
    before = state(stack)
    with pytest.raises(libvm.SubnetOverlap, match=net.name):
        stack.hv.ensure_network(stack.name("narrow"), f"{base}.128/25")
    assert state(stack) == before


def test_shared_client_id_detected(stack: Stack) -> None:
    """Cloned images with one machine-id send one DHCP client-id: dnsmasq keeps one lease."""
    net, base = stack.network("clones")
    a = stack.vm("clone-a", [Nic(net.name, ip=f"{base}.61")], clientid="clone-x")
    assert str(a.wait_for_ip()) == f"{base}.61"
    b = stack.vm("clone-b", [Nic(net.name, ip=f"{base}.62")], clientid="clone-x")
    with pytest.raises(libvm.ClientIdShared, match="libvmtest-clone-a") as info:
        b.wait_for_ip()
    assert info.value.other == "libvmtest-clone-a"
    # What dnsmasq shows: one lease for the client-id, A's is gone.
    leased = {str(x.mac) for x in net.leases()}
    assert b.macs[0] in leased and a.macs[0] not in leased


def test_distinct_client_ids_are_fine(stack: Stack) -> None:
    net, base = stack.network("twins")
    a = stack.vm("twin-a", [Nic(net.name, ip=f"{base}.63")], clientid="twin-a")
    b = stack.vm("twin-b", [Nic(net.name, ip=f"{base}.64")], clientid="twin-b")
    assert str(a.wait_for_ip()) == f"{base}.63"
    assert str(b.wait_for_ip()) == f"{base}.64"


def test_gc_lists_and_removes_only_on_request(stack: Stack) -> None:
    net, base = stack.network("gc")
    vm = stack.vm("kept", [Nic(net.name, ip=f"{base}.71")], start=False)
    net.reserve("02:00:00:00:dd:01", f"{base}.72", "ghost")
    orphans = [o for o in stack.hv.gc() if o[0] == net.name]
    assert orphans == [(net.name, Reservation("02:00:00:00:dd:01", f"{base}.72", "ghost"))]
    assert len(net.reservations()) == 2
    stack.hv.gc(remove=True)
    assert [r.mac for r in net.reservations()] == [vm.nics[0].mac]


def test_start_failure_rolls_back(stack: Stack) -> None:
    net, base = stack.network("nokernel")
    before = state(stack)
    with pytest.raises(libvm.LibvirtFailure, match="starting domain"):
        stack.hv.create_vm(stack.name("nokernel"), memory=256, virt_type="qemu",
                           nics=[Nic(net.name, ip=f"{base}.81")], kernel="/nonexistent/vmlinuz")
    assert state(stack) == before


def test_bad_disk_rolls_back(stack: Stack) -> None:
    net, base = stack.network("nodisk")
    before = state(stack)
    with pytest.raises(libvm.LibvirtFailure):
        stack.vm("nodisk", [Nic(net.name, ip=f"{base}.82")], disks=[libvm.Disk("/nonexistent/disk.qcow2")])
    assert state(stack) == before


def test_inactive_network_rolls_back(stack: Stack) -> None:
    net, base = stack.network("down")
    net.stop()
    before = state(stack)
    with pytest.raises(libvm.LibvirtFailure, match="starting domain"):
        stack.vm("down", [Nic(net.name, ip=f"{base}.83")])
    assert state(stack) == before


def test_interrupt_at_any_point_leaves_all_or_nothing(stack: Stack, ctrl_c: None) -> None:
    """A real Ctrl-C (SIGINT to this process) at many points inside create_vm."""
    import _thread
    import threading

    net, base = stack.network("sigint")
    outcomes = []
    for step, delay in enumerate([0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0]):
        name = f"sigint{step}"
        timer = threading.Timer(delay, _thread.interrupt_main)
        try:
            timer.start()
            stack.vm(name, [Nic(net.name, ip=f"{base}.{100 + step}")], start=False)
            time.sleep(1.5)  # a late interrupt lands here, after create_vm returned
        except KeyboardInterrupt:
            pass
        timer.join()  # the timer has fired: it interrupts exactly once
        exists = any(v.name == stack.name(name) for v in stack.hv.vms())
        reserved = any(str(r.ip) == f"{base}.{100 + step}" for r in net.reservations())
        assert exists == reserved, f"half-made VM after interrupt at {delay} s"
        outcomes.append(exists)
    assert True in outcomes and False in outcomes, outcomes  # both sides of the race were hit


def test_libvirtd_restart_mid_create_leaves_all_or_nothing(stack: Stack, uri: str, sandbox: object) -> None:
    """libvirtd restarts while create_vm runs: afterwards the VM is complete or absent."""
    import threading

    if sandbox is None:
        pytest.skip("restarting libvirtd needs the sandbox (LIBVM_TEST_URI points elsewhere)")
    net, base = stack.network("restart")
    outcomes = []
    for step, delay in enumerate([0.05, 0.2, 0.4, 0.7, 1.0]):
        ips = [f"{base}.{150 + 3 * step + k}" for k in range(3)]

        def restart(wait: float = delay) -> None:
            time.sleep(wait)
            sandbox.restart_libvirtd()  # type: ignore[attr-defined]

        restarter = threading.Thread(target=restart)
        restarter.start()
        try:
            stack.vm(f"restart{step}", [Nic(net.name, ip=ip) for ip in ips], start=False)
            created = True
        except libvm.LibvmError:
            created = False
        restarter.join()
        stack.hv = libvm.connect(uri)
        net = stack.hv.network(net.name)
        exists = any(v.name == stack.name(f"restart{step}") for v in stack.hv.vms())
        reserved = {str(r.ip) for r in net.reservations()} & set(ips)
        assert (exists, reserved) in [(True, set(ips)), (False, set())], f"half-made VM at {delay} s"
        assert exists == created
        outcomes.append(exists)
    assert False in outcomes  # at least one restart hit create_vm mid-way


def test_a_lost_connection_is_opened_again_before_the_next_call(stack: Stack, uri: str, sandbox: object) -> None:
    """libvirt's close callback (run by libvm's event loop) notes the lost link; the next call
    reconnects and looks its handles up again, instead of failing with 'End of file'."""
    if sandbox is None:
        pytest.skip("restarting libvirtd needs the sandbox (LIBVM_TEST_URI points elsewhere)")
    hv = libvm.connect(uri)
    try:
        net, _ = stack.network("lost")
        mine = hv.network(net.name)
        assert mine.active
        sandbox.restart_libvirtd()  # type: ignore[attr-defined]
        deadline = time.monotonic() + 10
        while hv._live.lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hv._live.lost is not None, "libvirt's close callback never ran"
        assert mine.active  # reconnected, the network's handle looked up again
        assert hv._live.lost is None and hv._live.generation == 1
    finally:
        hv.close()


def test_live_only_and_config_only_entries_count_and_release(stack: Stack) -> None:
    """Entries added with only --live or only --config (virsh net-update) still block and release cleanly."""
    import libvirt

    net, base = stack.network("split")
    section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
    add = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST
    net.handle.update(add, section, -1, f"<host mac='02:00:00:00:ff:01' ip='{base}.11'/>",
                      libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE)
    net.handle.update(add, section, -1, f"<host mac='02:00:00:00:ff:02' ip='{base}.12'/>",
                      libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
    assert {str(r.ip) for r in net.reservations()} == {f"{base}.11", f"{base}.12"}
    for ip in (f"{base}.11", f"{base}.12"):
        with pytest.raises(libvm.IpReserved):
            net.reserve("02:00:00:00:ff:03", ip)
    assert len(net.release(ip=f"{base}.11")) == 1
    assert len(net.release("02:00:00:00:ff:02")) == 1
    assert net.reservations() == []
    assert "<host" not in net.xml() and "<host" not in net.xml(inactive=True)


def test_define_failure_rolls_back(stack: Stack) -> None:
    """libvirt refuses the define (UUID of another domain) after the reservation was added."""
    net, base = stack.network("nodefine")
    other = stack.vm("holder", [Nic(net.name, ip=f"{base}.84")], start=False)
    before = state(stack)
    with pytest.raises(libvm.LibvmError, match="libvmtest-holder"):
        stack.vm("clash", [Nic(net.name, ip=f"{base}.85")], start=False, uuid=other.handle.UUIDString())
    assert state(stack) == before


def test_network_that_fails_to_start_is_not_left_defined(stack: Stack) -> None:
    """libvirt defines a network whose bridge name is taken by a non-bridge device, then fails to start it."""
    before = state(stack)
    with pytest.raises(libvm.LibvirtFailure, match="starting network"):
        stack.hv.ensure_network(stack.name("nostart"), "10.213.250.0/24", bridge="lo", forward="none")
    assert state(stack) == before
    with pytest.raises(libvm.NotFound):
        stack.hv.network(stack.name("nostart"))
