"""NetworkSpec <-> XML, checked against a golden file by parsing."""

from __future__ import annotations

from pathlib import Path

import pytest

from libvm import InvalidSpec, NetworkSpec, Reservation, _xml
from libvm.networkxml import HostEntry, NetworkDocument, host_xml, read_network
from tests.conftest import DATA, canonical

LAB = NetworkSpec.build(
    "lab", "192.168.150.0/24", dhcp_range=("192.168.150.30", "192.168.150.39"), bridge="lvlab0",
    hosts=[Reservation("66:66:66:66:66:0b", "192.168.150.88", "pc001")],
)


def test_matches_golden() -> None:
    assert canonical(LAB.to_xml()) == canonical((DATA / "golden" / "network_lab.xml").read_text())


def test_round_trip() -> None:
    assert NetworkSpec.from_xml(LAB.to_xml()) == LAB


def test_isolated_has_no_forward() -> None:
    spec = NetworkSpec.build("iso", "10.9.0.0/24", forward="none")
    assert "<forward" not in spec.to_xml()
    assert NetworkSpec.from_xml(spec.to_xml()).forward == "none"


def test_reads_netmask_form() -> None:
    spec = NetworkSpec.from_xml(
        "<network><name>d</name><ip address='192.168.122.1' netmask='255.255.255.0'>"
        "<dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>")
    assert str(spec.primary.subnet.cidr) == "192.168.122.0/24"
    assert spec.in_dhcp_range(spec.primary.gateway + 5) is not None


def test_host_xml_escapes_and_orders() -> None:
    assert host_xml(Reservation("66:66:66:66:66:0B", "192.168.150.88", "pc001")) == (
        '<host mac="66:66:66:66:66:0b" name="pc001" ip="192.168.150.88"/>')


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"subnet": "192.168.150.0"}, "subnet"),
        ({"dhcp_range": ("192.168.150.39", "192.168.150.30")}, "dhcp_range"),
        ({"dhcp_range": ("192.168.150.30", "192.168.151.39")}, "dhcp_range[1]"),
        ({"dhcp_range": ("192.168.150.1", "192.168.150.39")}, "dhcp_range[0]"),
        ({"forward": "bridge"}, "forward"),
        ({"bridge": "a-very-long-bridge-name"}, "bridge"),
    ],
)
def test_bad_network_specs(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"name": "lab", "subnet": "192.168.150.0/24"} | kwargs
    with pytest.raises(InvalidSpec) as info:
        NetworkSpec.build(**args)  # type: ignore[arg-type]
    assert info.value.field == field


def _laughs(levels: int) -> str:
    """A billion-laughs document: each entity is ten of the one before."""
    entities = '<!ENTITY e0 "lollollollollollollollollollol">' + "".join(
        f'<!ENTITY e{level} "{f"&e{level - 1};" * 10}">' for level in range(1, levels + 1))
    return f'<?xml version="1.0"?><!DOCTYPE network [{entities}]><network><name>&e{levels};</name></network>'


# 3 levels (30 kB) stays under libxml2's own amplification limit, so only the
# parser's resolve_entities=False keeps it out; 9 levels is the classic bomb.
@pytest.mark.parametrize("levels", [3, 9])
def test_parser_does_not_expand_entity_bombs(levels: int) -> None:
    try:
        root = _xml.parse(_laughs(levels))
    except InvalidSpec:
        return  # refused outright: fine too
    assert "lol" not in "".join(map(str, root.itertext()))
    assert len(_xml.to_string(root)) < 1000


def test_parser_does_not_read_external_entities(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-CONTENT-42")
    doc = (f'<?xml version="1.0"?><!DOCTYPE network [<!ENTITY x SYSTEM "{secret.as_uri()}">]>'
           "<network><name>&x;</name></network>")
    try:
        root = _xml.parse(doc)
    except InvalidSpec:
        return
    assert "SECRET" not in _xml.to_string(root)
    assert "SECRET" not in "".join(map(str, root.itertext()))


@pytest.mark.parametrize(
    ("address", "cidr"),
    [
        ("10.1.2.1", "10.0.0.0/8"),
        ("127.0.0.1", "127.0.0.0/8"),
        ("128.0.0.1", "128.0.0.0/16"),
        ("172.16.5.1", "172.16.0.0/16"),
        ("191.255.0.1", "191.255.0.0/16"),
        ("192.168.122.1", "192.168.122.0/24"),
        ("223.1.1.1", "223.1.1.0/24"),
        ("fd00:1::1", "fd00:1::/64"),
    ],
)
def test_ip_without_prefix_or_netmask_gets_libvirts_classful_prefix(address: str, cidr: str) -> None:
    family = " family='ipv6'" if ":" in address else ""
    spec = NetworkSpec.from_xml(f"<network><name>d</name><ip address='{address}'{family}/></network>")
    assert str(spec.ips[0].subnet.cidr) == cidr
    assert str(spec.ips[0].gateway) == address


@pytest.mark.parametrize(
    "ip",
    [
        "<ip address='224.0.0.1'/>",
        "<ip address='not-an-ip' prefix='24'/>",
        "<ip prefix='24'/>",
        "<ip address='10.0.0.1' prefix='99'/>",
        "<ip address='10.0.0.1' prefix='8'><dhcp><range start='10.0.0.5'/></dhcp></ip>",
    ],
)
def test_bad_ip_element_is_invalid_spec(ip: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        NetworkSpec.from_xml(f"<network><name>d</name>{ip}</network>")
    assert info.value.field == "network xml"


@pytest.mark.parametrize("value", [None, 5, ["<network/>"]])
def test_xml_of_wrong_type_is_invalid_spec(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        NetworkSpec.from_xml(value)  # type: ignore[arg-type]
    assert (info.value.field, info.value.value) == ("network xml", value)


DUAL_HOSTS = """<network><name>d</name>
  <ip family='ipv6' address='fd00::1' prefix='64'><dhcp>
    <host name='six' ip='fd00::5'/><host id='00:01:AB:CD' ip='fd00::6'/><host name='no-address'/>
  </dhcp></ip>
  <ip address='10.9.0.1' prefix='24'><dhcp>
    <range start='10.9.0.100' end='10.9.0.199'/>
    <host mac='52:54:00:AA:BB:01' name='pc1' ip='10.9.0.5'/><host mac='52:54:00:aa:bb:02'/>
    <host mac='52:54:00:aa:bb:03' ip='10.9.0.7'/>
  </dhcp></ip>
  <dns><host ip='10.9.0.8'><hostname>dns-only</hostname></host></dns>
</network>"""


def test_document_reads_hosts_per_ip_element() -> None:
    """Each <ip>'s hosts under its own index; hosts without an address and DNS hosts are not reservations."""
    document = NetworkDocument(DUAL_HOSTS)
    assert document.host_ips(0) == ["fd00::5", "fd00::6"]
    assert document.host_ips(1) == ["10.9.0.5", "10.9.0.7"]
    assert document.host_ips(2) == []
    assert document.hosts() == [
        HostEntry(0, None, "fd00::5", "six", None),
        HostEntry(0, None, "fd00::6", None, "00:01:ab:cd"),
        HostEntry(1, "52:54:00:aa:bb:01", "10.9.0.5", "pc1", None),
        HostEntry(1, "52:54:00:aa:bb:03", "10.9.0.7", None, None),
    ]
    spec = document.spec()
    assert spec.primary == spec.ips[1] and spec.primary.hosts == ()
    assert read_network(DUAL_HOSTS) == (spec, document.hosts())
    assert [len(ip.hosts) for ip in NetworkSpec.from_xml(DUAL_HOSTS).ips] == [2, 2]


def test_document_refuses_what_is_not_a_network() -> None:
    with pytest.raises(InvalidSpec, match="not <network>"):
        NetworkDocument("<domain/>")


def test_from_xml_refuses_a_malformed_host_mac_and_a_reversed_range_as_invalid_spec() -> None:
    head = "<network><name>x</name><ip address='10.0.0.1' prefix='24'><dhcp>"
    with pytest.raises(InvalidSpec) as info:
        NetworkSpec.from_xml(f"{head}<host mac='zz' ip='10.0.0.5'/></dhcp></ip></network>")
    assert (info.value.field, info.value.value) == ("network xml hosts[0].mac", "zz")
    with pytest.raises(InvalidSpec, match="start is after its end"):
        NetworkSpec.from_xml(f"{head}<range start='10.0.0.9' end='10.0.0.2'/></dhcp></ip></network>")
    good = NetworkSpec.from_xml(f"{head}<range start='10.0.0.2' end='10.0.0.9'/>"
                                f"<host mac='52:54:00:00:00:05' ip='10.0.0.5'/></dhcp></ip></network>")
    assert [str(r.ip) for r in good.reservations()] == ["10.0.0.5"]



def test_build_takes_host_tuples_as_ensure_network_does() -> None:
    by_tuple = NetworkSpec.build("x", "10.0.0.0/24", hosts=[("52:54:00:00:00:01", "10.0.0.5", "h")])
    by_value = NetworkSpec.build("x", "10.0.0.0/24", hosts=[Reservation("52:54:00:00:00:01", "10.0.0.5", "h")])
    assert by_tuple == by_value
    assert NetworkSpec.build("x", "10.0.0.0/24", hosts=(h for h in [("52:54:00:00:00:01", "10.0.0.5")])).reservations()
    with pytest.raises(InvalidSpec) as info:
        NetworkSpec.build("x", "10.0.0.0/24", hosts=[("zz", "10.0.0.5")])
    assert info.value.field == "hosts[0].mac"
    with pytest.raises(InvalidSpec) as info:
        NetworkSpec.build("x", "10.0.0.0/24", hosts=[5])  # type: ignore[list-item]
    assert info.value.field == "hosts[0]"
