"""libvm.domain: the VM's errors a caller can act on, its flags, its tables, and its boundary."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import libvm
from libvm import Nic, VMState
from libvm import domain as domain_module

SOURCE = Path(domain_module.__file__)


def test_wait_on_a_domain_that_does_not_run_raises_domain_stopped(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("off", nics=[Nic("lab", ip="192.168.150.88")], virt_type="qemu", start=False)
    with pytest.raises(libvm.DomainStopped, match="'off' is shut off") as info:
        vm.wait_for_ip(timeout=5, poll=0.01)  # the test driver hands out no leases: only the state can end it
    assert (info.value.domain, info.value.state) == ("off", "shut off")
    with pytest.raises(libvm.DomainStopped):
        hv.wait_for_ips([vm], timeout=5, poll=0.01)


def test_wait_on_a_domain_without_a_network_nic_raises_nothing_to_wait_for(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("bare", virt_type="qemu")
    with pytest.raises(libvm.NothingToWaitFor, match="no interface on a libvirt network") as info:
        vm.wait_for_ips(timeout=5)
    assert info.value.domain == "bare"


def test_wait_on_a_static_guest_raises_nothing_to_wait_for(hv: libvm.Hypervisor) -> None:
    spec = libvm.DomainSpec("static", virt_type="qemu", static_network=True,
                            nics=[Nic("lab", mac="66:66:66:66:66:0c")])
    hv.handle.defineXML(spec.to_xml())
    vm = hv.vm("static")
    with pytest.raises(libvm.NothingToWaitFor, match=r"static_network.*wait_for_ssh"):
        vm.wait_for_ip(timeout=5)
    with pytest.raises(libvm.NothingToWaitFor, match="no reserved address to probe"):  # none reserved for its MAC
        vm.wait_for_ssh(timeout=5)


@pytest.mark.parametrize("call", ["xml", "delete-release", "delete-storage"])
def test_flags_must_be_bools(hv: libvm.Hypervisor, call: str) -> None:
    vm = hv.vm("legacy")
    with pytest.raises(libvm.InvalidSpec) as info:
        if call == "xml":
            vm.xml(inactive=1)  # type: ignore[arg-type]
        elif call == "delete-release":
            vm.delete(release="yes")  # type: ignore[arg-type]
        else:
            vm.delete(storage=0)  # type: ignore[arg-type]
    assert info.value.reason == "True or False"
    assert vm.state is not VMState.UNDEFINED


def test_lifecycle_through_the_boundary(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("cycle", nics=[Nic("lab", ip="192.168.150.89")], virt_type="qemu")
    states = [vm.state]
    assert "<domain" in vm.xml() and "<domain" in vm.xml(inactive=True)
    vm.destroy()
    vm.destroy()  # idempotent
    states.append(vm.state)
    vm.start()
    states.append(vm.state)
    assert vm.shutdown(timeout=None)  # only asked
    vm.delete()
    vm.undefine()  # idempotent once gone
    states.append(vm.state)
    assert states == [VMState.RUNNING, VMState.SHUTOFF, VMState.RUNNING, VMState.UNDEFINED]


def test_a_vm_list_reads_each_network_once_for_all_vms(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(3):
        hv.create_vm(f"v{index}", nics=[Nic("lab", ip=f"192.168.150.{90 + index}")], virt_type="qemu", start=False)
    calls: list[str] = []
    leases = libvm.Network.leases

    def counted(self: libvm.Network) -> libvm.LeaseList:
        calls.append(self.name)
        return leases(self)

    monkeypatch.setattr(libvm.Network, "leases", counted)
    vms = hv.vms()
    table = vms.table()
    assert sorted(calls) == ["default", "lab"]  # once each, however many VMs are on them
    assert [row[0] for row in table.rows if row[0]] == ["legacy", "v0", "v1", "v2"]
    assert table.rows == tuple(row for vm in vms for row in vm.table().rows)


def test_domain_does_not_import_the_network_module_at_module_level() -> None:
    """The one use, _network(), imports it when called (libvirt itself is kept out by ruff's TID251)."""
    tree = ast.parse(SOURCE.read_text())
    top = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
    assert "network" not in top
