"""How ``create_vm`` and ``create_vms`` keep their all-or-nothing promise: snapshot, plan, apply.

1. **Snapshot**: under a lock (threads and local processes), read what the
   decision needs once: each network a NIC names (its definitions and leases),
   the subnets of the running networks, the MACs on the host (from
   :class:`libvm._live.DomainIndex`), each disk's pool and base image.
2. **Plan**: :func:`libvm.plan.plan_vms`, pure, decides every NIC of every VM
   and refuses every conflict before anything changes.
3. **Apply**: each step (release a stale lease, add a reservation, add a DNS
   entry, create a volume, define, start) is recorded in one
   :class:`Journal` with its undo *before* it runs; a failure, Ctrl-C or lost
   connection anywhere rolls the journal back in reverse, for one VM or many.

libvirt's atomic ``<host>`` add stays the final arbiter between callers that
do not share the lock (other hosts): a clash on an address libvm allocated
means another caller took it meanwhile, and the whole call is planned again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from . import _live
from ._live import InvalidState, Live, sigint_deferred
from ._log import log
from .cloudinit import SeedNic
from .domain import VM
from .domainxml import DomainSpec
from .errors import AddressConflict, AlreadyExists, InvalidSpec, LibvirtFailure, LibvmError, NotFound
from .network import Network
from .plan import NicPlan, Snapshot, Stale, VmPlan, VmRequest, plan_vms
from .reservations import NetworkState
from .storage import Pool, Volume
from .values import Disk, Reservation

T = TypeVar("T")

#: How often a call is planned again after losing an allocated address to another caller.
_ALLOCATION_ATTEMPTS = 32

#: ``seed(nics) -> ISO bytes``: the cloud-init seed, built once the NICs have addresses.
Seed = Callable[[Sequence[SeedNic]], bytes]


@dataclass(frozen=True)
class Order:
    """One VM to create: its plan request, its domain spec (NICs still open) and how to start it."""

    request: VmRequest
    spec: DomainSpec
    start: bool = True
    auto_virt: bool = False
    seed: Seed | None = None
    #: The caller's own files the domain needs on a remote hypervisor: ``(field, local path)``
    #: (``kernel``, ``initrd``), uploaded to the scratch pool.
    uploads: tuple[tuple[str, Path], ...] = ()


class Journal:
    """Every change a call made, each with its undo, recorded before the change is made.

    A reply lost on the way back (Ctrl-C, a dropped connection) leaves the
    step in the journal, so its undo runs; only a definite refusal (libvirt
    said no: the name or entry is somebody else's) takes it out again.
    """

    def __init__(self, live: Live) -> None:
        self._live = live
        self._networks: dict[str, Network] = {}  # looked up by the snapshot, used by apply
        self._undo: list[tuple[str, Callable[[], None]]] = []

    def run(self, what: str, do: Callable[[], T], undo: Callable[[], None],
            refused: tuple[type[BaseException], ...] = ()) -> T:
        """Record ``undo``, then ``do()``; if ``do`` raises one of ``refused``, forget ``undo``."""
        entry = (what, undo)
        self._undo.append(entry)
        try:
            return do()
        except refused:
            self._undo.remove(entry)
            raise

    def rollback(self) -> None:
        """Undo every step, newest first; a Ctrl-C meanwhile is held back until it is done.

        An object already gone is fine. If libvirtd went away, reconnect once
        and go on. Never raises: what cannot be undone is logged.
        """
        with sigint_deferred():
            reconnected = False
            while self._undo:
                what, undo = self._undo.pop()
                try:
                    with contextlib.suppress(NotFound):
                        undo()
                except LibvmError as exc:
                    if reconnected or self._live.alive():
                        log.error("rollback: could not undo %s: %s", what, exc)
                        continue
                    log.warning("libvirtd connection lost (%s); reconnecting to roll back", exc)
                    reconnected = True
                    try:
                        self._live.reconnect()
                        with contextlib.suppress(NotFound):
                            undo()
                    except LibvmError as lost:
                        log.error("rollback: could not undo %s: %s", what, lost)


class _LostRace(Exception):
    """libvirt refused an address libvm allocated: another caller took it after our snapshot."""

    def __init__(self, conflict: AddressConflict) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


class Provisioner:
    """``create_vm``'s machinery, bound to a connection."""

    def __init__(self, live: Live) -> None:
        self._live = live
        self._networks: dict[str, Network] = {}  # looked up by the snapshot, used by apply

    def create(self, orders: Sequence[Order], done: Callable[[], None] | None = None) -> list[VM]:
        """Create every VM of ``orders``, all or nothing; ``done()`` after each one is created and started."""
        for attempt in range(1, _ALLOCATION_ATTEMPTS + 1):
            journal = Journal(self._live)
            try:
                return self._create(orders, journal, done)
            except (_LostRace, Stale) as lost:
                journal.rollback()
                if attempt == _ALLOCATION_ATTEMPTS:
                    raise lost.conflict from None
                log.info("address taken concurrently (%s); planning again", lost.conflict)
            except BaseException:
                # One handler for every step, so no window is left where a failure
                # (or Ctrl-C) between two steps skips the rollback.
                journal.rollback()
                raise
        raise AssertionError("unreachable")

    def _create(self, orders: Sequence[Order], journal: Journal, done: Callable[[], None] | None) -> list[VM]:
        with self._live.create_lock():
            snapshot, volumes = self._snapshot(orders)
            plans = plan_vms([order.request for order in orders], snapshot)
            handles = [self._apply(order, plan, snapshot, steps, journal)
                       for order, plan, steps in zip(orders, plans, volumes, strict=True)]
        vms = []
        for order, (spec, handle) in zip(orders, handles, strict=True):
            if order.start:
                self._boot(handle, spec, order.auto_virt)
            log.info("created domain %s with %s", spec.name, ", ".join(f"{n.mac}={n.ip}" for n in spec.nics))
            vms.append(VM(self._live, handle))
            if done is not None:
                done()
        return vms

    # -- snapshot ----------------------------------------------------------------

    def _snapshot(self, orders: Sequence[Order]) -> tuple[Snapshot, list[list[_VolumeStep]]]:
        """Read what the plan needs, once: the names, the involved networks, the MACs, the volumes.

        Independent reads go out together (:meth:`Live.fan_out`): over a network
        link the snapshot costs two or three round trips, not one per read.
        """
        names: list[str] = []
        for order in orders:
            if order.spec.name in names:
                raise AlreadyExists(f"{order.request.where}name: {order.spec.name!r} is given to two VMs of this call")
            names.append(order.spec.name)
        involved = list(dict.fromkeys(nic.network for order in orders for nic in order.request.nics))
        reads: list[Callable[[], object]] = [functools.partial(self._taken, name) for name in names]
        uuids = [order.spec.uuid for order in orders if order.spec.uuid is not None]
        reads += [functools.partial(self._live.domain_with_uuid, uuid) for uuid in uuids]
        reads += [functools.partial(self._read_network, network) for network in involved]
        reads += [functools.partial(self._live.networks, True), self._live.mac_owners]
        found = self._live.fan_out(*reads)
        for name, taken in zip(names, found, strict=False):
            if taken:
                raise AlreadyExists(f"a domain named {name!r} already exists")
        for uuid, holder in zip(uuids, found[len(names):], strict=False):
            if holder is not None:
                raise AlreadyExists(f"uuid={uuid!r}: domain {holder!r} already has this UUID")
        networks: dict[str, NetworkState] = {}
        for network, state in zip(involved, found[len(names) + len(uuids):], strict=False):
            assert isinstance(state, NetworkState)
            networks[network] = state
        running_handles, owners = found[-2], found[-1]
        assert isinstance(running_handles, list) and isinstance(owners, dict)
        others = [Network(self._live, handle) for handle in running_handles if handle.name() not in networks]
        specs = self._live.fan_out(*(other.spec for other in others))
        running = [(other.name, ip.subnet) for other, spec in zip(others, specs, strict=True) for ip in spec.ips]
        running += [(name, ip.subnet) for name, state in networks.items() if state.active for ip in state.spec.ips]
        volumes = [self._plan_volumes(order.spec, order.seed is not None) for order in orders]
        return Snapshot(networks, tuple(running), owners), volumes

    def _taken(self, name: str) -> bool:
        try:
            self._live.domain(name)
        except NotFound:
            return False
        return True

    def _read_network(self, name: str) -> NetworkState:
        net = self._networks[name] = Network.named(self._live, name)
        return net.state(leases=True)

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

    # -- apply -------------------------------------------------------------------

    def _apply(self, order: Order, plan: VmPlan, snapshot: Snapshot, volumes: list[_VolumeStep],
               journal: Journal) -> tuple[DomainSpec, _live.DomainHandle]:
        """Make one planned VM's changes, each recorded in ``journal`` before it runs."""
        for nic in plan.nics:
            net = self._networks[nic.nic.network]
            state = snapshot.networks[nic.nic.network]
            if nic.reservation is not None:
                for lease in nic.reclaim:
                    net.reclaim(lease, nic.reservation)
                host = nic.reservation
                try:
                    journal.run(f"reservation {host} on network {net.name!r}",
                                functools.partial(net.update_host, state, _live.ADD, host, "reserving"),
                                functools.partial(_release, self._live, net.name, host),
                                refused=(AddressConflict, InvalidSpec))
                except AddressConflict as exc:
                    if nic.allocated:
                        raise _LostRace(exc) from exc
                    raise
            if nic.reservation6 is not None:
                host6 = nic.reservation6
                journal.run(f"reservation {host6} on network {net.name!r}",
                            functools.partial(net.update_host, state, _live.ADD, host6, "reserving"),
                            functools.partial(_release, self._live, net.name, host6),
                            refused=(AddressConflict, InvalidSpec))
            if nic.dns is not None:
                journal.run(f"DNS entry {nic.dns.ip} on network {net.name!r}",
                            functools.partial(net.update_dns, _live.ADD, nic.dns, state.flags),
                            functools.partial(_remove_dns, self._live, net.name, nic.dns.ip),
                            refused=(InvalidState,))
        spec = dataclasses.replace(order.spec, nics=plan.resolved)
        if order.uploads:
            spec = self._upload(spec, order.uploads, journal)
        seed = None
        if order.seed is not None:
            seed = order.seed([_seed_nic(n, snapshot.networks[n.nic.network].spec.forward) for n in plan.nics])
        spec = self._make_volumes(spec, volumes, journal, seed)
        name = spec.name
        handle = journal.run(f"domain {name!r}", lambda: _live.define(self._live, "domain", spec.to_xml(), name),
                             lambda: VM(self._live, self._live.domain(name)).delete(release=False),
                             refused=(AlreadyExists,))
        if spec.autostart:
            _live.call(handle, "setAutostart", f"setting autostart of domain {name!r}", 1)
        return spec, handle

    def _upload(self, spec: DomainSpec, uploads: tuple[tuple[str, Path], ...], journal: Journal) -> DomainSpec:
        """Copy the caller's files the domain needs (kernel, initrd) to the hypervisor's scratch
        pool, as virt-install does for a remote host; the spec then names the copies."""
        from .storage import Pool

        pool = Pool(self._live, _scratch_pool(self._live, journal))
        changes: dict[str, object] = {}
        scratch: list[str] = []
        for field, local in uploads:
            name = f"{_volume_stem(spec.name)}-{field}"
            if pool.has(name):
                raise AlreadyExists(f"pool {pool.name!r} already has a volume named {name!r}")
            vol = journal.run(f"volume {pool.name}/{name}", functools.partial(pool.upload, name, local, fmt="raw"),
                              functools.partial(_delete_volume, self._live, pool.name, name),
                              refused=(AlreadyExists, InvalidState))
            changes[field] = Path(vol.path)
            scratch.append(vol.path)
        return dataclasses.replace(spec, scratch=(*spec.scratch, *scratch), **changes)  # type: ignore[arg-type]

    def _make_volumes(self, spec: DomainSpec, steps: list[_VolumeStep], journal: Journal,
                      seed: bytes | None) -> DomainSpec:
        """Create the planned volumes; the spec then names their paths."""
        disks = list(spec.disks)
        cdroms: list[str] = []
        owned: list[str] = []
        for step in steps:
            vol = journal.run(f"volume {step.pool.name}/{step.name}", functools.partial(step.make, seed),
                              functools.partial(_delete_volume, self._live, step.pool.name, step.name),
                              refused=(AlreadyExists, InvalidState))
            path = vol.path
            owned.append(path)
            if step.base is None:
                cdroms.append(path)
            else:
                old = disks[step.index]
                disks[step.index] = Disk(path, vol.format, old.bus, old.readonly)
        return dataclasses.replace(spec, disks=tuple(disks), cdroms=(*spec.cdroms, *map(Path, cdroms)),
                                   volumes=(*spec.volumes, *owned))

    def _boot(self, handle: _live.DomainHandle, spec: DomainSpec, auto: bool) -> None:
        try:
            with self._live.attaching(nic.network for nic in spec.nics):
                _live.call(handle, "create", f"starting domain {spec.name!r}")
        except LibvirtFailure as exc:
            if not (auto and spec.virt_type == "kvm"):
                raise
            log.warning("domain %s did not start under kvm (%s); falling back to qemu (TCG)", spec.name, exc)
            # Same UUID, or libvirt refuses: "domain ... already exists with uuid".
            uuid = str(_live.call(handle, "UUIDString", f"domain {spec.name!r}"))
            qemu = dataclasses.replace(spec, virt_type="qemu", uuid=uuid)
            redefined = _live.define(self._live, "domain", qemu.to_xml(), spec.name)
            with self._live.attaching(nic.network for nic in spec.nics):
                _live.call(redefined, "create", f"starting domain {spec.name!r}")


#: Where libvm keeps copies of the caller's files on a remote hypervisor (a dir pool, made on first use).
SCRATCH_POOL = ("libvm-scratch", "/var/lib/libvirt/images/libvm-scratch")


def _scratch_pool(live: Live, journal: Journal) -> _live.PoolHandle:
    """The hypervisor's scratch pool, defined, built and started if it is not there (a pool
    this call defined is undefined again by the rollback)."""
    from .storagexml import pool_xml

    name, path = SCRATCH_POOL
    try:
        handle = live.pool(name)
    except NotFound:
        handle = journal.run(f"storage pool {name!r}",
                             functools.partial(_live.define, live, "storage pool", pool_xml(name, path), name),
                             functools.partial(_remove_pool, live, name), refused=(AlreadyExists,))
        for verb, arg in (("build", 0), ("setAutostart", 1)):
            _live.call(handle, verb, f"preparing storage pool {name!r}", arg)
    if not _live.pool_active(handle, f"pool {name!r}"):
        _live.pool_start(handle, f"starting pool {name!r}")
    return handle


def _seed_nic(nic: NicPlan, forward: str) -> SeedNic:
    """A planned NIC's addresses as ``static_network`` pins them in the guest.

    The network's own address is the gateway and the DNS server (libvirt's
    dnsmasq); on an isolated network (``forward="none"``) there is no default
    route, as libvirt's DHCP gives none there either.
    """
    assert nic.nic.mac is not None and nic.nic.ip is not None  # planned
    routed = forward != "none"
    six = nic.subnet6
    return SeedNic(nic.nic.mac, nic.nic.ip, nic.subnet.prefixlen, nic.subnet.ip if routed else None,
                   dns=nic.subnet.ip, ip6=nic.nic.ip6 if six is not None else None,
                   prefixlen6=None if six is None else six.prefixlen,
                   gateway6=six.ip if six is not None and routed else None)


def _remove_pool(live: Live, name: str) -> None:
    from .storage import Pool

    Pool(live, live.pool(name)).delete(volumes=False)


def _release(live: Live, network: str, host: Reservation) -> None:
    Network.named(live, network).release(host.mac, ip=host.ip)


def _remove_dns(live: Live, network: str, ip: str) -> None:
    Network.named(live, network).remove_dns_host(ip)


def _delete_volume(live: Live, pool: str, volume: str) -> None:
    Pool(live, live.pool(pool)).volume(volume).delete(force=True)


@dataclasses.dataclass(frozen=True)
class _VolumeStep:
    """One volume create_vm makes: a disk (``index``) from ``base``, or the seed (``base=None``)."""

    index: int
    pool: Pool
    base: Volume | None
    name: str
    size: int
    clone: bool

    def make(self, seed: bytes | None) -> Volume:
        if self.base is None:
            assert seed is not None
            return self.pool.upload_bytes(self.name, seed, "raw")
        if self.clone:
            return self.pool.clone(self.name, self.base, self.size)
        return self.pool.create(self.name, self.size, "qcow2", backing=self.base)


def _volume_stem(name: str) -> str:
    """The VM name as the start of a volume file name (other characters become '_')."""
    stem = re.sub(r"[^A-Za-z0-9._+-]", "_", name).lstrip(".") or "vm"
    return stem[:120]
