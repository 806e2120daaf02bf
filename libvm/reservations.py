"""The rules of a network's DHCP reservations, as pure functions over one reading.

Everything here decides; nothing talks to libvirt. The live network
(:mod:`libvm.network`) reads a :class:`NetworkState` once per call and asks
these functions what to do; ``create_vm``'s planner (:mod:`libvm.plan`) asks
them for every NIC of every VM against one snapshot of the host.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Collection, Iterable, Mapping, Set
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import netaddr

from .addressing import check_duid, check_host_ip, check_hostname, format_mac, next_free, parse_ip, parse_mac
from .errors import (
    AddressConflict,
    HostnameReserved,
    InvalidSpec,
    IpInDhcpRange,
    IpLeased,
    IpReserved,
    MacReserved,
    NoFreeAddress,
)
from .networkxml import MAX_XML_BYTES, DnsHost, HostEntry, NetworkSpec, host_xml, too_big
from .values import Lease, Reservation

#: Which definitions of a network hold an entry, as bits. They are libvirt's own
#: ``VIR_NETWORK_UPDATE_AFFECT_LIVE`` and ``..._CONFIG`` (``_live`` checks that).
LIVE, CONFIG = 1, 2

#: A host for :meth:`Network.reserve_many`: a :class:`Reservation` or ``(mac, ip[, hostname])``.
HostLike = Reservation | tuple[Any, ...] | list[Any]


@dataclass(frozen=True)
class NetworkState:
    """One reading of a libvirt network: everything a reservation decision needs.

    ``views`` are the definitions read, ``(LIVE|CONFIG bits, XML)``: the live
    and the persistent one, or one entry when they are identical. An entry
    someone added with only ``--live`` or only ``--config`` is in one of them;
    an update must name exactly the definitions holding it, so ``hosts`` and
    ``dns`` map each entry to those bits. ``leases`` is ``None`` when not read.
    """

    name: str
    active: bool
    persistent: bool
    views: tuple[tuple[int, str], ...]
    spec: NetworkSpec
    hosts: Mapping[HostEntry, int]
    dns: Mapping[DnsHost, int]
    leases: tuple[Lease, ...] | None = None

    @property
    def flags(self) -> int:
        """The definitions a new entry goes into: the live one if running, the persistent one if defined."""
        return (LIVE if self.active else 0) | (CONFIG if self.persistent else 0)

    def reservation_for(self, mac: str) -> Reservation | None:
        """The reservation of ``mac`` (libvirt's lower-case spelling), if any."""
        return next((entry.reservation() for entry in self.hosts if entry.mac == mac), None)


def reservations(entries: Iterable[HostEntry]) -> list[Reservation]:
    """The entries as reservations, once each (deduplicated on their strings: hashing
    50,000 Reservation objects costs more than building them)."""
    unique = {(e.mac, e.ip, e.name, e.id): e for e in entries}
    return [entry.reservation() for entry in unique.values()]


def host_key(host: Reservation) -> tuple[str | None, str, str | None, str | None]:
    """``(mac, ip, name, id)`` spelled as libvirt writes a ``<host>`` (see :class:`HostEntry`)."""
    return (None if host.mac is None else format_mac(host.mac), str(host.ip), host.hostname,
            host.client_id.lower() if host.client_id else None)


def entry_for(spec: NetworkSpec, host: Reservation) -> HostEntry:
    """``host`` as the entry libvirt will write for it (index of its ``<ip>``, -1 if none)."""
    found = spec.ip_for(host.ip)
    return HostEntry(-1 if found is None else found[0], *host_key(host))




def wanted_host(mac: object, address: netaddr.IPAddress, hostname: object, client_id: object) -> Reservation:
    """The reservation asked for, with the rules of its address family."""
    if hostname is not None:
        check_hostname(hostname)  # type: ignore[arg-type]
    if address.version == 4:
        if mac is None:
            raise InvalidSpec("mac", mac, "an IPv4 reservation binds a MAC")
        if client_id is not None:
            raise InvalidSpec("client_id", client_id, "libvirt binds IPv4 by MAC; client_id is for IPv6")
        return Reservation(parse_mac(mac, "mac"), address, hostname)  # type: ignore[arg-type]
    if mac is not None:
        raise InvalidSpec("mac", mac, "libvirt binds IPv6 addresses by hostname or DUID (client_id), "
                                      "not by MAC; pass mac=None")
    if client_id is not None:
        client_id = check_duid(client_id)
    if hostname is None and client_id is None:
        raise InvalidSpec("hostname", None, "an IPv6 reservation needs a hostname or a client_id (DUID)")
    return Reservation(None, address, hostname, client_id.lower() if client_id else None)  # type: ignore[arg-type]


def refuse_overlap(network: str, host: Reservation, wanted: Reservation) -> None:
    """Raise if ``host`` (existing) and ``wanted`` share a MAC, IP or name."""
    where = f"on network {network!r}"
    if host.mac is not None and host.mac == wanted.mac:
        raise MacReserved(f"MAC {wanted.mac} is already reserved {where} for {host}; release it first",
                          other=str(host.hostname or host.ip))
    if host.ip == wanted.ip:
        raise IpReserved(f"{wanted.ip} is already reserved {where} for {host}; release it first",
                         other=str(host.mac or host.hostname))
    if wanted.hostname and host.hostname and host.hostname.lower() == wanted.hostname.lower():
        raise HostnameReserved(f"hostname {wanted.hostname!r} is already reserved {where} for {host}; "
                               f"release it first", other=str(host.mac or host.client_id))
    if wanted.client_id and host.client_id == wanted.client_id:
        raise MacReserved(f"DUID {wanted.client_id} is already reserved {where} for {host}",
                          other=str(host.hostname or host.ip))


def check_host(
    network: str,
    spec: NetworkSpec,
    entries: Iterable[HostEntry],
    mac: object,
    ip: object,
    hostname: object,
    client_id: object,
    allow_dynamic: bool,
) -> tuple[Reservation, bool]:
    """Validate one reservation against ``entries`` of network ``spec`` (no lease checks).

    Returns the normalised reservation and whether ``entries`` hold it already.
    Raises :class:`InvalidSpec` or an :class:`AddressConflict` subclass.
    """
    address = parse_ip(ip, "ip")
    found = spec.ip_for(address)
    if found is None:
        subnets = ", ".join(str(i.subnet.cidr) for i in spec.ips) or "none"
        raise InvalidSpec("ip", str(address), f"outside network {network!r}'s subnets ({subnets})")
    check_host_ip(address, found[1].subnet, "ip")
    wanted = wanted_host(mac, address, hostname, client_id)
    mac_s = None if wanted.mac is None else format_mac(wanted.mac)
    ip_s = str(address)
    # dnsmasq matches names case-insensitively (hostname_isequal), so must we.
    name = None if wanted.hostname is None else wanted.hostname.lower()
    duid = wanted.client_id  # normalised (lower case), as read_network stores ids
    # One name may be reserved once per family: dnsmasq pairs pc001's IPv4 and IPv6.
    for entry in (e for e in entries if e.ip_index == found[0]):
        entry_name = None if entry.name is None else entry.name.lower()
        if (entry.mac == mac_s and entry.ip == ip_s and name in (None, entry_name)
                and duid in (None, entry.id)):
            return entry.reservation(), True
        # Cheap string tests first: building a Reservation per entry is slow on 30k hosts.
        if ((mac_s is not None and entry.mac == mac_s) or entry.ip == ip_s
                or (name is not None and entry_name == name)
                or (duid is not None and entry.id == duid)):
            refuse_overlap(network, entry.reservation(), wanted)
    dyn = spec.in_dhcp_range(address)
    if dyn is not None and not allow_dynamic:
        raise IpInDhcpRange(
            f"{address} is in network {network!r}'s dynamic DHCP range {dyn[0]}-{dyn[1]} "
            f"and allow_dynamic=False; pick an address outside the range or allow it (dnsmasq "
            f"never hands a reserved address to another client)"
        )
    return wanted, False


def check_dns(network: str, spec: NetworkSpec, dns: Iterable[DnsHost], ip: object,
              hostname: object, hosts: Iterable[HostEntry] = ()) -> DnsHost | None:
    """Validate a ``<dns><host>`` entry: the identical entry if it exists, else ``None``.

    Raises :class:`InvalidSpec`, :class:`HostnameReserved` (the name resolves to
    another address, in the DNS or as a DHCP reservation's name in ``hosts``)
    or :class:`IpReserved` (the address has other names).
    """
    parsed = parse_ip(ip, "ip")
    if spec.ip_for(parsed) is None:
        raise InvalidSpec("ip", str(parsed), f"outside network {network!r}'s subnets")
    address = str(parsed)
    name = check_hostname(hostname, "hostname")  # type: ignore[arg-type]
    for host in dns:
        names = {n.lower() for n in host.hostnames}
        if host.ip == address and name.lower() in names:
            return host  # there already (perhaps with more names)
        if name.lower() in names:
            raise HostnameReserved(f"{name!r} already resolves to {host.ip} in network {network!r}'s DNS",
                                   other=host.ip)
        if host.ip == address:
            raise IpReserved(f"{address} already has the DNS names {', '.join(host.hostnames)} in network "
                             f"{network!r}", other=",".join(host.hostnames))
    for entry in hosts:
        if entry.name is not None and entry.name.lower() == name.lower() and entry.ip != address:
            raise HostnameReserved(f"{name!r} is the DHCP name of {entry.ip} on network {network!r} "
                                   f"(reserved for {entry.mac or entry.id}); dnsmasq would resolve it to both",
                                   other=entry.ip)
    return None


def check_dhcp_name(network: str, dns: Iterable[DnsHost], ip: netaddr.IPAddress, hostname: str | None) -> None:
    """Refuse a DHCP hostname that the network's DNS already resolves to another address.

    dnsmasq answers for both (its ``<dns><host>`` and the DHCP host's name), so
    the name would resolve to two addresses.
    """
    if hostname is None:
        return
    name = hostname.lower()
    for host in dns:
        if host.ip != str(ip) and name in {n.lower() for n in host.hostnames}:
            raise HostnameReserved(f"hostname {hostname!r} already resolves to {host.ip} in network "
                                   f"{network!r}'s DNS; give the NIC another hostname or remove that entry",
                                   other=host.ip)


def leases_in_way(leases: Iterable[Lease], wanted: Reservation) -> list[Lease]:
    """The leases in ``wanted``'s way: of its address to another MAC, or of its MAC on another address."""
    return [lease for lease in leases if (lease.ip == wanted.ip) != (lease.mac == wanted.mac)]


def refuse_lease(network: str, lease: Lease, wanted: Reservation, owner: str | None, reclaim_stale: bool) -> None:
    """Raise :class:`IpLeased` if ``lease`` of ``wanted``'s address must not be taken away
    (a domain ``owner`` has its MAC, or it is stale and ``reclaim_stale`` is false)."""
    if lease.ip == wanted.ip and (owner is not None or not reclaim_stale):
        who = f"domain {owner!r}" if owner else "a MAC no domain has (stale)"
        raise IpLeased(
            f"{wanted.ip} is leased on network {network!r} to {lease.mac} ({who}) until {lease.expires}; "
            + ("delete that domain first" if owner else "pass reclaim_stale=True to release it"),
            other=owner or str(lease.mac),
        )


def parse_hosts(value: object, field: str) -> list[Reservation]:
    """A list of :class:`Reservation` or ``(mac, ip[, hostname])`` tuples, as reservations.

    Any ordered iterable (list, tuple, generator); not a set or mapping, whose
    order (and so ``hosts[i]`` in errors) means nothing.
    """
    what = "a list of libvm.Reservation or (mac, ip[, hostname]) tuples"
    if isinstance(value, (str, bytes, bytearray, memoryview, Mapping, Set, Reservation)) or \
            not isinstance(value, Iterable):
        raise InvalidSpec(field, value, what)
    try:
        items = list(value)
    except Exception as exc:  # the caller's iterator failed: say so, as a libvm error
        raise InvalidSpec(field, value, f"{what}; reading it failed: {exc!r}") from None
    hosts = []
    for index, item in enumerate(items):
        if isinstance(item, Reservation):
            hosts.append(item)
            continue
        try:
            parts = tuple(item) if isinstance(item, (tuple, list)) else ()
        except Exception:  # a tuple subclass that cannot be read
            parts = ()
        if len(parts) not in (2, 3):
            raise InvalidSpec(f"{field}[{index}]", item, "a libvm.Reservation or a (mac, ip[, hostname]) tuple")
        mac, ip, hostname = parts if len(parts) == 3 else (*parts, None)
        try:
            hosts.append(wanted_host(mac, parse_ip(ip, "ip"), hostname, None))
        except InvalidSpec as exc:
            raise exc.at(f"{field}[{index}]") from None
    return hosts


#: What two hosts of one list share when they clash, by AddressConflict.reason.
_SHARED = {"mac-reserved": "MAC (or DUID)", "ip-reserved": "IP address", "hostname-reserved": "hostname"}


@dataclass
class HostIndex:
    """The entries of one network, found by MAC, IP, name or DUID (per ``<ip>``).

    Checking a thousand new hosts against ten thousand costs milliseconds
    instead of a quadratic scan; hosts planned but not yet added are put in too,
    so the next ones are checked against them.
    """

    spec: NetworkSpec
    _index: dict[tuple[str, int, str], list[HostEntry]] = field(default_factory=dict)

    @staticmethod
    def _keys(entry: HostEntry) -> list[tuple[str, int, str]]:
        found = [("mac", entry.mac), ("ip", entry.ip), ("name", (entry.name or "").lower() or None),
                 ("id", entry.id)]
        return [(kind, entry.ip_index, value) for kind, value in found if value]

    def add(self, entry: HostEntry) -> None:
        for key in self._keys(entry):
            self._index.setdefault(key, []).append(entry)

    def near(self, entry: HostEntry) -> list[HostEntry]:
        """The entries sharing a MAC, IP, name or DUID with ``entry``."""
        return list(dict.fromkeys(e for key in self._keys(entry) for e in self._index.get(key, ())))

    def by_mac(self, mac: str) -> list[HostEntry]:
        return [e for (kind, _, value), entries in self._index.items() if kind == "mac" and value == mac
                for e in entries]


def plan_hosts(
    network: str, spec: NetworkSpec, entries: Iterable[HostEntry], hosts: list[Reservation], allow_dynamic: bool,
    dns: Iterable[DnsHost] = (),
) -> tuple[list[Reservation], list[tuple[int, Reservation]]]:
    """Check ``hosts`` against ``entries`` and each other.

    Returns all of them normalised, and the new ones with their position in
    ``hosts``. Each host is checked by :func:`check_host` against only the
    entries that share its MAC, IP, name or DUID (found in a :class:`HostIndex`).
    """
    index = HostIndex(spec)
    for entry in entries:
        index.add(entry)
    everything: list[Reservation] = []
    new: list[tuple[int, Reservation]] = []
    listed: dict[HostEntry, int] = {}  # entries of this list -> their position
    for position, host in enumerate(hosts):
        probe = entry_for(spec, host)
        near = index.near(probe)
        try:
            wanted, exists = check_host(network, spec, near, host.mac, host.ip, host.hostname,
                                        host.client_id, allow_dynamic)
            if not exists:
                check_dhcp_name(network, dns, wanted.ip, wanted.hostname)
        except InvalidSpec as exc:
            raise exc.at(f"hosts[{position}]") from None
        except AddressConflict as exc:
            clash = next((listed[e] for e in near if e in listed), None)
            if clash is None:
                raise exc.at(f"hosts[{position}]") from None
            raise type(exc)(f"hosts[{position}] ({host}) and hosts[{clash}] ({hosts[clash]}) of this list have "
                            f"the same {_SHARED.get(exc.reason, 'address')}", other=exc.other) from None
        everything.append(wanted)
        if not exists:
            new.append((position, wanted))
            index.add(probe)  # the next hosts in the list must not clash with this one
            listed[probe] = position
    return everything, new


def check_size(network: str, views: Iterable[tuple[int, str]], hosts: list[Reservation]) -> None:
    """Refuse ``hosts`` if they would grow the network's XML past what libvirt's RPC carries."""
    grown = max(len(xml.encode()) for _, xml in views) + sum(len(host_xml(h)) + 9 for h in hosts)
    if grown > MAX_XML_BYTES:
        raise InvalidSpec("hosts", f"{len(hosts)} new hosts", too_big(network, grown))


def ip_ints(texts: Iterable[str], family: int) -> set[int]:
    """libvirt's address texts as ints, in bulk (inet_pton: ~10x faster than ``ipaddress``).

    ``family`` (4 or 6) is the ``<ip>``'s. libvirt (9.0) also keeps a ``<host>``
    of the other family in an ``<ip>``; then ``ipaddress``, which reads both, does it.
    """
    texts = list(texts)
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        return {int.from_bytes(packed, "big") for packed in map(socket.inet_pton, repeat(af), texts)}
    except OSError:
        return {int(ipaddress.ip_address(text)) for text in texts}


def parse_pool(pool: object, spec: NetworkSpec) -> tuple[netaddr.IPAddress, netaddr.IPAddress] | None:
    """``pool=(first, last)`` checked against the network's primary subnet."""
    if pool is None:
        return None
    if not isinstance(pool, (tuple, list)) or len(pool) != 2:
        raise InvalidSpec("pool", pool, "a (first, last) pair of addresses")
    bounds = (parse_ip(pool[0], "pool[0]"), parse_ip(pool[1], "pool[1]"))
    if bounds[0].version != bounds[1].version:
        raise InvalidSpec("pool", pool, "(first, last) of one address family")
    if int(bounds[0]) > int(bounds[1]):
        raise InvalidSpec("pool", pool, "(first, last) with first <= last")
    for index, end in enumerate(bounds):
        check_host_ip(end, spec.primary.subnet, f"pool[{index}]")
    return bounds


def free_address(network: str, spec: NetworkSpec, used: Collection[int], *,
                 pool: tuple[netaddr.IPAddress, netaddr.IPAddress] | None, allow_dynamic: bool,
                 ip_index: int | None = None, avoid: Iterable[netaddr.IPNetwork] = ()) -> netaddr.IPAddress:
    """The lowest free address of the ``<ip>`` ``ip_index`` (default: the primary one).

    ``used``: the addresses (as ints) reserved, leased or otherwise taken;
    ``avoid``: subnets never to allocate from (another running network's, where an
    address would be ambiguous). Outside the dynamic DHCP range first, then
    (``allow_dynamic``) inside it. Raises :class:`NoFreeAddress` saying where it looked.
    """
    ip = spec.primary if ip_index is None else spec.ips[ip_index]
    others = tuple((s.network, s.broadcast if s.version == 4 else netaddr.IPAddress(s.last, 6))
                   for s in avoid if s.version == ip.subnet.version)
    try:
        return next_free(ip.subnet, used, pool=pool, exclude=(*ip.dhcp_ranges, *others))
    except NoFreeAddress as outside:
        if not allow_dynamic or not ip.dhcp_ranges:
            raise NoFreeAddress(f"network {network!r}: {outside}") from None
    try:
        return next_free(ip.subnet, used, pool=pool, exclude=others)
    except NoFreeAddress as anywhere:
        raise NoFreeAddress(
            f"network {network!r}: {anywhere}, inside or outside the dynamic DHCP range; "
            f"every address is reserved, leased or the gateway"
        ) from None
