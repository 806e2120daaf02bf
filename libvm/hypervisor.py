"""The connection to libvirt: the one place that calls ``libvirt.open``."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import urllib.parse
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import libvirt
import netaddr

from . import _libvirt, _xml, provision
from .addressing import format_mac
from .domain import VM, lookup
from .domainxml import VIRT_TYPES, DomainSpec, mac_list
from .errors import (
    ClientIdShared,
    InvalidSpec,
    LibvirtFailure,
    LibvmError,
    NetworkMismatch,
    NotFound,
    SubnetOverlap,
)
from .network import Network
from .networkxml import NetworkSpec
from .values import Disk, Lease, Nic, PathLike, Reservation, Vnc

log = logging.getLogger("libvm")

DEFAULT_URI = "qemu:///system"


def connect(uri: str | None = None) -> Hypervisor:
    """Open a libvirt connection.

    ``uri`` defaults to ``$LIBVIRT_DEFAULT_URI``, else ``qemu:///system``. Use
    the result as a context manager to close the connection.
    """
    uri = uri or os.environ.get("LIBVIRT_DEFAULT_URI") or DEFAULT_URI
    _libvirt.silence_default_handler()
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtFailure(
            f"cannot connect to {uri!r}: {exc.get_error_message()} (is libvirtd running, are you root?)",
            exc.get_error_code(),
        ) from exc
    return Hypervisor(conn, uri)


class Hypervisor:
    """A libvirt connection: networks, VMs and the rules that keep addresses unique."""

    def __init__(self, conn: libvirt.virConnect, uri: str) -> None:
        self._conn = conn
        self.uri = uri
        self._thread_lock = threading.RLock()
        self._client_ids: dict[tuple[str, str], str] = {}

    def __repr__(self) -> str:
        return f"<libvm.Hypervisor {self.uri!r}>"

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._conn.close()
            self._conn = None

    @property
    def handle(self) -> libvirt.virConnect:
        """The underlying ``libvirt.virConnect``, for what libvm does not cover."""
        return self._conn

    # -- networks ----------------------------------------------------------------

    def network(self, name: str) -> Network:
        """The existing network ``name``; :class:`NotFound` if there is none."""
        try:
            return Network(self, self._conn.networkLookupByName(name))
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
                raise NotFound(f"no network named {name!r}") from exc
            raise _libvirt.convert(exc, f"looking up network {name!r}") from exc

    def networks(self) -> list[Network]:
        """Every network, active or not, sorted by name."""
        with _libvirt.translate("listing networks"):
            handles = self._conn.listAllNetworks()
        return sorted((Network(self, n) for n in handles), key=lambda n: n.name)

    def ensure_network(
        self,
        name: str,
        subnet: str,
        *,
        dhcp_range: tuple[str, str] | None = None,
        forward: str = "nat",
        bridge: str | None = None,
        domain: str | None = None,
        subnet6: str | None = None,
        dhcp_range6: tuple[str, str] | None = None,
    ) -> Network:
        """Define, start and autostart network ``name``, or check the existing one.

        An existing network must have the same subnet, gateway, DHCP range and
        forward mode, else :class:`NetworkMismatch` names the first difference.
        A new subnet that overlaps another network's raises :class:`SubnetOverlap`.
        """
        wanted = NetworkSpec.build(name, subnet, dhcp_range=dhcp_range, forward=forward,
                                   bridge=bridge, domain=domain, subnet6=subnet6, dhcp_range6=dhcp_range6)
        try:
            existing = self.network(name)
        except NotFound:
            return self._define_network(wanted)
        _compare(wanted, existing.spec(inactive=existing.persistent))
        existing.start()
        return existing

    def _define_network(self, wanted: NetworkSpec) -> Network:
        for other in self.networks():
            for ip in other.spec(inactive=other.persistent).ips:
                for mine in wanted.ips:
                    if ip.subnet.version == mine.subnet.version and (
                        mine.subnet.cidr in ip.subnet.cidr or ip.subnet.cidr in mine.subnet.cidr
                    ):
                        raise SubnetOverlap(
                            f"subnet {mine.subnet.cidr} of network {wanted.name!r} overlaps "
                            f"{ip.subnet.cidr} of network {other.name!r}; an address would be ambiguous",
                            other=other.name,
                        )
        with _libvirt.translate(f"defining network {wanted.name!r}"):
            handle = self._conn.networkDefineXML(wanted.to_xml())
        net = Network(self, handle)
        try:
            with _libvirt.translate(f"starting network {wanted.name!r}"):
                handle.setAutostart(1)
                handle.create()
        except BaseException:
            net.delete()
            raise
        log.info("defined and started network %s (%s)", wanted.name, wanted.primary.subnet)
        return net

    # -- domains ---------------------------------------------------------------

    def vm(self, name: str) -> VM:
        """The existing domain ``name``; :class:`NotFound` if there is none."""
        return lookup(self, self._conn, name)

    def vms(self) -> list[VM]:
        """Every domain, running or not, sorted by name."""
        with _libvirt.translate("listing domains"):
            handles = self._conn.listAllDomains()
        return sorted((VM(self, d) for d in handles), key=lambda vm: vm.name)

    def mac_owners(self) -> dict[str, str]:
        """``{mac: domain name}`` for every interface of every domain."""
        owners: dict[str, str] = {}
        with _libvirt.translate("listing domains"):
            domains = self._conn.listAllDomains()
        for dom in domains:
            try:
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError:
                continue  # undefined while we listed
            for mac, _ in mac_list(xml):
                owners.setdefault(mac, dom.name())
        return owners

    def domain_active(self, name: str) -> bool:
        """Whether domain ``name`` exists and runs."""
        try:
            return self.vm(name).running
        except NotFound:
            return False

    @functools.cached_property
    def _canonical_uri(self) -> str:
        """The daemon's own name for this connection (``qemu:///system`` for any alias)."""
        with _libvirt.translate("reading the connection URI"):
            return str(self._conn.getURI())

    @functools.cached_property
    def kvm_usable(self) -> bool:
        """Whether libvirt offers ``kvm`` domains here (capabilities are slow: cached)."""
        with _libvirt.translate("reading capabilities"):
            caps = _xml.parse(self._conn.getCapabilities(), "capabilities")
        return caps.find("guest/arch/domain[@type='kvm']") is not None

    @functools.cached_property
    def is_local(self) -> bool:
        """Whether the daemon runs on this machine (no host in the URI): only then can
        libvm reach its dnsmasq to release leases."""
        return not urllib.parse.urlsplit(self._canonical_uri).hostname

    @property
    def default_virt_type(self) -> str:
        """What ``create_vm(virt_type=None)`` uses: ``$LIBVM_VIRT_TYPE``, else kvm if offered, else qemu.

        Set ``LIBVM_VIRT_TYPE=qemu`` where ``/dev/kvm`` opens but guests do not
        run (some nested virtualisation): libvirt then still offers kvm.
        """
        forced = os.environ.get("LIBVM_VIRT_TYPE")
        if forced:
            if forced not in VIRT_TYPES:
                raise InvalidSpec("LIBVM_VIRT_TYPE", forced, f"one of {', '.join(VIRT_TYPES)}")
            return forced
        return "kvm" if self.kvm_usable else "qemu"

    def create_vm(
        self,
        name: str,
        memory: int | str = 512,
        vcpus: int = 1,
        nics: Sequence[Nic] = (),
        *,
        disks: Sequence[Disk] = (),
        kernel: PathLike | None = None,
        initrd: PathLike | None = None,
        cmdline: str | None = None,
        serial_log: PathLike | None = None,
        graphics: Vnc | None = None,
        virt_type: str | None = None,
        uuid: str | None = None,
        start: bool = True,
        autostart: bool = False,
        allow_dynamic: bool = False,
        pool: tuple[str, str] | None = None,
    ) -> VM:
        """Reserve every NIC's address, define the domain and boot it.

        All or nothing: every value is checked and every conflict refused
        before libvirt is changed; if defining or starting fails (or the call is
        interrupted), the domain and the reservations it added are removed
        before the error propagates. A NIC without ``ip`` gets the network's
        next free address outside the dynamic range (within ``pool`` if given);
        if another libvm elsewhere takes it first, the next one is tried. The
        first NIC on each network is reserved under the VM's name as DHCP
        hostname (so dnsmasq resolves it), unless ``Nic.hostname`` says
        otherwise or the MAC is reserved already. ``virt_type=None`` picks
        :attr:`default_virt_type` (``kvm`` when libvirt offers it), falling
        back to ``qemu`` (TCG) with a warning if the guest cannot start under kvm.
        """
        # Everything but the NICs is validated first; NICs once they have addresses.
        spec = DomainSpec(name, memory, vcpus, (), disks, kernel, initrd, cmdline, serial_log,
                          graphics, virt_type or "kvm", uuid=uuid, autostart=autostart)
        return provision.Provisioner(self).create(spec, nics, virt_type is None, start=start, autostart=autostart,
                                                  allow_dynamic=allow_dynamic, pool=pool)

    def create_vms(self, specs: Sequence[dict[str, Any]]) -> list[VM]:
        """Create several VMs (each ``dict`` holds :meth:`create_vm`'s arguments).

        All or nothing: if one fails, the ones already created are removed
        again, with the reservations this call added; reservations that
        existed before the call stay.
        """
        before = {(net.name, res.mac, res.ip) for net in self.networks() for res in net.reservations()}
        made: list[VM] = []
        try:
            for kwargs in specs:
                made.append(self.create_vm(**kwargs))
        except BaseException:
            for vm in reversed(made):
                nics = vm.nics
                vm.delete(release=False)
                for nic in nics:
                    if nic.ip is not None and (nic.network, nic.mac, nic.ip) not in before:
                        self.network(nic.network).release(str(nic.mac), ip=str(nic.ip))
            raise
        return made

    def _alive(self) -> bool:
        try:
            return bool(self._conn.isAlive())
        except libvirt.libvirtError:
            return False

    def _reconnect(self, timeout: float = 30.0) -> None:
        """Replace a dead connection (libvirtd restarted), waiting for the daemon."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = libvirt.open(self.uri)
                break
            except libvirt.libvirtError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        with contextlib.suppress(libvirt.libvirtError):
            self._conn.close()
        self._conn = conn

    # -- helpers for VM and Network ------------------------------------------

    def _reservation(self, network: str, mac: str) -> Reservation | None:
        try:
            return self.network(network).reservation_for(mac)
        except NotFound:
            return None

    def _lease(self, network: str, mac: str, prefer: netaddr.IPAddress | None = None) -> Lease | None:
        """``mac``'s lease on ``network`` (the one on ``prefer`` if it has several)."""
        try:
            leases = [x for x in self.network(network).leases() if str(x.mac) == mac]
        except NotFound:
            return None
        preferred = [x for x in leases if x.ip == prefer] or leases
        return preferred[0] if preferred else None

    def _note_client_id(self, network: str, lease: Lease) -> None:
        """Remember which MAC presented which DHCP client-id; refuse a second MAC with it.

        dnsmasq keys a lease by client-id when there is one, so two guests
        cloned from one image (same /etc/machine-id, hence same DUID-based
        client-id) share one lease: on a dynamic range they get the same IP;
        with reservations each boot takes the lease from the other. The leases
        only ever show one of them, so libvm remembers what it has seen.
        """
        if lease.client_id is None or lease.mac is None:
            return
        mac = format_mac(lease.mac)
        key = (network, lease.client_id.lower())
        other = self._client_ids.get(key)
        if other is not None and other != mac:
            owner = self.mac_owners().get(other)
            if owner is not None and self.domain_active(owner):
                raise ClientIdShared(
                    f"{mac} and {other} (domain {owner!r}) present the same DHCP client-id "
                    f"{lease.client_id} on network {network!r}; dnsmasq gives them one lease. "
                    f"Give each clone its own /etc/machine-id (or DUID)",
                    other=owner,
                )
        self._client_ids[key] = mac

    def _forget(self, network: str, mac: str) -> None:
        """Release ``mac``'s reservations and leases on ``network`` (after a delete)."""
        try:
            net = self.network(network)
        except NotFound:
            return
        net.release(mac)
        for lease in net.leases():
            if lease.mac is not None and format_mac(lease.mac) == mac:
                try:
                    net.release_lease(lease)
                except LibvmError as exc:
                    log.warning("could not release lease %s of deleted %s: %s", lease.ip, mac, exc)

    def gc(self, *, remove: bool = False) -> list[tuple[str, Reservation]]:
        """Reservations whose MAC is on no domain's interface: ``[(network, reservation)]``.

        Lists them; removes them only with ``remove=True``. Never runs by itself.
        """
        owners = self.mac_owners()
        orphans = [
            (net.name, res)
            for net in self.networks()
            for res in net.reservations()
            if res.mac is not None and format_mac(res.mac) not in owners
        ]
        if remove:
            for network, res in orphans:
                self.network(network).release(str(res.mac))
        return orphans

    def unreserved_nics(self) -> list[tuple[str, str, str]]:
        """``(domain, mac, network)`` of every NIC on a libvirt network without a reservation."""
        reserved = {(net.name, format_mac(r.mac)) for net in self.networks()
                    for r in net.reservations() if r.mac is not None}
        return [
            (vm.name, mac, network)
            for vm in self.vms()
            for mac, network in mac_list(vm.xml(inactive=True))
            if network is not None and (network, mac) not in reserved
        ]


def _compare(wanted: NetworkSpec, actual: NetworkSpec) -> None:
    """Raise :class:`NetworkMismatch` at the first setting that differs."""
    checks = [("forward", wanted.forward, actual.forward)]
    if wanted.bridge is not None:
        checks.append(("bridge", wanted.bridge, actual.bridge or ""))
    for want, label in zip(wanted.ips, ("", "6"), strict=False):
        have = next((ip for ip in actual.ips if ip.subnet.version == want.subnet.version), None)
        checks += [
            (f"subnet{label}", str(want.subnet.cidr), str(have.subnet.cidr) if have else "none"),
            (f"gateway{label}", str(want.gateway), str(have.gateway) if have else "none"),
            (f"dhcp_range{label}", _ranges(want.dhcp_ranges), _ranges(have.dhcp_ranges) if have else "none"),
        ]
    for field, want_value, have_value in sorted(checks, key=lambda c: c[0] == "forward"):
        if want_value != have_value:
            raise NetworkMismatch(wanted.name, field, want_value, have_value)


def _ranges(ranges: tuple[tuple[netaddr.IPAddress, netaddr.IPAddress], ...]) -> str:
    return ",".join(f"{a}-{b}" for a, b in ranges) or "none"
