"""The connection to libvirt: the one place that calls ``libvirt.open``."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import logging
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import libvirt
import netaddr

from . import _libvirt
from .addressing import check_hostname, format_mac
from .domain import VM, lookup
from .domainxml import DomainSpec, mac_list
from .errors import (
    AddressConflict,
    AlreadyExists,
    ClientIdShared,
    HostnameReserved,
    InvalidSpec,
    IpReserved,
    LibvirtFailure,
    LibvmError,
    MacInUse,
    MacReserved,
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
            caps = self._conn.getCapabilities()
        return "<domain type='kvm'" in caps or '<domain type="kvm"' in caps

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
        if another libvm elsewhere takes it first, the next one is tried. The first NIC on each
        network is reserved under the VM's name as DHCP hostname (so dnsmasq
        resolves it), unless ``Nic.hostname`` says otherwise or the MAC is
        reserved already. ``virt_type=None`` picks
        ``kvm`` when libvirt offers it, falling back to ``qemu`` (TCG) with a
        warning if the guest cannot start under kvm.
        """
        # Everything but the NICs is validated first; NICs once they have addresses.
        spec = DomainSpec(name, memory, vcpus, (), disks, kernel, initrd, cmdline, serial_log,
                          graphics, virt_type or "kvm", uuid=uuid, autostart=autostart)
        auto = any(isinstance(nic, Nic) and nic.ip is None for nic in nics)
        if virt_type is None and not self.kvm_usable:  # slow the first time: not under the lock
            spec = dataclasses.replace(spec, virt_type="qemu")
        added: list[tuple[Network, Reservation]] = []
        owns_name = False
        try:
            with self._create_lock():
                try:
                    self.vm(name)
                    raise AlreadyExists(f"a domain named {name!r} already exists")
                except NotFound:
                    owns_name = True
                resolved = self._reserve_with_retry(name, nics, added, allow_dynamic, pool, auto)
                spec = dataclasses.replace(spec, nics=tuple(resolved))
                with _libvirt.translate(f"defining domain {name!r}"):
                    dom = self._conn.defineXML(spec.to_xml())
            if autostart:
                with _libvirt.translate(f"setting autostart of domain {name!r}"):
                    dom.setAutostart(1)
            if start:
                self._boot(dom, spec, auto=virt_type is None)
        except BaseException:
            # One handler for every step, so no window is left where a failure
            # (or Ctrl-C) between two steps skips the rollback.
            if owns_name:
                self._rollback(name, added)
            raise
        log.info("created domain %s with %s", name, ", ".join(f"{n.mac}={n.ip}" for n in resolved))
        return VM(self, dom)

    def _reserve_with_retry(self, name: str, nics: Sequence[Nic], added: list[tuple[Network, Reservation]],
                            allow_dynamic: bool, pool: tuple[str, str] | None, auto: bool) -> list[Nic]:
        """Resolve and reserve every NIC; on a lost allocation race, undo and allocate again."""
        for attempt in range(1, _ALLOCATION_ATTEMPTS + 1):
            try:
                resolved = self._resolve_nics(name, nics, allow_dynamic, pool)
                self._reserve_all(resolved, added, allow_dynamic, [n.ip is None for n in nics])
                return resolved
            except (AddressConflict, LibvirtFailure) as exc:
                # Another host (or a libvm without our lock) took the address
                # between our read and libvirt's atomic add: take the next one.
                if not (auto and _lost_race(exc)) or attempt == _ALLOCATION_ATTEMPTS:
                    raise
                self._rollback(name, added)
                added.clear()
                log.info("address taken concurrently (%s); allocating again", exc)
        raise AssertionError("unreachable")

    def _reserve_all(self, nics: list[Nic], added: list[tuple[Network, Reservation]], allow_dynamic: bool,
                     allocated: list[bool]) -> None:
        """Reserve every NIC's address; ``added`` collects what was new (for rollback).

        An address libvm allocated must be a fresh entry: finding it reserved
        already means another caller allocated the same one (same derived MAC).
        """
        for nic, fresh in zip(nics, allocated, strict=True):
            net = self.network(nic.network)
            existing = net.reservation_for(str(nic.mac))
            if existing is not None and fresh:
                raise IpReserved(f"{nic.ip} was allocated by another caller meanwhile", other=str(nic.mac))
            if existing is not None:
                net.reserve(str(nic.mac), str(nic.ip), nic.hostname, allow_dynamic=allow_dynamic)
                continue
            # Recorded before the call: a Ctrl-C or a lost connection right after
            # libvirt added the entry must still roll it back. Only a definite
            # refusal (a conflict) means the entry, if any, is somebody else's.
            entry = (net, Reservation(nic.mac, nic.ip, nic.hostname))
            added.append(entry)
            try:
                net.reserve(str(nic.mac), str(nic.ip), nic.hostname, allow_dynamic=allow_dynamic)
            except (AddressConflict, InvalidSpec, LibvirtFailure) as exc:
                if not isinstance(exc, LibvirtFailure) or exc.code == libvirt.VIR_ERR_OPERATION_INVALID:
                    added.remove(entry)
                raise

    def create_vms(self, specs: Sequence[dict[str, Any]]) -> list[VM]:
        """Create several VMs (each ``dict`` holds :meth:`create_vm`'s arguments).

        All or nothing: if one fails, the ones already created are deleted.
        """
        made: list[VM] = []
        try:
            for kwargs in specs:
                made.append(self.create_vm(**kwargs))
        except BaseException:
            for vm in reversed(made):
                vm.delete()
            raise
        return made

    def _boot(self, dom: libvirt.virDomain, spec: DomainSpec, auto: bool) -> None:
        try:
            with _libvirt.translate(f"starting domain {spec.name!r}"):
                dom.create()
        except LibvirtFailure as exc:
            if not (auto and spec.virt_type == "kvm"):
                raise
            log.warning("domain %s did not start under kvm (%s); falling back to qemu (TCG)", spec.name, exc)
            with _libvirt.translate(f"redefining domain {spec.name!r} for qemu"):
                self._conn.defineXML(dataclasses.replace(spec, virt_type="qemu").to_xml())
                dom.create()

    def _rollback(self, name: str, added: list[tuple[Network, Reservation]]) -> None:
        """Undo a half-made ``create_vm``: the domain ``name`` and the reservations in ``added``.

        The domain is looked up by name (``create_vm`` checked under its lock
        that none existed), so a define whose reply was lost still gets undone.
        If libvirtd went away mid-way, reconnect once and finish. A Ctrl-C
        during the rollback is held back until it is done. Never masks the
        original error.
        """
        with _sigint_deferred():
            for attempt in (1, 2):
                try:
                    with contextlib.suppress(NotFound):
                        self.vm(name).delete(release=False)
                    for net, res in added:
                        with contextlib.suppress(NotFound):
                            self.network(net.name).release(str(res.mac), ip=str(res.ip))
                    return
                except (LibvmError, libvirt.libvirtError) as exc:
                    if attempt == 2 or self._alive():
                        log.error("rollback of %s incomplete: %s", name, exc)
                        return
                    log.warning("libvirtd connection lost (%s); reconnecting to roll back %s", exc, name)
                    self._reconnect()

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

    def _resolve_nics(self, name: str, nics: Sequence[Nic], allow_dynamic: bool,
                      pool: tuple[str, str] | None = None) -> list[Nic]:
        """Give every NIC an IP and a MAC and check both against the whole hypervisor."""
        owners = self.mac_owners()
        resolved: list[Nic] = []
        for index, nic in enumerate(nics):
            if not isinstance(nic, Nic):
                raise InvalidSpec(f"nics[{index}]", nic, "a libvm.Nic")
            net = self.network(nic.network)
            ip = nic.ip
            if ip is None:
                taken = frozenset(n.ip for n in resolved if n.ip is not None and n.network == nic.network)
                ip = net.free_ip(pool=pool, avoid=taken)
            full = Nic(nic.network, ip=ip, mac=nic.mac, model=nic.model, hostname=nic.hostname)
            mac = str(full.mac)
            first_on_network = all(n.network != nic.network for n in resolved)
            if nic.hostname is None and first_on_network and net.reservation_for(mac) is None:
                full = dataclasses.replace(full, hostname=_dns_label(name))
            if mac in owners:
                raise MacInUse(f"nics[{index}].mac {mac} is already on an interface of domain "
                               f"{owners[mac]!r}", other=owners[mac])
            for other in resolved:
                if other.network == full.network and other.ip == full.ip:
                    raise IpReserved(f"nics[{index}].ip {full.ip} is given to two NICs", other=str(other.mac))
            self._refuse_ambiguous(index, nic.network, full.ip)
            try:
                net.check(mac, str(full.ip), full.hostname, allow_dynamic=allow_dynamic)
            except InvalidSpec as exc:
                raise InvalidSpec(f"nics[{index}].{exc.field}", exc.value, exc.reason) from exc
            resolved.append(full)
        return resolved

    def _refuse_ambiguous(self, index: int, network: str, ip: netaddr.IPAddress | None) -> None:
        """Refuse an IP that also lies in another running network's subnet."""
        for other in self.networks():
            if other.name == network or not other.active:
                continue
            for spec_ip in other.spec().ips:
                if ip is not None and ip.version == spec_ip.subnet.version and ip in spec_ip.subnet:
                    raise SubnetOverlap(
                        f"nics[{index}].ip {ip} of network {network!r} is also inside {spec_ip.subnet.cidr} "
                        f"of running network {other.name!r}; the address would be ambiguous",
                        other=other.name,
                    )

    @contextlib.contextmanager
    def _create_lock(self) -> Iterator[None]:
        """Serialise check-reserve-define across threads and local processes.

        libvirt refuses a duplicate ``<host>`` atomically, but the hypervisor-
        wide checks (a MAC on another domain, the next free IP) are read-then-
        write; a lock file per daemon makes them atomic for every libvm on this
        host (``$LIBVM_LOCK_DIR``, default /run/lock). Callers that do not share
        the lock (other hosts) are still kept apart by libvirt's atomic add and
        :meth:`create_vm`'s retry.
        """
        digest = hashlib.sha256(self._canonical_uri.encode()).hexdigest()[:16]
        base = Path(os.environ.get("LIBVM_LOCK_DIR") or
                    ("/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir()))
        with self._thread_lock, open(base / f"libvm-{digest}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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


_ALLOCATION_ATTEMPTS = 32


def _lost_race(exc: AddressConflict | LibvirtFailure) -> bool:
    """Whether ``exc`` means an address was taken between our check and libvirt's add."""
    if isinstance(exc, (IpReserved, MacReserved, HostnameReserved, MacInUse)):
        return True
    return isinstance(exc, LibvirtFailure) and exc.code == libvirt.VIR_ERR_OPERATION_INVALID


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the block; re-raise it after. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if caught:
            raise KeyboardInterrupt


def _dns_label(name: str) -> str | None:
    """The VM name as its DHCP hostname, if it is a valid DNS name."""
    try:
        return check_hostname(name)
    except InvalidSpec:
        return None


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
