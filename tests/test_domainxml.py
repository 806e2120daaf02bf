"""DomainSpec <-> XML, checked against golden files by parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from libvm import Disk, DomainSpec, InvalidSpec, Nic, Vnc
from libvm.domainxml import disk_name
from tests.conftest import DATA, canonical

GOLDEN = DATA / "golden"

SEED = DomainSpec(
    "pc001", memory="1024MiB", nics=[Nic("lab", mac="66:66:66:66:66:0b")],
    disks=[Disk("/images/test2.img")], graphics=Vnc.display(6),
)
TINY = DomainSpec(
    "tiny", memory=256, vcpus=2, virt_type="qemu",
    nics=[Nic("lab", mac="66:66:66:66:66:0b"), Nic("other", mac="02:00:0a:00:00:05", model="e1000")],
    kernel="/var/cache/libvm/vmlinuz", initrd="/var/cache/libvm/initrd.gz",
    cmdline="console=ttyS0 quiet", serial_log="/tmp/tiny.log",
)


@pytest.mark.parametrize(("spec", "golden"), [(SEED, "domain_seed.xml"), (TINY, "domain_kernel.xml")])
def test_matches_golden(spec: DomainSpec, golden: str) -> None:
    assert canonical(spec.to_xml()) == canonical((GOLDEN / golden).read_text())


@pytest.mark.parametrize("spec", [SEED, TINY])
def test_round_trip(spec: DomainSpec) -> None:
    assert DomainSpec.from_xml(spec.to_xml()) == spec


def test_reads_libvirt_dump_with_unknown_parts() -> None:
    xml = (Path(__file__).parent / "data" / "testnode.xml").read_text()
    node = etree.fromstring(xml.encode())
    dom = node.find("domain")
    assert dom is not None
    spec = DomainSpec.from_xml(etree.tostring(dom))
    assert spec.name == "legacy"
    assert spec.memory == 256
    assert [(n.network, str(n.mac), n.model) for n in spec.nics] == [
        ("lab", "52:54:00:aa:bb:01", "virtio"), ("default", "52:54:00:aa:bb:02", "e1000")]


def test_hostile_name_is_escaped() -> None:
    spec = DomainSpec("a'b<c>&\"d", nics=[Nic("n'<et>", mac="02:00:00:00:00:09")], cmdline=None)
    root = etree.fromstring(spec.to_xml().encode())
    assert root.findtext("name") == "a'b<c>&\"d"
    assert root.find("devices/interface/source").get("network") == "n'<et>"  # type: ignore[union-attr]
    assert len(root.findall("devices/interface")) == 1
    assert DomainSpec.from_xml(spec.to_xml()).name == "a'b<c>&\"d"


def test_mac_derived_from_ip() -> None:
    spec = DomainSpec("x", nics=[Nic("lab", ip="192.168.150.88")])
    assert str(spec.nics[0].mac).endswith("c0:a8:96:58")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nics": [Nic("lab")]}, "nics[0].mac"),
        ({"nics": [Nic("lab", mac="02:00:00:00:00:01"), Nic("b", mac="02:00:00:00:00:01")]}, "nics[1].mac"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory": "many"}, "memory"),
        ({"virt_type": "xen"}, "virt_type"),
        ({"initrd": "/boot/initrd"}, "kernel"),
        ({"uuid": "not-a-uuid"}, "uuid"),
        ({"name": "a/b"}, "name"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_specs_name_the_field(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "x"} | kwargs
    with pytest.raises(InvalidSpec) as info:
        DomainSpec(**args)  # type: ignore[arg-type]
    assert info.value.field == field


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: Nic("lab", mac="01:00:5e:00:00:01"), "nic.mac"),
        (lambda: Nic("lab", ip="300.1.1.1"), "nic.ip"),
        (lambda: Nic("", ip="10.0.0.5"), "nic.network"),
        (lambda: Nic("lab", model="ne2k"), "nic.model"),
        (lambda: Disk("/x", format="vmdk"), "disk.format"),
        (lambda: Vnc(port=80), "graphics.port"),
    ],
)
def test_bad_values(make: object, field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        make()  # type: ignore[operator]
    assert info.value.field == field


@pytest.mark.parametrize(("index", "name"), [(0, "vda"), (25, "vdz"), (26, "vdaa"), (51, "vdaz"), (52, "vdba"),
                                             (701, "vdzz"), (702, "vdaaa")])
def test_disk_names_count_like_libvirt(index: int, name: str) -> None:
    assert disk_name("vd", index) == name


def test_thirty_disks_get_unique_valid_names_and_round_trip() -> None:
    spec = DomainSpec("many", disks=[Disk(f"/images/d{i}.img") for i in range(30)])
    root = etree.fromstring(spec.to_xml().encode())
    targets = [t.get("dev") for t in root.iterfind("devices/disk/target")]
    expected = [f"vd{c}" for c in "abcdefghijklmnopqrstuvwxyz"] + ["vdaa", "vdab", "vdac", "vdad"]
    assert targets == expected
    assert all(t is not None and re.fullmatch(r"vd[a-z]+", t) for t in targets)
    assert DomainSpec.from_xml(spec.to_xml()) == spec
