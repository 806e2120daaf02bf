"""Frozen value objects: what a NIC, a disk, a reservation and a lease are.

Strings are accepted for every address and normalised to netaddr types in
``__post_init__``; a bad value raises :class:`libvm.InvalidSpec`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import netaddr

from .addressing import IpLike, MacLike, check_hostname, generate_mac, parse_ip, parse_mac
from .errors import InvalidSpec

PathLike = str | Path

NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139")
DISK_FORMATS = ("qcow2", "raw")
DISK_BUSES = ("virtio", "sata", "scsi", "ide")


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Nic:
    """One guest network interface on a libvirt network.

    ``ip`` is the address reserved for it in the network's DHCP; ``None`` lets
    :meth:`Hypervisor.create_vm` allocate one. ``mac`` defaults to a MAC derived
    from ``(network, ip)`` (see :func:`libvm.addressing.generate_mac`), so the
    same address always gets the same MAC.
    """

    network: str
    ip: netaddr.IPAddress | None = None
    mac: netaddr.EUI | None = None
    model: str = "virtio"
    hostname: str | None = None

    def __init__(
        self,
        network: str,
        ip: IpLike | None = None,
        mac: MacLike | None = None,
        model: str = "virtio",
        hostname: str | None = None,
    ) -> None:
        if not isinstance(network, str) or not network:
            raise InvalidSpec("nic.network", network, "name a libvirt network")
        if model not in NIC_MODELS:
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


@dataclass(frozen=True)
class Disk:
    """An existing disk image attached to the guest (libvm creates no images)."""

    path: PathLike
    format: str = "qcow2"
    bus: str = "virtio"
    readonly: bool = False

    def __post_init__(self) -> None:
        if not str(self.path):
            raise InvalidSpec("disk.path", self.path, "give the image's path")
        _set(self, "path", Path(self.path))
        if self.format not in DISK_FORMATS:
            raise InvalidSpec("disk.format", self.format, f"one of {', '.join(DISK_FORMATS)}")
        if self.bus not in DISK_BUSES:
            raise InvalidSpec("disk.bus", self.bus, f"one of {', '.join(DISK_BUSES)}")


@dataclass(frozen=True)
class Vnc:
    """VNC graphics. ``port=None`` lets libvirt pick; qemu's ``-vnc :6`` is ``port=5906``."""

    port: int | None = None
    listen: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if self.port is not None and not (5900 <= self.port <= 65535):
            raise InvalidSpec("graphics.port", self.port, "a TCP port from 5900 to 65535")
        parse_ip(self.listen, "graphics.listen")

    @classmethod
    def display(cls, number: int, listen: str = "127.0.0.1") -> Vnc:
        """qemu's display numbering: ``Vnc.display(6)`` is ``-vnc :6``."""
        return cls(port=5900 + number, listen=listen)


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
        _set(self, "client_id", client_id)
        if self.mac is None and hostname is None and client_id is None:
            raise InvalidSpec("mac", mac, "a reservation needs a MAC, a hostname or a client id")

    @classmethod
    def trusted(cls, mac: str | None, ip: str, hostname: str | None, client_id: str | None) -> Reservation:
        """Build from values libvirt already validated (its own XML), skipping the checks."""
        obj = cls.__new__(cls)
        _set(obj, "mac", None if mac is None else netaddr.EUI(mac, dialect=netaddr.mac_unix_expanded))
        _set(obj, "ip", netaddr.IPAddress(ip))
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
