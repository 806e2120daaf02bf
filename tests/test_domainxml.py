"""DomainSpec <-> XML, checked against golden files by parsing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from libvm import Disk, DomainSpec, InvalidSpec, Nic, Vnc, _xml
from libvm.domainxml import Interface, disk_name, mac_list, read_domain
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


MIXED = """<domain type='kvm'>
  <name>mixed</name>
  <uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid>
  <memory unit='KiB'>524288</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='x86_64' machine='pc-q35-8.2'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='vmdk'/><source file='/images/old.vmdk'/><target dev='sda' bus='usb'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:AA:BB:01'/><source network='lab'/><model type='e1000'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:aa:bb:02'/><source bridge='br0'/><model type='virtio'/>
    </interface>
    <interface type='direct'>
      <mac address='52:54:00:aa:bb:03'/><source dev='eth0' mode='bridge'/>
    </interface>
    <interface type='network'>
      <mac address='52:54:00:aa:bb:04'/><source network='default'/><model type='ne2k_pci'/>
    </interface>
    <interface type='user'/>
    <graphics type='vnc' port='5901' autoport='no' listen='vnc.example'/>
  </devices>
</domain>"""


def test_read_domain_lists_every_interface_in_order() -> None:
    doc = read_domain(MIXED)
    assert doc.interfaces == (
        Interface("52:54:00:aa:bb:01", "lab", "e1000"),
        Interface("52:54:00:aa:bb:02", None, "virtio"),
        Interface("52:54:00:aa:bb:03", None, None),
        Interface("52:54:00:aa:bb:04", "default", "ne2k_pci"),
    )
    assert [(n.network, str(n.mac), n.model) for n in doc.spec.nics] == [
        ("lab", "52:54:00:aa:bb:01", "e1000"), ("default", "52:54:00:aa:bb:04", "ne2k_pci")]
    assert doc.spec.disks == (Disk.trusted("/images/old.vmdk", "vmdk", "usb", False),)
    assert doc.spec.graphics == Vnc.trusted(5901, "vnc.example")
    assert (doc.spec.name, doc.spec.memory, doc.spec.vcpus) == ("mixed", 512, 2)


def test_from_xml_and_mac_list_are_views_of_read_domain() -> None:
    doc = read_domain(MIXED)
    assert DomainSpec.from_xml(MIXED) == doc.spec
    assert mac_list(MIXED) == [
        ("52:54:00:aa:bb:01", "lab"), ("52:54:00:aa:bb:02", None),
        ("52:54:00:aa:bb:03", None), ("52:54:00:aa:bb:04", "default")]


def test_read_domain_parses_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    parse = _xml.parse

    def counting(text: str | bytes, what: str = "xml") -> etree._Element:
        calls.append(what)
        return parse(text, what)

    monkeypatch.setattr(_xml, "parse", counting)
    read_domain(MIXED)
    assert len(calls) == 1


def test_unknown_model_spec_writes_back_what_it_read() -> None:
    spec = read_domain(MIXED).spec
    again = read_domain(spec.to_xml()).spec
    assert [n.model for n in again.nics] == ["e1000", "ne2k_pci"]
    assert again.disks == spec.disks


@pytest.mark.parametrize(
    "xml",
    [
        "<domain><name>x</name><vcpu>two</vcpu></domain>",
        "<domain><name>x</name><memory>lots</memory></domain>",
        "<domain><name>x</name><devices><graphics type='vnc' port='x'/></devices></domain>",
        "<domain><name>x</name><devices><interface type='network'><mac address='zz'/></interface></devices></domain>",
        "<network/>",
    ],
)
def test_bad_domain_xml_is_invalid_spec(xml: str) -> None:
    with pytest.raises(InvalidSpec):
        read_domain(xml)
