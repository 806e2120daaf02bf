"""A live libvirt domain: lifecycle and the address its guest holds."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import libvirt
import netaddr

from ._live import InvalidState, Live, Unsupported, translate
from .addressing import format_mac
from .domainxml import DomainDoc, DomainSpec, read_domain
from .errors import AddressMismatch, InvalidSpec, LibvmError, NotFound, WaitTimeout
from .network import Network
from .values import Lease, Nic, Reservation, check_int
from .views import NicRow, Rendered, Table, lease_of, reservation_of, vm_table

if TYPE_CHECKING:
    from .hypervisor import Hypervisor

log = logging.getLogger("libvm")


class VMState(str, enum.Enum):
    """A domain's state, as ``virsh domstate`` words it."""

    NOSTATE = "no state"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "in shutdown"
    SHUTOFF = "shut off"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    UNDEFINED = "undefined"

    def __str__(self) -> str:
        return self.value


_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: VMState.NOSTATE,
    libvirt.VIR_DOMAIN_RUNNING: VMState.RUNNING,
    libvirt.VIR_DOMAIN_BLOCKED: VMState.BLOCKED,
    libvirt.VIR_DOMAIN_PAUSED: VMState.PAUSED,
    libvirt.VIR_DOMAIN_SHUTDOWN: VMState.SHUTDOWN,
    libvirt.VIR_DOMAIN_SHUTOFF: VMState.SHUTOFF,
    libvirt.VIR_DOMAIN_CRASHED: VMState.CRASHED,
    libvirt.VIR_DOMAIN_PMSUSPENDED: VMState.PMSUSPENDED,
}


class VM(Rendered):
    """A libvirt domain. Get one from :meth:`Hypervisor.vm` or :meth:`Hypervisor.create_vm`.

    In Jupyter or IPython it shows as a table: one row per NIC (see :mod:`libvm.views`).
    """

    #: The :class:`Hypervisor` the domain is on, where libvm knows it: every VM a
    #: :class:`libvm.Fleet` returns has it (``vm.hypervisor.uri``: where it landed); else ``None``.
    hypervisor: Hypervisor | None = None

    def __init__(self, live: Live, handle: libvirt.virDomain) -> None:
        self._live = live
        self._dom = handle
        self._generation = live.generation
        self.name: str = handle.name()

    def __repr__(self) -> str:
        return f"<libvm.VM {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        """The same domain on the same connection (``hv.vm("x") == hv.vm("x")``)."""
        return isinstance(other, VM) and other._live is self._live and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self._live), self.name))

    def table(self) -> Table:
        """The VM's NICs: state, MAC, reserved IP, hostname, leased IP and its expiry."""
        return vm_table(nic_rows([self]))

    @property
    def handle(self) -> libvirt.virDomain:
        """The underlying ``libvirt.virDomain``, for what libvm does not cover.

        Looked up again after the connection was re-established (libvirtd restart).
        """
        if self._generation != self._live.generation or self._live.closed:
            self._dom = self._live.domain(self.name)
            self._generation = self._live.generation
        return self._dom

    def xml(self, inactive: bool = False) -> str:
        """The domain XML as libvirt has it (``inactive``: the persistent config)."""
        if not isinstance(inactive, bool):
            raise InvalidSpec("inactive", inactive, "True or False")
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with translate(f"domain {self.name!r}"):
            return str(self.handle.XMLDesc(flags))

    def document(self) -> DomainDoc:
        """The persistent config read once: its :class:`DomainSpec` and every interface.

        :meth:`spec`, :attr:`macs` and :attr:`nics` are views of this one reading.
        """
        return read_domain(self.xml(inactive=True))

    def spec(self) -> DomainSpec:
        """The domain parsed into a :class:`DomainSpec` (its persistent config)."""
        return self.document().spec

    @property
    def state(self) -> VMState:
        """The current state; ``UNDEFINED`` once the domain is gone."""
        try:
            with translate(f"state of domain {self.name!r}"):
                code = self.handle.state()[0]
        except NotFound:
            return VMState.UNDEFINED
        return _STATES.get(code, VMState.NOSTATE)

    @property
    def running(self) -> bool:
        """Whether qemu is running for this domain."""
        return self.state in (VMState.RUNNING, VMState.BLOCKED, VMState.PAUSED, VMState.SHUTDOWN)

    @property
    def macs(self) -> list[str]:
        """The MAC of every interface (on a network, a bridge or other), in order."""
        return [interface.mac for interface in self.document().interfaces]

    @property
    def nics(self) -> list[Nic]:
        """Every NIC on a libvirt network as the domain defines it (network, MAC,
        model), with the IP and hostname reserved for its MAC (``None`` if none)."""
        result = []
        for nic in self.spec().nics:
            try:
                reservation = Network(self._live, self._live.network(nic.network)).reservation_for(nic.mac)
            except NotFound:
                reservation = None
            if reservation is not None:
                nic = dataclasses.replace(nic, ip=reservation.ip, hostname=reservation.hostname)
            result.append(nic)
        return result

    @property
    def ip(self) -> netaddr.IPAddress | None:
        """The reserved address of the first NIC that has one, else its current lease."""
        nics = self.nics
        for nic in nics:
            if nic.ip is not None:
                return nic.ip
        for nic in nics:
            lease = self._lease(nic)
            if lease is not None:
                return lease.ip
        return None

    def _lease(self, nic: Nic) -> Lease | None:
        """``nic``'s lease (the one on its reserved address if it has several)."""
        try:
            leases = [x for x in Network(self._live, self._live.network(nic.network)).leases() if x.mac == nic.mac]
        except NotFound:
            return None
        preferred = [x for x in leases if x.ip == nic.ip] or leases
        return preferred[0] if preferred else None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Boot the domain (no-op if it runs)."""
        if not self.running:
            # A network that reserve_many is restarting must not lose this guest's port.
            with self._live.attaching(nic.network for nic in self.spec().nics), \
                    translate(f"starting domain {self.name!r}"):
                self.handle.create()

    def shutdown(self, timeout: float | None = 60.0, *, poll: float = 0.25) -> bool:
        """Ask the guest to power off (ACPI power button) and wait up to ``timeout``
        seconds; if it is still running then, power it off at once (:meth:`destroy`).

        Returns ``True`` if the guest stopped by itself (or was not running),
        ``False`` if it had to be destroyed. ``timeout=None`` only asks and
        returns ``True`` at once. Raises :class:`InvalidSpec` for bad arguments,
        :class:`LibvirtFailure` if libvirt fails.
        """
        if timeout is not None:
            _check_seconds("timeout", timeout)
        _check_seconds("poll", poll)
        if not self.running:
            return True
        with contextlib.suppress(InvalidState), translate(f"shutting down domain {self.name!r}"):
            self.handle.shutdown()  # InvalidState: it stopped meanwhile
        if timeout is None:
            return True
        deadline = time.monotonic() + timeout
        while self.running:
            if time.monotonic() > deadline:
                log.info("domain %s ignored the ACPI shutdown for %g s; destroying it", self.name, timeout)
                self.destroy()
                return False
            time.sleep(min(poll, max(0.0, deadline - time.monotonic()) + 0.01))
        return True

    def destroy(self) -> None:
        """Power off at once (idempotent)."""
        with contextlib.suppress(NotFound, InvalidState):  # gone, or stopped since the check
            if self.running:
                with translate(f"destroying domain {self.name!r}"):
                    self.handle.destroy()

    def undefine(self) -> None:
        """Remove the domain's definition (idempotent).

        A running domain keeps running, transient (libvirt's rule), and is gone
        once it stops; :meth:`delete` powers it off first.
        """
        # NVRAM: a UEFI guest made by virt-install cannot be undefined without it.
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        for attempt in (flags, 0):
            try:
                with translate(f"undefining domain {self.name!r}"):
                    self.handle.undefineFlags(attempt)
                return
            except NotFound:
                return
            except Unsupported:
                if not attempt:  # drivers without NVRAM support (test:///) refuse the flag
                    raise

    def delete(self, *, release: bool = True, storage: bool = False) -> None:
        """Destroy, undefine and (``release``) drop its reservations and leases.

        Idempotent. Releasing the leases too means the address can be given to
        a new VM at once instead of after the old lease expires. ``storage=True``
        also removes the volumes ``create_vm`` made for this VM (its overlays
        and cloud-init seed, listed in the domain's metadata); never a base
        image, never a disk given by path. Raises :class:`InvalidSpec` for
        non-bool flags, :class:`LibvirtFailure` if libvirt fails.
        """
        for flag, value in (("release", release), ("storage", storage)):
            if not isinstance(value, bool):
                raise InvalidSpec(flag, value, "True or False")
        exists = self.state is not VMState.UNDEFINED
        nics = self.nics if exists else []
        owned = self.spec().volumes if exists and storage else ()
        self.destroy()
        self.undefine()
        for path in owned:
            try:
                with translate(f"deleting volume {path}"):
                    self._live.volume_at(path).delete(0)
                log.info("deleted volume %s of domain %s", path, self.name)
            except NotFound:
                log.warning("volume %s of domain %s is in no storage pool any more (pool deleted?); "
                            "its file, if any, is left alone", path, self.name)
        if release:
            for nic in nics:
                with contextlib.suppress(NotFound):  # the network went first
                    Network(self._live, self._live.network(nic.network)).forget(nic.mac)
        log.info("deleted domain %s", self.name)

    # -- addresses ---------------------------------------------------------------

    def wait_for_ips(self, timeout: float = 120.0, poll: float = 0.5) -> dict[str, netaddr.IPAddress]:
        """Wait until every NIC holds a lease; returns ``{mac: ip}``.

        A NIC with a reservation must hold exactly the reserved address:
        a lease on another address raises :class:`AddressMismatch` at once. A
        DHCP client-id already seen from another running VM's MAC raises
        :class:`ClientIdShared` (cloned images share one lease).
        Raises :class:`WaitTimeout` if the guest has not obtained all its
        addresses in ``timeout`` seconds, or :class:`LibvmError` if it stops.
        """
        return wait_for_leases([self], timeout, poll)[self.name]

    def wait_for_ip(self, timeout: float = 120.0, poll: float = 0.5) -> netaddr.IPAddress:
        """Wait for every NIC's lease (see :meth:`wait_for_ips`); return the first NIC's address."""
        found = self.wait_for_ips(timeout, poll)
        first = self.macs[0] if self.macs[0] in found else next(iter(found))
        return found[first]


    def wait_for_ssh(self, timeout: float = 300.0, *, port: int = 22, poll: float = 0.5) -> netaddr.IPAddress:
        """Wait until the guest is ready: its reserved address, then an SSH server on it.

        Stage 1 is :meth:`wait_for_ip` (the lease must be the reserved address;
        skipped for a guest created with ``CloudInit(static_network=True)``, which
        takes no lease, so the first reserved address is probed);
        stage 2 connects to ``port`` (TCP) on that address from where the caller
        runs and waits for a line starting with ``SSH-`` (the server's banner).
        ``timeout`` (seconds) covers both stages. Returns the address.

        Raises :class:`WaitTimeout` naming the stage that did not finish and what
        was seen (no lease; connection refused; no banner; another banner),
        :class:`AddressMismatch` as :meth:`wait_for_ip` does, :class:`InvalidSpec`
        for bad arguments.
        """
        _check_seconds("timeout", timeout)
        _check_seconds("poll", poll)
        check_int(port, "port", 1, 65535)
        deadline = time.monotonic() + timeout
        if self.spec().static_network:  # no lease to wait for: probe the reserved address
            reserved = next((nic.ip for nic in self.nics if nic.ip is not None), None)
            if reserved is None:
                raise LibvmError(f"domain {self.name!r} has no reserved address to probe")
            ip = reserved
        else:
            try:
                ip = self.wait_for_ip(timeout, poll)
            except WaitTimeout as exc:
                raise WaitTimeout(f"domain {self.name!r}, stage 1 of 2 (DHCP lease): {exc}") from exc
        seen = "nothing yet"
        while True:
            left = deadline - time.monotonic()
            banner, seen = _ssh_banner(str(ip), port, max(0.1, min(5.0, left)))
            if banner:
                return ip
            if time.monotonic() > deadline:
                raise WaitTimeout(f"domain {self.name!r}, stage 2 of 2 (SSH on {ip}:{port}): no 'SSH-' banner "
                                  f"after {timeout:g} s; last attempt: {seen}")
            if not self.running:
                raise LibvmError(f"domain {self.name!r} is {self.state} while waiting for SSH on {ip}:{port}")
            time.sleep(min(poll, max(0.0, deadline - time.monotonic()) + 0.01))


def wait_for_leases(vms: Sequence[VM], timeout: float, poll: float,
                    step: Callable[[], None] | None = None) -> dict[str, dict[str, netaddr.IPAddress]]:
    """Wait until every NIC of every VM holds a lease; ``{vm name: {mac: ip}}``.

    What :meth:`VM.wait_for_ips` promises, for many VMs at once: each round
    reads each network's leases once, however many VMs wait on it. ``step()``
    is called once per VM whose NICs all have their address.
    """
    _check_seconds("timeout", timeout)
    _check_seconds("poll", poll)
    pending: dict[str, tuple[VM, list[Nic]]] = {}
    networks: dict[tuple[int, str], Network] = {}
    for vm in vms:
        if vm.document().spec.static_network:
            raise LibvmError(f"domain {vm.name!r} sets its addresses itself (cloud-init static_network): "
                             f"there is no DHCP lease to wait for; use wait_for_ssh()")
        nics = vm.nics
        if not nics:
            raise LibvmError(f"domain {vm.name!r} has no interface on a libvirt network")
        pending[vm.name] = (vm, nics)
        for nic in nics:
            key = (id(vm._live), nic.network)
            if key not in networks:
                networks[key] = Network(vm._live, vm._live.network(nic.network))
    deadline = time.monotonic() + timeout
    found: dict[str, dict[str, netaddr.IPAddress]] = {name: {} for name in pending}
    while True:
        watched = {(id(vm._live), nic.network) for vm, nics in pending.values() for nic in nics}
        markers = {key: networks[key].lease_marker() for key in watched}
        leases = {key: networks[key].leases() for key in watched}
        for name, (vm, nics) in list(pending.items()):
            for nic in nics:
                assert nic.mac is not None  # a domain's NIC always has one
                mac = str(nic.mac)
                if mac in found[name]:
                    continue
                lease = lease_of(format_mac(nic.mac), nic.ip, leases[(id(vm._live), nic.network)])
                if lease is None:
                    continue
                if nic.ip is not None and lease.ip != nic.ip:
                    raise AddressMismatch(mac, str(nic.ip), str(lease.ip))
                vm._live.note_client_id(nic.network, lease)
                found[name][mac] = lease.ip
            if len(found[name]) == len(nics):
                del pending[name]
                if step is not None:
                    step()
        if not pending:
            return found
        for vm, _ in pending.values():
            if not vm.running:
                raise LibvmError(f"domain {vm.name!r} is {vm.state} before all NICs got an address")
        if time.monotonic() > deadline:
            missing = "; ".join(
                f"domain {name!r}: no lease for " + ", ".join(str(n.mac) for n in nics if str(n.mac) not in found[name])
                for name, (_, nics) in pending.items())
            raise WaitTimeout(f"{missing} after {timeout:g} s")
        keys = list(markers)
        _wait_for_change([networks[key] for key in keys], [markers[key] for key in keys],
                         min(poll, max(0.0, deadline - time.monotonic()) + 0.01))


def nic_rows(vms: Iterable[VM]) -> list[NicRow]:
    """A table row per NIC of each VM, reading each network's reservations and leases once."""
    cache: dict[tuple[int, str], tuple[list[Reservation], list[Lease]] | None] = {}

    def facts(vm: VM, network: str) -> tuple[list[Reservation], list[Lease]] | None:
        key = (id(vm._live), network)
        if key not in cache:
            try:
                net = Network(vm._live, vm._live.network(network))
                cache[key] = (net.reservations(), net.leases())
            except NotFound:
                cache[key] = None
        return cache[key]

    rows = []
    for vm in vms:
        state = vm.state
        try:
            interfaces = vm.document().interfaces if state is not VMState.UNDEFINED else []
        except NotFound:  # undefined since
            interfaces = []
        if not interfaces:
            rows.append(NicRow(vm.name, str(state), None, None, None, None))
        for index, interface in enumerate(interfaces):
            known = facts(vm, interface.network) if interface.network is not None else None
            reservation = reservation_of(interface.mac, known[0]) if known else None
            lease = lease_of(interface.mac, reservation.ip if reservation else None, known[1]) if known else None
            rows.append(NicRow(vm.name if index == 0 else "", str(state) if index == 0 else "",
                               interface.network, interface.mac, reservation, lease))
    return rows


#: How often a waiter looks at dnsmasq's lease file (a stat, not a libvirt call).
_WATCH_INTERVAL = 0.01


def _wait_for_change(networks: list[Network], markers: list[tuple[int, int, int] | None], most: float) -> None:
    """Sleep up to ``most`` seconds, returning early once a network's lease table changed.

    Without a local lease file to watch (remote daemon, test driver) this is
    a plain sleep: the caller then asks libvirt every ``poll`` seconds.
    """
    if all(marker is None for marker in markers):
        time.sleep(most)
        return
    until = time.monotonic() + most
    while time.monotonic() < until:
        time.sleep(min(_WATCH_INTERVAL, max(0.0, until - time.monotonic())))
        watched = zip(networks, markers, strict=True)
        if any(marker is not None and net.lease_marker() != marker for net, marker in watched):
            return


def _ssh_banner(host: str, port: int, timeout: float) -> tuple[bool, str]:
    """Connect and read the first line: (whether it is an SSH banner, what happened)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            data = b""
            while b"\n" not in data and len(data) < 256:
                chunk = conn.recv(256)
                if not chunk:
                    break
                data += chunk
    except ConnectionRefusedError:
        return False, "connection refused"
    except TimeoutError:
        return False, f"no answer within {timeout:.1f} s"
    except OSError as exc:
        return False, exc.strerror or str(exc)
    line = data.split(b"\n", 1)[0].strip()
    if line.startswith(b"SSH-"):
        return True, line.decode(errors="replace")
    return False, f"banner {line[:60]!r}" if line else "connection closed without a banner"


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise InvalidSpec(name, value, "a finite number of seconds, 0 or more")
