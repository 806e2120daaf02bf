"""A live libvirt domain: lifecycle and the address its guest holds."""

from __future__ import annotations

import enum
import logging
import time
from typing import TYPE_CHECKING

import libvirt
import netaddr

from . import _libvirt
from .domainxml import DomainSpec, mac_list
from .errors import AddressMismatch, LibvmError, NotFound, WaitTimeout
from .values import Nic

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


class VM:
    """A libvirt domain. Get one from :meth:`Hypervisor.vm` or :meth:`Hypervisor.create_vm`."""

    def __init__(self, hypervisor: Hypervisor, handle: libvirt.virDomain) -> None:
        self._hv = hypervisor
        self._dom = handle
        self.name: str = handle.name()

    def __repr__(self) -> str:
        return f"<libvm.VM {self.name!r}>"

    @property
    def handle(self) -> libvirt.virDomain:
        """The underlying ``libvirt.virDomain``, for what libvm does not cover."""
        return self._dom

    def xml(self, inactive: bool = False) -> str:
        """The domain XML as libvirt has it (``inactive``: the persistent config)."""
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
        with _libvirt.translate(f"domain {self.name!r}"):
            return str(self._dom.XMLDesc(flags))

    def spec(self) -> DomainSpec:
        """The domain parsed into a :class:`DomainSpec`."""
        return DomainSpec.from_xml(self.xml(inactive=True))

    @property
    def state(self) -> VMState:
        """The current state; ``UNDEFINED`` once the domain is gone."""
        try:
            code = self._dom.state()[0]
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return VMState.UNDEFINED
            raise _libvirt.convert(exc, f"state of domain {self.name!r}") from exc
        return _STATES.get(code, VMState.NOSTATE)

    @property
    def running(self) -> bool:
        """Whether qemu is running for this domain."""
        return self.state in (VMState.RUNNING, VMState.BLOCKED, VMState.PAUSED, VMState.SHUTDOWN)

    @property
    def macs(self) -> list[str]:
        """The MAC of every interface, in order."""
        return [mac for mac, _ in mac_list(self.xml(inactive=True))]

    @property
    def nics(self) -> list[Nic]:
        """Every NIC on a libvirt network, with the IP reserved for its MAC (or ``None``)."""
        result = []
        for mac, network in mac_list(self.xml(inactive=True)):
            if network is None:
                continue
            reservation = self._hv._reservation(network, mac)
            result.append(Nic(network, ip=reservation.ip if reservation else None, mac=mac))
        return result

    @property
    def ip(self) -> netaddr.IPAddress | None:
        """The reserved address of the first NIC that has one, else its current lease."""
        for nic in self.nics:
            if nic.ip is not None:
                return nic.ip
        for nic in self.nics:
            lease = self._hv._lease(nic.network, str(nic.mac))
            if lease is not None:
                return lease.ip
        return None

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Boot the domain (no-op if it runs)."""
        if not self.running:
            with _libvirt.translate(f"starting domain {self.name!r}"):
                self._dom.create()

    def shutdown(self) -> None:
        """Ask the guest to power off (ACPI); returns at once. See :meth:`destroy`."""
        if self.running:
            with _libvirt.translate(f"shutting down domain {self.name!r}"):
                self._dom.shutdown()

    def destroy(self) -> None:
        """Power off at once (idempotent)."""
        try:
            if self.running:
                self._dom.destroy()
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                raise _libvirt.convert(exc, f"destroying domain {self.name!r}") from exc

    def undefine(self) -> None:
        """Remove the domain's definition (idempotent); it must be off."""
        # NVRAM: a UEFI guest made by virt-install cannot be undefined without it.
        flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
        for attempt in (flags, 0):
            try:
                self._dom.undefineFlags(attempt)
                return
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                # drivers without NVRAM support (test:///) refuse the flag
                if not (attempt and code == libvirt.VIR_ERR_INVALID_ARG):
                    raise _libvirt.convert(exc, f"undefining domain {self.name!r}") from exc

    def delete(self, *, release: bool = True) -> None:
        """Destroy, undefine and (``release``) drop its reservations and leases.

        Idempotent. Releasing the leases too means the address can be given to
        a new VM at once instead of after the old lease expires.
        """
        nics = self.nics if self.state is not VMState.UNDEFINED else []
        self.destroy()
        self.undefine()
        if release:
            for nic in nics:
                self._hv._forget(nic.network, str(nic.mac))
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
        nics = [nic for nic in self.nics]
        if not nics:
            raise LibvmError(f"domain {self.name!r} has no interface on a libvirt network")
        deadline = time.monotonic() + timeout
        found: dict[str, netaddr.IPAddress] = {}
        while True:
            for nic in nics:
                mac = str(nic.mac)
                if mac in found:
                    continue
                lease = self._hv._lease(nic.network, mac, prefer=nic.ip)
                if lease is None:
                    continue
                if nic.ip is not None and lease.ip != nic.ip:
                    raise AddressMismatch(mac, str(nic.ip), str(lease.ip))
                self._hv._note_client_id(nic.network, lease)
                found[mac] = lease.ip
            if len(found) == len(nics):
                return found
            if not self.running:
                raise LibvmError(f"domain {self.name!r} is {self.state} before all NICs got an address")
            if time.monotonic() > deadline:
                missing = ", ".join(str(n.mac) for n in nics if str(n.mac) not in found)
                raise WaitTimeout(f"domain {self.name!r}: no lease for {missing} after {timeout:g} s")
            time.sleep(poll)

    def wait_for_ip(self, timeout: float = 120.0, poll: float = 0.5) -> netaddr.IPAddress:
        """Wait for every NIC's lease (see :meth:`wait_for_ips`); return the first NIC's address."""
        found = self.wait_for_ips(timeout, poll)
        first = self.macs[0] if self.macs[0] in found else next(iter(found))
        return found[first]


def lookup(hypervisor: Hypervisor, conn: libvirt.virConnect, name: str) -> VM:
    """The domain called ``name``, or :class:`NotFound`."""
    try:
        return VM(hypervisor, conn.lookupByName(name))
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            raise NotFound(f"no domain named {name!r}") from exc
        raise _libvirt.convert(exc, f"looking up domain {name!r}") from exc
