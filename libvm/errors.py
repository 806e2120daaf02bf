"""The libvm exception hierarchy.

Every error libvm raises is a :class:`LibvmError`. Errors that come from a libvirt
call keep the original ``libvirt.libvirtError`` as ``__cause__``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = [
    "AddressConflict",
    "AddressMismatch",
    "AlreadyExists",
    "ClientIdShared",
    "ConnectionClosed",
    "DnsmasqFailure",
    "DomainStopped",
    "HopFailed",
    "HostKeyMismatch",
    "HostKeyUnavailable",
    "HostnameReserved",
    "InUse",
    "InvalidSpec",
    "InvalidState",
    "IpInDhcpRange",
    "IpLeased",
    "IpReserved",
    "LibvirtFailure",
    "LibvmError",
    "LockFailure",
    "MacInUse",
    "MacReserved",
    "NetworkMismatch",
    "NoEligibleHost",
    "NoFreeAddress",
    "NotFound",
    "NothingToWaitFor",
    "SourceChanged",
    "SubnetOverlap",
    "Unsupported",
    "WaitTimeout",
]

E = TypeVar("E", bound="LibvmError")
S = TypeVar("S", bound="InvalidSpec")


def _picklable(value: Any) -> Any:
    """``value`` if it survives a pickle round trip, else its ``repr()``.

    An error may carry anything a caller passed (a lambda, a generator, a
    libvirt handle as ``InvalidSpec.value``); it must still reach the parent of
    a process pool as itself, not as a ``TypeError`` about pickling.
    """
    try:
        import pickle  # here: only a pickled error needs it (import libvm stays cheap)

        pickle.loads(pickle.dumps(value, pickle.HIGHEST_PROTOCOL))
    except Exception:
        try:
            return repr(value)
        except Exception:
            return f"<unrepresentable {type(value).__qualname__}>"
    return value


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
        args = tuple(_picklable(arg) for arg in self.args)
        return _rebuild, (type(self), args, {name: _picklable(value) for name, value in self.__dict__.items()})

    def at(self: E, prefix: str) -> E:
        """The same error, of the same class, placed at ``prefix`` (``"nics[0]"``, ``"hosts[3]"``).

        An :class:`InvalidSpec` gets ``prefix`` in front of its field
        (``nics[0].ip``); every other error in front of its message
        (``nics[0]: 10.0.0.5 is already reserved ...``). Attributes and
        ``__cause__`` are kept. Inside the ``except`` block that caught ``exc``:
        ``raise exc.at("nics[0]") from exc``. ``prefix`` must be a non-empty
        string (else :class:`InvalidSpec` of field ``prefix``).
        """
        _check_prefix(prefix)
        return self.relocated(lambda text: f"{prefix}: {text}")

    def relocated(self: E, edit: Callable[[str], str]) -> E:
        """The same error with the text that says where it happened rewritten by ``edit``.

        That text is the message, or an :class:`InvalidSpec`'s field. :meth:`at`
        is ``relocated`` with a prefix; the command line uses it to name
        ``FILE:LINE`` instead of ``hosts[i]``.
        """
        error = copy.copy(self)  # __reduce__: same class and attributes, without __init__
        error.args = (edit(str(self)),)
        error.__cause__ = self.__cause__
        return error


SHOWN = 200  # characters of a value's repr in a message; a 100 kB name stays a one-line error


def shown(value: Any) -> str:
    """``repr(value)`` for a message, cut to :data:`SHOWN` characters (the error's ``value`` keeps it whole)."""
    text = repr(value)
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}... ({len(text)} characters)"


def _check_prefix(prefix: object) -> None:
    if not isinstance(prefix, str) or not prefix:
        raise InvalidSpec("prefix", prefix, "a non-empty string that says where, e.g. 'nics[0]'")


class InvalidSpec(LibvmError, ValueError):
    """A value given to libvm is malformed or not allowed.

    ``field`` names the offending parameter (``"nics[0].mac"``), ``value`` is what
    was given. Raised before anything is changed in libvirt.
    """

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={shown(value)}: {reason}")

    def at(self: S, prefix: str) -> S:
        """The same error with ``prefix`` in front of its field: ``ip`` at ``nics[0]`` is ``nics[0].ip``."""
        _check_prefix(prefix)
        return self.relocated(lambda field: f"{prefix}.{field}" if field else prefix)

    def relocated(self: S, edit: Callable[[str], str]) -> S:
        """The same error with its field rewritten by ``edit`` (and its message to match)."""
        error = copy.copy(self)
        error.field = edit(self.field)
        error.args = (f"{error.field}={shown(self.value)}: {self.reason}",)
        error.__cause__ = self.__cause__
        return error


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


class InvalidState(LibvirtFailure):
    """libvirt refused because of the object's state (``VIR_ERR_OPERATION_INVALID``):
    a domain that is not running, a ``<host>`` entry that is already there."""


class Unsupported(LibvirtFailure):
    """The driver does not support the call or a flag of it (``VIR_ERR_NO_SUPPORT``,
    ``VIR_ERR_INVALID_ARG`` for flags such as ``VIR_DOMAIN_UNDEFINE_NVRAM`` on ``test:///``)."""


class DnsmasqFailure(LibvmError):
    """A DHCP lease could not be released: the daemon is on another host, the
    network's dnsmasq is not visible here, or ``dhcp_release`` (dnsmasq-utils) is
    missing or failed. The lease expires by itself. (A release dnsmasq does not
    act on within 5 s is a :class:`WaitTimeout`.)"""


class HopFailed(LibvmError):
    """The SSH hop to a guest (usually the hypervisor's own SSH) refused or failed: its host
    key, the authentication, or the connection. ``hop`` is its ``user@host``."""

    def __init__(self, message: str, *, hop: str = "") -> None:
        self.hop = hop
        super().__init__(message)


class HostKeyMismatch(LibvmError):
    """The guest at a VM's address presented another SSH host key than the one libvm gave
    the VM (its seed's ``ssh_keys``): another machine answers there, or the guest was
    re-keyed. ``expected`` and ``presented`` are ``SHA256:...`` fingerprints."""

    def __init__(self, *, domain: str, address: str, expected: str, presented: str) -> None:
        self.domain = domain
        self.address = address
        self.expected = expected
        self.presented = presented
        super().__init__(f"domain {domain!r}: the SSH server on {address} presented host key {presented}, "
                         f"not {expected}, the key libvm gave this VM; another machine answers on its "
                         f"address, or the guest's host keys were replaced")


class HostKeyUnavailable(LibvmError):
    """A VM's SSH host key could not be made or checked: ``ssh-keygen`` or ``ssh``
    (openssh-client) is missing or failed."""


class LockFailure(LibvmError):
    """libvm's lock file (``$LIBVM_LOCK_DIR``, default /run/lock) cannot be opened;
    set ``LIBVM_LOCK_DIR`` to a writable directory."""


class SourceChanged(LibvmError):
    """A local file changed (grew or shrank) while :meth:`Pool.upload` sent it;
    the half-written volume was removed. Upload it again once it is complete."""


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


class DomainStopped(LibvmError):
    """The domain stopped (shut off, crashed) while libvm waited for its address or its SSH server.

    ``domain`` is its name, ``state`` its state then (``"shut off"``). Waiting
    longer cannot help: look at its console log, then start it again.
    """

    def __init__(self, message: str, *, domain: str | None = None, state: str | None = None) -> None:
        self.domain = domain
        self.state = state
        super().__init__(message)


class NothingToWaitFor(LibvmError):
    """The domain has no address libvm can wait for: no interface on a libvirt
    network, or (``CloudInit(static_network=True)``) a guest that takes no DHCP
    lease, for which :meth:`VM.wait_for_ssh` probes the reserved address instead.

    ``domain`` is its name.
    """

    def __init__(self, message: str, *, domain: str | None = None) -> None:
        self.domain = domain
        super().__init__(message)


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
