"""Reservations on the test driver: add, idempotent, conflicts, release, no side effects."""

from __future__ import annotations

import libvirt
import netaddr
import pytest

import libvm
from libvm import (
    HostnameReserved,
    InvalidSpec,
    IpInDhcpRange,
    IpReserved,
    MacReserved,
    Reservation,
)
from tests.conftest import canonical

SEED = Reservation("66:66:66:66:66:0b", "192.168.150.88", "pc001")


def test_lookup_missing_network(hv: libvm.Hypervisor) -> None:
    with pytest.raises(libvm.NotFound, match="nope"):
        hv.network("nope")


def test_reads_existing_reservations(lab: libvm.Network) -> None:
    assert lab.reservations() == [Reservation("52:54:00:aa:bb:01", "192.168.150.10", "legacy")]


def test_reserve_adds_host_and_keeps_unknown_xml(lab: libvm.Network) -> None:
    before = lab.xml()
    assert lab.reserve("66:66:66:66:66:0b", "192.168.150.88", hostname="pc001") == SEED
    assert SEED in lab.reservations()
    after = lab.xml()
    assert "<host mac='66:66:66:66:66:0b' name='pc001' ip='192.168.150.88'/>" in after
    for kept in ("<mtu size='9000'/>", "keep-me", "unknown-to-libvm", "name='legacy'"):
        assert kept in before and kept in after


def test_reserve_identical_is_noop(lab: libvm.Network) -> None:
    lab.reserve(SEED.mac, SEED.ip, SEED.hostname)
    xml = lab.xml()
    assert lab.reserve(str(SEED.mac), str(SEED.ip), "pc001") == SEED
    assert lab.reserve(str(SEED.mac), str(SEED.ip)) == SEED  # no name given: matches any
    assert canonical(lab.xml()) == canonical(xml)
    assert lab.xml().count("66:66:66:66:66:0b") == 1


@pytest.mark.parametrize(
    ("mac", "ip", "name", "error", "other"),
    [
        ("66:66:66:66:66:0b", "192.168.150.89", "pc002", MacReserved, "pc001"),
        ("66:66:66:66:66:0c", "192.168.150.88", "pc002", IpReserved, "66:66:66:66:66:0b"),
        ("66:66:66:66:66:0c", "192.168.150.89", "pc001", HostnameReserved, "66:66:66:66:66:0b"),
        ("66:66:66:66:66:0b", "192.168.150.88", "other", MacReserved, "pc001"),
    ],
)
def test_conflicts_refused_and_nothing_changes(
    lab: libvm.Network, mac: str, ip: str, name: str, error: type[libvm.AddressConflict], other: str
) -> None:
    lab.reserve(SEED.mac, SEED.ip, SEED.hostname)
    xml = lab.xml()
    with pytest.raises(error) as info:
        lab.reserve(mac, ip, name)
    assert info.value.other == other
    assert isinstance(info.value, libvm.AddressConflict)
    assert canonical(lab.xml()) == canonical(xml)


def test_dynamic_range_allowed_unless_strict(lab: libvm.Network) -> None:
    xml = lab.xml()
    with pytest.raises(IpInDhcpRange, match=r"192\.168\.150\.30-192\.168\.150\.39") as info:
        lab.reserve("66:66:66:66:66:0d", "192.168.150.35", allow_dynamic=False)
    assert info.value.reason == "ip-in-dhcp-range"
    assert canonical(lab.xml()) == canonical(xml)
    lab.reserve("66:66:66:66:66:0d", "192.168.150.35")
    assert Reservation("66:66:66:66:66:0d", "192.168.150.35") in lab.reservations()


def test_stock_default_network_reserves_and_allocates_inside_its_range(hv: libvm.Hypervisor) -> None:
    """libvirt's ``default``: 192.168.122.0/24, all of .2-.254 dynamic."""
    default = hv.network("default")
    assert default.reserve("66:66:66:66:66:0b", "192.168.122.88").ip == netaddr.IPAddress("192.168.122.88")
    assert str(default.free_ip()) == "192.168.122.2"
    with pytest.raises(libvm.NoFreeAddress, match=r"outside the dynamic DHCP range 192\.168\.122\.2-"):
        default.free_ip(allow_dynamic=False)
    vm = hv.create_vm("web1", nics=[libvm.Nic("default"), libvm.Nic("default", ip="192.168.122.50")], virt_type="qemu")
    assert [str(n.ip) for n in vm.nics] == ["192.168.122.2", "192.168.122.50"]
    with pytest.raises(IpInDhcpRange):
        hv.create_vm("web2", nics=[libvm.Nic("default", ip="192.168.122.51")], virt_type="qemu", allow_dynamic=False)


def test_free_ip_prefers_outside_the_range_then_falls_back_inside(lab: libvm.Network) -> None:
    pool = ("192.168.150.28", "192.168.150.31")
    assert str(lab.free_ip(pool=pool)) == "192.168.150.28"
    lab.reserve("02:00:00:00:00:28", "192.168.150.28")
    lab.reserve("02:00:00:00:00:29", "192.168.150.29")
    assert str(lab.free_ip(pool=pool)) == "192.168.150.30"  # inside the range: neither reserved nor leased
    lab.reserve("02:00:00:00:00:30", "192.168.150.30")
    assert str(lab.free_ip(pool=pool)) == "192.168.150.31"
    with pytest.raises(libvm.NoFreeAddress, match=r"'lab'.*192\.168\.150\.28 and 192\.168\.150\.31 outside"):
        lab.free_ip(pool=pool, allow_dynamic=False)
    lab.reserve("02:00:00:00:00:31", "192.168.150.31")
    with pytest.raises(libvm.NoFreeAddress, match="inside or outside the dynamic DHCP range"):
        lab.free_ip(pool=pool)


@pytest.mark.parametrize(
    ("mac", "ip", "field"),
    [
        ("66:66:66:66:66", "192.168.150.88", "mac"),
        ("01:00:5e:00:00:01", "192.168.150.88", "mac"),
        ("66:66:66:66:66:0b", "192.168.151.88", "ip"),
        ("66:66:66:66:66:0b", "192.168.150.0", "ip"),
        ("66:66:66:66:66:0b", "192.168.150.1", "ip"),
        ("66:66:66:66:66:0b", "192.168.150.255", "ip"),
        ("66:66:66:66:66:0b", "not-an-ip", "ip"),
    ],
)
def test_bad_input_changes_nothing(lab: libvm.Network, mac: str, ip: str, field: str) -> None:
    xml = lab.xml()
    with pytest.raises(InvalidSpec) as info:
        lab.reserve(mac, ip)
    assert info.value.field == field
    assert canonical(lab.xml()) == canonical(xml)


def test_bad_hostname_changes_nothing(lab: libvm.Network) -> None:
    xml = lab.xml()
    with pytest.raises(InvalidSpec, match="hostname"):
        lab.reserve("66:66:66:66:66:0b", "192.168.150.88", "a'b<c>")
    assert canonical(lab.xml()) == canonical(xml)


def test_release_by_mac_and_ip_idempotent(lab: libvm.Network) -> None:
    lab.reserve(SEED.mac, SEED.ip, SEED.hostname)
    assert lab.release("66:66:66:66:66:0B") == [SEED]
    assert lab.release("66:66:66:66:66:0b") == []
    assert SEED not in lab.reservations()
    lab.reserve(SEED.mac, SEED.ip, SEED.hostname)
    assert lab.release(ip="192.168.150.88") == [SEED]
    assert lab.reservations() == [Reservation("52:54:00:aa:bb:01", "192.168.150.10", "legacy")]
    with pytest.raises(InvalidSpec):
        lab.release()


def test_release_pair_removes_only_that_pair(lab: libvm.Network) -> None:
    lab.reserve(SEED.mac, SEED.ip, SEED.hostname)
    assert lab.release("66:66:66:66:66:0b", ip="192.168.150.89") == []
    assert lab.release("52:54:00:aa:bb:01", ip="192.168.150.88") == []
    assert SEED in lab.reservations()
    assert lab.release("66:66:66:66:66:0b", ip="192.168.150.88") == [SEED]


def test_leases_empty_on_driver_without_leases(lab: libvm.Network) -> None:
    assert lab.leases() == []


def test_free_ip_skips_gateway_reservations_and_range(lab: libvm.Network) -> None:
    assert str(lab.free_ip()) == "192.168.150.2"
    lab.reserve("66:66:66:66:66:0e", "192.168.150.2")
    assert str(lab.free_ip()) == "192.168.150.3"
    assert str(lab.free_ip(pool=("192.168.150.10", "192.168.150.50"))) == "192.168.150.11"
    assert str(lab.free_ip(pool=("192.168.150.30", "192.168.150.45"))) == "192.168.150.40"
    with pytest.raises(InvalidSpec, match="pool"):
        lab.free_ip(pool=("192.168.150.10", "10.0.0.1"))


def test_dns_names_added_refused_and_removed(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    vm = hv.create_vm("web1", nics=[libvm.Nic("lab", ip="192.168.150.88", dns=True)], virt_type="qemu")
    assert [(h.ip, h.hostnames) for h in lab.dns_hosts()] == [("192.168.150.88", ("web1",))]
    before = canonical(lab.xml())
    for nic in [libvm.Nic("lab", ip="192.168.150.89", hostname="WEB1", dns=True),  # case-insensitive
                libvm.Nic("lab", ip="192.168.150.90", hostname="web1", dns=True)]:
        with pytest.raises(libvm.HostnameReserved):
            hv.create_vm("other", nics=[nic], virt_type="qemu")
    lab.add_dns_host("192.168.150.95", "api")  # in DNS only, not in DHCP
    before = canonical(lab.xml())
    with pytest.raises(libvm.HostnameReserved, match="api"):
        hv.create_vm("other", nics=[libvm.Nic("lab", ip="192.168.150.96", hostname="api", dns=True)], virt_type="qemu")
    with pytest.raises(libvm.IpReserved, match="api"):
        hv.create_vm("other", nics=[libvm.Nic("lab", ip="192.168.150.95", dns=True)], virt_type="qemu")
    with pytest.raises(libvm.InvalidSpec) as info:  # no usable name for DNS
        hv.create_vm("no name!", nics=[libvm.Nic("lab", ip="192.168.150.91", dns=True)], virt_type="qemu")
    assert info.value.field == "nics[0].dns"
    assert canonical(lab.xml()) == before
    vm.delete()
    assert [h.ip for h in lab.dns_hosts()] == ["192.168.150.95"]  # only web1's went with it


def test_dns_entry_is_rolled_back(hv: libvm.Hypervisor) -> None:
    lab = hv.network("lab")
    before = canonical(lab.xml())
    with pytest.raises(libvm.LibvmError, match="legacy"):  # define fails after the DNS entry was added
        hv.create_vm("clash", nics=[libvm.Nic("lab", ip="192.168.150.88", dns=True)],
                     uuid="6695eb01-f6a4-8304-79aa-97f2502e193f", virt_type="qemu")
    assert canonical(lab.xml()) == before


def two_definitions(monkeypatch: pytest.MonkeyPatch, net: libvm.Network, live: str, config: str) -> None:
    """Make ``net`` show different live and persistent hosts, as a real daemon can (the test driver has one)."""
    base = net.xml()

    def xml_desc(handle: libvirt.virNetwork, flags: int = 0) -> str:
        extra = config if flags & libvirt.VIR_NETWORK_XML_INACTIVE else live
        return base.replace("</dhcp>", f"{extra}</dhcp>")

    monkeypatch.setattr(libvirt.virNetwork, "XMLDesc", xml_desc)


def test_live_only_and_config_only_reservations_count(lab: libvm.Network, monkeypatch: pytest.MonkeyPatch) -> None:
    both = "<host mac='02:00:00:00:00:04' ip='192.168.150.4'/>"
    two_definitions(monkeypatch, lab, f"<host mac='02:00:00:00:00:02' ip='192.168.150.2'/>{both}",
                    f"<host mac='02:00:00:00:00:03' name='cfg' ip='192.168.150.3'/>{both}")
    assert str(lab.free_ip()) == "192.168.150.5"
    assert lab.reservations() == [
        Reservation("52:54:00:aa:bb:01", "192.168.150.10", "legacy"),
        Reservation("02:00:00:00:00:02", "192.168.150.2"),
        Reservation("02:00:00:00:00:04", "192.168.150.4"),
        Reservation("02:00:00:00:00:03", "192.168.150.3", "cfg"),
    ]
    with pytest.raises(IpReserved, match="cfg"):
        lab.check("66:66:66:66:66:0b", "192.168.150.3")
    with pytest.raises(MacReserved):
        lab.check("02:00:00:00:00:02", "192.168.150.88")
    assert lab.check("02:00:00:00:00:03", "192.168.150.3") == (
        Reservation("02:00:00:00:00:03", "192.168.150.3", "cfg"), True)


def test_free_ip_reads_the_test_drivers_one_definition_once(lab: libvm.Network,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = libvirt.virNetwork.XMLDesc

    def xml_desc(handle: libvirt.virNetwork, flags: int = 0) -> str:
        calls.append(flags)
        return str(real(handle, flags))

    monkeypatch.setattr(libvirt.virNetwork, "XMLDesc", xml_desc)
    assert str(lab.free_ip()) == "192.168.150.2"
    assert calls.count(0) == 1
    lab.stop()  # persistent, not running: its one definition is read with flags 0 after the refusal
    calls.clear()
    lab.reserve("02:00:00:00:00:02", "192.168.150.2")
    assert str(lab.free_ip()) == "192.168.150.3"
    assert calls.count(0) == 2  # one for reserve, one for free_ip


def define(hv: libvm.Hypervisor, name: str, ips: str) -> libvm.Network:
    hv.handle.networkCreateXML(f"<network><name>{name}</name><bridge name='v{name}'/>{ips}</network>")
    return hv.network(name)


def test_free_ip_counts_the_hosts_of_the_ipv4_element_when_it_is_not_first(hv: libvm.Hypervisor) -> None:
    net = define(hv, "v6first",
                 "<ip family='ipv6' address='fd00::1' prefix='64'><dhcp><host name='a' ip='fd00::2'/></dhcp></ip>"
                 "<ip address='10.9.0.1' prefix='24'><dhcp><host mac='02:00:00:00:00:02' ip='10.9.0.2'/>"
                 "<host name='stray' ip='fd00::3'/><host mac='02:00:00:00:00:04' ip='10.9.0.3'/></dhcp></ip>")
    assert str(net.free_ip()) == "10.9.0.4"  # libvirt 9.0 keeps an IPv6 host in an IPv4 <ip>: it blocks nothing
    assert len(net.reservations()) == 4


def test_free_ip_of_an_ipv6_network_skips_its_hosts(hv: libvm.Hypervisor) -> None:
    net = define(hv, "v6only", "<ip family='ipv6' address='fd00::1' prefix='120'><dhcp>"
                               "<range start='fd00::80' end='fd00::ff'/>"
                               "<host name='a' ip='fd00::2'/><host id='00:01:02' ip='fd00::3'/></dhcp></ip>")
    assert str(net.free_ip()) == "fd00::4"
    assert str(net.free_ip(avoid=["fd00::4"])) == "fd00::5"
