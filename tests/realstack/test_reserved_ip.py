"""The promise, on a real libvirtd + dnsmasq + qemu: a guest gets its reserved IP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import libvirt
import netaddr
import pytest

import libvm
from libvm import Nic, Reservation
from tests.realstack.conftest import Stack

SEED_MAC = "66:66:66:66:66:0b"


def test_seed_scenario(stack: Stack) -> None:
    net, base = stack.network("seed", dhcp=(30, 39))
    ip = f"{base}.88"
    vm = stack.vm("pc001", [Nic(net.name, ip=ip, mac=SEED_MAC)])
    assert str(vm.wait_for_ip(timeout=120)) == ip
    assert stack.console("pc001") == {SEED_MAC: ip}
    leases = {(str(x.mac), str(x.ip)) for x in net.leases()}
    assert (SEED_MAC, ip) in leases
    dump = stack.virsh("net-dumpxml", net.name)
    assert f"<host mac='{SEED_MAC}' name='{vm.name}' ip='{ip}'/>" in dump


def test_generated_mac_gets_the_chosen_ip(stack: Stack) -> None:
    net, base = stack.network("genmac")
    ip = f"{base}.50"
    vm = stack.vm("genmac", [Nic(net.name, ip=ip)])
    mac = vm.macs[0]
    assert mac == str(libvm.generate_mac(net.name, netaddr.IPAddress(ip)))
    assert str(vm.wait_for_ip()) == ip
    assert stack.console("genmac") == {mac: ip}


def test_two_vms_at_once_and_a_third_refused(stack: Stack) -> None:
    net, base = stack.network("pair")
    a = stack.vm("a", [Nic(net.name, ip=f"{base}.11")])
    b = stack.vm("b", [Nic(net.name, ip=f"{base}.12")])
    assert str(a.wait_for_ip()) == f"{base}.11"
    assert str(b.wait_for_ip()) == f"{base}.12"
    assert stack.console("a") == {a.macs[0]: f"{base}.11"}
    assert stack.console("b") == {b.macs[0]: f"{base}.12"}
    domains = sorted(v.name for v in stack.hv.vms())
    net_xml = net.xml()
    with pytest.raises(libvm.IpReserved):
        stack.vm("c", [Nic(net.name, ip=f"{base}.12", mac="02:00:00:00:00:0c")])
    assert sorted(v.name for v in stack.hv.vms()) == domains
    assert net.xml() == net_xml


@pytest.mark.parametrize("new_mac", [None, "02:12:34:56:78:9a"], ids=["generated-mac", "explicit-mac"])
def test_recreate_with_same_ip(stack: Stack, new_mac: str | None) -> None:
    net, base = stack.network("again")
    ip = f"{base}.77"
    old = stack.vm("old", [Nic(net.name, ip=ip, mac="02:aa:bb:cc:dd:01")])
    assert str(old.wait_for_ip()) == ip
    old.delete()
    new = stack.vm("new", [Nic(net.name, ip=ip, mac=new_mac)])
    assert new.macs[0] != "02:aa:bb:cc:dd:01"
    assert str(new.wait_for_ip()) == ip
    assert stack.console("new") == {new.macs[0]: ip}


def vanish_behind_libvms_back(stack: Stack, net: libvm.Network, ip: str, mac: str) -> None:
    """Boot a guest until it holds ``ip``, then remove it with plain libvirt: its lease stays."""
    old = stack.vm("old", [Nic(net.name, ip=ip, mac=mac)])
    assert str(old.wait_for_ip()) == ip
    old.handle.destroy()
    old.handle.undefine()


def test_stale_lease_of_vanished_vm_is_reclaimed(stack: Stack) -> None:
    """A VM removed behind libvm's back leaves a lease; reserving its IP reclaims it."""
    net, base = stack.network("stale")
    ip = f"{base}.66"
    vanish_behind_libvms_back(stack, net, ip, "02:aa:bb:cc:dd:02")
    net.release("02:aa:bb:cc:dd:02")
    assert ip in {str(x.ip) for x in net.leases()}  # dnsmasq still holds it
    with pytest.raises(libvm.IpLeased, match="stale"):
        net.reserve("02:aa:bb:cc:dd:03", ip, reclaim_stale=False)
    new = stack.vm("new", [Nic(net.name, ip=ip, mac="02:aa:bb:cc:dd:03")])
    assert str(new.wait_for_ip()) == ip


def test_wait_for_ip_refuses_a_wrong_address(stack: Stack) -> None:
    """Bypass libvm to recreate the silent failure: wait_for_ip must raise, not return it."""
    net, base = stack.network("wrong")
    ip = f"{base}.55"
    vanish_behind_libvms_back(stack, net, ip, "02:aa:bb:cc:dd:04")
    # Hand the reservation to a new MAC with plain libvirt: the old lease stays.
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE | libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    section = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST
    raw = net.handle
    raw.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, section, -1,
               f"<host mac='02:aa:bb:cc:dd:04' ip='{ip}'/>", flags)
    raw.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, section, -1,
               f"<host mac='02:aa:bb:cc:dd:05' ip='{ip}'/>", flags)
    spec = libvm.DomainSpec(stack.name("new"), memory=256, nics=[Nic(net.name, mac="02:aa:bb:cc:dd:05")],
                            kernel=stack.guest.kernel, initrd=stack.guest.initrd,
                            cmdline=stack.guest.cmdline, serial_log=stack.console_path("new"), virt_type="qemu")
    stack.hv.handle.defineXML(spec.to_xml()).create()
    with pytest.raises(libvm.AddressMismatch) as info:
        stack.hv.vm(spec.name).wait_for_ip()
    assert info.value.reserved == ip
    assert info.value.obtained != ip
    assert stack.console("new") == {"02:aa:bb:cc:dd:05": info.value.obtained}


def test_reservation_persists_and_goes_with_the_vm(stack: Stack, uri: str, sandbox: object) -> None:
    net, base = stack.network("persist")
    ip = f"{base}.44"
    vm = stack.vm("keep", [Nic(net.name, ip=ip, mac="02:aa:bb:cc:dd:06")])
    want = Reservation("02:aa:bb:cc:dd:06", ip, vm.name)
    net.stop()
    net.start()
    assert want in net.reservations()
    if sandbox is None:
        pytest.skip("libvirtd restart needs the sandbox (LIBVM_TEST_URI points elsewhere)")
    sandbox.restart_libvirtd()  # type: ignore[attr-defined]
    stack.hv = libvm.connect(uri)
    net = stack.hv.network(net.name)
    assert want in net.reservations()
    assert f"ip='{ip}'" in stack.virsh("net-dumpxml", "--inactive", net.name)
    vm = stack.hv.vm(vm.name)
    vm.destroy()
    vm.start()
    assert str(vm.wait_for_ip()) == ip
    vm.delete()
    assert want not in net.reservations()
    assert ip not in {str(x.ip) for x in net.leases()}
    assert f"ip='{ip}'" not in stack.virsh("net-dumpxml", "--inactive", net.name)


def test_two_nics_on_two_networks(stack: Stack) -> None:
    one, base1 = stack.network("nic1")
    two, base2 = stack.network("nic2")
    vm = stack.vm("twonics", [Nic(one.name, ip=f"{base1}.21"), Nic(two.name, ip=f"{base2}.22")])
    got = vm.wait_for_ips()
    assert {k: str(v) for k, v in got.items()} == {vm.macs[0]: f"{base1}.21", vm.macs[1]: f"{base2}.22"}
    assert stack.console("twonics") == {vm.macs[0]: f"{base1}.21", vm.macs[1]: f"{base2}.22"}


def test_default_virt_type_from_environment(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """virt_type=None takes $LIBVM_VIRT_TYPE: here /dev/kvm opens but guests hang, so qemu (TCG)."""
    monkeypatch.setenv("LIBVM_VIRT_TYPE", "qemu")
    net, base = stack.network("auto")
    vm = stack.hv.create_vm(stack.name("auto"), memory=256, nics=[Nic(net.name, ip=f"{base}.90")],
                            kernel=stack.guest.kernel, initrd=stack.guest.initrd, cmdline=stack.guest.cmdline,
                            serial_log=stack.console_path("auto"))
    assert vm.spec().virt_type == "qemu"
    assert str(vm.wait_for_ip()) == f"{base}.90"


def test_demo_example_reports_ok(stack: Stack, uri: str) -> None:
    """examples/reserved_ip.py (the README's main job) against this daemon: its own check passes."""
    example = Path(__file__).parents[2] / "examples" / "reserved_ip.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, LIBVM_URI=uri), check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK: the guest holds its reserved address" in proc.stdout
    assert "192.168.150.88 (DHCP lease), 192.168.150.88 (guest console)" in proc.stdout
