"""Domain specs and their libvirt XML, both ways (pure lxml, no connection).

``DomainSpec.to_xml()`` writes a ``<domain>``; ``DomainSpec.from_xml()`` reads
one back (from libvm or from virsh / virt-install), keeping what libvm models.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import netaddr
from lxml import etree

from . import _xml
from .addressing import check_name, format_mac, parse_mac
from .errors import InvalidSpec
from .units import MIB, parse_memory, unit_bytes
from .values import Disk, Nic, PathLike, Vnc, _trusted, as_items, check_bool, check_int, check_path, check_text

VIRT_TYPES = ("qemu", "kvm")
#: ``bios`` (SeaBIOS, libvirt's default) or ``efi`` (libvirt picks an OVMF build it finds).
FIRMWARES = ("bios", "efi")
#: The namespace of libvm's own ``<metadata>`` in a domain.
METADATA_NS = "https://libvm.invalid/xmlns/domain/1"
#: libvirt's and qemu's x86 ceiling (q35 with an IOMMU); more is a typo, not a VM.
MAX_VCPUS = 4096


_ARCH = re.compile(r"[A-Za-z0-9_]+")


def _paths(value: object, field_name: str) -> tuple[object, ...]:
    """A list (any iterable) of paths, not a single one."""
    if isinstance(value, (str, bytes, os.PathLike)) or not isinstance(value, Iterable):
        raise InvalidSpec(field_name, value, "a list of paths")
    return tuple(value)


def _opt_path(value: PathLike | None, field_name: str) -> Path | None:
    return None if value is None else check_path(value, field_name)


@dataclass(frozen=True)
class GuestLogin:
    """How to log in to a guest over SSH, as ``create_vm`` recorded it in ``<libvm:vm>``.

    ``host_key``: the guest's public host key (``"ssh-ed25519 AAAA..."``), given
    to it in its cloud-init seed, checked by ``wait_for_ssh`` and ``vm.ssh()``;
    ``user``: the login user the seed names; ``identity``: the path of the
    private key that logs in, on the machine that created the VM. Each may be ``None``.
    """

    host_key: str | None = None
    user: str | None = None
    identity: str | None = None

    def __post_init__(self) -> None:
        for name in ("host_key", "user", "identity"):
            value = getattr(self, name)
            if value is not None:
                check_text(value, f"login.{name}")

    def __bool__(self) -> bool:
        return any(value is not None for value in (self.host_key, self.user, self.identity))


@dataclass(frozen=True)
class DomainSpec:
    """Everything libvm puts in a domain's XML.

    Every NIC must have a MAC (give ``mac`` or ``ip``): libvm never lets libvirt
    pick one, because the MAC is what binds the guest to its reserved address.
    """

    name: str
    memory: int = 512
    vcpus: int = 1
    nics: tuple[Nic, ...] = ()
    disks: tuple[Disk, ...] = ()
    kernel: Path | None = None
    initrd: Path | None = None
    cmdline: str | None = None
    serial_log: Path | None = None
    graphics: Vnc | None = None
    virt_type: str = "kvm"
    arch: str = "x86_64"
    uuid: str | None = None
    autostart: bool = field(default=False, compare=False)
    cdroms: tuple[Path, ...] = ()
    volumes: tuple[str, ...] = ()
    firmware: str = "bios"
    static_network: bool = False
    #: Volumes holding copies of the caller's own files (a kernel, an initrd uploaded to a
    #: remote hypervisor): deleted with the VM, ``storage=True`` or not.
    scratch: tuple[str, ...] = ()
    #: SSH login facts the VM was created with (host key, user, key path): ``<libvm:ssh>``.
    login: GuestLogin = GuestLogin()

    def __init__(
        self,
        name: str,
        memory: int | str = 512,
        vcpus: int = 1,
        nics: Iterable[Nic] = (),
        disks: Iterable[Disk] = (),
        kernel: PathLike | None = None,
        initrd: PathLike | None = None,
        cmdline: str | None = None,
        serial_log: PathLike | None = None,
        graphics: Vnc | None = None,
        virt_type: str = "kvm",
        arch: str = "x86_64",
        uuid: str | None = None,
        autostart: bool = False,
        cdroms: Iterable[PathLike] = (),
        volumes: Iterable[str] = (),
        firmware: str = "bios",
        static_network: bool = False,
        scratch: Iterable[str] = (),
        login: GuestLogin | None = None,
    ) -> None:
        if login is not None and not isinstance(login, GuestLogin):
            raise InvalidSpec("login", login, "a libvm.domainxml.GuestLogin or None")
        values = {
            "name": check_name(name),
            "memory": parse_memory(memory),
            "vcpus": check_int(vcpus, "vcpus", 1, MAX_VCPUS),
            "nics": as_items(nics, "nics", Nic),
            "disks": as_items(disks, "disks", Disk),
            "kernel": _opt_path(kernel, "kernel"),
            "initrd": _opt_path(initrd, "initrd"),
            "cmdline": None if cmdline is None else check_text(cmdline, "cmdline"),
            "serial_log": _opt_path(serial_log, "serial_log"),
            "graphics": graphics,
            "virt_type": virt_type,
            "arch": arch,
            "uuid": uuid,
            "autostart": check_bool(autostart, "autostart"),
            "cdroms": tuple(check_path(p, f"cdroms[{i}]") for i, p in enumerate(_paths(cdroms, "cdroms"))),
            "firmware": firmware,
            "static_network": check_bool(static_network, "static_network"),
            "volumes": tuple(check_text(v, f"volumes[{i}]") for i, v in enumerate(_paths(volumes, "volumes"))),
            "scratch": tuple(check_text(v, f"scratch[{i}]") for i, v in enumerate(_paths(scratch, "scratch"))),
            "login": login or GuestLogin(),
        }
        for key, value in values.items():
            object.__setattr__(self, key, value)
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.firmware, str) or self.firmware not in FIRMWARES:
            raise InvalidSpec("firmware", self.firmware, f"one of {', '.join(FIRMWARES)}")
        if self.graphics is not None and not isinstance(self.graphics, Vnc):
            raise InvalidSpec("graphics", self.graphics, "a libvm.Vnc or None")
        if not isinstance(self.virt_type, str) or self.virt_type not in VIRT_TYPES:
            raise InvalidSpec("virt_type", self.virt_type, f"one of {', '.join(VIRT_TYPES)}")
        if not isinstance(self.arch, str) or not _ARCH.fullmatch(self.arch):
            raise InvalidSpec("arch", self.arch, "a libvirt architecture name such as x86_64 or aarch64")
        if self.uuid is not None:
            check_text(self.uuid, "uuid")
            try:
                import uuid  # here: rarely given, and uuid costs ~1.5 ms to import

                uuid.UUID(self.uuid)
            except ValueError as exc:
                raise InvalidSpec("uuid", self.uuid, "not a UUID") from exc
        if (self.initrd is not None or self.cmdline) and self.kernel is None:
            raise InvalidSpec("kernel", None, "initrd and cmdline need a kernel (direct kernel boot)")
        paths: dict[str, int] = {}
        for index, disk in enumerate(self.disks):
            if disk.path is None:
                continue  # made by create_vm (Disk.from_image): its path is known once it exists
            key = str(disk.path)
            if key in paths:
                raise InvalidSpec(f"disks[{index}].path", key, f"same image as disks[{paths[key]}]")
            paths[key] = index
        seen: dict[int, int] = {}
        for index, nic in enumerate(self.nics):
            if nic.mac is None:
                raise InvalidSpec(f"nics[{index}].mac", None, "give a mac or an ip (the MAC is derived from it)")
            if int(nic.mac) in seen:
                raise InvalidSpec(
                    f"nics[{index}].mac", str(nic.mac), f"same MAC as nics[{seen[int(nic.mac)]}]"
                )
            seen[int(nic.mac)] = index

    def to_xml(self) -> str:
        """The libvirt ``<domain>`` document."""
        return _xml.to_string(self.to_element())

    def to_element(self) -> etree._Element:
        """The ``<domain>`` as an lxml element."""
        dom = etree.Element("domain", type=self.virt_type)
        _xml.sub(dom, "name", self.name)
        if self.uuid:
            _xml.sub(dom, "uuid", self.uuid)
        dual = [nic for nic in self.nics if isinstance(nic.ip6, netaddr.IPAddress)]
        if self.volumes or self.static_network or dual or self.scratch or self.login:
            # libvirt keeps one <metadata> element per namespace: everything libvm records is in <libvm:vm>.
            mine = etree.SubElement(_xml.sub(dom, "metadata"), f"{{{METADATA_NS}}}vm", nsmap={"libvm": METADATA_NS})
            for path in self.volumes:
                # Which volumes this VM owns: delete(storage=True) removes these and nothing else.
                etree.SubElement(mine, f"{{{METADATA_NS}}}volume", path=path)
            if self.static_network:
                # The guest sets its addresses itself (cloud-init network-config): no DHCP lease to wait for.
                etree.SubElement(mine, f"{{{METADATA_NS}}}static-network")
            for path in self.scratch:
                # A copy of the caller's file (kernel, initrd): removed with the VM, whatever delete() is asked.
                etree.SubElement(mine, f"{{{METADATA_NS}}}scratch", path=path)
            if self.login:
                # The guest's host key (given in its seed: checked, never learned), user and key path.
                login = {"host-key": self.login.host_key, "user": self.login.user, "identity": self.login.identity}
                etree.SubElement(mine, f"{{{METADATA_NS}}}ssh", {k: v for k, v in login.items() if v is not None})
            for nic in dual:
                # libvirt keys an IPv6 reservation by hostname, not MAC: this is how delete() finds it.
                etree.SubElement(mine, f"{{{METADATA_NS}}}nic", mac=format_mac(nic.mac) if nic.mac else "",
                                 ip6=str(nic.ip6))
        _xml.sub(dom, "memory", str(self.memory), unit="MiB")
        _xml.sub(dom, "vcpu", str(self.vcpus))
        os_el = _xml.sub(dom, "os", firmware="efi") if self.firmware == "efi" else _xml.sub(dom, "os")
        _xml.sub(os_el, "type", "hvm", arch=self.arch)
        if self.kernel is not None:
            _xml.sub(os_el, "kernel", str(self.kernel))
            if self.initrd is not None:
                _xml.sub(os_el, "initrd", str(self.initrd))
            if self.cmdline:
                _xml.sub(os_el, "cmdline", self.cmdline)
        else:
            _xml.sub(os_el, "boot", dev="hd")
        features = _xml.sub(dom, "features")
        _xml.sub(features, "acpi")
        _xml.sub(dom, "on_poweroff", "destroy")
        _xml.sub(dom, "on_reboot", "restart")
        _xml.sub(dom, "on_crash", "destroy")
        devices = _xml.sub(dom, "devices")
        for index, disk in enumerate(self.disks):
            _disk_element(devices, disk, index)
        for index, cdrom in enumerate(self.cdroms):
            # IDE: the pc machine's own controller; hdc is the secondary master, as on real PCs.
            el = _xml.sub(devices, "disk", type="file", device="cdrom")
            _xml.sub(el, "driver", name="qemu", type="raw")
            _xml.sub(el, "source", file=str(cdrom))
            _xml.sub(el, "target", dev=disk_name("hd", 2 + index), bus="ide")
            _xml.sub(el, "readonly")
        for nic in self.nics:
            assert nic.mac is not None  # checked in _validate
            iface = _xml.sub(devices, "interface", type="network")
            _xml.sub(iface, "mac", address=format_mac(nic.mac))
            _xml.sub(iface, "source", network=nic.network)
            _xml.sub(iface, "model", type=nic.model)
        if self.serial_log is not None:
            serial = _xml.sub(devices, "serial", type="file")
            _xml.sub(serial, "source", path=str(self.serial_log))
            _xml.sub(serial, "target", port="0")
            console = _xml.sub(devices, "console", type="file")
            _xml.sub(console, "source", path=str(self.serial_log))
            _xml.sub(console, "target", type="serial", port="0")
        else:
            _xml.sub(_xml.sub(devices, "serial", type="pty"), "target", port="0")
        if self.graphics is not None:
            attrs = {"type": "vnc", "listen": self.graphics.listen}
            if self.graphics.port is None:
                attrs["autoport"] = "yes"
            else:
                attrs.update(port=str(self.graphics.port), autoport="no")
            _xml.sub(devices, "graphics", **attrs)
        _xml.sub(devices, "memballoon", model="virtio")
        return dom

    @classmethod
    def from_xml(cls, xml: str | bytes) -> DomainSpec:
        """Read a ``<domain>`` (libvm's, virsh's or virt-install's) back.

        Interfaces that are not on a libvirt network (bridges, direct) and disks
        that are not files are not modelled and are left out; :func:`read_domain`
        lists every interface.
        """
        return read_domain(xml).spec


class Interface(NamedTuple):
    """One ``<interface>`` of a domain, any type (network, bridge, direct...).

    ``mac`` is lowercase and colon separated; ``network`` is ``None`` unless the
    interface is on a libvirt network; ``model`` is ``None`` when the XML names none.
    """

    mac: str
    network: str | None
    model: str | None


class DomainDoc(NamedTuple):
    """A domain's XML read once: the spec libvm models and every interface with a MAC."""

    spec: DomainSpec
    interfaces: tuple[Interface, ...]


def read_domain(xml: str | bytes) -> DomainDoc:
    """Parse a ``<domain>`` once into its :class:`DomainSpec` and its interfaces.

    Values libvirt accepted but libvm does not create (a NIC model such as
    ``ne2k_pci``, a ``usb`` disk bus, a VNC listen host name) are read as they are.
    """
    dom = _xml.parse(xml, "domain xml")
    if dom.tag != "domain":
        raise InvalidSpec("domain xml", dom.tag, "root element is not <domain>")
    interfaces: list[Interface] = []
    nics: list[Nic] = []
    ip6s = {el.get("mac", "").lower(): el.get("ip6", "")
            for el in dom.iterfind(f"metadata/{{{METADATA_NS}}}vm/{{{METADATA_NS}}}nic") if el.get("ip6")}
    for iface in dom.iterfind("devices/interface"):
        address = _attr(iface, "mac", "address", "")
        if not address:
            continue
        mac = format_mac(parse_mac(address, "interface mac"))
        network = iface.find("source[@network]")
        model = iface.find("model[@type]")
        interface = Interface(mac, None if network is None else network.get("network"),
                              None if model is None else model.get("type"))
        interfaces.append(interface)
        if iface.get("type") == "network" and interface.network:
            # No <model>: keep libvm's default rather than guess qemu's per machine type.
            nics.append(Nic.trusted(interface.network, mac, interface.model or "virtio", ip6=ip6s.get(mac)))
    disks = [
        Disk.trusted(
            path=_attr(disk, "source", "file", ""),
            format=_attr(disk, "driver", "type", "raw"),
            bus=_attr(disk, "target", "bus", "virtio"),
            readonly=disk.find("readonly") is not None,
        )
        for disk in dom.iterfind("devices/disk[@type='file'][@device='disk']")
        if _attr(disk, "source", "file", "")
    ]
    graphics = None
    vnc = dom.find("devices/graphics[@type='vnc']")
    if vnc is not None:
        port = vnc.get("port", "-1")
        fixed = vnc.get("autoport", "no") != "yes" and port != "-1"
        graphics = Vnc.trusted(port=_int(port, "vnc port") if fixed else None,
                               listen=vnc.get("listen", "127.0.0.1"))
    virt_type = dom.get("type", "kvm")
    # Trusted, not validated: mac_list() reads every domain on the host through
    # here, and one libvm would not create (a cmdline without kernel, two NICs
    # with one MAC) must not make create_vm fail.
    spec = _trusted(
        DomainSpec,
        name=dom.findtext("name") or "",
        memory=_memory_mib(dom.findtext("memory") or "0", _attr(dom, "memory", "unit", "KiB")),
        vcpus=_int(dom.findtext("vcpu") or "1", "vcpu"),
        nics=tuple(nics),
        disks=tuple(disks),
        kernel=_read_path(dom.findtext("os/kernel")),
        initrd=_read_path(dom.findtext("os/initrd")),
        cmdline=dom.findtext("os/cmdline"),
        serial_log=_read_path(_attr(dom, "devices/serial[@type='file']/source", "path", "")),
        graphics=graphics,
        virt_type=virt_type if virt_type in VIRT_TYPES else "qemu",
        arch=_attr(dom, "os/type", "arch", "x86_64"),
        static_network=dom.find(f"metadata/{{{METADATA_NS}}}vm/{{{METADATA_NS}}}static-network") is not None,
        firmware="efi" if _attr(dom, "os", "firmware", "") == "efi" or dom.find("os/loader") is not None else "bios",
        uuid=dom.findtext("uuid"),
        autostart=False,
        cdroms=tuple(Path(_attr(el, "source", "file", "")) for el in dom.iterfind("devices/disk[@device='cdrom']")
                     if _attr(el, "source", "file", "")),
        volumes=tuple(el.get("path", "") for el in dom.iterfind(f"metadata/{{{METADATA_NS}}}vm/"
                                                              f"{{{METADATA_NS}}}volume") if el.get("path")),
        scratch=tuple(el.get("path", "") for el in dom.iterfind(f"metadata/{{{METADATA_NS}}}vm/"
                                                              f"{{{METADATA_NS}}}scratch") if el.get("path")),
        login=_read_login(dom.find(f"metadata/{{{METADATA_NS}}}vm/{{{METADATA_NS}}}ssh")),
    )
    return DomainDoc(spec, tuple(interfaces))


def _read_login(el: etree._Element | None) -> GuestLogin:
    if el is None:
        return GuestLogin()
    return GuestLogin(el.get("host-key") or None, el.get("user") or None, el.get("identity") or None)


def _read_path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidSpec("domain xml", text, f"{what} is not an integer") from None


def _attr(parent: etree._Element, path: str, name: str, default: str) -> str:
    """Attribute ``name`` of the first ``path`` under ``parent``, else ``default``."""
    element = parent.find(path)
    value = element.get(name) if element is not None else None
    return default if value is None else value


def _memory_mib(amount: str, unit: str) -> int:
    """``<memory unit=...>`` in MiB (libvirt's default unit is KiB)."""
    return max(16, _int(amount, "memory") * unit_bytes(unit, 1024) // MIB)


_TARGET_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "usb": "sd", "ide": "hd", "fdc": "fd", "xen": "xvd"}


def disk_name(prefix: str, index: int) -> str:
    """libvirt's target name for disk ``index`` (virIndexToDiskName).

    Letters count like spreadsheet columns: 0 is ``vda``, 25 ``vdz``, 26 ``vdaa``,
    52 ``vdba``; ``chr(ord('a') + 26)`` would give ``vd{``, which libvirt refuses.
    """
    letters = ""
    while index >= 0:
        letters = chr(ord("a") + index % 26) + letters
        index = index // 26 - 1
    return prefix + letters


def _disk_element(devices: etree._Element, disk: Disk, index: int) -> None:
    if disk.path is None:
        raise InvalidSpec(f"disks[{index}]", disk, "a disk from Disk.from_image needs create_vm to make its volume")
    el = _xml.sub(devices, "disk", type="file", device="disk")
    _xml.sub(el, "driver", name="qemu", type=disk.format)
    _xml.sub(el, "source", file=str(disk.path))
    _xml.sub(el, "target", dev=disk_name(_TARGET_PREFIX.get(disk.bus, "sd"), index), bus=disk.bus)
    if disk.readonly:
        _xml.sub(el, "readonly")


def mac_list(xml: str | bytes) -> list[tuple[str, str | None]]:
    """``(mac, network-or-None)`` for every interface of a domain XML, any type."""
    return [(iface.mac, iface.network) for iface in read_domain(xml).interfaces]
