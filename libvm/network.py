"""A live libvirt network: its DHCP reservations, DNS entries and leases.

Every call reads the network once (:meth:`Network.state`: its definitions,
and its leases where they matter), decides with the pure rules of
:mod:`libvm.reservations`, and changes it through the live boundary.
Reservations are changed only with virNetworkUpdate ADD_LAST / DELETE of one
``<host>``, live and persistent, so libvirt edits its own XML and every element
libvm does not model is kept. MODIFY is never used: libvirt's MODIFY replaces
the first ``<host>`` matching the MAC, the IP *or* the name, which can
silently overwrite somebody else's binding.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import netaddr

from . import _live
from ._live import DHCP_HOST, DNS_HOST, InvalidState, Live, NetworkHandle, translate
from ._log import log
from .addressing import IpLike, MacLike, format_mac, parse_ip, parse_mac
from .errors import AddressConflict, DnsmasqFailure, InvalidSpec, IpLeased, LibvmError, NotFound, WaitTimeout
from .networkxml import DnsHost, HostEntry, NetworkDocument, NetworkSpec, dns_host_xml, host_xml, read_dns_hosts
from .reservations import (
    HostLike,
    NetworkState,
    check_dhcp_name,
    check_dns,
    check_host,
    check_size,
    free_address,
    ip_ints,
    leases_in_way,
    parse_pool,
    refuse_lease,
    reservations,
)
from .values import Lease, Reservation, check_bool
from .views import LeaseList, NetworkRow, Rendered, ReservationList, Table, host_table, network_table

if TYPE_CHECKING:
    import datetime as dt


__all__ = ["HostLike", "Network"]


class Network(Rendered):
    """A libvirt network, looked up by name. Get one from :meth:`Hypervisor.network`.

    In Jupyter or IPython it shows as tables: its settings, then every
    reservation with its lease and every other lease (see :mod:`libvm.views`).
    """

    def __init__(self, live: Live, handle: NetworkHandle) -> None:
        self._live = live
        self._net = handle
        self._generation = live.generation
        self._status: Path | Literal[False] | None = None  # lease_marker's file: unknown yet / none
        self.name: str = handle.name()

    @classmethod
    def named(cls, live: Live, name: str) -> Network:
        """The network called ``name`` on ``live``; :class:`NotFound` if there is none."""
        return cls(live, live.network(name))

    def __repr__(self) -> str:
        return f"<libvm.Network {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        """The same network on the same connection."""
        return isinstance(other, Network) and other._live is self._live and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self._live), self.name))

    def table(self) -> Table:
        """The network's settings as one row: state, bridge, subnets, DHCP range, counts."""
        return network_table([_row(self)[0]])

    def tables(self) -> list[Table]:
        """Its :meth:`table`, then its hosts: reservations joined with their leases, then other leases."""
        row, found, leases = _row(self)
        return [network_table([row]), host_table(found, leases, f"hosts of network {self.name}")]

    # -- state ---------------------------------------------------------------

    @property
    def handle(self) -> NetworkHandle:
        """The underlying ``libvirt.virNetwork``, for what libvm does not cover.

        Looked up again after the connection was re-established (libvirtd restart).
        """
        if self._generation != self._live.ensure():
            self._net = self._live.network(self.name)
            self._generation = self._live.generation
        return self._net

    @property
    def active(self) -> bool:
        """Whether the network is running (its bridge and dnsmasq are up)."""
        with translate(f"network {self.name!r}"):
            return bool(self.handle.isActive())

    @property
    def persistent(self) -> bool:
        """Whether the network is defined (survives a stop) rather than transient."""
        with translate(f"network {self.name!r}"):
            return bool(self.handle.isPersistent())

    @property
    def bridge(self) -> str:
        """The bridge device name (``virbr0``)."""
        return str(_live.call(self.handle, "bridgeName", f"network {self.name!r}"))

    def xml(self, inactive: bool = False) -> str:
        """The network's XML as libvirt has it (``inactive``: the persistent config)."""
        return _live.network_xml(self.handle, self.name, check_bool(inactive, "inactive"))

    def spec(self, inactive: bool = False) -> NetworkSpec:
        """The network parsed into a :class:`NetworkSpec` (``inactive``: the persistent config)."""
        return NetworkSpec.from_xml(self.xml(inactive))

    def state(self, *, leases: bool = False) -> NetworkState:
        """One reading of the network: its state, both definitions, every ``<host>`` and
        ``<dns><host>`` with the definitions holding it, and (``leases``) its leases.

        Every decision libvm makes about the network is taken on one such
        reading: 4 calls to libvirt (5 with the leases), whatever is decided;
        over a network link they are made at once (one round trip, see
        :meth:`Live.fan_out`).
        """
        handle, name = self.handle, self.name
        reads: list[Callable[[], object]] = [
            lambda: _live.call(handle, "isActive", f"network {name!r}"),
            lambda: _live.call(handle, "isPersistent", f"network {name!r}"),
            lambda: _live.network_xml(handle, name),
            lambda: _live.network_xml(handle, name, inactive=True, same="")]  # "": the test driver's refusal
        if leases:
            reads.append(self.leases)
        found = self._live.fan_out(*reads)
        active, persistent, live_xml, config_xml = bool(found[0]), bool(found[1]), str(found[2]), str(found[3])
        views: list[tuple[int, str]] = []
        if active or not persistent:
            views.append((_LIVE, live_xml))
        if persistent:
            # The test driver (libvirt 9.0) has one definition and refuses VIR_NETWORK_XML_INACTIVE.
            views.append((_CONFIG, config_xml or live_xml))
        if len(views) == 2 and views[0][1] == views[1][1]:  # identical: parse once
            views = [(views[0][0] | views[1][0], views[0][1])]
        spec: NetworkSpec | None = None
        hosts: dict[HostEntry, int] = {}
        dns: dict[DnsHost, int] = {}
        for flag, xml in views:
            document = NetworkDocument(xml)
            spec = spec or document.spec()
            for entry in document.hosts():
                hosts[entry] = hosts.get(entry, 0) | flag
            for host in read_dns_hosts(xml):
                dns[host] = dns.get(host, 0) | flag
        assert spec is not None
        return NetworkState(self.name, active, persistent, tuple(views), spec, hosts, dns,
                            tuple(found[4]) if leases else None)

    def start(self) -> None:
        """Start the network if it is not running."""
        if not self.active:
            _live.call(self.handle, "create", f"starting network {self.name!r}")

    def stop(self) -> None:
        """Stop the network if it is running (idempotent: a network that is gone is fine)."""
        with contextlib.suppress(NotFound, InvalidState):  # gone, or stopped since the check
            if self.active:
                _live.call(self.handle, "destroy", f"stopping network {self.name!r}")

    def delete(self) -> None:
        """Stop and undefine the network (idempotent)."""
        try:
            self.stop()
            if self.persistent:
                _live.call(self.handle, "undefine", f"undefining network {self.name!r}")
        except NotFound:
            pass

    # -- reservations ----------------------------------------------------------

    def reservations(self) -> ReservationList:
        """Every ``<host>`` in the network's DHCP, live and persistent, once each."""
        return ReservationList(reservations(self.state().hosts))

    def reservation_for(self, mac: MacLike) -> Reservation | None:
        """The reservation of ``mac``, if there is one."""
        return self.state().reservation_for(format_mac(parse_mac(mac)))

    def check(
        self,
        mac: MacLike | None,
        ip: IpLike,
        hostname: str | None = None,
        *,
        client_id: str | None = None,
        allow_dynamic: bool = True,
        reclaim_stale: bool = True,
    ) -> tuple[Reservation, bool]:
        """Validate a reservation without changing anything (see :meth:`reserve`).

        Returns the normalised reservation and whether it exists already (same
        MAC/DUID and IP, and the same hostname unless ``hostname`` is ``None``).
        Raises :class:`InvalidSpec` or an :class:`AddressConflict` subclass,
        :class:`IpLeased` included.
        """
        check_bool(reclaim_stale, "reclaim_stale")
        check_bool(allow_dynamic, "allow_dynamic")
        state = self.state()
        wanted, exists = check_host(self.name, state.spec, state.hosts, mac, ip, hostname, client_id, allow_dynamic)
        if not exists:
            check_dhcp_name(self.name, state.dns, wanted.ip, wanted.hostname)
        if not exists and wanted.mac is not None:
            self.blocking_leases(wanted, reclaim_stale)
        return wanted, exists

    def reserve(
        self,
        mac: MacLike | None,
        ip: IpLike,
        hostname: str | None = None,
        *,
        client_id: str | None = None,
        allow_dynamic: bool = True,
        reclaim_stale: bool = True,
    ) -> Reservation:
        """Bind ``mac`` to ``ip`` (and ``hostname``) in the network's DHCP.

        Live and persistent. Re-reserving the identical entry is a no-op
        (``hostname=None`` matches an entry with any name) and returns it. A
        MAC, IP or hostname (compared case-insensitively, as dnsmasq does)
        already reserved for another host raises an :class:`AddressConflict`;
        so does an IP currently leased to a MAC that belongs to a defined
        domain (:class:`IpLeased`). A lease held by a MAC no domain has any
        more (a deleted VM) is released first when ``reclaim_stale`` is true.

        An address inside the dynamic DHCP range may be reserved (libvirt's
        stock ``default`` network is all range): dnsmasq never offers an
        address that has a ``<host>`` entry to another client, and a current
        lease of it is refused as above. ``allow_dynamic=False`` refuses such
        addresses (:class:`IpInDhcpRange`).

        IPv6: libvirt binds an address to a ``hostname`` or a DHCPv6
        ``client_id`` (DUID), never to a MAC, so pass ``mac=None`` and one of those.
        """
        check_bool(reclaim_stale, "reclaim_stale")
        check_bool(allow_dynamic, "allow_dynamic")
        state = self.state(leases=True)  # one reading, leases included (one round trip over a link)
        wanted, exists = check_host(self.name, state.spec, state.hosts, mac, ip, hostname, client_id, allow_dynamic)
        if exists:
            return wanted
        check_dhcp_name(self.name, state.dns, wanted.ip, wanted.hostname)
        check_size(self.name, state.views, [wanted])
        if wanted.mac is not None:
            for lease in self.blocking_leases(wanted, reclaim_stale, state.leases):
                self.reclaim(lease, wanted)
        self.update_host(state, _live.ADD, wanted, "reserving")
        log.info("reserved %s on network %s", wanted, self.name)
        return wanted

    def reserve_many(
        self,
        hosts: Iterable[HostLike],
        *,
        allow_dynamic: bool = True,
        reclaim_stale: bool = True,
        restart_idle: bool = True,
    ) -> ReservationList:
        """Reserve many hosts at once: all or nothing, and as fast as libvirt allows.

        ``hosts``: :class:`Reservation` objects or ``(mac, ip)`` /
        ``(mac, ip, hostname)`` tuples. Each is checked as :meth:`reserve`
        checks one, and against the others in the list, before anything
        changes; one conflict (:class:`AddressConflict`) or bad value
        (:class:`InvalidSpec` naming ``hosts[i]``) leaves the network as it
        was. Entries that exist already are kept. If libvirt fails half-way
        (or Ctrl-C), the entries this call added are removed again. Returns
        every reservation, in order.

        Speed: libvirt 9.0 re-applies the network's firewall rules on every
        live update (about 0.28 s each); a config-only update costs about
        2.5 ms. So when the network is running, persistent, has no guest
        attached (no libvirt network port) and its live and persistent
        definitions agree, and ``restart_idle`` is true, the hosts are added
        to the persistent definition and the network is restarted once (about
        0.4 s: bridge and dnsmasq are recreated; leases are kept). Starting a
        guest with libvm waits for that restart. Otherwise each host is one
        live-and-persistent update, as :meth:`reserve` makes it; a stopped
        network needs only config updates.
        """
        from .bulk import reserve_many  # here: bulk builds on this module

        return reserve_many(self, hosts, allow_dynamic=allow_dynamic, reclaim_stale=reclaim_stale,
                            restart_idle=restart_idle)

    def release(self, mac: MacLike | None = None, *, ip: IpLike | None = None) -> list[Reservation]:
        """Remove the reservations of ``mac``, of ``ip``, or (both given) of exactly that pair.

        Returns what was removed. Idempotent: releasing what is not reserved
        removes nothing.
        """
        if mac is None and ip is None:
            raise InvalidSpec("mac", mac, "give a mac, an ip, or both")
        want_mac = None if mac is None else format_mac(parse_mac(mac, "mac"))
        want_ip = None if ip is None else str(parse_ip(ip, "ip"))
        return self._release(self.state(), want_mac, want_ip)

    def _release(self, state: NetworkState, mac: str | None, ip: str | None) -> list[Reservation]:
        gone = [(e, flags) for e, flags in state.hosts.items() if mac in (None, e.mac) and ip in (None, e.ip)]
        for entry, flags in gone:
            # Delete from exactly the definitions that hold it: libvirt fails a
            # DELETE aimed at a definition without the entry.
            self.update_host(state, _live.DELETE, entry.reservation(), "releasing", flags)
            log.info("released %s on network %s", entry.reservation(), self.name)
        return list(dict.fromkeys(entry.reservation() for entry, _ in gone))

    def forget(self, *macs: MacLike, ips: Iterable[IpLike] = ()) -> None:
        """Release the reservations of ``macs`` (and of the addresses ``ips``: a dual-stack
        NIC's IPv6 entry, keyed by hostname), the DNS entry that maps each released address
        to the reservation's own name (what ``create_vm(dns=True)`` adds; other names of the
        address stay), and the MACs' leases: what a deleted VM leaves behind.

        A lease that cannot be released (remote daemon) is logged and left to expire.
        One reading of the network serves all of it.
        """
        wanted = {format_mac(parse_mac(mac, "mac")) for mac in macs}
        addresses = {str(parse_ip(ip, "ips")) for ip in ips}
        state = self.state(leases=True)
        gone: list[Reservation] = []
        for mac in sorted(wanted):
            gone += self._release(state, mac, None)
        for address in sorted(addresses):
            gone += self._release(state, None, address)
        for reservation in gone:
            if reservation.hostname is not None:  # only the entry create_vm(dns=True) makes: ip -> its name
                self._remove_dns(state, str(reservation.ip), reservation.hostname)
        for lease in state.leases or ():
            if lease.mac is not None and format_mac(lease.mac) in wanted:
                try:
                    self.release_lease(lease)
                except LibvmError as exc:
                    log.warning("could not release lease %s of deleted %s: %s", lease.ip, lease.mac, exc)

    def update_host(self, state: NetworkState, command: int, host: Reservation, doing: str,
                    flags: int | None = None) -> None:
        """Add (:data:`_live.ADD`) or delete one ``<host>`` in the definitions ``flags`` names
        (default: the live one if running, the persistent one if defined).

        A clash only libvirt saw (another caller won a race between our reading
        and its atomic add) is named as the :class:`AddressConflict` it is.
        """
        found = state.spec.ip_for(host.ip)
        index = found[0] if found is not None and len(state.spec.ips) > 1 else -1
        try:
            _live.update_network(self.handle, command, DHCP_HOST, index, host_xml(host),
                                 state.flags if flags is None else flags, f"{doing} {host} on network {self.name!r}")
        except InvalidState as exc:
            if command != _live.ADD:
                raise
            fresh = self.state()
            try:
                check_host(self.name, fresh.spec, fresh.hosts, host.mac, host.ip, host.hostname, host.client_id, True)
            except AddressConflict as conflict:
                raise conflict from exc
            raise AddressConflict(f"libvirt refused {host} on network {self.name!r}: {exc}") from exc

    # -- DNS -------------------------------------------------------------------

    def dns_hosts(self) -> list[DnsHost]:
        """Every ``<dns><host>`` entry (``ip``, ``hostnames``), live and persistent, once each."""
        return list(self.state().dns)

    def add_dns_host(self, ip: IpLike, hostname: str) -> DnsHost:
        """Make the network's dnsmasq resolve ``hostname`` to ``ip`` (live and persistent).

        The same entry again is a no-op. A name already in this network's DNS
        for another address raises :class:`HostnameReserved`; an address that
        already has other names raises :class:`IpReserved` (names compare
        case-insensitively, as dnsmasq's do).
        """
        state = self.state()
        existing = check_dns(self.name, state.spec, state.dns, ip, hostname, state.hosts)
        if existing is not None:
            return existing
        entry = DnsHost(str(parse_ip(ip, "ip")), (hostname,))
        self.update_dns(_live.ADD, entry, state.flags)
        log.info("added DNS name %s -> %s on network %s", hostname, entry.ip, self.name)
        return entry

    def check_dns_host(self, ip: IpLike, hostname: str) -> DnsHost | None:
        """Validate a DNS entry without changing anything (see :meth:`add_dns_host`).

        Returns the identical entry if it exists already, else ``None``; raises
        :class:`InvalidSpec`, :class:`HostnameReserved` or :class:`IpReserved`.
        """
        state = self.state()
        return check_dns(self.name, state.spec, state.dns, ip, hostname, state.hosts)

    def remove_dns_host(self, ip: IpLike) -> list[DnsHost]:
        """Remove the DNS entries of ``ip`` (idempotent); returns what was removed."""
        return self._remove_dns(self.state(), str(parse_ip(ip, "ip")))

    def _remove_dns(self, state: NetworkState, address: str, only: str | None = None) -> list[DnsHost]:
        """Remove the DNS entries of ``address`` (``only``: just an entry naming it ``only`` and nothing else)."""
        gone = [(host, flags) for host, flags in state.dns.items() if host.ip == address
                and (only is None or {n.lower() for n in host.hostnames} == {only.lower()})]
        for host, flags in gone:
            self.update_dns(_live.DELETE, host, flags)
            log.info("removed DNS entry %s on network %s", host, self.name)
        return [host for host, _ in gone]

    def update_dns(self, command: int, host: DnsHost, flags: int) -> None:
        """Add or delete one ``<dns><host>`` in the definitions ``flags`` names."""
        _live.update_network(self.handle, command, DNS_HOST, -1, dns_host_xml(host.ip, host.hostnames), flags,
                             f"updating DNS host {host.ip} on network {self.name!r}")

    # -- leases ----------------------------------------------------------------

    def leases(self) -> LeaseList:
        """The DHCP leases dnsmasq has handed out, as libvirt reports them.

        A driver without lease support (``test:///``) has none: an empty list.
        """
        raw = _live.network_leases(self.handle, self.name)
        if raw is None:  # a driver without leases (test:///) still says when the network is gone
            self.active  # noqa: B018
        return LeaseList(_lease(entry) for entry in raw or ())

    def lease_marker(self) -> tuple[int, int, int] | None:
        """A cheap fingerprint of dnsmasq's lease table, if the daemon is local.

        libvirt's lease helper rewrites ``/var/lib/libvirt/dnsmasq/<bridge>.status``
        whenever dnsmasq adds, renews or drops a lease; a ``stat`` of it costs a
        system call, not a libvirt call, so waiters can watch it closely and ask
        libvirt for the leases only when it changed. ``None`` when there is no
        file to watch (remote daemon, test driver).
        """
        if self._status is None:
            try:
                local = self._live.is_local
                from . import dnsmasq  # here: only a local daemon's waiters need it

                self._status = dnsmasq.STATUS_DIR / f"{self.bridge}.status" if local else False
            except LibvmError:
                return None
        if self._status is False:
            return None
        try:
            st = os.stat(self._status)
        except OSError:
            return (0, 0, 0)  # no lease yet: its creation is the change to watch for
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def release_lease(self, lease: Lease) -> None:
        """Make dnsmasq forget ``lease`` now (see :mod:`libvm.dnsmasq`) and wait for libvirt to see it."""
        if not isinstance(lease, Lease):
            raise InvalidSpec("lease", lease, "a libvm.Lease from Network.leases()")
        if lease.mac is None:
            raise InvalidSpec("lease.mac", None, "only IPv4 leases with a MAC can be released")
        from . import dnsmasq
        from .ssh import hypervisor_target

        if self._live.is_local:
            dnsmasq.release(self.name, lease.interface or self.bridge, str(lease.ip), str(lease.mac), lease.client_id)
        else:
            target = hypervisor_target(self._live.uri)
            if target is None:
                raise DnsmasqFailure(
                    f"cannot release {lease.ip}'s lease on {self._live.uri!r}: dnsmasq runs on another host and "
                    f"libvirt has no call for it. Connect with qemu+ssh:// (libvm then runs dhcp_release there), "
                    f"or run 'dhcp_release {lease.interface or self.bridge} {lease.ip} {lease.mac}' on that host")
            dnsmasq.release_over_ssh(target, self.name, lease.interface or self.bridge, str(lease.ip),
                                     str(lease.mac), lease.client_id)
        _wait(lambda: lease.ip not in {x.ip for x in self.leases() if x.mac == lease.mac}, 5.0)

    def blocking_leases(self, wanted: Reservation, reclaim_stale: bool,
                         leases: Iterable[Lease] | None = None) -> list[Lease]:
        """Leases that would keep ``wanted`` from working and may be released; refuse the others.

        A lease of the address to a MAC a domain has is refused (that guest
        holds the address); so is a stale one when ``reclaim_stale`` is false.
        ``leases``: the network's leases, if the caller has read them already.
        """
        blocking = leases_in_way(self.leases() if leases is None else leases, wanted)
        if not blocking:
            return []
        owners = self._live.mac_owners()
        releasable = []
        for lease in blocking:
            owner = owners.get(str(lease.mac)) if lease.mac is not None else None
            refuse_lease(self.name, lease, wanted, owner, reclaim_stale)
            if owner is None or not self._live.domain_running(owner):
                releasable.append(lease)
        return releasable

    def reclaim(self, lease: Lease, wanted: Reservation) -> None:
        """Release ``lease``, which stands in ``wanted``'s way (a stale lease of its address,
        or an old lease of its MAC); :class:`IpLeased` if the address stays taken."""
        try:
            self.release_lease(lease)
        except (DnsmasqFailure, WaitTimeout) as exc:
            if lease.ip != wanted.ip:  # our own MAC's old address: dnsmasq will NAK it
                log.warning("could not release old lease %s of %s: %s", lease.ip, lease.mac, exc)
                return
            # Never promise an address dnsmasq will not hand out.
            raise IpLeased(
                f"{wanted.ip} is still leased on network {self.name!r} to {lease.mac} (stale) until "
                f"{lease.expires}, and libvm cannot release it here: {exc}",
                other=str(lease.mac),
            ) from exc

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        """The network's lock held exclusive: no libvm guest attaches meanwhile (see :meth:`Live.network_lock`)."""
        return self._live.network_lock(self.name, exclusive=True)

    # -- allocation ------------------------------------------------------------

    def free_ip(
        self,
        *,
        pool: tuple[IpLike, IpLike] | None = None,
        avoid: Collection[IpLike] = frozenset(),
        allow_dynamic: bool = True,
    ) -> netaddr.IPAddress:
        """The lowest free address of the network's first IPv4 subnet (else its IPv6 one).

        Free means: not the network, broadcast or gateway address, not reserved,
        not leased, not in ``avoid``. Addresses outside the dynamic DHCP range
        come first; when none is left, addresses inside it are used (dnsmasq
        never offers a reserved address to another client), unless
        ``allow_dynamic=False``. ``pool`` (two addresses, inclusive) limits
        the search. Raises :class:`NoFreeAddress` saying where it looked.
        """
        check_bool(allow_dynamic, "allow_dynamic")
        avoided = _addresses(avoid, "avoid")
        active, persistent = _live.network_state(self.handle, self.name)
        # Only the addresses of the primary <ip>'s hosts: no per-host objects (50,000 hosts: ms).
        live_xml = _live.network_xml(self.handle, self.name)
        documents = [NetworkDocument(live_xml)]
        if persistent and active:
            config = _live.network_xml(self.handle, self.name, inactive=True, same=live_xml)
            if config != live_xml:
                documents.append(NetworkDocument(config))
        spec = documents[0].spec()
        bounds = parse_pool(pool, spec)
        primary = spec.ips.index(spec.primary)
        family = spec.primary.subnet.version
        used = (ip_ints((ip for document in documents for ip in document.host_ips(primary)), family)
                | {int(x.ip) for x in self.leases() if x.ip.version == family}
                | {int(a) for a in avoided if a.version == family})
        return free_address(self.name, spec, used, pool=bounds, allow_dynamic=allow_dynamic)


_LIVE, _CONFIG = 1, 2  # reservations.LIVE, reservations.CONFIG


def _row(net: Network) -> tuple[NetworkRow, ReservationList, LeaseList]:
    state = net.state(leases=True)
    found = ReservationList(reservations(state.hosts))
    leases = LeaseList(state.leases or ())
    spec = state.spec
    row = NetworkRow(
        name=net.name, active=state.active, bridge=spec.bridge,
        subnets=tuple(str(ip.subnet.cidr) for ip in spec.ips),
        dhcp_ranges=tuple(f"{a}-{b}" for ip in spec.ips for a, b in ip.dhcp_ranges),
        reservations=len(found), leases=len(leases))
    return row, found, leases


def _addresses(value: object, field: str) -> set[netaddr.IPAddress]:
    """A collection of addresses (strings or ``IPAddress``), checked one by one."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidSpec(field, value, "a set or list of IP addresses")
    return {parse_ip(item, f"{field}[{index}]") for index, item in enumerate(value)}


def _lease(entry: dict[str, object]) -> Lease:
    mac = entry.get("mac")
    expiry = entry.get("expirytime")
    return Lease(
        mac=parse_mac(str(mac), "lease.mac") if mac else None,
        ip=netaddr.IPAddress(str(entry["ipaddr"])),
        hostname=str(entry["hostname"]) if entry.get("hostname") else None,
        expires=_expiry(expiry),
        client_id=str(entry["clientid"]) if entry.get("clientid") else None,
        interface=str(entry.get("iface") or ""),
    )


def _expiry(value: object) -> dt.datetime | None:
    import datetime as dt  # here: import libvm stays cheap

    return dt.datetime.fromtimestamp(int(str(value)), dt.timezone.utc) if value else None


def _wait(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise WaitTimeout("dnsmasq did not drop the lease in time")
        time.sleep(0.1)
