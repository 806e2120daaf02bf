"""Network specs and their libvirt XML, both ways (pure lxml, no connection).

``NetworkSpec.to_xml()`` writes the ``<network>`` libvm defines;
``NetworkSpec.from_xml()`` reads any network's XML (virsh's ``default`` too).
``host_xml()`` writes the single ``<host>`` element given to virNetworkUpdate.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from typing import NamedTuple

import netaddr
from lxml import etree

from . import _xml
from .addressing import (
    check_host_ip,
    check_hostname,
    check_name,
    check_usable_subnet,
    format_mac,
    in_range,
    parse_ip,
    parse_subnet,
)
from .errors import InvalidSpec
from .values import Reservation, _trusted, as_items, check_bool, read_all

FORWARD_MODES = ("nat", "route", "open", "none")
# Linux's dev_valid_name(): at most IFNAMSIZ-1 characters, no '/', ':' or white space.
_BRIDGE = re.compile(r"[^/:\s\x00-\x1f\x7f]{1,15}")

IpRange = tuple[netaddr.IPAddress, netaddr.IPAddress]

#: libvirt's RPC carries a string of at most 4 MiB (VIR_NET_MESSAGE_STRING_MAX, virnetprotocol.x):
#: a network whose XML is bigger can be defined by no client and read back by none (measured on
#: libvirt 9.0: 56,000 named hosts, 3.97 MB, work; 60,000 fail "Unable to encode message payload").
MAX_XML_BYTES = 4 * 1024 * 1024


def too_big(network: str, size: int) -> str:
    """Why a network of ``size`` bytes of XML is refused (an :class:`InvalidSpec` reason)."""
    return (f"network {network!r}'s XML would be {size / 2**20:.2f} MiB; libvirt's RPC carries at most 4 MiB "
            f"per document (about 56,000 hosts with short names), beyond which no client can read the network back")


@dataclass(frozen=True)
class IpSpec:
    """One ``<ip>`` element of a network: subnet (gateway form), DHCP range, hosts."""

    subnet: netaddr.IPNetwork
    dhcp_ranges: tuple[IpRange, ...] = ()
    hosts: tuple[Reservation, ...] = ()
    dhcp: bool = False

    def __post_init__(self) -> None:
        # A spec written by hand is checked as NetworkSpec.build checks its values;
        # build's own specs and those read from libvirt are made by _trusted_ip.
        if not isinstance(self.subnet, netaddr.IPNetwork):
            raise InvalidSpec("subnet", self.subnet, "a netaddr.IPNetwork (NetworkSpec.build takes strings)")
        check_usable_subnet(self.subnet)
        if not isinstance(self.dhcp_ranges, tuple) or not all(
                isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(a, netaddr.IPAddress) for a in pair)
                for pair in self.dhcp_ranges):
            raise InvalidSpec("dhcp_ranges", self.dhcp_ranges, "a tuple of (start, end) netaddr.IPAddress pairs")
        if not isinstance(self.hosts, tuple) or not all(isinstance(h, Reservation) for h in self.hosts):
            raise InvalidSpec("hosts", self.hosts, "a tuple of libvm.Reservation")
        check_bool(self.dhcp, "dhcp")
        for index, (start, end) in enumerate(self.dhcp_ranges):
            _check_range(start, end, self.subnet, f"dhcp_ranges[{index}]", (str(start), str(end)))
        _check_hosts(self.hosts, self.subnet)

    @property
    def gateway(self) -> netaddr.IPAddress:
        """The bridge's own address."""
        return self.subnet.ip


@dataclass(frozen=True)
class NetworkSpec:
    """A libvirt network as libvm defines it: one subnet, optional DHCP range.

    ``forward`` is ``"nat"``, ``"route"``, ``"open"`` or ``"none"`` (isolated).
    ``subnet`` may name the gateway (``"10.0.0.1/24"``); a bare network address
    gets its first host as the gateway.
    """

    name: str
    ips: tuple[IpSpec, ...]
    forward: str = "nat"
    bridge: str | None = None
    domain: str | None = None

    @classmethod
    def build(
        cls,
        name: str,
        subnet: str | netaddr.IPNetwork,
        *,
        dhcp_range: Sequence[str | netaddr.IPAddress] | None = None,
        forward: str = "nat",
        bridge: str | None = None,
        domain: str | None = None,
        hosts: Iterable[Reservation | tuple[str, ...]] = (),
        subnet6: str | netaddr.IPNetwork | None = None,
        dhcp_range6: Sequence[str | netaddr.IPAddress] | None = None,
    ) -> NetworkSpec:
        """Validate user values and build the spec (``ensure_network``'s arguments).

        ``subnet`` may be IPv4 or IPv6; ``subnet6`` adds an IPv6 subnet to an
        IPv4 network (dual stack), with its own ``dhcp_range6``. A DHCP range is
        a ``(start, end)`` pair; ``domain`` is the DNS domain dnsmasq serves.
        ``hosts``: :class:`Reservation` objects or ``(mac, ip[, hostname])``
        tuples, as ``ensure_network`` takes them.
        """
        check_name(name)
        if not isinstance(forward, str) or forward not in FORWARD_MODES:
            raise InvalidSpec("forward", forward, f"one of {', '.join(FORWARD_MODES)}")
        if bridge is not None and (not isinstance(bridge, str) or not _BRIDGE.fullmatch(bridge)
                                   or bridge in (".", "..")):
            raise InvalidSpec("bridge", bridge, "an interface name of 1 to 15 characters without '/', ':' or spaces")
        if domain is not None:
            # libvirt does not check the name: a domain such as "corp&lab" is
            # defined fine, then breaks libvirt's listing of the networks.
            check_hostname(domain, "domain")
        ips = [_ip_spec(subnet, dhcp_range, _build_hosts(hosts), "subnet", "dhcp_range")]
        if subnet6 is not None:
            ips.append(_ip_spec(subnet6, dhcp_range6, (), "subnet6", "dhcp_range6"))
            if ips[1].subnet.version != 6 or ips[0].subnet.version != 4:
                raise InvalidSpec("subnet6", subnet6, "give an IPv4 subnet and an IPv6 subnet6")
        elif dhcp_range6 is not None:
            raise InvalidSpec("dhcp_range6", dhcp_range6, "needs subnet6")
        return cls(name=name, ips=tuple(ips), forward=forward, bridge=bridge, domain=domain)

    @property
    def primary(self) -> IpSpec:
        """The first IPv4 ``<ip>`` (else the first one)."""
        for ip in self.ips:
            if ip.subnet.version == 4:
                return ip
        if not self.ips:
            raise InvalidSpec("network", self.name, "has no <ip> element")
        return self.ips[0]

    def ip_for(self, address: netaddr.IPAddress) -> tuple[int, IpSpec] | None:
        """The index and ``<ip>`` whose subnet holds ``address``."""
        for index, ip in enumerate(self.ips):
            if address.version == ip.subnet.version and address in ip.subnet:
                return index, ip
        return None

    def reservations(self) -> list[Reservation]:
        """Every ``<host>`` of every ``<ip>``."""
        return [host for ip in self.ips for host in ip.hosts]

    def in_dhcp_range(self, address: netaddr.IPAddress) -> IpRange | None:
        """The dynamic range holding ``address``, if any."""
        for ip in self.ips:
            for start, end in ip.dhcp_ranges:
                if in_range(address, start, end):
                    return start, end
        return None

    def with_hosts(self, hosts: Iterable[Reservation]) -> NetworkSpec:
        """This spec with ``hosts`` added to the ``<ip>`` whose subnet holds each (checked by the caller)."""
        added: dict[int, list[Reservation]] = {}
        for host in hosts:
            found = self.ip_for(host.ip)
            if found is None:
                raise InvalidSpec("hosts", str(host.ip), f"outside network {self.name!r}'s subnets")
            added.setdefault(found[0], []).append(host)
        ips = tuple(_trusted_ip(ip.subnet, ip.dhcp_ranges, ip.hosts + tuple(added[i]), True) if i in added else ip
                    for i, ip in enumerate(self.ips))
        return dataclasses.replace(self, ips=ips)

    def to_xml(self) -> str:
        """The libvirt ``<network>`` document."""
        return _xml.to_string(self.to_element())

    def to_element(self) -> etree._Element:
        """The ``<network>`` as an lxml element."""
        net = etree.Element("network")
        _xml.sub(net, "name", self.name)
        if self.forward != "none":
            _xml.sub(net, "forward", mode=self.forward)
        if self.bridge:
            _xml.sub(net, "bridge", name=self.bridge, stp="on", delay="0")
        if self.domain:
            _xml.sub(net, "domain", name=self.domain)
        for ip in self.ips:
            attrs = {"address": str(ip.gateway), "prefix": str(ip.subnet.prefixlen)}
            if ip.subnet.version == 6:
                attrs["family"] = "ipv6"
            ip_el = _xml.sub(net, "ip", **attrs)
            if ip.dhcp:
                dhcp = _xml.sub(ip_el, "dhcp")
                for start, end in ip.dhcp_ranges:
                    _xml.sub(dhcp, "range", start=str(start), end=str(end))
                for host in ip.hosts:
                    dhcp.append(host_element(host))
        return net

    @classmethod
    def from_xml(cls, xml: str | bytes) -> NetworkSpec:
        """Read any libvirt ``<network>`` XML, reservations included."""
        spec, entries = read_network(xml)
        hosts: dict[int, list[Reservation]] = {}
        for number, entry in enumerate(entries):
            hosts.setdefault(entry.ip_index, []).append(_read_host(entry, f"network xml hosts[{number}]"))
        ips = tuple(_trusted_ip(ip.subnet, ip.dhcp_ranges, tuple(hosts.get(i, ())), ip.dhcp)
                    for i, ip in enumerate(spec.ips))
        return dataclasses.replace(spec, ips=ips)


def _build_hosts(value: object) -> tuple[Reservation, ...]:
    """``build``'s ``hosts``: each ``(mac, ip[, hostname])`` tuple made a :class:`Reservation`."""
    if isinstance(value, Iterable) and not isinstance(value, (str, bytes, Mapping, Set, Reservation)):
        value = [_build_host(item, index) for index, item in
                 enumerate(read_all(value, value, "hosts", "a list of libvm.Reservation or (mac, ip[, hostname])"))]
    return as_items(value, "hosts", Reservation)


def _build_host(item: object, index: int) -> object:
    if not (isinstance(item, tuple) and len(item) in (2, 3)):
        return item  # as_items names it if it is no Reservation either
    try:
        return Reservation(*item)
    except InvalidSpec as exc:
        raise exc.at(f"hosts[{index}]") from None


def _ip_spec(subnet: str | netaddr.IPNetwork, dhcp_range: Sequence[str | netaddr.IPAddress] | None,
             hosts: tuple[Reservation, ...], field: str, range_field: str) -> IpSpec:
    net = parse_subnet(subnet, field)
    ranges: tuple[IpRange, ...] = ()
    if dhcp_range is not None:
        if not isinstance(dhcp_range, (tuple, list)) or len(dhcp_range) != 2:
            raise InvalidSpec(range_field, dhcp_range, "a (start, end) pair of IP addresses")
        start = parse_ip(dhcp_range[0], f"{range_field}[0]")
        end = parse_ip(dhcp_range[1], f"{range_field}[1]")
        _check_range(start, end, net, range_field, dhcp_range)
        ranges = ((start, end),)
    _check_hosts(hosts, net)
    return _trusted_ip(net, ranges, hosts, bool(ranges or hosts))  # checked above, with the caller's names


def _check_range(start: netaddr.IPAddress, end: netaddr.IPAddress, subnet: netaddr.IPNetwork, field: str,
                 value: object) -> None:
    """Refuse a DHCP range libvirt would refuse (outside the subnet, reversed, too large)."""
    check_host_ip(start, subnet, f"{field}[0]")
    check_host_ip(end, subnet, f"{field}[1]")
    if int(start) > int(end):
        raise InvalidSpec(field, value, "start is after end")
    if int(start) >> 16 != int(end) >> 16:
        # libvirt 9.0's virSocketAddrGetRange (virsocketaddr.c) refuses a range whose
        # ends differ above the last 16 bits ("is too large (> 65535)"), measured on
        # the test driver: 10.0.0.2-10.0.255.255 is taken, 10.0.255.250-10.1.0.5 is not.
        raise InvalidSpec(field, value, "libvirt takes a range only within one /16 (IPv4) or /112 "
                          "(IPv6) block: its ends may differ only in the last 16 bits (65,536 addresses)")


def _check_hosts(hosts: tuple[Reservation, ...], subnet: netaddr.IPNetwork) -> None:
    for index, host in enumerate(hosts):
        check_host_ip(host.ip, subnet, f"hosts[{index}].ip")


class HostEntry(NamedTuple):
    """A ``<host>`` as libvirt wrote it: plain strings, cheap to read by the ten thousand.

    libvirt writes MACs in lowercase and IPs in canonical form, so entries
    compare with ``format_mac()`` / ``str(IPAddress)`` of user values.
    """

    ip_index: int
    mac: str | None
    ip: str
    name: str | None
    id: str | None

    def reservation(self) -> Reservation:
        """The entry as a :class:`Reservation` (libvirt validated it: no re-validation)."""
        return Reservation.trusted(self.mac, self.ip, self.name, self.id)


def read_network(xml: str | bytes) -> tuple[NetworkSpec, list[HostEntry]]:
    """One parse of a ``<network>``: its spec without hosts, and every ``<host>``."""
    document = NetworkDocument(xml)
    return document.spec(), document.hosts()


class NetworkDocument:
    """One parse of a ``<network>``, read only as far as the caller needs.

    A network may hold tens of thousands of ``<host>`` entries; reading them
    into objects costs more than parsing the XML. Allocation needs only their
    addresses (:meth:`host_ips`), a conflict check their strings
    (:meth:`hosts`), and everyone the spec without hosts (:meth:`spec`).
    """

    def __init__(self, xml: str | bytes) -> None:
        root = _xml.parse(xml, "network xml")
        if root.tag != "network":
            raise InvalidSpec("network xml", root.tag, "root element is not <network>")
        self._root = root
        self._ips = root.findall("ip")

    def spec(self) -> NetworkSpec:
        """The network without its hosts."""
        root = self._root
        forward = root.find("forward")
        bridge = root.find("bridge")
        domain = root.find("domain")
        return NetworkSpec(
            name=root.findtext("name") or "",
            ips=tuple(_read_ip(ip_el) for ip_el in self._ips),
            forward="none" if forward is None else forward.get("mode", "nat"),
            bridge=bridge.get("name") if bridge is not None else None,
            domain=domain.get("name") if domain is not None else None,
        )

    def hosts(self) -> list[HostEntry]:
        """Every ``<host>`` with an address, of every ``<ip>``, in document order."""
        entries = []
        for index, ip_el in enumerate(self._ips):
            for host in ip_el.iterfind("dhcp/host"):
                get = host.get
                ip = get("ip")
                if ip is None:
                    continue
                mac = get("mac")
                duid = get("id")
                entries.append(HostEntry(index, mac.lower() if mac else None, ip, get("name"),
                                         duid.lower() if duid else None))
        return entries

    def host_ips(self, index: int) -> list[str]:
        """The address of every ``<host>`` of the ``index``-th ``<ip>`` (none if there is no such ``<ip>``)."""
        if index >= len(self._ips):
            return []
        return [ip for host in self._ips[index].iterfind("dhcp/host") if (ip := host.get("ip")) is not None]


def _read_ip(ip_el: etree._Element) -> IpSpec:
    try:
        address = netaddr.IPAddress(ip_el.get("address", ""))
        if ip_el.get("prefix"):
            subnet = netaddr.IPNetwork(f"{address}/{ip_el.get('prefix')}")
        elif ip_el.get("netmask"):
            subnet = netaddr.IPNetwork(f"{address}/{ip_el.get('netmask')}")
        else:
            subnet = netaddr.IPNetwork(f"{address}/{_natural_prefix(address)}")
        ranges = tuple(
            (netaddr.IPAddress(rng.get("start", "")), netaddr.IPAddress(rng.get("end", "")))
            for rng in ip_el.iterfind("dhcp/range")
        )
        if any(int(start) > int(end) for start, end in ranges):
            raise InvalidSpec("network xml", _xml.to_string(ip_el).strip()[:200],
                              "a <range> whose start is after its end (libvirt refuses to define it)")
    except InvalidSpec:
        raise
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise InvalidSpec("network xml", _xml.to_string(ip_el).strip()[:200], f"bad <ip> element: {exc}") from exc
    return _trusted_ip(subnet, ranges, (), ip_el.find("dhcp") is not None)


def _read_host(entry: HostEntry, field: str) -> Reservation:
    """A ``<host>`` of XML libvirt may not have seen: a malformed one is :class:`InvalidSpec`
    naming the attribute (``network xml hosts[3].mac``), never netaddr's error."""
    try:
        return entry.reservation()
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        try:  # the checking constructor names the attribute at fault
            Reservation(entry.mac, entry.ip, entry.name, client_id=entry.id)
        except InvalidSpec as named:
            raise named.at(field) from exc
        raise InvalidSpec(field, entry, f"a malformed <host>: {exc}") from exc


def _trusted_ip(subnet: netaddr.IPNetwork, ranges: tuple[IpRange, ...], hosts: tuple[Reservation, ...],
                dhcp: bool) -> IpSpec:
    """An ``IpSpec`` made without :meth:`IpSpec.__post_init__`'s checks: one read from libvirt,
    which may hold what libvm would not define (a link-local subnet) and must still be read, or
    one whose values were checked already (by ``build``, naming the caller's parameters)."""
    return _trusted(IpSpec, subnet=subnet, dhcp_ranges=ranges, hosts=hosts, dhcp=dhcp)


def _natural_prefix(address: netaddr.IPAddress) -> int:
    """The prefix libvirt assumes for an ``<ip>`` with neither prefix nor netmask.

    libvirt (virSocketAddrGetIPPrefix) uses the classful mask: class A (0-127)
    /8, class B (128-191) /16, class C (192-223) /24; IPv6 /64. It refuses
    classes D and E.
    """
    if address.version == 6:
        return 64
    first = int(address) >> 24
    if first < 128:
        return 8
    if first < 192:
        return 16
    if first < 224:
        return 24
    raise InvalidSpec("network xml", str(address), "an <ip> in class D or E needs a prefix or netmask")


def host_element(host: Reservation) -> etree._Element:
    """``<host mac= ip= name=>`` (IPv4) or ``<host id|name= ip=>`` (IPv6)."""
    attrs: dict[str, str] = {}
    if host.ip.version == 4 and host.mac is not None:
        attrs["mac"] = format_mac(host.mac)
    if host.ip.version == 6 and host.client_id:
        attrs["id"] = host.client_id
    if host.hostname:
        attrs["name"] = host.hostname
    attrs["ip"] = str(host.ip)
    return etree.Element("host", attrs)


def host_xml(host: Reservation) -> str:
    """The ``<host>`` element as the string virNetworkUpdate takes."""
    return etree.tostring(host_element(host), encoding="unicode")


class DnsHost(NamedTuple):
    """A ``<dns><host ip=...><hostname>...</hostname></host></dns>`` entry of a network."""

    ip: str
    hostnames: tuple[str, ...]


def read_dns_hosts(xml: str | bytes) -> list[DnsHost]:
    """Every ``<dns><host>`` of a ``<network>``."""
    root = _xml.parse(xml, "network xml")
    return [DnsHost(host.get("ip", ""), tuple(h.text or "" for h in host.iterfind("hostname")))
            for host in root.iterfind("dns/host[@ip]")]


def dns_host_xml(ip: str, hostnames: Sequence[str]) -> str:
    """The ``<host>`` element virNetworkUpdate takes for the DNS_HOST section."""
    host = etree.Element("host", ip=ip)
    for name in hostnames:
        _xml.sub(host, "hostname", name)
    return etree.tostring(host, encoding="unicode")
