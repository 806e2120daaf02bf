"""A live libvirt network: its DHCP reservations and leases.

Reservations are changed only with virNetworkUpdate ADD_LAST / DELETE of one
``<host>``, live and persistent, so libvirt edits its own XML and every element
libvm does not model is kept. MODIFY is never used: libvirt's MODIFY replaces
the first ``<host>`` matching the MAC, the IP *or* the name, which can
silently overwrite somebody else's binding.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Set
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import libvirt
import netaddr

from . import dnsmasq
from ._live import InvalidState, Live, Unsupported, sigint_deferred, translate
from .addressing import (
    IpLike,
    MacLike,
    check_host_ip,
    check_hostname,
    format_mac,
    next_free,
    parse_ip,
    parse_mac,
)
from .errors import (
    AddressConflict,
    HostnameReserved,
    InvalidSpec,
    IpInDhcpRange,
    IpLeased,
    IpReserved,
    LibvirtFailure,
    LibvmError,
    MacReserved,
    NoFreeAddress,
    NotFound,
)
from .networkxml import (
    MAX_XML_BYTES,
    DnsHost,
    HostEntry,
    NetworkDocument,
    NetworkSpec,
    dns_host_xml,
    host_xml,
    read_dns_hosts,
    too_big,
)
from .values import Lease, Reservation
from .views import LeaseList, NetworkRow, Rendered, ReservationList, Table, host_table, network_table

log = logging.getLogger("libvm")

_SECTION = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST

#: A host for :meth:`Network.reserve_many`: a :class:`Reservation` or ``(mac, ip[, hostname])``.
HostLike = Reservation | tuple[Any, ...] | list[Any]


class Network(Rendered):
    """A libvirt network, looked up by name. Get one from :meth:`Hypervisor.network`.

    In Jupyter or IPython it shows as tables: its settings, then every
    reservation with its lease and every other lease (see :mod:`libvm.views`).
    """

    def __init__(self, live: Live, handle: libvirt.virNetwork) -> None:
        self._live = live
        self._net = handle
        self._generation = live.generation
        self._status: Path | Literal[False] | None = None  # lease_marker's file: unknown yet / none
        self.name: str = handle.name()

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
        row, reservations, leases = _row(self)
        return [network_table([row]), host_table(reservations, leases, f"hosts of network {self.name}")]

    # -- state ---------------------------------------------------------------

    @property
    def handle(self) -> libvirt.virNetwork:
        """The underlying ``libvirt.virNetwork``, for what libvm does not cover.

        Looked up again after the connection was re-established (libvirtd restart).
        """
        if self._generation != self._live.generation or self._live.closed:
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
        with translate(f"network {self.name!r}"):
            return str(self.handle.bridgeName())

    def xml(self, inactive: bool = False) -> str:
        """The network's XML as libvirt has it (``inactive``: the persistent config)."""
        flags = libvirt.VIR_NETWORK_XML_INACTIVE if _check_flag("inactive", inactive) else 0
        try:
            with translate(f"network {self.name!r}"):
                return str(self.handle.XMLDesc(flags))
        except Unsupported:
            # The test driver (libvirt 9.0) has one definition and refuses the flag.
            if not inactive:
                raise
        with translate(f"network {self.name!r}"):
            return str(self.handle.XMLDesc(0))

    def spec(self, inactive: bool = False) -> NetworkSpec:
        """The network parsed into a :class:`NetworkSpec` (``inactive``: the persistent config)."""
        return NetworkSpec.from_xml(self.xml(inactive))

    def start(self) -> None:
        """Start the network if it is not running."""
        if not self.active:
            with translate(f"starting network {self.name!r}"):
                self.handle.create()

    def stop(self) -> None:
        """Stop the network if it is running (idempotent)."""
        if self.active:
            with translate(f"stopping network {self.name!r}"):
                self.handle.destroy()

    def delete(self) -> None:
        """Stop and undefine the network (idempotent)."""
        try:
            self.stop()
            if self.persistent:
                with translate(f"undefining network {self.name!r}"):
                    self.handle.undefine()
        except NotFound:
            pass

    # -- reservations ----------------------------------------------------------

    def _view(self, views: list[tuple[int, str]] | None = None) -> tuple[NetworkSpec, list[HostEntry]]:
        """The network's spec and every ``<host>`` of its live *and* persistent XML.

        A reservation in either definition counts (someone may have added one
        with only ``--live`` or only ``--config``). One XML parse each. ``views``: what
        :meth:`_xml_views` returned, if the caller read it already.
        """
        spec, where = self._definitions(views)
        return spec, list(where)

    def _definitions(self, views: list[tuple[int, str]] | None = None) -> tuple[NetworkSpec, dict[HostEntry, int]]:
        """The spec, and for each ``<host>`` the update flags of the definitions holding it
        (``views``: :meth:`_xml_views`, if the caller has read them)."""
        spec: NetworkSpec | None = None
        where: dict[HostEntry, int] = {}
        for flag, xml in self._xml_views() if views is None else views:
            document = NetworkDocument(xml)
            spec = spec or document.spec()
            for entry in document.hosts():
                where[entry] = where.get(entry, 0) | flag
        assert spec is not None
        return spec, where

    def _xml_views(self) -> list[tuple[int, str]]:
        """``(update flags, XML)`` of the live and the persistent definition (one entry if identical).

        An entry someone added with only ``--live`` or only ``--config`` is in
        one of them; an update must name exactly the definitions holding it.
        """
        views = []
        live = None
        if self.active or not self.persistent:
            live = self.xml()
            views.append((libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE, live))
        if self.persistent:
            try:
                with translate(f"network {self.name!r}"):
                    config = str(self.handle.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE))
            except Unsupported:
                # The test driver (libvirt 9.0) has one definition and refuses the
                # flag: the live XML just read is that definition; reading it again
                # costs as much as the rest of free_ip on a network of 50,000 hosts.
                config = self.xml() if live is None else live
            views.append((libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG, config))
        if len(views) == 2 and views[0][1] == views[1][1]:  # identical: parse once
            views = [(views[0][0] | views[1][0], views[0][1])]
        return views

    def reservations(self) -> ReservationList:
        """Every ``<host>`` in the network's DHCP, live and persistent, once each."""
        return _reservations(self._view()[1])

    def reservation_for(self, mac: MacLike) -> Reservation | None:
        """The reservation of ``mac``, if there is one."""
        wanted = format_mac(parse_mac(mac))
        return next((e.reservation() for e in self._view()[1] if e.mac == wanted), None)

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
        _check_flag("reclaim_stale", reclaim_stale)
        wanted, exists = _check_host(self.name, self._view(), mac, ip, hostname, client_id, allow_dynamic)
        if not exists and wanted.mac is not None:
            self._blocking_leases(wanted, reclaim_stale)
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
        _check_flag("reclaim_stale", reclaim_stale)
        views = self._xml_views()
        view = self._view(views)
        wanted, exists = _check_host(self.name, view, mac, ip, hostname, client_id, allow_dynamic)
        if exists:
            return wanted
        _check_size(self.name, views, [wanted])
        if wanted.mac is not None:
            for lease in self._blocking_leases(wanted, reclaim_stale):
                self._reclaim(lease, wanted)
        self._update(view[0], libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, wanted, "reserving")
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
        for flag, value in (("allow_dynamic", allow_dynamic), ("reclaim_stale", reclaim_stale),
                            ("restart_idle", restart_idle)):
            _check_flag(flag, value)
        views = self._xml_views()
        view = self._view(views)
        everything, new = plan_hosts(self.name, view, parse_hosts(hosts, "hosts"), allow_dynamic)
        if not new:
            return ReservationList(everything)
        _check_size(self.name, views, [wanted for _, wanted in new])
        leases = self.leases()
        stale = [(lease, wanted) for _, wanted in new if wanted.mac is not None
                 for lease in self._blocking_leases(wanted, reclaim_stale, leases)]
        for lease, wanted in stale:
            self._reclaim(lease, wanted)
        spec = view[0]
        # Noted *before* each update: a Ctrl-C just after libvirt answered is rolled back too.
        attempted: list[Reservation] = []
        # Running and persistent, the two definitions identical, and no guest attached.
        restarting = (restart_idle and len(new) > 1 and len(views) == 1 and self.active and self.persistent
                      and not self._ports())
        try:
            for position, wanted in new:
                attempted.append(wanted)
                self._add(spec, position, wanted, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG if restarting else None)
            if restarting:
                self._apply_by_restart(spec, [wanted for _, wanted in new])
        except BaseException:
            with sigint_deferred():
                self._roll_back(spec, attempted, restarting)
            raise
        log.info("reserved %d hosts on network %s", len(new), self.name)
        return ReservationList(everything)

    def _add(self, spec: NetworkSpec, position: int, wanted: Reservation, flags: int | None) -> None:
        """Add ``hosts[position]``; a clash only libvirt saw (a race) names its position."""
        try:
            self._update(spec, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, wanted, "reserving", flags)
        except AddressConflict as exc:
            raise type(exc)(f"hosts[{position}]: {exc}", other=exc.other) from exc.__cause__

    def _roll_back(self, spec: NetworkSpec, attempted: list[Reservation], restarting: bool) -> None:
        """Remove exactly the entries of ``attempted`` still in a definition; start a network a
        failed restart left stopped."""
        ours = {_key(wanted) for wanted in attempted}
        for entry, flags in self._definitions()[1].items():
            if (entry.mac, entry.ip, entry.name, entry.id) in ours:
                try:
                    self._update(spec, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, entry.reservation(),
                                 "rolling back", flags)
                except LibvmError as exc:
                    log.warning("could not roll back %s on network %s: %s", entry.reservation(), self.name, exc)
        if restarting and not self.active:
            try:
                self.start()
            except LibvmError as exc:
                log.warning("could not start network %s again: %s", self.name, exc)

    def _ports(self) -> bool:
        """Whether a guest is attached (libvirt network ports); True when libvirt cannot tell."""
        try:
            with translate(f"ports of network {self.name!r}"):
                return bool(self.handle.listAllPorts())
        except Unsupported:
            return True

    def _apply_by_restart(self, spec: NetworkSpec, hosts: list[Reservation]) -> None:
        """Make ``hosts`` (added to the persistent definition) live: restart the idle network once.

        Under the network's exclusive lock, so no libvm guest starts on it
        meanwhile. If a guest attached since :meth:`reserve_many` looked, the
        restart would cut it off: the hosts are then made live one by one.
        """
        with self._live.network_lock(self.name, exclusive=True):
            if self._ports():
                for wanted in hosts:
                    self._update(spec, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, wanted, "reserving",
                                 libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE)
                return
            with translate(f"restarting network {self.name!r}"):
                self.handle.destroy()
                self.handle.create()

    def release(self, mac: MacLike | None = None, *, ip: IpLike | None = None) -> list[Reservation]:
        """Remove the reservations of ``mac``, of ``ip``, or (both given) of exactly that pair.

        Returns what was removed. Idempotent: releasing what is not reserved
        removes nothing.
        """
        if mac is None and ip is None:
            raise InvalidSpec("mac", mac, "give a mac, an ip, or both")
        want_mac = None if mac is None else format_mac(parse_mac(mac, "mac"))
        want_ip = None if ip is None else str(parse_ip(ip, "ip"))
        spec, where = self._definitions()
        gone = [(e, flags) for e, flags in where.items()
                if want_mac in (None, e.mac) and want_ip in (None, e.ip)]
        for entry, flags in gone:
            # Delete from exactly the definitions that hold it: libvirt fails a
            # DELETE aimed at a definition without the entry.
            self._update(spec, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, entry.reservation(), "releasing", flags)
            log.info("released %s on network %s", entry.reservation(), self.name)
        return list(dict.fromkeys(entry.reservation() for entry, _ in gone))

    def forget(self, mac: MacLike) -> None:
        """Release ``mac``'s reservations, the DNS names of their addresses, and its
        leases (what a deleted VM leaves behind).

        A lease that cannot be released (remote daemon) is logged and left to expire.
        """
        wanted = format_mac(parse_mac(mac, "mac"))
        for reservation in self.release(wanted):
            self.remove_dns_host(reservation.ip)
        for lease in self.leases():
            if lease.mac is not None and format_mac(lease.mac) == wanted:
                try:
                    self.release_lease(lease)
                except LibvmError as exc:
                    log.warning("could not release lease %s of deleted %s: %s", lease.ip, wanted, exc)

    def _flags(self) -> int:
        flags = 0
        if self.active:
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
        if self.persistent:
            flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
        return flags

    def _update(self, spec: NetworkSpec, command: int, host: Reservation, doing: str,
                flags: int | None = None) -> None:
        found = spec.ip_for(host.ip)
        index = found[0] if found is not None and len(spec.ips) > 1 else -1
        try:
            with translate(f"{doing} {host} on network {self.name!r}"):
                self.handle.update(command, _SECTION, index, host_xml(host), self._flags() if flags is None else flags)
        except InvalidState as exc:
            if command != libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST:
                raise
            # libvirt's atomic add found a matching <host> that was not there when we
            # read the network: another caller won a race. Name the conflict.
            try:
                _check_host(self.name, self._view(), host.mac, host.ip, host.hostname, host.client_id, True)
            except AddressConflict as conflict:
                raise conflict from exc
            raise AddressConflict(f"libvirt refused {host} on network {self.name!r}: {exc}") from exc

    # -- DNS -------------------------------------------------------------------

    def _dns_definitions(self) -> dict[DnsHost, int]:
        """Every ``<dns><host>``, with the update flags of the definitions holding it."""
        where: dict[DnsHost, int] = {}
        for flag, xml in self._xml_views():
            for host in read_dns_hosts(xml):
                where[host] = where.get(host, 0) | flag
        return where

    def dns_hosts(self) -> list[DnsHost]:
        """Every ``<dns><host>`` entry (``ip``, ``hostnames``), live and persistent, once each."""
        return list(self._dns_definitions())

    def add_dns_host(self, ip: IpLike, hostname: str) -> DnsHost:
        """Make the network's dnsmasq resolve ``hostname`` to ``ip`` (live and persistent).

        The same entry again is a no-op. A name already in this network's DNS
        for another address raises :class:`HostnameReserved`; an address that
        already has other names raises :class:`IpReserved` (names compare
        case-insensitively, as dnsmasq's do).
        """
        existing = self.check_dns_host(ip, hostname)
        if existing is not None:
            return existing
        entry = DnsHost(str(parse_ip(ip, "ip")), (hostname,))
        self._dns_update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, entry, self._flags())
        log.info("added DNS name %s -> %s on network %s", hostname, entry.ip, self.name)
        return entry

    def check_dns_host(self, ip: IpLike, hostname: str) -> DnsHost | None:
        """Validate a DNS entry without changing anything (see :meth:`add_dns_host`).

        Returns the identical entry if it exists already, else ``None``; raises
        :class:`InvalidSpec`, :class:`HostnameReserved` or :class:`IpReserved`.
        """
        parsed = parse_ip(ip, "ip")
        if self.spec().ip_for(parsed) is None:
            raise InvalidSpec("ip", str(parsed), f"outside network {self.name!r}'s subnets")
        address = str(parsed)
        name = check_hostname(hostname, "hostname")
        for host in self._dns_definitions():
            names = {n.lower() for n in host.hostnames}
            if host.ip == address and names == {name.lower()}:
                return host
            if name.lower() in names:
                raise HostnameReserved(f"{name!r} already resolves to {host.ip} in network {self.name!r}'s DNS",
                                       other=host.ip)
            if host.ip == address:
                raise IpReserved(f"{address} already has the DNS names {', '.join(host.hostnames)} in network "
                                 f"{self.name!r}", other=",".join(host.hostnames))
        return None

    def remove_dns_host(self, ip: IpLike) -> list[DnsHost]:
        """Remove the DNS entries of ``ip`` (idempotent); returns what was removed."""
        address = str(parse_ip(ip, "ip"))
        gone = [(host, flags) for host, flags in self._dns_definitions().items() if host.ip == address]
        for host, flags in gone:
            self._dns_update(libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, host, flags)
            log.info("removed DNS entry %s on network %s", host, self.name)
        return [host for host, _ in gone]

    def _dns_update(self, command: int, host: DnsHost, flags: int) -> None:
        with translate(f"updating DNS host {host.ip} on network {self.name!r}"):
            self.handle.update(command, libvirt.VIR_NETWORK_SECTION_DNS_HOST, -1,
                               dns_host_xml(host.ip, host.hostnames), flags)

    # -- leases ----------------------------------------------------------------

    def leases(self) -> LeaseList:
        """The DHCP leases dnsmasq has handed out, as libvirt reports them.

        A driver without lease support (``test:///``) has none: an empty list.
        """
        try:
            with translate(f"leases of network {self.name!r}"):
                raw = self.handle.DHCPLeases()
        except Unsupported:
            return LeaseList()
        return LeaseList(_lease(entry) for entry in raw)

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
        if not self._live.is_local:
            raise LibvirtFailure(f"cannot release a lease on {self._live.uri!r}: dnsmasq runs on another host")
        dnsmasq.release(self.name, lease.interface or self.bridge, str(lease.ip),
                        str(lease.mac), lease.client_id)
        _wait(lambda: lease.ip not in {x.ip for x in self.leases() if x.mac == lease.mac}, 5.0)

    def _blocking_leases(self, wanted: Reservation, reclaim_stale: bool,
                         leases: Iterable[Lease] | None = None) -> list[Lease]:
        """Leases that would keep ``wanted`` from working and may be released; refuse the others.

        A lease of the address to a MAC a domain has is refused (that guest
        holds the address); so is a stale one when ``reclaim_stale`` is false.
        ``leases``: the network's leases, if the caller has read them already.
        """
        blocking = [
            lease for lease in (self.leases() if leases is None else leases)
            if (lease.ip == wanted.ip) != (lease.mac == wanted.mac)
        ]
        if not blocking:
            return []
        owners = self._live.mac_owners()
        releasable = []
        for lease in blocking:
            owner = owners.get(str(lease.mac)) if lease.mac is not None else None
            if lease.ip == wanted.ip and (owner is not None or not reclaim_stale):
                who = f"domain {owner!r}" if owner else "a MAC no domain has (stale)"
                raise IpLeased(
                    f"{wanted.ip} is leased on network {self.name!r} to {lease.mac} ({who}) "
                    f"until {lease.expires}; "
                    + ("delete that domain first" if owner else "pass reclaim_stale=True to release it"),
                    other=owner or str(lease.mac),
                )
            if owner is None or not self._live.domain_running(owner):
                releasable.append(lease)
        return releasable

    def _reclaim(self, lease: Lease, wanted: Reservation) -> None:
        try:
            self.release_lease(lease)
        except LibvirtFailure as exc:
            if lease.ip != wanted.ip:  # our own MAC's old address: dnsmasq will NAK it
                log.warning("could not release old lease %s of %s: %s", lease.ip, lease.mac, exc)
                return
            # Never promise an address dnsmasq will not hand out.
            raise IpLeased(
                f"{wanted.ip} is still leased on network {self.name!r} to {lease.mac} (stale) until "
                f"{lease.expires}, and libvm cannot release it here: {exc}",
                other=str(lease.mac),
            ) from exc

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
        _check_flag("allow_dynamic", allow_dynamic)
        avoided = _addresses(avoid, "avoid")
        documents = [NetworkDocument(xml) for _, xml in self._xml_views()]
        spec = documents[0].spec()
        primary = spec.primary
        family = primary.subnet.version
        primary_index = spec.ips.index(primary)
        bounds = None
        if pool is not None:
            if not isinstance(pool, (tuple, list)) or len(pool) != 2:
                raise InvalidSpec("pool", pool, "a (first, last) pair of addresses")
            bounds = (parse_ip(pool[0], "pool[0]"), parse_ip(pool[1], "pool[1]"))
            if bounds[0].version != bounds[1].version or int(bounds[0]) > int(bounds[1]):
                raise InvalidSpec("pool", pool, "(first, last) with first <= last")
            for index, end in enumerate(bounds):
                check_host_ip(end, primary.subnet, f"pool[{index}]")
        # Only the addresses of the primary <ip>'s hosts: no per-host objects.
        reserved = [ip for document in documents for ip in document.host_ips(primary_index)]
        used = (_ip_ints(reserved, family)
                | {int(x.ip) for x in self.leases() if x.ip.version == family}
                | {int(a) for a in avoided if a.version == family})
        try:
            return next_free(primary.subnet, used, pool=bounds, exclude=primary.dhcp_ranges)
        except NoFreeAddress as outside:
            if not allow_dynamic or not primary.dhcp_ranges:
                raise NoFreeAddress(f"network {self.name!r}: {outside}") from None
        try:
            return next_free(primary.subnet, used, pool=bounds)
        except NoFreeAddress as anywhere:
            raise NoFreeAddress(
                f"network {self.name!r}: {anywhere}, inside or outside the dynamic DHCP range; "
                f"every address is reserved, leased or the gateway"
            ) from None


def _check_host(
    network: str,
    view: tuple[NetworkSpec, list[HostEntry]],
    mac: MacLike | None,
    ip: IpLike,
    hostname: str | None,
    client_id: str | None,
    allow_dynamic: bool,
) -> tuple[Reservation, bool]:
    """Validate one reservation against ``view`` (see :meth:`Network.check`), no lease checks.

    Returns the normalised reservation and whether ``view`` holds it already.
    """
    address = parse_ip(ip, "ip")
    _check_flag("allow_dynamic", allow_dynamic)
    spec, entries = view
    found = spec.ip_for(address)
    if found is None:
        subnets = ", ".join(str(i.subnet.cidr) for i in spec.ips) or "none"
        raise InvalidSpec("ip", str(address), f"outside network {network!r}'s subnets ({subnets})")
    check_host_ip(address, found[1].subnet, "ip")
    wanted = _wanted(mac, address, hostname, client_id)
    mac_s = None if wanted.mac is None else format_mac(wanted.mac)
    ip_s = str(address)
    # dnsmasq matches names case-insensitively (hostname_isequal), so must we.
    name = None if hostname is None else hostname.lower()
    # One name may be reserved once per family: dnsmasq pairs pc001's IPv4 and IPv6.
    for entry in (e for e in entries if e.ip_index == found[0]):
        entry_name = None if entry.name is None else entry.name.lower()
        duid = wanted.client_id  # normalised (lower case), as read_network stores ids
        if (entry.mac == mac_s and entry.ip == ip_s and name in (None, entry_name)
                and duid in (None, entry.id)):
            return entry.reservation(), True
        # Cheap string tests first: building a Reservation per entry is slow on 30k hosts.
        if ((mac_s is not None and entry.mac == mac_s) or entry.ip == ip_s
                or (name is not None and entry_name == name)
                or (duid is not None and entry.id == duid)):
            _refuse_overlap(network, entry.reservation(), wanted)
    dyn = spec.in_dhcp_range(address)
    if dyn is not None and not allow_dynamic:
        raise IpInDhcpRange(
            f"{address} is in network {network!r}'s dynamic DHCP range {dyn[0]}-{dyn[1]} "
            f"and allow_dynamic=False; pick an address outside the range or allow it (dnsmasq "
            f"never hands a reserved address to another client)"
        )
    return wanted, False


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
            hosts.append(_wanted(mac, parse_ip(ip, "ip"), hostname, None))
        except InvalidSpec as exc:
            raise InvalidSpec(f"{field}[{index}].{exc.field}", exc.value, exc.reason) from None
    return hosts


#: What two hosts of one list share when they clash, by AddressConflict.reason.
_SHARED = {"mac-reserved": "MAC (or DUID)", "ip-reserved": "IP address", "hostname-reserved": "hostname"}


def plan_hosts(network: str, view: tuple[NetworkSpec, list[HostEntry]], hosts: list[Reservation],
               allow_dynamic: bool) -> tuple[list[Reservation], list[tuple[int, Reservation]]]:
    """Check ``hosts`` against ``view`` and each other.

    Returns all of them normalised, and the new ones with their position in
    ``hosts``. Each host is checked by :func:`_check_host` against only the
    entries that share its MAC, IP, name or DUID (found in an index), so a
    thousand hosts on a network of ten thousand cost milliseconds, not a
    quadratic scan.
    """
    spec, entries = view
    index: dict[tuple[str, int, str], list[HostEntry]] = {}

    def keys(entry: HostEntry) -> list[tuple[str, int, str]]:
        found = [("mac", entry.mac), ("ip", entry.ip), ("name", (entry.name or "").lower() or None),
                 ("id", entry.id)]
        return [(kind, entry.ip_index, value) for kind, value in found if value]

    def add(entry: HostEntry) -> None:
        for key in keys(entry):
            index.setdefault(key, []).append(entry)

    for entry in entries:
        add(entry)
    everything: list[Reservation] = []
    new: list[tuple[int, Reservation]] = []
    listed: dict[HostEntry, int] = {}  # entries of this list -> their position
    for position, host in enumerate(hosts):
        found = spec.ip_for(host.ip)
        probe = HostEntry(-1 if found is None else found[0], *_key(host))
        near = list(dict.fromkeys(e for key in keys(probe) for e in index.get(key, ())))
        try:
            wanted, exists = _check_host(network, (spec, near), host.mac, host.ip, host.hostname,
                                         host.client_id, allow_dynamic)
        except InvalidSpec as exc:
            raise InvalidSpec(f"hosts[{position}].{exc.field}", exc.value, exc.reason) from None
        except AddressConflict as exc:
            clash = next((listed[e] for e in near if e in listed), None)
            if clash is None:
                raise type(exc)(f"hosts[{position}]: {exc}", other=exc.other) from None
            raise type(exc)(f"hosts[{position}] ({host}) and hosts[{clash}] ({hosts[clash]}) of this list have "
                            f"the same {_SHARED.get(exc.reason, 'address')}", other=exc.other) from None
        everything.append(wanted)
        if not exists:
            new.append((position, wanted))
            add(probe)  # the next hosts in the list must not clash with this one
            listed[probe] = position
    return everything, new


def _check_size(network: str, views: list[tuple[int, str]], hosts: list[Reservation]) -> None:
    """Refuse ``hosts`` if they would grow the network's XML past what libvirt's RPC carries."""
    grown = max(len(xml.encode()) for _, xml in views) + sum(len(host_xml(h)) + 9 for h in hosts)
    if grown > MAX_XML_BYTES:
        raise InvalidSpec("hosts", f"{len(hosts)} new hosts", too_big(network, grown))


def _key(host: Reservation) -> tuple[str | None, str, str | None, str | None]:
    """``(mac, ip, name, id)`` spelled as libvirt writes a ``<host>`` (see :class:`HostEntry`)."""
    return (None if host.mac is None else format_mac(host.mac), str(host.ip), host.hostname,
            host.client_id.lower() if host.client_id else None)


def network_rows(networks: Iterable[Network]) -> list[NetworkRow]:
    """A table row per network: its definitions read once and one ``leases()`` each."""
    return [_row(net)[0] for net in networks]


def _row(net: Network) -> tuple[NetworkRow, ReservationList, LeaseList]:
    spec, entries = net._view()
    reservations = _reservations(entries)
    leases = net.leases()
    row = NetworkRow(
        name=net.name, active=net.active, bridge=spec.bridge,
        subnets=tuple(str(ip.subnet.cidr) for ip in spec.ips),
        dhcp_ranges=tuple(f"{a}-{b}" for ip in spec.ips for a, b in ip.dhcp_ranges),
        reservations=len(reservations), leases=len(leases))
    return row, reservations, leases


def _reservations(entries: Iterable[HostEntry]) -> ReservationList:
    """The entries as reservations, once each (deduplicated on their strings: hashing
    50,000 Reservation objects costs more than building them)."""
    unique = {(e.mac, e.ip, e.name, e.id): e for e in entries}
    return ReservationList(entry.reservation() for entry in unique.values())


def _check_flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpec(name, value, "True or False")
    return value


def _addresses(value: object, field: str) -> set[netaddr.IPAddress]:
    """A collection of addresses (strings or ``IPAddress``), checked one by one."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise InvalidSpec(field, value, "a set or list of IP addresses")
    return {parse_ip(item, f"{field}[{index}]") for index, item in enumerate(value)}


_DUID = re.compile(r"^[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){3,129}$")


def _wanted(mac: MacLike | None, address: netaddr.IPAddress, hostname: str | None,
            client_id: str | None) -> Reservation:
    """The reservation asked for, with the rules of its address family."""
    if hostname is not None:
        check_hostname(hostname)
    if address.version == 4:
        if mac is None:
            raise InvalidSpec("mac", mac, "an IPv4 reservation binds a MAC")
        if client_id is not None:
            raise InvalidSpec("client_id", client_id, "libvirt binds IPv4 by MAC; client_id is for IPv6")
        return Reservation(parse_mac(mac, "mac"), address, hostname)
    if mac is not None:
        raise InvalidSpec("mac", mac, "libvirt binds IPv6 addresses by hostname or DUID (client_id), "
                                      "not by MAC; pass mac=None")
    if client_id is not None and (not isinstance(client_id, str) or not _DUID.match(client_id)):
        raise InvalidSpec("client_id", client_id, "a DHCPv6 DUID in colon-separated hex")
    if hostname is None and client_id is None:
        raise InvalidSpec("hostname", None, "an IPv6 reservation needs a hostname or a client_id (DUID)")
    return Reservation(None, address, hostname, client_id.lower() if client_id else None)


def _refuse_overlap(network: str, host: Reservation, wanted: Reservation) -> None:
    """Raise if ``host`` (existing) and ``wanted`` share a MAC, IP or name."""
    where = f"on network {network!r}"
    if host.mac is not None and host.mac == wanted.mac:
        raise MacReserved(f"MAC {wanted.mac} is already reserved {where} for {host}; release it first",
                          other=str(host.hostname or host.ip))
    if host.ip == wanted.ip:
        raise IpReserved(f"{wanted.ip} is already reserved {where} for {host}; release it first",
                         other=str(host.mac or host.hostname))
    if wanted.hostname and host.hostname and host.hostname.lower() == wanted.hostname.lower():
        raise HostnameReserved(f"hostname {wanted.hostname!r} is already reserved {where} for {host}; release it first",
                               other=str(host.mac or host.client_id))
    if wanted.client_id and host.client_id == wanted.client_id:
        raise MacReserved(f"DUID {wanted.client_id} is already reserved {where} for {host}",
                          other=str(host.hostname or host.ip))


def _ip_ints(texts: list[str], family: int) -> set[int]:
    """libvirt's address texts as ints, in bulk (inet_pton: ~10x faster than ``ipaddress``).

    ``family`` (4 or 6) is the ``<ip>``'s. libvirt (9.0) also keeps a ``<host>``
    of the other family in an ``<ip>``; then ``ipaddress``, which reads both, does it.
    """
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    try:
        return {int.from_bytes(packed, "big") for packed in map(socket.inet_pton, repeat(af), texts)}
    except OSError:
        return {int(ipaddress.ip_address(text)) for text in texts}


def _lease(entry: dict[str, object]) -> Lease:
    mac = entry.get("mac")
    expiry = entry.get("expirytime")
    return Lease(
        mac=parse_mac(str(mac), "lease.mac") if mac else None,
        ip=netaddr.IPAddress(str(entry["ipaddr"])),
        hostname=str(entry["hostname"]) if entry.get("hostname") else None,
        expires=dt.datetime.fromtimestamp(int(str(expiry)), dt.timezone.utc) if expiry else None,
        client_id=str(entry["clientid"]) if entry.get("clientid") else None,
        interface=str(entry.get("iface") or ""),
    )


def _wait(done: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise LibvirtFailure("dnsmasq did not drop the lease in time")
        time.sleep(0.1)
