"""IPv6 reservations: libvirt binds them to a hostname or a DUID, never a MAC."""

from __future__ import annotations

import pytest
from lxml import etree

import libvm
from libvm import InvalidSpec, Reservation
from tests.conftest import canonical


@pytest.fixture
def dual(hv: libvm.Hypervisor) -> libvm.Network:
    return hv.ensure_network("dual", "192.168.160.0/24", dhcp_range=("192.168.160.100", "192.168.160.199"),
                             subnet6="fd00:160::/64", dhcp_range6=("fd00:160::100", "fd00:160::1ff"),
                             forward="none")


def hosts_of(net: libvm.Network, family: str) -> list[dict[str, str]]:
    root = etree.fromstring(net.xml().encode())
    return [{str(k): str(v) for k, v in h.attrib.items()}
            for ip in root.iterfind("ip") if ip.get("family", "ipv4") == family
            for h in ip.iterfind("dhcp/host")]


def test_dual_stack_network_xml(dual: libvm.Network) -> None:
    spec = dual.spec()
    assert [str(ip.subnet.cidr) for ip in spec.ips] == ["192.168.160.0/24", "fd00:160::/64"]
    assert [str(ip.gateway) for ip in spec.ips] == ["192.168.160.1", "fd00:160::1"]


def test_reserve_by_hostname_and_duid_in_the_ipv6_element(dual: libvm.Network) -> None:
    dual.reserve(None, "fd00:160::5", hostname="pc001")
    dual.reserve(None, "fd00:160::6", client_id="00:01:00:01:2a:2b:2c:2d:66:66:66:66:66:0c")
    dual.reserve("66:66:66:66:66:0b", "192.168.160.5", "pc001")
    assert hosts_of(dual, "ipv6") == [
        {"name": "pc001", "ip": "fd00:160::5"},
        {"id": "00:01:00:01:2a:2b:2c:2d:66:66:66:66:66:0c", "ip": "fd00:160::6"},
    ]
    assert hosts_of(dual, "ipv4") == [{"mac": "66:66:66:66:66:0b", "name": "pc001", "ip": "192.168.160.5"}]
    assert Reservation(None, "fd00:160::5", "pc001") in dual.reservations()
    assert dual.reserve(None, "fd00:160::5", hostname="pc001") == Reservation(None, "fd00:160::5", "pc001")
    xml = canonical(dual.xml())
    dual.reserve(None, "fd00:160::6", client_id="00:01:00:01:2A:2B:2C:2D:66:66:66:66:66:0C")  # same DUID
    assert canonical(dual.xml()) == xml


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"ip": "fd00:160::5", "hostname": "other"}, libvm.IpReserved),
        ({"ip": "fd00:160::7", "hostname": "pc001"}, libvm.HostnameReserved),
        ({"ip": "fd00:160::150", "hostname": "dyn", "allow_dynamic": False}, libvm.IpInDhcpRange),
        ({"ip": "fd00:160::7", "hostname": "PC001"}, libvm.HostnameReserved),  # dnsmasq ignores case
    ],
)
def test_ipv6_conflicts(dual: libvm.Network, kwargs: dict[str, object], error: type[Exception]) -> None:
    dual.reserve(None, "fd00:160::5", hostname="pc001")
    before = canonical(dual.xml())
    with pytest.raises(error):
        dual.reserve(None, **kwargs)  # type: ignore[arg-type]
    assert canonical(dual.xml()) == before


@pytest.mark.parametrize(
    ("mac", "ip", "kwargs", "field"),
    [
        ("66:66:66:66:66:0b", "fd00:160::5", {"hostname": "x"}, "mac"),
        (None, "fd00:160::5", {}, "hostname"),
        (None, "fd00:160::5", {"client_id": "not-a-duid"}, "client_id"),
        (None, "192.168.160.5", {"hostname": "x"}, "mac"),
        ("66:66:66:66:66:0b", "192.168.160.5", {"client_id": "00:01:00:01"}, "client_id"),
        (None, "fd00:161::5", {"hostname": "x"}, "ip"),
        (None, "fd00:160::1", {"hostname": "x"}, "ip"),
    ],
)
def test_ipv6_bad_input(dual: libvm.Network, mac: str | None, ip: str, kwargs: dict[str, str], field: str) -> None:
    before = canonical(dual.xml())
    with pytest.raises(InvalidSpec) as info:
        dual.reserve(mac, ip, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert canonical(dual.xml()) == before


def test_ensure_network_compares_ipv6_part(hv: libvm.Hypervisor, dual: libvm.Network) -> None:
    with pytest.raises(libvm.NetworkMismatch) as info:
        hv.ensure_network("dual", "192.168.160.0/24", dhcp_range=("192.168.160.100", "192.168.160.199"),
                          subnet6="fd00:161::/64", forward="none")
    assert info.value.field == "subnet6"


def test_an_ipv6_address_as_the_nics_ip_is_refused_pointing_at_ip6(hv: libvm.Hypervisor,
                                                                   dual: libvm.Network) -> None:
    before = canonical(dual.xml())
    with pytest.raises(InvalidSpec) as info:
        hv.create_vm("v6vm", nics=[libvm.Nic("dual", ip="fd00:160::9")], virt_type="qemu")
    assert info.value.field == "nic.ip"
    assert "ip6=" in info.value.reason
    assert canonical(dual.xml()) == before
    assert "v6vm" not in [vm.name for vm in hv.vms()]


def test_a_dual_stack_nic_gets_and_gives_back_both_addresses(hv: libvm.Hypervisor, dual: libvm.Network) -> None:
    before = canonical(dual.xml())
    vm = hv.create_vm("web6", nics=[libvm.Nic("dual", ip6="auto")], virt_type="qemu", start=False)
    nic = vm.nics[0]
    assert str(nic.ip) == "192.168.160.2" and str(nic.ip6) == "fd00:160::2"
    assert {"name": "web6", "ip": "fd00:160::2"} in hosts_of(dual, "ipv6")  # keyed by the DHCP name
    assert {"mac": str(nic.mac), "name": "web6", "ip": "192.168.160.2"} in hosts_of(dual, "ipv4")
    with pytest.raises(libvm.HostnameReserved):  # the name is taken in both families now
        hv.create_vm("other", nics=[libvm.Nic("dual", hostname="web6", ip6="auto")], virt_type="qemu")
    vm.delete()
    assert canonical(dual.xml()) == before


def test_an_ipv6_address_of_another_host_is_refused_and_nothing_changes(hv: libvm.Hypervisor,
                                                                       dual: libvm.Network) -> None:
    dual.reserve(None, "fd00:160::7", hostname="printer")
    before = canonical(dual.xml())
    with pytest.raises(libvm.IpReserved, match="printer"):
        hv.create_vm("web6", nics=[libvm.Nic("dual", ip6="fd00:160::7")], virt_type="qemu", start=False)
    assert canonical(dual.xml()) == before
    assert "web6" not in [vm.name for vm in hv.vms()]
