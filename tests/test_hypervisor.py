"""Networks and VMs through a Hypervisor, on the test driver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import libvm
from libvm import Nic, Reservation, VMState
from tests.conftest import TEST_URI, canonical

LEGACY_UUID = "6695eb01-f6a4-8304-79aa-97f2502e193f"
SEED_NIC = Nic("lab", ip="192.168.150.88", mac="66:66:66:66:66:0b")


def snapshot(hv: libvm.Hypervisor) -> tuple[list[bytes], list[str]]:
    """Everything a failed call must leave as it was."""
    return ([canonical(n.xml()) for n in hv.networks()], sorted(vm.name for vm in hv.vms()))


def test_connect_uses_env_and_closes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", TEST_URI)
    with libvm.connect() as hv:
        assert hv.uri == TEST_URI
        assert [n.name for n in hv.networks()] == ["default", "lab"]
    assert hv.closed
    hv.close()  # idempotent


def test_everything_got_from_a_closed_hypervisor_refuses_clearly(hv: libvm.Hypervisor) -> None:
    lab, legacy = hv.network("lab"), hv.vm("legacy")
    hv.close()
    calls: list[Callable[[], object]] = [
        lambda: hv.handle, lambda: hv.networks(), lambda: hv.vm("legacy"), lambda: hv.create_vm("x"),
        lambda: lab.reserve("02:00:00:00:00:01", "192.168.150.90"), lambda: lab.reservations(),
        lambda: legacy.state, lambda: legacy.delete(),
    ]
    for call in calls:
        with pytest.raises(libvm.ConnectionClosed, match="closed"):
            call()


def test_connect_failure_is_clear() -> None:
    with pytest.raises(libvm.LibvirtFailure, match="cannot connect"):
        libvm.connect("test:///nonexistent/file.xml")


def test_ensure_network_defines_starts_autostarts(hv: libvm.Hypervisor) -> None:
    net = hv.ensure_network("lab2", "10.77.0.0/24", dhcp_range=("10.77.0.100", "10.77.0.199"), forward="none")
    assert net.active and net.persistent and net.handle.autostart()
    assert str(net.spec().primary.gateway) == "10.77.0.1"
    again = hv.ensure_network("lab2", "10.77.0.0/24", dhcp_range=("10.77.0.100", "10.77.0.199"), forward="none")
    assert again.name == "lab2"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"subnet": "192.168.160.0/24", "dhcp_range": None}, "subnet"),
        ({"subnet": "192.168.150.2/24"}, "gateway"),
        ({"dhcp_range": ("192.168.150.30", "192.168.150.40")}, "dhcp_range"),
        ({"forward": "route"}, "forward"),
    ],
)
def test_ensure_network_mismatch(hv: libvm.Hypervisor, kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"subnet": "192.168.150.0/24", "dhcp_range": ("192.168.150.30", "192.168.150.39"),
                               "forward": "nat"} | kwargs
    before = snapshot(hv)
    with pytest.raises(libvm.NetworkMismatch) as info:
        hv.ensure_network("lab", **args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert snapshot(hv) == before


def test_ensure_network_refuses_overlap(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.SubnetOverlap, match="'lab'") as info:
        hv.ensure_network("lab3", "192.168.150.128/25")
    assert info.value.other == "lab"
    assert snapshot(hv) == before


def test_reads_existing_vm(hv: libvm.Hypervisor) -> None:
    vm = hv.vm("legacy")
    assert vm.macs == ["52:54:00:aa:bb:01", "52:54:00:aa:bb:02"]
    assert [str(n.ip) if n.ip else None for n in vm.nics] == ["192.168.150.10", None]
    assert str(vm.ip) == "192.168.150.10"
    assert vm.state is VMState.RUNNING
    with pytest.raises(libvm.NotFound):
        hv.vm("nope")


def test_create_vm_lifecycle(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    lab.reserve("66:66:66:66:66:0b", "192.168.150.88", hostname="pc001")
    vm = hv.create_vm("pc001", memory="256MiB", vcpus=1, nics=[SEED_NIC],
                      kernel="/boot/vmlinuz", initrd="/boot/initrd", cmdline="console=ttyS0",
                      serial_log="/tmp/pc001.log", virt_type="qemu")
    assert vm.state is VMState.RUNNING
    assert vm.macs == ["66:66:66:66:66:0b"]
    assert str(vm.ip) == "192.168.150.88"
    assert "<mac address='66:66:66:66:66:0b'/>" in vm.xml()
    assert [v.name for v in hv.vms()] == ["legacy", "pc001"]
    vm.destroy()
    assert str(vm.state) == "shut off"
    vm.destroy()  # idempotent
    vm.start()
    assert vm.running
    vm.delete()
    assert str(vm.state) == "undefined"
    assert Reservation("66:66:66:66:66:0b", "192.168.150.88", "pc001") not in lab.reservations()
    vm.delete()  # idempotent


def test_create_vm_reserves_under_vm_name(hv: libvm.Hypervisor) -> None:
    vm = hv.create_vm("web1", nics=[Nic("lab", ip="192.168.150.20"), Nic("lab", ip="192.168.150.21")],
                      virt_type="qemu")
    lab = hv.network("lab")
    assert lab.reservation_for(vm.macs[0]) == Reservation(vm.macs[0], "192.168.150.20", "web1")
    assert lab.reservation_for(vm.macs[1]) == Reservation(vm.macs[1], "192.168.150.21")  # one name per network


def test_create_vm_allocates_outside_dynamic_range(hv: libvm.Hypervisor) -> None:
    a = hv.create_vm("a", nics=[Nic("lab"), Nic("lab")], virt_type="qemu")
    b = hv.create_vm("b", nics=[Nic("lab", mac="02:aa:00:00:00:01")], virt_type="qemu")
    ips = [str(n.ip) for n in a.nics] + [str(n.ip) for n in b.nics]
    assert ips == ["192.168.150.2", "192.168.150.3", "192.168.150.4"]
    assert len(set(a.macs + b.macs)) == 3


def test_create_vm_refuses_mac_of_other_domain(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.MacInUse, match="legacy") as info:
        hv.create_vm("dup", nics=[Nic("default", ip="192.168.122.5", mac="52:54:00:aa:bb:02")],
                     virt_type="qemu", allow_dynamic=True)
    assert info.value.other == "legacy"
    assert snapshot(hv) == before


def test_create_vm_refuses_reserved_ip_before_defining(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved):
        hv.create_vm("third", nics=[Nic("lab", ip="192.168.150.10")], virt_type="qemu")
    assert snapshot(hv) == before


def test_create_vm_refuses_existing_name(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.AlreadyExists):
        hv.create_vm("legacy", nics=[SEED_NIC], virt_type="qemu")
    assert snapshot(hv) == before


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"memory": "lots"}, "memory"),
        ({"vcpus": -1}, "vcpus"),
        ({"nics": [Nic("lab", ip="192.168.151.9")]}, "nics[0].ip"),
        ({"nics": [SEED_NIC, Nic("lab", ip="192.168.150.1")]}, "nics[1].ip"),
        ({"nics": ["lab"]}, "nics[0]"),
        ({"virt_type": "xen"}, "virt_type"),
    ],
)
def test_create_vm_bad_input_changes_nothing(hv: libvm.Hypervisor, kwargs: dict[str, object], field: str) -> None:
    before = snapshot(hv)
    args: dict[str, object] = {"name": "bad", "nics": [SEED_NIC]} | kwargs
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vm(**args)  # type: ignore[arg-type]
    assert info.value.field == field
    assert snapshot(hv) == before


def test_create_vm_missing_network_changes_nothing(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.NotFound, match="nonet"):
        hv.create_vm("x", nics=[SEED_NIC, Nic("nonet", ip="10.0.0.5")], virt_type="qemu")
    assert snapshot(hv) == before


def test_create_vm_rolls_back_when_define_fails(hv: libvm.Hypervisor) -> None:
    # A UUID already used by another domain: libvirt refuses the define *after*
    # libvm reserved the address, so the reservation must be rolled back.
    before = snapshot(hv)
    with pytest.raises(libvm.LibvmError, match="legacy"):
        hv.create_vm("clash", nics=[SEED_NIC], uuid=LEGACY_UUID, virt_type="qemu")
    assert snapshot(hv) == before


def test_create_vm_keeps_preexisting_reservation_on_rollback(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    lab.reserve("66:66:66:66:66:0b", "192.168.150.88", "pc001")
    with pytest.raises(libvm.LibvmError):
        hv.create_vm("clash", nics=[SEED_NIC], uuid=LEGACY_UUID, virt_type="qemu")
    assert Reservation("66:66:66:66:66:0b", "192.168.150.88", "pc001") in lab.reservations()


def test_create_vms_all_or_nothing(hv: libvm.Hypervisor) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved):
        hv.create_vms([
            {"name": "m1", "nics": [Nic("lab")], "virt_type": "qemu"},
            {"name": "m2", "nics": [Nic("lab")], "virt_type": "qemu"},
            {"name": "m3", "nics": [Nic("lab", ip="192.168.150.10")], "virt_type": "qemu"},
        ])
    assert snapshot(hv) == before
    vms = hv.create_vms([{"name": f"m{i}", "nics": [Nic("lab")], "virt_type": "qemu"} for i in range(5)])
    ips = [str(vm.ip) for vm in vms]
    assert len(set(ips)) == 5


def test_gc_lists_and_removes_orphans_only_on_request(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    lab.reserve("66:66:66:66:66:0f", "192.168.150.99", "ghost")
    orphans = hv.gc()
    assert orphans == [("lab", Reservation("66:66:66:66:66:0f", "192.168.150.99", "ghost"))]
    assert Reservation("66:66:66:66:66:0f", "192.168.150.99", "ghost") in lab.reservations()
    hv.gc(remove=True)
    assert lab.reservations() == [Reservation("52:54:00:aa:bb:01", "192.168.150.10", "legacy")]
    assert hv.unreserved_nics() == [("legacy", "52:54:00:aa:bb:02", "default")]


def test_default_virt_type(hv: libvm.Hypervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not hv.kvm_usable  # the test driver offers only 'test' domains
    assert hv.create_vm("auto", nics=[SEED_NIC]).spec().virt_type == "qemu"
    monkeypatch.setenv("LIBVM_VIRT_TYPE", "kvm")
    assert hv.default_virt_type == "kvm"
    monkeypatch.setenv("LIBVM_VIRT_TYPE", "xen")
    with pytest.raises(libvm.InvalidSpec, match="LIBVM_VIRT_TYPE"):
        hv.create_vm("auto2", nics=[Nic("lab", ip="192.168.150.89")])


def test_create_vms_rollback_keeps_older_reservations(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    lab.reserve("66:66:66:66:66:0b", "192.168.150.88", "pc001")
    before = snapshot(hv)
    with pytest.raises(libvm.IpReserved):
        hv.create_vms([
            {"name": "pc001", "nics": [SEED_NIC], "virt_type": "qemu"},
            {"name": "m2", "nics": [Nic("lab")], "virt_type": "qemu"},
            {"name": "m3", "nics": [Nic("lab", ip="192.168.150.10")], "virt_type": "qemu"},
        ])
    assert snapshot(hv) == before
    assert Reservation("66:66:66:66:66:0b", "192.168.150.88", "pc001") in lab.reservations()


@pytest.mark.parametrize(("kwargs", "field"), [({"upload": "yes"}, "upload"),
                                               ({"upload": True, "kernel": "/nonexistent/vmlinuz"}, "kernel")])
def test_upload_is_checked_before_anything(hv: libvm.Hypervisor, kwargs: dict[str, object], field: str) -> None:
    before = snapshot(hv)
    with pytest.raises(libvm.InvalidSpec) as info:
        hv.create_vm("up", nics=[Nic("lab")], virt_type="qemu", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert snapshot(hv) == before


def test_a_local_daemon_boots_from_the_paths_given(hv: libvm.Hypervisor, tmp_path: Path) -> None:
    """Only a hypervisor over a network link gets the caller's files uploaded (upload=None)."""
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"kernel")
    vm = hv.create_vm("local", nics=[Nic("lab")], virt_type="qemu", kernel=kernel, start=False)
    assert vm.spec().kernel == kernel and vm.spec().scratch == ()
