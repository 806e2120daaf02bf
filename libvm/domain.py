"""A live libvirt domain: lifecycle and the address its guest holds."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import netaddr

from . import _live
from ._live import DomainHandle, InvalidState, Live
from ._log import log
from .domainxml import DomainDoc, DomainSpec, GuestLogin, Interface, read_domain
from .errors import (
    AddressMismatch,
    DomainStopped,
    HostKeyUnavailable,
    InvalidSpec,
    NotFound,
    NothingToWaitFor,
    WaitTimeout,
)
from .hostkey import HostKey
from .ssh import SshTarget
from .values import Lease, Nic, Reservation, check_bool, check_int, check_path, check_poll, lease_of, reservation_of
from .views import NicRow, Rendered, Table, vm_table

if TYPE_CHECKING:
    from .hypervisor import Hypervisor
    from .network import Network



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


_STATES = {code: VMState[name] for name, code in _live.DOMAIN_STATES.items()}
#: The states in which qemu runs for the domain.
_ALIVE = (VMState.RUNNING, VMState.BLOCKED, VMState.PAUSED, VMState.SHUTDOWN)


def _network(live: Live, name: str) -> Network:
    """The network ``name`` on ``live`` (:class:`NotFound` if there is none).

    The one place this module reaches for :mod:`libvm.network`, imported here:
    the network module needs nothing from this one, and should never have to.
    """
    from .network import Network

    return Network.named(live, name)


def _forget(live: Live, network: str, nics: list[Nic]) -> None:
    """What deleted NICs leave on ``network``: reservations (IPv6 ones too), DNS names, leases."""
    with contextlib.suppress(NotFound):  # the network went first
        _network(live, network).forget(*(nic.mac for nic in nics if nic.mac is not None),
                                       ips=[nic.ip6 for nic in nics if isinstance(nic.ip6, netaddr.IPAddress)])


class VM(Rendered):
    """A libvirt domain. Get one from :meth:`Hypervisor.vm` or :meth:`Hypervisor.create_vm`.

    In Jupyter or IPython it shows as a table: one row per NIC (see :mod:`libvm.views`).
    """

    #: The :class:`Hypervisor` the domain is on, where libvm knows it: every VM a
    #: :class:`libvm.Fleet` returns has it (``vm.hypervisor.uri``: where it landed); else ``None``.
    hypervisor: Hypervisor | None = None

    def __init__(self, live: Live, handle: DomainHandle) -> None:
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

    @classmethod
    def rows_of(cls, items: Sequence[VM]) -> list[tuple[str, ...]]:
        """The rows of many VMs' tables, reading each network's reservations and leases once."""
        return [row.cells() for row in nic_rows(items)]

    @property
    def handle(self) -> DomainHandle:
        """The underlying ``libvirt.virDomain``, for what libvm does not cover.

        Looked up again after the connection was re-established (libvirtd restart).
        """
        if self._generation != self._live.ensure():
            self._dom = self._live.domain(self.name)
            self._generation = self._live.generation
        return self._dom

    def xml(self, inactive: bool = False) -> str:
        """The domain XML as libvirt has it (``inactive``: the persistent config)."""
        return _live.domain_xml(self.handle, inactive=check_bool(inactive, "inactive"))

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
            code = _live.domain_state(self.handle)
        except NotFound:
            return VMState.UNDEFINED
        return _STATES.get(code, VMState.NOSTATE)

    @property
    def running(self) -> bool:
        """Whether qemu is running for this domain."""
        return self.state in _ALIVE

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
                reservation = _network(self._live, nic.network).reservation_for(nic.mac)
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

    @property
    def login(self) -> GuestLogin:
        """What ``create_vm`` recorded for SSH logins: host key, user, key path (each may be ``None``)."""
        return self.spec().login

    @property
    def host_key(self) -> HostKey | None:
        """The SSH host key libvm gave the guest in its seed (``None``: created without one).

        ``str(vm.host_key)`` is the ``known_hosts`` form, ``vm.host_key.fingerprint`` ``SHA256:...``.
        """
        text = self.login.host_key
        return None if text is None else HostKey.parse(text, "host_key")

    def _lease(self, nic: Nic) -> Lease | None:
        """``nic``'s lease (the one on its reserved address if it has several)."""
        try:
            return lease_of(nic.mac, nic.ip, _network(self._live, nic.network).leases())
        except NotFound:
            return None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Boot the domain (no-op if it runs)."""
        if not self.running:
            # A network that reserve_many is restarting must not lose this guest's port.
            with self._live.attaching(nic.network for nic in self.spec().nics):
                _live.start_domain(self.handle)

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
        check_poll(poll)
        if not self.running:
            return True
        with contextlib.suppress(InvalidState):  # it stopped meanwhile
            _live.shutdown_domain(self.handle)
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
                _live.destroy_domain(self.handle)

    def undefine(self) -> None:
        """Remove the domain's definition (idempotent).

        A running domain keeps running, transient (libvirt's rule), and is gone
        once it stops; :meth:`delete` powers it off first.
        """
        with contextlib.suppress(NotFound):
            _live.undefine_domain(self.handle)

    def delete(self, *, release: bool = True, storage: bool = False) -> None:
        """Destroy, undefine and (``release``) drop its reservations and leases.

        Idempotent. Releasing the leases too means the address can be given to
        a new VM at once instead of after the old lease expires. ``storage=True``
        also removes the volumes ``create_vm`` made for this VM (its overlays
        and cloud-init seed, listed in the domain's metadata); never a base
        image, never a disk given by path. Raises :class:`InvalidSpec` for
        non-bool flags, :class:`LibvirtFailure` if libvirt fails.
        """
        check_bool(release, "release")
        check_bool(storage, "storage")
        # One reading of the definition and the state (at once over a network link).
        try:
            xml, code = self._live.fan_out(lambda: _live.domain_xml(self.handle, inactive=True),
                                           lambda: _live.domain_state(self.handle))
        except NotFound:
            log.info("domain %s is gone already", self.name)
            return
        spec = read_domain(xml).spec
        if _STATES.get(code) in _ALIVE:
            with contextlib.suppress(NotFound, InvalidState):  # stopped meanwhile
                _live.destroy_domain(self.handle)
        self.undefine()
        owned = (spec.volumes if storage else ()) + spec.scratch
        for path in owned:
            try:
                _live.delete_volume(self._live, path)
                log.info("deleted volume %s of domain %s", path, self.name)
            except NotFound:
                log.warning("volume %s of domain %s is in no storage pool any more (pool deleted?); "
                            "its file, if any, is left alone", path, self.name)
        if release:
            # Each network read once for all of the VM's NICs on it; networks at once over a link.
            by_network: dict[str, list[Nic]] = {}
            for nic in spec.nics:
                by_network.setdefault(nic.network, []).append(nic)
            self._live.fan_out(*(functools.partial(_forget, self._live, network, nics)
                                 for network, nics in by_network.items()))
        log.info("deleted domain %s", self.name)

    # -- addresses ---------------------------------------------------------------

    def wait_for_ips(self, timeout: float = 120.0, poll: float = 0.5) -> dict[str, netaddr.IPAddress]:
        """Wait until every NIC holds a lease; returns ``{mac: ip}``.

        A NIC with a reservation must hold exactly the reserved address:
        a lease on another address raises :class:`AddressMismatch` at once. A
        DHCP client-id already seen from another running VM's MAC raises
        :class:`ClientIdShared` (cloned images share one lease).
        Raises :class:`WaitTimeout` if the guest has not obtained all its
        addresses in ``timeout`` seconds, :class:`DomainStopped` if it stops,
        :class:`NothingToWaitFor` if it has no interface on a libvirt network or
        takes no lease (``CloudInit(static_network=True)``).
        """
        return wait_for_leases([self], timeout, poll)[self.name]

    def wait_for_ip(self, timeout: float = 120.0, poll: float = 0.5) -> netaddr.IPAddress:
        """Wait for every NIC's lease (see :meth:`wait_for_ips`); return the first NIC's address."""
        found = self.wait_for_ips(timeout, poll)
        first = self.macs[0] if self.macs[0] in found else next(iter(found))
        return found[first]


    def wait_for_ssh(self, timeout: float = 300.0, *, port: int = 22, poll: float = 0.5,
                     via: SshTarget | str | None = "auto") -> netaddr.IPAddress:
        """Wait until the guest is ready: its reserved address, then an SSH server on it.

        Stage 1 is :meth:`wait_for_ip` (the lease must be the reserved address;
        skipped for a guest created with ``CloudInit(static_network=True)``, which
        takes no lease, so the first reserved address is probed);
        stage 2 connects to ``port`` (TCP) on that address and waits for a line
        starting with ``SSH-`` (the server's banner). ``timeout`` (seconds)
        covers both stages. Returns the address.

        ``via``: where stage 2 connects from. ``"auto"`` (default): through the
        hypervisor's SSH for a ``qemu+ssh://`` connection (same user, host, port
        and key: ``ssh -W``; a guest on the hypervisor's NAT network is not
        routable from here), directly otherwise; ``None``: directly; an
        :class:`libvm.ssh.SshTarget` or ``"user@host[:port]"``: through that
        host. The hop's host key is checked against ``known_hosts`` as ``ssh``
        checks it.

        Raises :class:`WaitTimeout` naming the stage that did not finish and what
        was seen (no lease; connection refused; no banner; another banner),
        :class:`AddressMismatch` as :meth:`wait_for_ip` does, :class:`DomainStopped`
        if the guest stops, :class:`NothingToWaitFor` for a static guest without
        a reserved address, :class:`InvalidSpec` for bad arguments.
        """
        _check_seconds("timeout", timeout)
        check_poll(poll)
        check_int(port, "port", 1, 65535)
        hop = _hop(self._live.uri, via)
        deadline = time.monotonic() + timeout
        spec = self.spec()
        if spec.static_network:  # no lease to wait for: probe the reserved address
            reserved = next((nic.ip for nic in self.nics if nic.ip is not None), None)
            if reserved is None:
                raise NothingToWaitFor(f"domain {self.name!r} sets its addresses itself (cloud-init "
                                       f"static_network) and has no reserved address to probe", domain=self.name)
            ip = reserved
        else:
            try:
                ip = self.wait_for_ip(timeout, poll)
            except WaitTimeout as exc:
                raise WaitTimeout(f"domain {self.name!r}, stage 1 of 2 (DHCP lease): {exc}") from exc
        seen = "nothing yet"
        while True:
            left = deadline - time.monotonic()
            if hop is None:
                banner, seen = _ssh_banner(str(ip), port, max(0.1, min(5.0, left)))
            else:
                banner, seen = _ssh_banner_via(hop, str(ip), port, max(1.0, min(15.0, left)))
            if banner and spec.login.host_key is None:
                return ip
            if banner:
                target = SshTarget(str(ip), user=spec.login.user, port=port, via=hop, host_key=spec.login.host_key)
                unverified = self._verify(target, max(5.0, min(30.0, deadline - time.monotonic())))
                if unverified is None:
                    return ip
                seen = unverified
            where = "" if hop is None else f" through {hop.destination}"
            if time.monotonic() > deadline:
                what = "a banner but no host key shown" if banner else "no 'SSH-' banner"
                raise WaitTimeout(f"domain {self.name!r}, stage 2 of 2 (SSH on {ip}:{port}{where}): {what} "
                                  f"after {timeout:g} s; last attempt: {seen}")
            state = self.state
            if state not in _ALIVE:
                raise DomainStopped(f"domain {self.name!r} is {state} while waiting for SSH on {ip}:{port}",
                                    domain=self.name, state=str(state))
            time.sleep(min(poll, max(0.0, deadline - time.monotonic()) + 0.01))

    def _verify(self, target: SshTarget, timeout: float) -> str | None:
        """``None`` once the guest showed the pinned host key, else what happened instead.

        Raises :class:`HostKeyMismatch` if it showed another key.
        """
        from . import hostkey

        assert target.host_key is not None
        seen = hostkey.probe(target.probe_argv(), timeout)
        if hostkey.check(HostKey.parse(target.host_key), seen, domain=self.name, address=target.host):
            return None
        return seen.last

    # -- logging in --------------------------------------------------------------

    def ssh_target(self, *, user: str | None = None, key: str | os.PathLike[str] | None = None,
                   via: SshTarget | str | None = "auto", port: int = 22) -> SshTarget:
        """Where :meth:`ssh` connects: the first NIC's reserved address (else its lease), as
        ``user`` (default: the user the seed names), with ``key`` (default: the key path
        given at create time, else ssh's own choice), through ``via`` (as for
        :meth:`wait_for_ssh`), accepting only the host key libvm gave the guest.

        Raises :class:`InvalidSpec` when no user is known (pass ``user=``),
        :class:`NotFound` when the VM has no address.
        """
        from .ssh import parse_target

        check_int(port, "port", 1, 65535)
        login = self.login
        user = user if user is not None else login.user
        if user is None:
            raise InvalidSpec("user", None, f"domain {self.name!r} was created without a login user "
                                            "(CloudInit(user=...)): pass the image's, e.g. user='debian'")
        parse_target(f"{user}@x", "user")  # one word, no '@' or spaces
        keyfile = str(check_path(key, "key")) if key is not None else login.identity
        ip = self.ip
        if ip is None:
            raise NotFound(f"domain {self.name!r} has no reserved or leased address to log in to")
        return SshTarget(str(ip), user=user, port=None if port == 22 else port, keyfile=keyfile,
                         via=_hop(self._live.uri, via), host_key=login.host_key)

    def check_host_key(self, target: SshTarget | None = None, timeout: float = 30.0) -> str | None:
        """Connect once and check the guest's host key; its fingerprint (``None``: no key was stored).

        Raises :class:`HostKeyMismatch` naming both fingerprints if the guest shows
        another key, :class:`HostKeyUnavailable` if it shows none in ``timeout`` seconds.
        """
        # No login happens: any user name does when none is recorded.
        target = target or self.ssh_target(user=self.login.user or "libvm")
        if target.host_key is None:
            return None
        seen = self._verify(target, timeout)
        if seen is not None:
            raise HostKeyUnavailable(f"domain {self.name!r}: no host key shown on {target.host}: {seen}")
        return HostKey.parse(target.host_key).fingerprint

    def ssh(self, command: Sequence[str] | str | None = None, *, user: str | None = None,
            key: str | os.PathLike[str] | None = None, via: SshTarget | str | None = "auto", port: int = 22,
            timeout: float | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` in the guest with the real ``ssh`` client (see :meth:`ssh_target`).

        ``command``: a list (quoted for the remote shell) or a string (the remote
        shell reads it as it is); its output is captured (text). ``None``: an
        interactive session on this terminal (the host key is checked first).
        Returns the ``CompletedProcess``; a non-zero exit is not an error (255
        is ssh's own failure: see ``stderr``). Raises :class:`HostKeyMismatch`
        if the guest shows another host key than the stored one, and what
        :meth:`ssh_target` raises. Without a stored host key, ssh checks it
        against your ``known_hosts`` (``StrictHostKeyChecking=yes``: never learned).
        """
        target = self.ssh_target(user=user, key=key, via=via, port=port)
        if command is None:
            self.check_host_key(target)
            return subprocess.run(self.ssh_argv(None, target), check=False, text=True)
        argv = self.ssh_argv(command, target)
        proc = subprocess.run(argv, capture_output=True, text=True, input=input, timeout=timeout, check=False)
        if proc.returncode == 255 and target.host_key is not None and "Host key verification failed" in proc.stderr:
            self.check_host_key(target)  # names both fingerprints
        return proc

    def ssh_argv(self, command: Sequence[str] | str | None = None, target: SshTarget | None = None) -> list[str]:
        """The ``ssh`` command line :meth:`ssh` runs (``None``: an interactive session)."""
        target = target or self.ssh_target()
        if command is None:
            return ["ssh", *target.options(batch=False), target.destination]
        if isinstance(command, str):
            remote = command
        elif isinstance(command, Sequence) and command and all(isinstance(c, str) for c in command):
            remote = shlex.join(command)
        else:
            raise InvalidSpec("command", command, "a non-empty list of strings, a string, or None")
        return ["ssh", *target.options(), target.destination, "--", remote]


def wait_for_leases(vms: Sequence[VM], timeout: float, poll: float,
                    step: Callable[[], None] | None = None) -> dict[str, dict[str, netaddr.IPAddress]]:
    """Wait until every NIC of every VM holds a lease; ``{vm name: {mac: ip}}``.

    What :meth:`VM.wait_for_ips` promises, for many VMs at once: each round
    reads each network's leases once, however many VMs wait on it. ``step()``
    is called once per VM whose NICs all have their address.
    """
    _check_seconds("timeout", timeout)
    check_poll(poll)
    pending: dict[str, tuple[VM, list[Nic]]] = {}
    networks: dict[tuple[int, str], Network] = {}
    for vm in vms:
        if vm.document().spec.static_network:
            raise NothingToWaitFor(f"domain {vm.name!r} sets its addresses itself (cloud-init static_network): "
                                   f"there is no DHCP lease to wait for; use wait_for_ssh()", domain=vm.name)
        nics = vm.nics
        if not nics:
            raise NothingToWaitFor(f"domain {vm.name!r} has no interface on a libvirt network", domain=vm.name)
        pending[vm.name] = (vm, nics)
        for nic in nics:
            key = (id(vm._live), nic.network)
            if key not in networks:
                networks[key] = _network(vm._live, nic.network)
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
                lease = lease_of(nic.mac, nic.ip, leases[(id(vm._live), nic.network)])
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
            state = vm.state
            if state not in _ALIVE:
                raise DomainStopped(f"domain {vm.name!r} is {state} before all NICs got an address",
                                    domain=vm.name, state=str(state))
        if time.monotonic() > deadline:
            missing = "; ".join(
                f"domain {name!r}: no lease for " + ", ".join(str(n.mac) for n in nics if str(n.mac) not in found[name])
                for name, (_, nics) in pending.items())
            raise WaitTimeout(f"{missing} after {timeout:g} s")
        keys = list(markers)
        _wait_for_change([networks[key] for key in keys], [markers[key] for key in keys],
                         min(poll, max(0.0, deadline - time.monotonic()) + 0.01))


class NicFacts:
    """What tables and listings show of many VMs' NICs: each network's reservations and
    leases, read once however many VMs and NICs are on it."""

    def __init__(self) -> None:
        self._networks: dict[tuple[int, str], tuple[list[Reservation], list[Lease]] | None] = {}

    def of(self, vm: VM, interface: Interface) -> tuple[Reservation | None, Lease | None]:
        """``interface``'s reservation and lease (the one on its reserved address if it holds several)."""
        if interface.network is None:
            return None, None
        key = (id(vm._live), interface.network)
        if key not in self._networks:
            try:
                net = _network(vm._live, interface.network)
                self._networks[key] = (net.reservations(), net.leases())
            except NotFound:
                self._networks[key] = None
        known = self._networks[key]
        if known is None:
            return None, None
        reservation = reservation_of(interface.mac, known[0])
        return reservation, lease_of(interface.mac, reservation.ip if reservation else None, known[1])


def nic_rows(vms: Iterable[VM]) -> list[NicRow]:
    """A table row per NIC of each VM, reading each network's reservations and leases once."""
    facts = NicFacts()
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
            rows.append(NicRow(vm.name if index == 0 else "", str(state) if index == 0 else "",
                               interface.network, interface.mac, *facts.of(vm, interface)))
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


def _hop(uri: str, via: object) -> SshTarget | None:
    """Where ``wait_for_ssh`` connects from: ``None`` (here) or an SSH hop (see its ``via``)."""
    from .ssh import SshTarget, hypervisor_target, parse_target

    if via == "auto":
        return hypervisor_target(uri)
    if via is None or isinstance(via, SshTarget):
        return via
    if isinstance(via, str):
        return parse_target(via, "via")
    raise InvalidSpec("via", via, "'auto', None, a libvm.ssh.SshTarget or 'user@host[:port]'")


def _ssh_banner_via(hop: SshTarget, host: str, port: int, timeout: float) -> tuple[bool, str]:
    """:func:`_ssh_banner` through ``hop`` (``ssh -W host:port``); a failing hop raises, as
    waiting longer would not help (its key or authentication is refused)."""
    import selectors
    import subprocess

    from .errors import HopFailed

    argv = [hop.program, *hop.options(), "-W", f"{host}:{port}", hop.destination]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        raise HopFailed(f"cannot run ssh to reach {hop.destination}: {exc.strerror}", hop=hop.destination) from exc
    assert proc.stdout is not None and proc.stdin is not None
    line = b""
    deadline = time.monotonic() + timeout
    try:
        # The server speaks first and then waits for us: read its first line, then hang up.
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stdout, selectors.EVENT_READ)
            while b"\n" not in line and len(line) < 256 and time.monotonic() < deadline:
                if not selector.select(max(0.0, deadline - time.monotonic())):
                    break
                chunk = os.read(proc.stdout.fileno(), 256)
                if not chunk:
                    break
                line += chunk
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        assert proc.stderr is not None
        err = proc.stderr.read()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            stream.close()
    first = line.split(b"\n", 1)[0].strip()
    if first.startswith(b"SSH-"):
        return True, first.decode(errors="replace")
    text = err.decode(errors="replace").strip()
    if "open failed" in text or "connect failed" in text or "Connection refused" in text:
        return False, f"{hop.destination} could not connect: {text.splitlines()[-1][:200]}"
    if proc.returncode == 255 and not first:  # ssh's own failure: the hop itself
        raise HopFailed(f"hop 1 of 2 (ssh {hop.destination}) failed: {text[-300:] or 'no message'}",
                        hop=hop.destination)
    return False, f"banner {first[:60]!r}" if first else f"no banner through {hop.destination}"


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 <= value < float("inf")):
        raise InvalidSpec(name, value, "a finite number of seconds, 0 or more")
