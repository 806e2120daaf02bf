"""Frozen value objects: what a NIC, a disk, a reservation and a lease are.

Strings are accepted for every address and normalised to netaddr types in
``__post_init__``; a bad value raises :class:`libvm.InvalidSpec`.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import netaddr

from .addressing import IpLike, MacLike, check_duid, check_hostname, check_name, generate_mac, parse_ip, parse_mac
from .errors import InvalidSpec
from .units import parse_size

PathLike = str | os.PathLike[str]
T = TypeVar("T")

NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
DISK_FORMATS = ("qcow2", "raw")
DISK_BUSES = ("virtio", "sata", "scsi", "ide")


# Characters an XML document cannot hold: lxml refuses them when the spec is written.
_NOT_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# A path also refuses tab, newline and CR, which XML holds: "/images/a.img\n" (a line
# read from a file) names a file that does not exist, or a pool directory nobody meant.
_NOT_PATH = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


_MAC_TEXT = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")


def _trusted_mac(text: str) -> netaddr.EUI:
    """libvirt's canonical ``52:54:00:aa:bb:01`` as an EUI, from its integer (3x faster than parsing)."""
    if _MAC_TEXT.fullmatch(text):
        return netaddr.EUI(int(text.replace(":", ""), 16), version=48, dialect=netaddr.mac_unix_expanded)
    return netaddr.EUI(text, dialect=netaddr.mac_unix_expanded)


def _trusted_ip(text: str) -> netaddr.IPAddress:
    """libvirt's canonical address text as an IPAddress, from its integer (2x faster than parsing)."""
    family, version = (socket.AF_INET6, 6) if ":" in text else (socket.AF_INET, 4)
    try:
        return netaddr.IPAddress(int.from_bytes(socket.inet_pton(family, text), "big"), version)
    except OSError:
        return netaddr.IPAddress(text)


def _trusted(cls: type[T], **values: Any) -> T:
    obj = cls.__new__(cls)
    for name, value in values.items():
        _set(obj, name, value)
    return obj


def check_path(value: object, field: str) -> Path:
    """A file path given as ``str`` or ``os.PathLike[str]`` (not bytes, not empty)."""
    path = os.fspath(value) if isinstance(value, (str, os.PathLike)) else None
    if not isinstance(path, str) or not path.strip():
        raise InvalidSpec(field, value, "a file path (str or pathlib.Path)")
    if _NOT_PATH.search(path):
        raise InvalidSpec(field, value, "contains control characters (a newline?)")
    return Path(path)


def check_text(value: object, field: str) -> str:
    """A string that libvirt's XML can hold."""
    if not isinstance(value, str):
        raise InvalidSpec(field, value, "a string")
    if _NOT_XML.search(value):
        raise InvalidSpec(field, value, "contains control characters libvirt's XML cannot hold")
    return value


def check_bool(value: object, field: str) -> bool:
    """``True`` or ``False``; 0, 1 and "yes" are refused, being likely mistakes."""
    if not isinstance(value, bool):
        raise InvalidSpec(field, value, "True or False")
    return value


#: The shortest wait between two polls of libvirt: 0 would spin a CPU against libvirtd.
MIN_POLL = 0.01


def check_poll(value: object, field: str = "poll") -> float:
    """Seconds between polls: a finite number, :data:`MIN_POLL` or more."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not MIN_POLL <= value < float("inf"):
        raise InvalidSpec(field, value, f"a finite number of seconds, {MIN_POLL} or more (0 would busy-poll libvirt)")
    return float(value)


def check_int(value: object, field: str, low: int, high: int | None = None) -> int:
    """An ``int`` (not a ``bool``) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise InvalidSpec(field, value, f"an integer {span}")
    return value


def read_all(iterator: Iterable[T], value: object, field: str, wanted: str) -> tuple[T, ...]:
    """Every item of the caller's ``iterator`` (from ``value``); one that raises while
    being read is :class:`InvalidSpec` naming ``field``, as ``reserve_many`` says it."""
    try:
        return tuple(iterator)
    except Exception as exc:  # the caller's generator failed: a libvm error naming the field
        raise InvalidSpec(field, value, f"{wanted}; reading it failed: {exc!r}") from exc


def as_items(value: object, field: str, kind: type[T]) -> tuple[T, ...]:
    """Materialise an iterable of ``kind`` (list, tuple, generator...) once, as a tuple.

    A single ``kind``, a string, a set or mapping (no order), or a non-iterable
    raises :class:`InvalidSpec` naming ``field``; a wrong item names ``field[i]``.
    """
    what = f"libvm.{kind.__name__}"
    if isinstance(value, kind):
        raise InvalidSpec(field, value, f"a list of {what}, not a single one")
    if isinstance(value, (str, bytes, Set, Mapping)):
        raise InvalidSpec(field, value, f"a list (or any iterable) of {what}")
    try:
        iterator = iter(value)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidSpec(field, value, f"a list (or any iterable) of {what}") from None
    items = read_all(iterator, value, field, f"a list (or any iterable) of {what}")
    for index, item in enumerate(items):
        if not isinstance(item, kind):
            raise InvalidSpec(f"{field}[{index}]", item, f"a {what}")
    return items


@dataclass(frozen=True)
class Nic:
    """One guest network interface on a libvirt network.

    ``ip`` is the address reserved for it in the network's DHCP; ``None`` lets
    :meth:`Hypervisor.create_vm` allocate one. ``mac`` defaults to a MAC derived
    from ``(network, ip)`` (see :func:`libvm.addressing.generate_mac`), so the
    same address always gets the same MAC. ``dns=True`` also puts the hostname
    (``hostname``, else the VM's name) in the network's DNS, so the network's
    dnsmasq resolves it to ``ip``.

    ``ip6`` gives the NIC an IPv6 address too (dual stack), on a network with
    an IPv6 subnet: an address, ``"auto"`` (the next free one), or ``None``
    (none). libvirt binds an IPv6 address to a DHCPv6 client's hostname, not to
    a MAC, so the reservation carries the NIC's hostname (``hostname``, else
    the VM's name); a guest created with ``CloudInit(static_network=True)``
    gets the address pinned in its network-config instead of asking DHCPv6.
    """

    network: str
    ip: netaddr.IPAddress | None = None
    mac: netaddr.EUI | None = None
    model: str = "virtio"
    hostname: str | None = None
    dns: bool = False
    ip6: netaddr.IPAddress | Literal["auto"] | None = None

    def __init__(
        self,
        network: str,
        ip: IpLike | None = None,
        mac: MacLike | None = None,
        model: str = "virtio",
        hostname: str | None = None,
        dns: bool = False,
        ip6: IpLike | Literal["auto"] | None = None,
    ) -> None:
        check_name(network, "nic.network")
        if not isinstance(model, str) or model not in NIC_MODELS:
            raise InvalidSpec("nic.model", model, f"one of {', '.join(NIC_MODELS)}")
        addr = None if ip is None else parse_ip(ip, "nic.ip")
        hw = None if mac is None else parse_mac(mac, "nic.mac")
        if hw is None and addr is not None:
            hw = generate_mac(network, addr)
        _set(self, "network", network)
        _set(self, "ip", addr)
        _set(self, "mac", hw)
        _set(self, "model", model)
        _set(self, "hostname", None if hostname is None else check_hostname(hostname, "nic.hostname"))
        _set(self, "dns", check_bool(dns, "nic.dns"))
        if addr is not None and addr.version != 4:
            raise InvalidSpec("nic.ip", str(addr), "an IPv4 address (libvirt binds a MAC to IPv4 only); "
                                                    "give the IPv6 address as ip6=")
        if ip6 is None or ip6 == "auto":
            _set(self, "ip6", ip6)
        else:
            six = parse_ip(ip6, "nic.ip6")
            if six.version != 6:
                raise InvalidSpec("nic.ip6", str(six), "an IPv6 address, \"auto\" or None")
            _set(self, "ip6", six)

    @classmethod
    def trusted(cls, network: str, mac: str, model: str, ip: str | None = None, hostname: str | None = None,
                ip6: str | None = None) -> Nic:
        """Build from values libvirt already validated (its own XML), skipping the checks.

        Any ``model`` libvirt knows is kept (``ne2k_pci``...), not only :data:`NIC_MODELS`.
        """
        return _trusted(
            cls, network=network, ip=None if ip is None else netaddr.IPAddress(ip),
            mac=netaddr.EUI(mac, dialect=netaddr.mac_unix_expanded), model=model, hostname=hostname, dns=False,
            ip6=None if ip6 is None else netaddr.IPAddress(ip6),
        )


class VolumeRef(Protocol):
    """What :meth:`Disk.from_image` needs of a base image: a :class:`libvm.Volume` has it."""

    @property
    def pool(self) -> str: ...

    @property
    def name(self) -> str: ...


@dataclass(frozen=True)
class ImageSource:
    """How ``create_vm`` makes a disk: a qcow2 overlay of the volume ``base`` in
    ``pool`` (or, ``clone=True``, a full copy of it), ``size`` bytes big (default:
    the base's virtual size)."""

    pool: str
    base: str
    size: int | None = None
    clone: bool = False


@dataclass(frozen=True)
class Disk:
    """A disk attached to the guest: an existing image file (``path``), or a volume
    ``create_vm`` makes from a base image (:meth:`from_image`)."""

    path: PathLike | None = None
    format: str = "qcow2"
    bus: str = "virtio"
    readonly: bool = False
    image: ImageSource | None = None

    def __post_init__(self) -> None:
        if self.image is None:
            _set(self, "path", check_path(self.path, "disk.path"))
        elif not isinstance(self.image, ImageSource):
            raise InvalidSpec("disk.image", self.image, "a libvm.ImageSource (use Disk.from_image)")
        elif self.path is not None:
            raise InvalidSpec("disk.path", self.path, "give a path or an image, not both")
        if not isinstance(self.format, str) or self.format not in DISK_FORMATS:
            raise InvalidSpec("disk.format", self.format, f"one of {', '.join(DISK_FORMATS)}")
        if not isinstance(self.bus, str) or self.bus not in DISK_BUSES:
            raise InvalidSpec("disk.bus", self.bus, f"one of {', '.join(DISK_BUSES)}")
        check_bool(self.readonly, "disk.readonly")

    @classmethod
    def from_image(cls, base: VolumeRef, size: int | str | None = None, *, clone: bool = False,
                   bus: str = "virtio") -> Disk:
        """A disk ``create_vm`` makes from the base volume ``base`` (see :meth:`Pool.upload`).

        ``size``: bytes as an int or a string such as ``"10GiB"``; at least the
        base's virtual size (checked by ``create_vm``); default: the same.
        ``clone=False`` makes a qcow2 overlay backed by ``base`` (instant, shares
        its blocks); ``clone=True`` a full copy. The volume is named after the VM
        (``<vm>-disk<N>.qcow2``) in ``base``'s pool, removed by the VM's rollback
        and by ``vm.delete(storage=True)``; the base never is.
        """
        pool, name = getattr(base, "pool", None), getattr(base, "name", None)
        if not isinstance(pool, str) or not isinstance(name, str):
            raise InvalidSpec("disk.base", base, "a libvm.Volume (from Pool.upload or Pool.volume)")
        bytes_ = None if size is None else parse_size(size, "disk.size")
        return cls(None, "qcow2", bus, False, ImageSource(pool, name, bytes_, check_bool(clone, "disk.clone")))

    @classmethod
    def trusted(cls, path: str, format: str, bus: str, readonly: bool) -> Disk:
        """Build from libvirt's own XML, keeping any format or bus libvirt knows."""
        return _trusted(cls, path=Path(path), format=format, bus=bus, readonly=readonly, image=None)


@dataclass(frozen=True)
class Vnc:
    """VNC graphics. ``port=None`` lets libvirt pick; qemu's ``-vnc :6`` is ``port=5906``."""

    port: int | None = None
    listen: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.port is not None:
            check_int(self.port, "graphics.port", 5900, 65535)
        _set(self, "listen", str(parse_ip(self.listen, "graphics.listen")))

    @classmethod
    def display(cls, number: int, listen: str = "127.0.0.1") -> Vnc:
        """qemu's display numbering: ``Vnc.display(6)`` is ``-vnc :6``."""
        return cls(port=5900 + check_int(number, "graphics.display", 0, 65535 - 5900), listen=listen)

    @classmethod
    def trusted(cls, port: int | None, listen: str) -> Vnc:
        """Build from libvirt's own XML, keeping a listen address that is a host name."""
        return _trusted(cls, port=port, listen=listen)


@dataclass(frozen=True)
class Reservation:
    """A ``<host>`` entry of a network's ``<dhcp>``: this MAC gets this IP.

    IPv6 entries have no MAC in libvirt; they are keyed by ``hostname`` or
    DHCPv6 ``client_id`` (libvirt's ``id`` attribute, a DUID).
    """

    mac: netaddr.EUI | None
    ip: netaddr.IPAddress
    hostname: str | None = None
    client_id: str | None = None

    def __init__(
        self,
        mac: MacLike | None,
        ip: IpLike,
        hostname: str | None = None,
        client_id: str | None = None,
    ) -> None:
        _set(self, "mac", None if mac is None else parse_mac(mac))
        _set(self, "ip", parse_ip(ip))
        _set(self, "hostname", None if hostname is None else check_hostname(hostname))
        _set(self, "client_id", None if client_id is None else check_duid(client_id))
        if self.mac is None and hostname is None and client_id is None:
            raise InvalidSpec("mac", mac, "a reservation needs a MAC, a hostname or a client id")

    @classmethod
    def trusted(cls, mac: str | None, ip: str, hostname: str | None, client_id: str | None) -> Reservation:
        """Build from values libvirt already validated (its own XML), skipping the checks."""
        obj = cls.__new__(cls)
        _set(obj, "mac", None if mac is None else _trusted_mac(mac))
        _set(obj, "ip", _trusted_ip(ip))
        _set(obj, "hostname", hostname)
        _set(obj, "client_id", client_id)
        return obj

    def __str__(self) -> str:
        who = self.mac if self.mac is not None else (self.client_id or self.hostname)
        name = f" ({self.hostname})" if self.hostname else ""
        return f"{who} -> {self.ip}{name}"


@dataclass(frozen=True)
class Lease:
    """An address dnsmasq has handed out, as libvirt reports it."""

    mac: netaddr.EUI | None
    ip: netaddr.IPAddress
    hostname: str | None = None
    expires: dt.datetime | None = None
    client_id: str | None = None
    interface: str = field(default="", compare=False)


def lease_of(mac: MacLike | None, reserved: netaddr.IPAddress | None, leases: Iterable[Lease]) -> Lease | None:
    """``mac``'s lease among ``leases``: the one on its ``reserved`` address if it holds several
    (a guest that had another address before its reservation), else its first."""
    if mac is None:
        return None
    wanted = mac if isinstance(mac, netaddr.EUI) else _trusted_mac(mac)
    mine = [lease for lease in leases if lease.mac is not None and lease.mac == wanted]
    return next((lease for lease in mine if lease.ip == reserved), mine[0] if mine else None)


def reservation_of(mac: MacLike | None, reservations: Iterable[Reservation]) -> Reservation | None:
    """``mac``'s reservation among ``reservations`` (the first), or ``None``."""
    if mac is None:
        return None
    wanted = mac if isinstance(mac, netaddr.EUI) else _trusted_mac(mac)
    return next((r for r in reservations if r.mac is not None and r.mac == wanted), None)
