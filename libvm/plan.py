"""``create_vm``'s decisions, as a pure function of one snapshot of the host.

:func:`plan_vms` takes what the caller asked (:class:`VmRequest`, one per VM)
and what the host holds (:class:`Snapshot`: each involved network read once,
the MACs in use, the subnets of the running networks) and returns, for every
NIC, its address, MAC and names and the entries to add to the network. No
libvirt call happens here; every conflict is found before anything changes.
The VMs of one ``create_vms`` are planned together, so an address one of them
asks for explicitly is never allocated to another, whatever their order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import netaddr

from .addressing import IpLike, format_mac, generate_mac
from .errors import (
    AddressConflict,
    HostnameReserved,
    InvalidSpec,
    IpLeased,
    IpReserved,
    LibvmError,
    MacInUse,
    MacReserved,
    SubnetOverlap,
)
from .networkxml import DnsHost, HostEntry
from .reservations import (
    HostIndex,
    NetworkState,
    check_dhcp_name,
    check_dns,
    check_host,
    entry_for,
    free_address,
    ip_ints,
    leases_in_way,
    parse_pool,
    refuse_lease,
)
from .values import Lease, Nic, Reservation


@dataclass(frozen=True)
class VmRequest:
    """One VM's NICs as the caller gave them, and how to choose what they leave open.

    ``label`` is the default DHCP and DNS name of the VM's NICs (its hostname,
    else its name if that is a DNS name); ``where`` prefixes positions in
    errors (``"specs[2]."`` in ``create_vms``).
    """

    name: str
    nics: tuple[Nic, ...]
    label: str | None = None
    allow_dynamic: bool = True
    pool: tuple[IpLike, IpLike] | None = None
    where: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What the host holds, read once for a plan.

    ``networks``: every network a NIC names, read with its leases;
    ``running``: ``(network, subnet)`` of every running network (for ambiguous
    addresses); ``mac_owners``: ``{mac: domain}`` of every interface on the host.
    """

    networks: Mapping[str, NetworkState]
    running: tuple[tuple[str, netaddr.IPNetwork], ...]
    mac_owners: Mapping[str, str]


@dataclass(frozen=True)
class NicPlan:
    """One NIC decided: ``nic`` has its address, MAC and hostname.

    ``reservation`` is the ``<host>`` to add (``None``: it exists already),
    ``dns`` the ``<dns><host>`` to add, ``reclaim`` the stale leases to release
    first, ``allocated`` whether libvm chose the address (then a clash libvirt
    reports means another caller took it meanwhile: plan again).
    """

    nic: Nic
    subnet: netaddr.IPNetwork
    allocated: bool
    reservation: Reservation | None
    dns: DnsHost | None
    reclaim: tuple[Lease, ...]
    #: The IPv6 ``<host>`` (by hostname) if the NIC has an ``ip6``, and its subnet.
    reservation6: Reservation | None = None
    subnet6: netaddr.IPNetwork | None = None


@dataclass(frozen=True)
class VmPlan:
    request: VmRequest
    nics: tuple[NicPlan, ...]

    @property
    def resolved(self) -> tuple[Nic, ...]:
        return tuple(plan.nic for plan in self.nics)


class Stale(Exception):
    """An address libvm allocated clashes with the host: the snapshot is older than another
    caller's change (its reservation read before, its domain after). Snapshot and plan again."""

    def __init__(self, conflict: LibvmError) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


class _Network:
    """One network while the VMs are planned: what it holds plus what the plan adds."""

    def __init__(self, state: NetworkState, wanted: set[netaddr.IPAddress]) -> None:
        self.state = state
        self.index = HostIndex(state.spec)
        self.entries: list[HostEntry] = list(state.hosts)  # and the plan's new ones
        for entry in self.entries:
            self.index.add(entry)
        self.dns: list[DnsHost] = list(state.dns)
        #: Per <ip> element: the addresses (as ints) reserved, leased, planned or asked for by some NIC.
        self.used: dict[int, set[int]] = {}
        for index, ip in enumerate(state.spec.ips):
            family = ip.subnet.version
            used = ip_ints((e.ip for e in state.hosts if e.ip_index == index), family)
            used |= {int(x.ip) for x in state.leases or () if x.ip.version == family}
            used |= {int(a) for a in wanted if a.version == family}
            # An address the DNS already names is not handed to a new guest either.
            used |= {int(netaddr.IPAddress(d.ip)) for d in state.dns if netaddr.IPAddress(d.ip).version == family}
            self.used[index] = used
        self.planned: dict[str, str] = {}  # ip -> the NIC it is planned for ("specs[0].nics[1]")
        self.names: dict[str, str] = {}  # DHCP name (lower case) -> the NIC it is planned for

    def take(self, ip: netaddr.IPAddress, who: str) -> None:
        """Mark ``ip`` as planned for ``who`` (the next NICs must not get it)."""
        found = self.state.spec.ip_for(ip)
        if found is not None:
            self.used[found[0]].add(int(ip))
        self.planned[str(ip)] = who

    def reservation_for(self, mac: str) -> Reservation | None:
        return next((e.reservation() for e in self.index.by_mac(mac) if e in self.state.hosts), None)


def plan_vms(requests: Sequence[VmRequest], snapshot: Snapshot) -> list[VmPlan]:
    """Decide every NIC of every VM of ``requests`` against ``snapshot``, in order.

    Raises :class:`InvalidSpec` or an :class:`AddressConflict` subclass naming
    the NIC (``nics[1]``, ``specs[2].nics[0]``), or :class:`NoFreeAddress`.
    """
    wanted: dict[str, set[netaddr.IPAddress]] = {}
    for request in requests:
        for nic in request.nics:
            for asked in (nic.ip, nic.ip6):
                if isinstance(asked, netaddr.IPAddress):
                    wanted.setdefault(nic.network, set()).add(asked)
    networks = {name: _Network(state, wanted.get(name, set())) for name, state in snapshot.networks.items()}
    macs: dict[str, str] = {}  # MAC -> the NIC of this plan that has it
    plans = []
    for request in requests:
        decided: list[NicPlan] = []
        for index, nic in enumerate(request.nics):
            where = f"{request.where}nics[{index}]"
            try:
                decided.append(_plan_nic(request, index, nic, networks[nic.network], snapshot, decided, macs))
            except (InvalidSpec, AddressConflict) as exc:
                raise exc.at(where) from None
            except Stale as stale:
                raise Stale(stale.conflict.at(where)) from None
        plans.append(VmPlan(request, tuple(decided)))
    return plans


def _plan_nic(request: VmRequest, index: int, nic: Nic, net: _Network, snapshot: Snapshot,
              earlier: list[NicPlan], macs: dict[str, str]) -> NicPlan:
    state, spec = net.state, net.state.spec
    where = f"{request.where}nics[{index}]"
    ip, hostname, allocated = nic.ip, nic.hostname, False
    if ip is not None and ip.version == 6:
        raise InvalidSpec("ip", str(ip), "libvirt cannot bind an IPv6 address to a MAC; give the NIC's IPv4 "
                                         "address and reserve IPv6 with Network.reserve(None, ip, hostname=...)")
    held = None if nic.mac is None else net.reservation_for(format_mac(nic.mac))
    if ip is None and held is not None:
        ip = held.ip  # the MAC's reservation is this NIC's address
    elif ip is None:
        if spec.primary.subnet.version != 4:
            raise InvalidSpec("network", nic.network, "has no IPv4 subnet, and libvirt binds a MAC to an IPv4 "
                                                      "address only; reserve IPv6 addresses with "
                                                      "Network.reserve(None, ip, hostname=...)")
        bounds = parse_pool(request.pool, spec)
        used = net.used[spec.ips.index(spec.primary)]
        # Never from another running network's subnet (the address would be ambiguous).
        ambiguous = [subnet for other, subnet in snapshot.running if other != nic.network]
        while True:
            ip = free_address(state.name, spec, used, pool=bounds, allow_dynamic=request.allow_dynamic,
                              avoid=ambiguous)
            derived = format_mac(generate_mac(nic.network, ip)) if nic.mac is None else None
            if derived is None or (derived not in snapshot.mac_owners and derived not in macs):
                break
            # Another domain holds the MAC libvm derives for this address (made by hand, or
            # with another libvm's choice): the address is free, its derived MAC is not.
            used.add(int(ip))
        allocated = True
    try:
        mac = nic.mac if nic.mac is not None else generate_mac(nic.network, ip)
        mac_s = format_mac(mac)
        first_on_network = all(other.nic.network != nic.network for other in earlier)
        if hostname is None and first_on_network and held is None:
            hostname = request.label
        if hostname is not None and hostname.lower() in net.names:
            raise HostnameReserved(f"hostname {hostname!r} on network {nic.network!r} is also given to "
                                   f"{net.names[hostname.lower()]}", other=net.names[hostname.lower()])
        # The address first: two NICs given one address also get one derived MAC.
        if str(ip) in net.planned:
            raise IpReserved(f"{ip} on network {nic.network!r} is also given to {net.planned[str(ip)]}",
                             other=net.planned[str(ip)])
        if mac_s in snapshot.mac_owners:
            owner = snapshot.mac_owners[mac_s]
            raise MacInUse(f"MAC {mac_s} is already on an interface of domain {owner!r}", other=owner)
        if mac_s in macs:
            raise MacInUse(f"MAC {mac_s} is also given to {macs[mac_s]}", other=macs[mac_s])
        for other, subnet in snapshot.running:
            if other != nic.network and ip.version == subnet.version and ip in subnet:
                raise SubnetOverlap(f"{ip} of network {nic.network!r} is also inside {subnet.cidr} of running network "
                                    f"{other!r}; the address would be ambiguous", other=other)
        full = Nic(nic.network, ip=ip, mac=mac, model=nic.model, hostname=hostname, dns=nic.dns)
        found = spec.ip_for(ip)
        probe = HostEntry(-1 if found is None else found[0], mac_s, str(ip), hostname, None)
        reservation, exists = check_host(state.name, spec, net.index.near(probe), mac, ip, hostname, None,
                                         request.allow_dynamic)
        if not exists:
            check_dhcp_name(state.name, net.dns, ip, hostname)
        reclaim: list[Lease] = []
        for lease in leases_in_way(state.leases or (), reservation):
            holder = None if lease.mac is None else snapshot.mac_owners.get(format_mac(lease.mac))
            refuse_lease(state.name, lease, reservation, holder, reclaim_stale=True)
            reclaim.append(lease)
        dns = None
        if nic.dns:
            dns = _plan_dns(request, index, full, net, earlier)
        assert found is not None  # check_host refuses an address outside the subnets
        # What the next NICs must not take.
        if not exists:
            net.index.add(entry_for(spec, reservation))
            net.entries.append(entry_for(spec, reservation))
        who = f"{where} of VM {request.name!r}"
        net.take(ip, who)
        if hostname is not None:
            net.names[hostname.lower()] = who
        macs[mac_s] = who
        if dns is not None:
            net.dns.append(dns)
    except (MacInUse, IpReserved, MacReserved, IpLeased) as exc:
        # An address libvm chose (and the MAC derived from it) clashes: the snapshot
        # is older than another caller's change. Any other conflict is real.
        if allocated and (nic.mac is None or not isinstance(exc, MacInUse)):
            raise Stale(exc) from None
        raise
    name = hostname or (held.hostname if held else None)
    six = _plan_ip6(request, nic, net, name, who) if nic.ip6 is not None else None
    resolved = dataclasses.replace(full, hostname=name, ip6=None if six is None else six[0].ip)
    return NicPlan(resolved, found[1].subnet, allocated, None if exists else reservation, dns, tuple(reclaim),
                   six[0] if six is not None and six[2] else None, None if six is None else six[1])


def _plan_ip6(request: VmRequest, nic: Nic, net: _Network, name: str | None,
              who: str) -> tuple[Reservation, netaddr.IPNetwork, bool]:
    """A NIC's IPv6 reservation: ``(reservation, subnet, whether it is new)``.

    libvirt binds IPv6 to the DHCPv6 client's hostname (or DUID), never to a
    MAC: the reservation carries the NIC's DHCP name, the same as its IPv4
    one, so dnsmasq pairs the two.
    """
    state, spec = net.state, net.state.spec
    six = next((index for index, ip in enumerate(spec.ips) if ip.subnet.version == 6), None)
    if six is None:
        raise InvalidSpec("ip6", str(nic.ip6), f"network {state.name!r} has no IPv6 subnet")
    if name is None:
        raise InvalidSpec("ip6", str(nic.ip6), "libvirt binds an IPv6 address to the DHCPv6 client's hostname: "
                                               "give the NIC a hostname (Nic(hostname=...)), or the VM a name "
                                               "that is a DNS name")
    if nic.ip6 == "auto":
        address = free_address(state.name, spec, net.used[six], pool=None, allow_dynamic=request.allow_dynamic,
                               ip_index=six)
    else:
        assert isinstance(nic.ip6, netaddr.IPAddress)
        address = nic.ip6
        if str(address) in net.planned:
            raise IpReserved(f"{address} on network {nic.network!r} is also given to {net.planned[str(address)]}",
                             other=net.planned[str(address)])
    probe = HostEntry(six, None, str(address), name, None)
    try:
        reservation, exists = check_host(state.name, spec, net.index.near(probe), None, address, name, None,
                                         request.allow_dynamic)
    except InvalidSpec as exc:
        raise InvalidSpec("ip6", exc.value, exc.reason) from None
    if not exists:
        net.index.add(entry_for(spec, reservation))
        net.entries.append(entry_for(spec, reservation))
    net.take(address, who)
    return reservation, spec.ips[six].subnet, not exists


def _plan_dns(request: VmRequest, index: int, nic: Nic, net: _Network, earlier: list[NicPlan]) -> DnsHost | None:
    """The ``<dns><host>`` a ``dns=True`` NIC adds (``None``: the network has it already)."""
    name = nic.hostname or request.label
    if name is None:
        raise InvalidSpec("dns", True, "needs a hostname: give Nic(hostname=...) or a VM name that is a DNS name")
    for other_index, other in enumerate(earlier):
        if other.nic.network == nic.network and other.dns is not None and name.lower() in (
                n.lower() for n in other.dns.hostnames):
            raise InvalidSpec("hostname", nic.hostname,
                              f"nics[{other_index}] of this VM already has the DNS name {name!r} on network "
                              f"{nic.network!r}; give this NIC a hostname of its own")
    assert nic.ip is not None
    existing = check_dns(net.state.name, net.state.spec, net.dns, nic.ip, name, net.entries)
    return None if existing is not None else DnsHost(str(nic.ip), (name,))
