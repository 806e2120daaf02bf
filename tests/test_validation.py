"""Bad input of any type to a public constructor raises InvalidSpec naming the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import netaddr
import pytest

import libvm
from libvm import Disk, DomainSpec, InvalidSpec, NetworkSpec, Nic, Reservation, Vnc
from libvm.values import as_items

MAC = "02:00:00:00:00:09"


def _refused(make: Callable[[], object], field: str) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as info:
        make()
    assert info.value.field == field
    return info.value


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"network": 5}, "nic.network"),
        ({"network": None}, "nic.network"),
        ({"network": ""}, "nic.network"),
        ({"network": "a/b"}, "nic.network"),
        ({"network": "lab\n"}, "nic.network"),
        ({"ip": 5}, "nic.ip"),
        ({"ip": b"10.0.0.5"}, "nic.ip"),
        ({"mac": 5}, "nic.mac"),
        ({"mac": b"02:00:00:00:00:09"}, "nic.mac"),
        ({"model": None}, "nic.model"),
        ({"model": ["virtio"]}, "nic.model"),
        ({"model": "ne2k_pci"}, "nic.model"),
        ({"hostname": 3}, "nic.hostname"),
        ({"hostname": "a b"}, "nic.hostname"),
    ],
)
def test_bad_nic(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"network": "lab"} | kwargs
    error = _refused(lambda: Nic(**args), field)  # type: ignore[arg-type]
    assert error.value == next(iter(kwargs.values()))


def test_nic_positional_int_network() -> None:
    _refused(lambda: Nic(5), "nic.network")  # type: ignore[arg-type]


def test_good_nic_unchanged() -> None:
    nic = Nic("lab", ip="192.168.150.88", model="e1000", hostname="pc001")
    assert (nic.network, str(nic.ip), str(nic.mac), nic.model, nic.hostname) == (
        "lab", "192.168.150.88", "a6:11:c0:a8:96:58", "e1000", "pc001")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": 5}, "disk.path"),
        ({"path": None}, "disk.path"),
        ({"path": b"/images/a.img"}, "disk.path"),
        ({"path": ""}, "disk.path"),
        ({"path": "/images/\x00a.img"}, "disk.path"),
        ({"format": None}, "disk.format"),
        ({"bus": 1}, "disk.bus"),
        ({"readonly": "yes"}, "disk.readonly"),
        ({"readonly": 1}, "disk.readonly"),
        ({"readonly": None}, "disk.readonly"),
    ],
)
def test_bad_disk(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"path": "/images/a.img"} | kwargs
    _refused(lambda: Disk(**args), field)  # type: ignore[arg-type]


@pytest.mark.parametrize("path", ["/images/a.img", Path("/images/a.img"), PurePosixPath("/images/a.img")])
def test_disk_path_str_or_pathlike(path: str | Path) -> None:
    disk = Disk(path, readonly=True)
    assert disk.path == Path("/images/a.img")
    assert disk.readonly is True


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Vnc(port="5901"), "graphics.port"),  # type: ignore[arg-type]
        (lambda: Vnc(port=True), "graphics.port"),
        (lambda: Vnc(port=5901.0), "graphics.port"),  # type: ignore[arg-type]
        (lambda: Vnc(port=70000), "graphics.port"),
        (lambda: Vnc(listen=None), "graphics.listen"),  # type: ignore[arg-type]
        (lambda: Vnc(listen=127), "graphics.listen"),  # type: ignore[arg-type]
        (lambda: Vnc(listen="localhost"), "graphics.listen"),
        (lambda: Vnc.display("6"), "graphics.display"),  # type: ignore[arg-type]
        (lambda: Vnc.display(True), "graphics.display"),
        (lambda: Vnc.display(-1), "graphics.display"),
        (lambda: Vnc.display(60000), "graphics.display"),
    ],
)
def test_bad_vnc(make: Callable[[], object], field: str) -> None:
    _refused(make, field)


def test_vnc_listen_is_a_canonical_string() -> None:
    assert Vnc.display(6) == Vnc(port=5906, listen="127.0.0.1")
    assert Vnc(listen=netaddr.IPAddress("::1")).listen == "::1"
    assert Vnc(listen=" 0.0.0.0").listen == "0.0.0.0"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"mac": 5}, "mac"),
        ({"ip": None}, "ip"),
        ({"hostname": 3}, "hostname"),
        ({"client_id": 5}, "client_id"),
        ({"client_id": ""}, "client_id"),
        ({"mac": None, "client_id": "00:04:\x01"}, "client_id"),
    ],
)
def test_bad_reservation(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"mac": MAC, "ip": "192.168.150.88"} | kwargs
    _refused(lambda: Reservation(**args), field)  # type: ignore[arg-type]


def _nics() -> object:
    yield Nic("lab", mac=MAC)


@pytest.mark.parametrize("value", [[Nic("lab", mac=MAC)], (Nic("lab", mac=MAC),), _nics(), iter([Nic("lab", mac=MAC)])])
def test_as_items_materialises_any_ordered_iterable(value: object) -> None:
    assert as_items(value, "nics", Nic) == (Nic("lab", mac=MAC),)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        (Nic("lab", mac=MAC), "nics"),
        ("lab", "nics"),
        (b"lab", "nics"),
        (5, "nics"),
        (None, "nics"),
        ({Nic("lab", mac=MAC)}, "nics"),
        ({"lab": Nic("lab", mac=MAC)}, "nics"),
        ([Nic("lab", mac=MAC), "lab"], "nics[1]"),
        ([None], "nics[0]"),
    ],
)
def test_as_items_refuses(value: object, field: str) -> None:
    _refused(lambda: as_items(value, "nics", Nic), field)


NIC = Nic("lab", mac=MAC)
DISK = Disk("/images/a.img")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"memory": None}, "memory"),
        ({"memory": 512.0}, "memory"),
        ({"vcpus": True}, "vcpus"),
        ({"vcpus": "2"}, "vcpus"),
        ({"vcpus": 2.0}, "vcpus"),
        ({"nics": NIC}, "nics"),
        ({"nics": "lab"}, "nics"),
        ({"nics": 5}, "nics"),
        ({"nics": None}, "nics"),
        ({"nics": [NIC, "lab"]}, "nics[1]"),
        ({"disks": DISK}, "disks"),
        ({"disks": "/images/a.img"}, "disks"),
        ({"disks": [None]}, "disks[0]"),
        ({"kernel": 5}, "kernel"),
        ({"kernel": b"/boot/vmlinuz"}, "kernel"),
        ({"kernel": "/boot/vmlinuz", "initrd": 5}, "initrd"),
        ({"kernel": "/boot/vmlinuz", "cmdline": 5}, "cmdline"),
        ({"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0\x00"}, "cmdline"),
        ({"serial_log": 5}, "serial_log"),
        ({"graphics": "vnc"}, "graphics"),
        ({"graphics": 5900}, "graphics"),
        ({"virt_type": None}, "virt_type"),
        ({"virt_type": ["kvm"]}, "virt_type"),
        ({"arch": None}, "arch"),
        ({"arch": "x86 64"}, "arch"),
        ({"arch": ""}, "arch"),
        ({"uuid": 5}, "uuid"),
        ({"uuid": b"c7a5fdbd-edaf-9455-926a-d65c16db1809"}, "uuid"),
        ({"autostart": "yes"}, "autostart"),
        ({"autostart": 1}, "autostart"),
    ],
)
def test_bad_domain_spec(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "x"} | kwargs
    error = _refused(lambda: DomainSpec(**args), field)  # type: ignore[arg-type]
    if "[" not in field:
        assert error.value == kwargs[field]


def test_graphics_string_names_field_and_value() -> None:
    error = _refused(lambda: DomainSpec("x", graphics="vnc"), "graphics")  # type: ignore[arg-type]
    assert error.value == "vnc"


def test_domain_spec_takes_any_ordered_iterable_of_nics_and_disks() -> None:
    second = Nic("lab", ip="192.168.150.88")
    by_list = DomainSpec("x", nics=[NIC, second], disks=[DISK])
    by_generator = DomainSpec("x", nics=(n for n in [NIC, second]), disks=iter([DISK]))
    assert by_generator == by_list
    assert by_generator.nics == (NIC, second)
    assert by_generator.disks == (DISK,)


def test_domain_spec_paths_accept_pathlike() -> None:
    spec = DomainSpec("x", kernel=Path("/boot/vmlinuz"), initrd="/boot/initrd", serial_log=PurePosixPath("/tmp/x"),
                      uuid="c7a5fdbd-edaf-9455-926a-d65c16db1809", arch="aarch64", autostart=True)
    assert (spec.kernel, spec.initrd, spec.serial_log) == (Path("/boot/vmlinuz"), Path("/boot/initrd"), Path("/tmp/x"))


RANGE = ("192.168.150.30", "192.168.150.39")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": 5}, "name"),
        ({"name": None}, "name"),
        ({"subnet": 5}, "subnet"),
        ({"subnet": None}, "subnet"),
        ({"dhcp_range": ("192.168.150.30",)}, "dhcp_range"),
        ({"dhcp_range": (*RANGE, "192.168.150.50")}, "dhcp_range"),
        ({"dhcp_range": "192.168.150.30-192.168.150.39"}, "dhcp_range"),
        ({"dhcp_range": "ab"}, "dhcp_range"),
        ({"dhcp_range": 5}, "dhcp_range"),
        ({"dhcp_range": {"192.168.150.30", "192.168.150.39"}}, "dhcp_range"),
        ({"dhcp_range": (None, "192.168.150.39")}, "dhcp_range[0]"),
        ({"dhcp_range": ("192.168.150.30", None)}, "dhcp_range[1]"),
        ({"subnet6": "fd00:150::/64", "dhcp_range6": ("fd00:150::10",)}, "dhcp_range6"),
        ({"subnet6": "fd00:150::/64", "dhcp_range6": "fd00:150::10"}, "dhcp_range6"),
        ({"subnet6": 6}, "subnet6"),
        ({"domain": "corp&lab"}, "domain"),
        ({"domain": "corp lab"}, "domain"),
        ({"domain": ""}, "domain"),
        ({"domain": 5}, "domain"),
        ({"forward": None}, "forward"),
        ({"forward": ["nat"]}, "forward"),
        ({"bridge": 5}, "bridge"),
        ({"bridge": ""}, "bridge"),
        ({"bridge": "br:0"}, "bridge"),
        ({"bridge": "br\t0"}, "bridge"),
        ({"bridge": ".."}, "bridge"),
        ({"hosts": Reservation(MAC, "192.168.150.88")}, "hosts"),
        ({"hosts": ["02:00:00:00:00:09 192.168.150.88"]}, "hosts[0]"),
        ({"hosts": 5}, "hosts"),
    ],
)
def test_bad_network_build(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "lab", "subnet": "192.168.150.0/24", "dhcp_range": RANGE} | kwargs
    error = _refused(lambda: NetworkSpec.build(**args), field)  # type: ignore[arg-type]
    if "[" not in field:
        assert error.value == kwargs[field]


def test_network_build_accepts_list_range_ip_addresses_and_host_generator() -> None:
    host = Reservation(MAC, "192.168.150.88", "pc001")
    by_tuple = NetworkSpec.build("lab", "192.168.150.0/24", dhcp_range=RANGE, domain="lab.example", hosts=[host])
    by_list = NetworkSpec.build(
        "lab", netaddr.IPNetwork("192.168.150.0/24"), domain="lab.example", hosts=(h for h in [host]),
        dhcp_range=[netaddr.IPAddress("192.168.150.30"), "192.168.150.39"])
    assert by_list == by_tuple
    assert by_list.primary.hosts == (host,)


def _fails_after_one(item: Any) -> Iterator[Any]:
    yield item
    raise RuntimeError("boom")


def test_an_iterable_that_fails_while_read_is_invalid_spec_naming_the_field(hv: libvm.Hypervisor) -> None:
    """As reserve_many says it (F7); the caller's own callbacks' errors pass unchanged."""
    calls: list[tuple[str, Callable[[], object]]] = [
        ("specs", lambda: hv.create_vms(_fails_after_one({"name": "c0", "virt_type": "qemu"}))),
        ("nics", lambda: hv.create_vm("m", nics=_fails_after_one(libvm.Nic("lab")))),
        ("disks", lambda: hv.create_vm("m", disks=_fails_after_one(libvm.Disk("/a.img")))),
        ("vms", lambda: hv.wait_for_ips(_fails_after_one("legacy"))),
        ("hosts", lambda: libvm.Fleet(_fails_after_one(hv))),
        ("specs", lambda: libvm.Fleet([hv]).create_vms(_fails_after_one({"name": "c0"}))),
    ]
    for field, call in calls:
        with pytest.raises(libvm.InvalidSpec) as info:
            call()
        assert info.value.field == field and "reading it failed: RuntimeError('boom')" in info.value.reason
    assert [vm.name for vm in hv.vms()] == ["legacy"]

    def progress(done: int, total: int) -> None:
        raise ZeroDivisionError("mine")

    with pytest.raises(ZeroDivisionError, match="mine"):
        hv.create_vms([{"name": "p0", "virt_type": "qemu"}], progress=progress)
    with pytest.raises(ZeroDivisionError):
        libvm.Fleet([hv]).create_vm("p1", placement=lambda h, r: 1 / 0)  # type: ignore[arg-type, return-value]
    assert [vm.name for vm in hv.vms()] == ["legacy"]
