"""Networks no guest can use, and DHCP ranges libvirt refuses, are refused before libvirt sees them."""

from __future__ import annotations

import netaddr
import pytest

import libvm
from libvm import InvalidSpec, IpSpec, NetworkSpec

UNUSABLE = [
    "0.0.0.0/24", "0.0.0.0/0", "127.0.0.0/24", "127.1.2.0/30", "169.254.0.0/24", "169.254.0.0/16",
    "224.0.0.0/24", "239.255.255.0/24", "240.0.0.0/24", "255.255.255.0/24", "192.0.0.0/2", "128.0.0.0/1",
]
UNUSABLE6 = ["fe80::/64", "febf::/64", "ff02::/64", "ff00::/8", "::/64", "::1/126", "::ffff:10.0.0.0/120"]


@pytest.mark.parametrize("subnet", UNUSABLE + UNUSABLE6)
def test_ensure_network_refuses_a_subnet_no_guest_can_use(hv: libvm.Hypervisor, subnet: str) -> None:
    before = sorted(n.name for n in hv.networks())
    with pytest.raises(InvalidSpec) as info:
        hv.ensure_network("new", subnet, forward="none")
    assert (info.value.field, info.value.value) == ("subnet", subnet)
    assert "no guest" in str(info.value)
    assert sorted(n.name for n in hv.networks()) == before


@pytest.mark.parametrize("subnet6", UNUSABLE6)
def test_ensure_network_refuses_such_a_subnet6(hv: libvm.Hypervisor, subnet6: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        hv.ensure_network("new", "10.170.0.0/24", subnet6=subnet6, forward="none")
    assert (info.value.field, info.value.value) == ("subnet6", subnet6)
    assert "new" not in [n.name for n in hv.networks()]


@pytest.mark.parametrize("subnet", ["10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.150.0/24",
                                    "223.255.255.0/24", "168.0.0.0/8", "fd00::/64", "2001:db8::/64", "fec0::/64"])
def test_usable_subnets_next_to_the_unusable_ones_are_taken(subnet: str) -> None:
    assert NetworkSpec.build("n", subnet).primary.subnet.cidr == netaddr.IPNetwork(subnet).cidr


def test_ip_spec_written_by_hand_is_checked_but_one_libvirt_holds_is_read() -> None:
    with pytest.raises(InvalidSpec) as info:
        IpSpec(netaddr.IPNetwork("169.254.0.1/16"))
    assert info.value.field == "subnet"
    with pytest.raises(InvalidSpec) as info:
        IpSpec("10.0.0.1/24")
    assert info.value.field == "subnet"
    with pytest.raises(InvalidSpec) as info:
        IpSpec(netaddr.IPNetwork("10.0.0.1/24"), (("10.0.0.2", "10.0.0.3"),))
    assert info.value.field == "dhcp_ranges"
    with pytest.raises(InvalidSpec) as info:
        IpSpec(netaddr.IPNetwork("10.0.0.1/24"), hosts=["x"])  # type: ignore[arg-type]
    assert info.value.field == "hosts"
    with pytest.raises(InvalidSpec) as info:
        IpSpec(netaddr.IPNetwork("10.0.0.1/24"), dhcp=1)  # type: ignore[arg-type]
    assert info.value.field == "dhcp"
    # A network someone else defined on a link-local subnet is still read, hosts and all.
    spec = NetworkSpec.from_xml("<network><name>ll</name><ip address='169.254.0.1' prefix='16'><dhcp>"
                                "<host mac='52:54:00:00:00:01' ip='169.254.0.5'/></dhcp></ip></network>")
    assert str(spec.primary.subnet) == "169.254.0.1/16" and len(spec.reservations()) == 1
    assert len(spec.with_hosts([libvm.Reservation("52:54:00:00:00:02", "169.254.0.6")]).reservations()) == 2


def _ensure_with_range(hv: libvm.Hypervisor, subnet: str, dhcp_range: tuple[str, str]) -> libvm.Network:
    """Network "big" with ``subnet`` (as subnet6, IPv6) and ``dhcp_range`` in it."""
    if ":" in subnet:
        return hv.ensure_network("big", "10.0.0.0/8", subnet6=subnet, dhcp_range6=dhcp_range, forward="none")
    return hv.ensure_network("big", subnet, dhcp_range=dhcp_range, forward="none")


@pytest.mark.parametrize(("subnet", "dhcp_range"), [
    ("10.0.0.0/8", ("10.0.255.250", "10.1.0.5")),      # 12 addresses, but across a /16 boundary
    ("10.0.0.0/15", ("10.0.0.2", "10.1.0.1")),
    ("10.0.0.0/8", ("10.0.0.2", "10.255.255.254")),
    ("fd00::/64", ("fd00::2", "fd00::1:0")),
    ("fd00::/64", ("fd00::fff0", "fd00::1:5")),
])
def test_a_dhcp_range_libvirt_refuses_is_refused_first(
        hv: libvm.Hypervisor, subnet: str, dhcp_range: tuple[str, str]) -> None:
    with pytest.raises(InvalidSpec) as info:
        _ensure_with_range(hv, subnet, dhcp_range)
    assert info.value.field == ("dhcp_range6" if ":" in subnet else "dhcp_range")
    assert "big" not in [n.name for n in hv.networks()]


@pytest.mark.parametrize(("subnet", "dhcp_range"), [
    ("10.0.0.0/16", ("10.0.0.2", "10.0.255.254")),    # a whole /16: 65,533 addresses
    ("10.0.0.0/8", ("10.0.0.2", "10.0.255.255")),     # .255 is no broadcast in a /8
    ("10.0.0.0/8", ("10.7.0.0", "10.7.255.255")),
    ("fd00::/64", ("fd00::2", "fd00::ffff")),
])
def test_the_largest_dhcp_ranges_libvirt_takes_are_taken(
        hv: libvm.Hypervisor, subnet: str, dhcp_range: tuple[str, str]) -> None:
    assert _ensure_with_range(hv, subnet, dhcp_range).active


@pytest.mark.parametrize(("ranges", "hosts", "field"), [
    ((("10.0.0.5", "10.0.0.2"),), (), "dhcp_ranges[0]"),
    ((("10.0.0.2", "10.1.0.5"),), (), "dhcp_ranges[0]"),          # too large for libvirt
    ((("10.0.0.0", "10.0.0.5"),), (), "dhcp_ranges[0][0]"),       # the network address
    ((("10.0.0.2", "11.0.0.5"),), (), "dhcp_ranges[0][1]"),       # outside the subnet
    ((), (("52:54:00:00:00:01", "11.0.0.5"),), "hosts[0].ip"),
])
def test_ip_spec_written_by_hand_checks_ranges_and_hosts_as_build_does(
        ranges: tuple[tuple[str, str], ...], hosts: tuple[tuple[str, str], ...], field: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        IpSpec(netaddr.IPNetwork("10.0.0.1/8"), tuple((netaddr.IPAddress(a), netaddr.IPAddress(b)) for a, b in ranges),
               tuple(libvm.Reservation(mac, ip) for mac, ip in hosts), True)
    assert info.value.field == field
