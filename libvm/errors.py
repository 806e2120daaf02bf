"""The libvm exception hierarchy.

Every error libvm raises is a :class:`LibvmError`. Errors that come from a libvirt
call keep the original ``libvirt.libvirtError`` as ``__cause__``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AddressConflict",
    "AddressMismatch",
    "AlreadyExists",
    "ClientIdShared",
    "ConnectionClosed",
    "HostnameReserved",
    "InUse",
    "InvalidSpec",
    "IpInDhcpRange",
    "IpLeased",
    "IpReserved",
    "LibvirtFailure",
    "LibvmError",
    "MacInUse",
    "MacReserved",
    "NetworkMismatch",
    "NoEligibleHost",
    "NoFreeAddress",
    "NotFound",
    "SubnetOverlap",
    "WaitTimeout",
]


def _rebuild(cls: type[LibvmError], args: tuple[Any, ...], state: dict[str, Any]) -> LibvmError:
    """Unpickle without calling ``cls.__init__`` (whose parameters differ per class)."""
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class LibvmError(Exception):
    """Base class of every error raised by libvm.

    Every libvm error pickles with its attributes and message, so one raised in a
    ``ProcessPoolExecutor`` worker reaches the parent as itself.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own __reduce__ calls cls(*self.args), which fails for the
        # subclasses whose __init__ takes the fields and builds the message.
        return _rebuild, (type(self), self.args, self.__dict__)

    def at(self, prefix: str) -> LibvmError:
        """The same error placed at ``prefix``, a position in the caller's input
        (``"nics[0]"``, ``"hosts[3]"``, ``"specs[1]"``): its message starts with it."""
        return _rebuild(type(self), (f"{prefix}: {self}",), dict(self.__dict__))


class InvalidSpec(LibvmError, ValueError):
    """A value given to libvm is malformed or not allowed.

    ``field`` names the offending parameter (``"nics[0].mac"``), ``value`` is what
    was given. Raised before anything is changed in libvirt.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")

    def at(self, prefix: str) -> InvalidSpec:
        """The same error with ``prefix`` before its field: ``ip`` at ``nics[0]`` is ``nics[0].ip``."""
        return InvalidSpec(f"{prefix}.{self.field}", self.value, self.reason)


class NotFound(LibvmError, LookupError):
    """A libvirt object (network, domain, reservation) does not exist."""


class AlreadyExists(LibvmError):
    """An object with that name already exists and differs from what was asked."""


class NetworkMismatch(AlreadyExists):
    """``ensure_network`` found an existing network whose settings differ."""

    def __init__(self, network: str, field: str, wanted: Any, actual: Any) -> None:
        self.network = network
        self.field = field
        self.wanted = wanted
        self.actual = actual
        super().__init__(
            f"network {network!r} exists with {field}={actual!r}, not {wanted!r}; "
            f"undefine it or pass the existing value"
        )


class InUse(LibvmError):
    """A volume or pool is still used (a domain's disk, an overlay's base, a pool's volume)."""


class LibvirtFailure(LibvmError):
    """A libvirt call failed for a reason libvm has no more specific error for.

    ``code`` is libvirt's error code (``libvirt.VIR_ERR_*``).
    """

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class ConnectionClosed(LibvirtFailure):
    """The :class:`Hypervisor` (and so every object got from it) was closed."""


class AddressConflict(LibvmError):
    """A MAC, IP or hostname would be used twice.

    ``reason`` is a stable code (``"mac-reserved"``, ``"ip-leased"``, ...),
    ``other`` names the other party (domain name, MAC, hostname) when known.
    Raised before anything is changed in libvirt.
    """

    reason = "conflict"

    def __init__(self, message: str, *, other: str | None = None) -> None:
        self.other = other
        super().__init__(message)


class MacReserved(AddressConflict):
    """The MAC is already reserved in the network for another IP or hostname."""

    reason = "mac-reserved"


class IpReserved(AddressConflict):
    """The IP is already reserved in the network for another MAC."""

    reason = "ip-reserved"


class HostnameReserved(AddressConflict):
    """The hostname is already reserved in the network for another MAC."""

    reason = "hostname-reserved"


class MacInUse(AddressConflict):
    """The MAC is already on an interface of another domain."""

    reason = "mac-in-use"


class IpLeased(AddressConflict):
    """dnsmasq currently leases the IP to another, live MAC."""

    reason = "ip-leased"


class IpInDhcpRange(AddressConflict):
    """The IP lies in the network's dynamic DHCP range.

    Raised only when ``allow_dynamic=False`` asks for addresses outside the
    range: by default libvm reserves inside it (dnsmasq never offers a
    reserved address to another client; a current lease is :class:`IpLeased`).
    """

    reason = "ip-in-dhcp-range"


class SubnetOverlap(AddressConflict):
    """Two networks' subnets overlap, so an address would be ambiguous."""

    reason = "subnet-overlap"


class ClientIdShared(AddressConflict):
    """Two MACs present the same DHCP client-id (cloned machine-id)."""

    reason = "client-id-shared"


class NoFreeAddress(LibvmError):
    """The network's allocation pool has no free address left."""


class WaitTimeout(LibvmError, TimeoutError):
    """A guest did not obtain its address in time."""


class AddressMismatch(LibvmError):
    """The guest obtained an address other than the one reserved for it."""

    def __init__(self, mac: str, reserved: str, obtained: str) -> None:
        self.mac = mac
        self.reserved = reserved
        self.obtained = obtained
        super().__init__(
            f"guest NIC {mac} obtained {obtained}, but {reserved} is reserved for it; "
            f"a stale lease or a second DHCP server is handing out addresses"
        )


# -- fleets (libvm.Fleet) ---------------------------------------------------------


class NoEligibleHost(LibvmError):
    """No host of a :class:`libvm.Fleet` can take the VM; ``reasons`` says why, per host URI."""

    def __init__(self, vm: str, reasons: dict[str, list[str]]) -> None:
        self.vm = vm
        self.reasons = reasons
        detail = "; ".join(f"{uri}: {', '.join(why)}" for uri, why in reasons.items()) or "the fleet has no host"
        super().__init__(f"no host can take VM {vm!r}: {detail}")
