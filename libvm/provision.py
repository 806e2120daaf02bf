"""How ``Hypervisor.create_vm`` keeps its all-or-nothing promise.

Check, reserve and define happen under a lock (threads and local processes);
libvirt's atomic ``<host>`` add arbitrates between callers that do not share
it. One handler around every step rolls back exactly what this call added.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import libvirt
import netaddr

from ._live import InvalidState, Live, sigint_deferred, translate
from .addressing import check_hostname
from .domain import VM
from .domainxml import DomainSpec
from .errors import (
    AddressConflict,
    AlreadyExists,
    HostnameReserved,
    InvalidSpec,
    IpReserved,
    LibvirtFailure,
    LibvmError,
    MacInUse,
    MacReserved,
    NotFound,
    SubnetOverlap,
)
from .network import Network
from .storage import Pool, Volume
from .values import Disk, Nic, Reservation

log = logging.getLogger("libvm")


class Provisioner:
    """One ``create_vm`` call's machinery, bound to a connection."""

    def __init__(self, live: Live, hostname: str | None = None) -> None:
        self._live = live
        self._hostname = hostname

    def _label(self, vm: str) -> str | None:
        """The default DHCP and DNS name of the VM's NICs: the guest's own hostname
        (from its cloud-init seed) when it has one, else the VM name if it is a DNS name."""
        return self._hostname or dns_label(vm)

    def _network(self, name: str) -> Network:
        return Network(self._live, self._live.network(name))

    def create(self, spec: DomainSpec, nics: Sequence[Nic], auto_virt: bool, *, start: bool,
               allow_dynamic: bool, pool: tuple[str, str] | None, seed: Seed | None = None) -> VM:
        """``Hypervisor.create_vm`` once the non-NIC values are validated into ``spec``.

        ``seed(nics) -> bytes`` builds the cloud-init seed image once the NICs have addresses.
        """
        name = spec.name
        auto = any(nic.ip is None for nic in nics)
        added: list[tuple[Network, Reservation]] = []
        made: list[tuple[str, str]] = []  # (pool, volume) created by this call, for the rollback
        dns: list[tuple[str, str]] = []  # (network, ip) DNS entries added by this call
        owns_name = False
        try:
            with self._live.create_lock():
                try:
                    self._live.domain(name)
                    raise AlreadyExists(f"a domain named {name!r} already exists")
                except NotFound:
                    owns_name = True
                plan = self._plan_volumes(spec, seed is not None)
                resolved = self._reserve_with_retry(name, nics, added, allow_dynamic, pool, auto)
                spec = dataclasses.replace(spec, nics=tuple(resolved))
                self._add_dns(name, resolved, dns)
                spec = self._make_volumes(spec, plan, made, None if seed is None else seed(resolved))
                with translate(f"defining domain {name!r}"):
                    dom = self._live.conn.defineXML(spec.to_xml())
            if spec.autostart:
                with translate(f"setting autostart of domain {name!r}"):
                    dom.setAutostart(1)
            if start:
                self._boot(dom, spec, auto=auto_virt)
        except BaseException:
            # One handler for every step, so no window is left where a failure
            # (or Ctrl-C) between two steps skips the rollback.
            if owns_name:
                self._rollback(name, added, made, dns)
            raise
        log.info("created domain %s with %s", name, ", ".join(f"{n.mac}={n.ip}" for n in resolved))
        return VM(self._live, dom)

    def _reserve_with_retry(self, name: str, nics: Sequence[Nic], added: list[tuple[Network, Reservation]],
                            allow_dynamic: bool, pool: tuple[str, str] | None, auto: bool) -> list[Nic]:
        """Resolve and reserve every NIC; on a lost allocation race, undo and allocate again."""
        for attempt in range(1, _ALLOCATION_ATTEMPTS + 1):
            try:
                resolved = self._resolve_nics(name, nics, allow_dynamic, pool)
                self._reserve_all(resolved, added, allow_dynamic, [n.ip is None for n in nics])
                return resolved
            except AddressConflict as exc:
                # Another host (or a libvm without our lock) took the address
                # between our read and libvirt's atomic add: take the next one.
                if not (auto and _lost_race(exc)) or attempt == _ALLOCATION_ATTEMPTS:
                    raise
                self._rollback(name, added, [], [])
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
            net = self._network(nic.network)
            assert nic.mac is not None and nic.ip is not None  # resolved
            existing = net.reservation_for(nic.mac)
            if existing is not None and fresh:
                raise IpReserved(f"{nic.ip} was allocated by another caller meanwhile", other=str(nic.mac))
            if existing is not None:
                net.reserve(nic.mac, nic.ip, nic.hostname, allow_dynamic=allow_dynamic)
                continue
            # Recorded before the call: a Ctrl-C or a lost connection right after
            # libvirt added the entry must still roll it back. Only a definite
            # refusal (a conflict) means the entry, if any, is somebody else's.
            entry = (net, Reservation(nic.mac, nic.ip, nic.hostname))
            added.append(entry)
            try:
                net.reserve(nic.mac, nic.ip, nic.hostname, allow_dynamic=allow_dynamic)
            except (AddressConflict, InvalidSpec):
                added.remove(entry)  # a definite refusal: the entry, if any, is somebody else's
                raise

    def _boot(self, dom: libvirt.virDomain, spec: DomainSpec, auto: bool) -> None:
        try:
            with self._live.attaching(nic.network for nic in spec.nics), \
                    translate(f"starting domain {spec.name!r}"):
                dom.create()
        except LibvirtFailure as exc:
            if not (auto and spec.virt_type == "kvm"):
                raise
            log.warning("domain %s did not start under kvm (%s); falling back to qemu (TCG)", spec.name, exc)
            with translate(f"redefining domain {spec.name!r} for qemu"):
                # Same UUID, or libvirt refuses: "domain ... already exists with uuid".
                qemu = dataclasses.replace(spec, virt_type="qemu", uuid=dom.UUIDString())
                redefined = self._live.conn.defineXML(qemu.to_xml())
            with self._live.attaching(nic.network for nic in spec.nics), \
                    translate(f"starting domain {spec.name!r}"):
                redefined.create()

    def _plan_volumes(self, spec: DomainSpec, with_seed: bool) -> list[_VolumeStep]:
        """Check every volume this VM needs, before anything is created.

        Raises :class:`NotFound` (pool or base), :class:`InvalidSpec` (size,
        format) or :class:`AlreadyExists` (a volume name taken).
        """
        steps: list[_VolumeStep] = []
        for index, disk in enumerate(spec.disks):
            if disk.image is None:
                continue
            image = disk.image
            pool = Pool(self._live, self._live.pool(image.pool))
            try:
                base = pool.volume(image.base)
            except NotFound as exc:
                raise InvalidSpec(f"disks[{index}].base", f"{image.pool}/{image.base}", str(exc)) from exc
            info = base.info()
            if info.format not in ("qcow2", "raw"):
                raise InvalidSpec(f"disks[{index}].base", base.name, f"a qcow2 or raw image, not {info.format}")
            size = image.size or info.capacity
            if size < info.capacity:
                raise InvalidSpec(f"disks[{index}].size", size,
                                  f"smaller than the base image's virtual size ({info.capacity} bytes)")
            suffix = info.format if image.clone else "qcow2"
            steps.append(_VolumeStep(index, pool, base, f"{_volume_stem(spec.name)}-disk{index}.{suffix}",
                                     size, image.clone))
        if with_seed:
            if not steps:
                raise InvalidSpec("cloud_init", "...", "needs a disk from Disk.from_image: the seed is stored "
                                                       "as a volume in that disk's pool")
            steps.append(_VolumeStep(-1, steps[0].pool, None, f"{_volume_stem(spec.name)}-seed.iso", 0, False))
        for step in steps:
            if step.pool.has(step.name):
                raise AlreadyExists(f"pool {step.pool.name!r} already has a volume named {step.name!r}")
        return steps

    def _make_volumes(self, spec: DomainSpec, steps: list[_VolumeStep], made: list[tuple[str, str]],
                      seed: bytes | None) -> DomainSpec:
        """Create the planned volumes; the spec then names their paths."""
        disks = list(spec.disks)
        cdroms: list[str] = []
        owned: list[str] = []
        for step in steps:
            # Journal before the call (a lost reply still gets rolled back); a definite
            # refusal means the name is somebody else's, so it leaves the journal again.
            made.append((step.pool.name, step.name))
            try:
                if step.base is None:
                    assert seed is not None
                    vol = step.pool.upload_bytes(step.name, seed, "raw")
                elif step.clone:
                    vol = step.pool.clone(step.name, step.base, step.size)
                else:
                    vol = step.pool.create(step.name, step.size, "qcow2", backing=step.base)
            except (AlreadyExists, InvalidState):
                made.remove((step.pool.name, step.name))
                raise
            path = vol.path
            owned.append(path)
            if step.base is None:
                cdroms.append(path)
            else:
                old = disks[step.index]
                disks[step.index] = Disk(path, vol.format, old.bus, old.readonly)
        return dataclasses.replace(spec, disks=tuple(disks), cdroms=(*spec.cdroms, *map(Path, cdroms)),
                                   volumes=(*spec.volumes, *owned))

    def _rollback(self, name: str, added: list[tuple[Network, Reservation]],
                  made: list[tuple[str, str]], dns: list[tuple[str, str]]) -> None:
        """Undo a half-made ``create_vm``: the domain ``name`` and the reservations in ``added``.

        The domain is looked up by name (``create_vm`` checked under its lock
        that none existed), so a define whose reply was lost still gets undone.
        If libvirtd went away mid-way, reconnect once and finish. A Ctrl-C
        during the rollback is held back until it is done. Never masks the
        original error.
        """
        with sigint_deferred():
            for attempt in (1, 2):
                try:
                    with contextlib.suppress(NotFound):
                        VM(self._live, self._live.domain(name)).delete(release=False)
                    for net, res in added:
                        with contextlib.suppress(NotFound):
                            self._network(net.name).release(res.mac, ip=res.ip)
                    for network, ip in dns:
                        with contextlib.suppress(NotFound):
                            self._network(network).remove_dns_host(ip)
                    for pool, volume in reversed(made):
                        with contextlib.suppress(NotFound):
                            Pool(self._live, self._live.pool(pool)).volume(volume).delete(force=True)
                    return
                except LibvmError as exc:
                    if attempt == 2 or self._live.alive():
                        log.error("rollback of %s incomplete: %s", name, exc)
                        return
                    log.warning("libvirtd connection lost (%s); reconnecting to roll back %s", exc, name)
                    try:
                        self._live.reconnect()
                    except LibvmError as lost:
                        log.error("rollback of %s incomplete: %s", name, lost)
                        return

    @staticmethod
    def _check_dns(net: Network, index: int, nic: Nic, default: str | None) -> None:
        """Refuse a DNS name the network already gives another address (before anything changes)."""
        name = nic.hostname or default
        if name is None:
            raise InvalidSpec(f"nics[{index}].dns", True, "needs a hostname: give Nic(hostname=...) "
                                                          "or a VM name that is a DNS name")
        assert nic.ip is not None  # resolved
        try:
            net.check_dns_host(nic.ip, name)
        except AddressConflict as exc:
            raise type(exc)(f"nics[{index}]: {exc}", other=exc.other) from exc

    def _add_dns(self, vm: str, nics: Sequence[Nic], dns: list[tuple[str, str]]) -> None:
        """Add every ``dns=True`` NIC's name to its network's DNS; ``dns`` journals the new ones."""
        for nic in nics:
            if not nic.dns:
                continue
            name = nic.hostname or self._label(vm)
            assert name is not None and nic.ip is not None  # checked in _check_dns
            net = self._network(nic.network)
            fresh = not any(h.ip == str(nic.ip) for h in net.dns_hosts())
            if fresh:
                dns.append((nic.network, str(nic.ip)))
            try:
                net.add_dns_host(nic.ip, name)
            except AddressConflict:
                if fresh:
                    dns.remove((nic.network, str(nic.ip)))
                raise

    def _resolve_nics(self, name: str, nics: Sequence[Nic], allow_dynamic: bool,
                      pool: tuple[str, str] | None = None) -> list[Nic]:
        """Give every NIC an IP and a MAC and check both against the whole hypervisor."""
        owners = self._live.mac_owners()
        networks = [Network(self._live, handle) for handle in self._live.networks()]
        running = [(other.name, ip.subnet) for other in networks if other.active for ip in other.spec().ips]
        resolved: list[Nic] = []
        for index, nic in enumerate(nics):
            if not isinstance(nic, Nic):
                raise InvalidSpec(f"nics[{index}]", nic, "a libvm.Nic")
            if nic.ip is not None and nic.ip.version == 6:
                raise InvalidSpec(f"nics[{index}].ip", str(nic.ip),
                                  "libvirt cannot bind an IPv6 address to a MAC; give the NIC's IPv4 address "
                                  "and reserve IPv6 with Network.reserve(None, ip, hostname=...)")
            net = self._network(nic.network)
            ip = nic.ip
            if ip is None:
                taken = frozenset(n.ip for n in resolved if n.ip is not None and n.network == nic.network)
                ip = net.free_ip(pool=pool, avoid=taken, allow_dynamic=allow_dynamic)
            full = Nic(nic.network, ip=ip, mac=nic.mac, model=nic.model, hostname=nic.hostname, dns=nic.dns)
            mac = str(full.mac)
            first_on_network = all(n.network != nic.network for n in resolved)
            if nic.hostname is None and first_on_network and net.reservation_for(mac) is None:
                full = dataclasses.replace(full, hostname=self._label(name))
            if mac in owners:
                raise MacInUse(f"nics[{index}].mac {mac} is already on an interface of domain "
                               f"{owners[mac]!r}", other=owners[mac])
            for other in resolved:
                if other.network == full.network and other.ip == full.ip:
                    raise IpReserved(f"nics[{index}].ip {full.ip} is given to two NICs", other=str(other.mac))
            _refuse_ambiguous(running, index, nic.network, full.ip)
            try:
                net.check(mac, str(full.ip), full.hostname, allow_dynamic=allow_dynamic)
            except InvalidSpec as exc:
                raise InvalidSpec(f"nics[{index}].{exc.field}", exc.value, exc.reason) from exc
            if full.dns:
                self._check_dns(net, index, full, self._label(name))
            resolved.append(full)
        return resolved


_ALLOCATION_ATTEMPTS = 32

Seed = Callable[[Sequence[Nic]], bytes]


@dataclasses.dataclass(frozen=True)
class _VolumeStep:
    """One volume create_vm makes: a disk (``index``) from ``base``, or the seed (``base=None``)."""

    index: int
    pool: Pool
    base: Volume | None
    name: str
    size: int
    clone: bool


def _volume_stem(name: str) -> str:
    """The VM name as the start of a volume file name (other characters become '_')."""
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") or "vm"
    return stem[:120]


def _refuse_ambiguous(running: list[tuple[str, netaddr.IPNetwork]], index: int, network: str,
                      ip: netaddr.IPAddress | None) -> None:
    """Refuse an IP that also lies in another running network's subnet."""
    for other, subnet in running:
        if other != network and ip is not None and ip.version == subnet.version and ip in subnet:
            raise SubnetOverlap(
                f"nics[{index}].ip {ip} of network {network!r} is also inside {subnet.cidr} "
                f"of running network {other!r}; the address would be ambiguous",
                other=other,
            )


def _lost_race(exc: AddressConflict) -> bool:
    """Whether ``exc`` means an address was taken between our check and libvirt's add."""
    return type(exc) in (IpReserved, MacReserved, HostnameReserved, MacInUse, AddressConflict)


def dns_label(name: str) -> str | None:
    """The VM name as its DHCP hostname, if it is a valid DNS name."""
    try:
        return check_hostname(name)
    except InvalidSpec:
        return None


