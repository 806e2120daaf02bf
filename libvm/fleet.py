"""A fleet of hypervisors: one place to create VMs across several libvirt hosts.

:class:`Fleet` holds one :class:`Hypervisor` per host and adds what no single
host can know:

- **placement** (:mod:`libvm.placement`): filter, then weigh, on one reading of
  every host, with the fleet's own in-flight claims counted so that threads
  placing at once never overcommit a host;
- **one ledger**: VM names and MACs unique across the fleet (a MAC libvm would
  derive from the address is replaced when another host holds it), the
  shared-L2 rules (one DHCP server per L2, :func:`libvm.placement.l2_verdicts`);
- **all or nothing across hosts**: each host's part of a ``create_vms`` is one
  host ``create_vms`` (itself all or nothing, with its journal); when one
  host fails or the call is interrupted, every host that succeeded is undone:
  its VMs, the reservations, DNS entries and volumes they brought, and the base
  images uploaded for them;
- **a host down or slow**: every call fans out on threads and waits at most
  ``timeout`` seconds; a host that did not answer shows its error in its row,
  is skipped by placement and never hides the other hosts.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from ._live import sigint_deferred
from ._log import log
from .addressing import check_name, format_mac, parse_memory
from .domain import VM, nic_rows
from .errors import (
    AlreadyExists,
    ConnectionClosed,
    InvalidSpec,
    LibvmError,
    MacInUse,
    NotFound,
)
from .hypervisor import Hypervisor, check_specs
from .ledger import mac_for
from .placement import (
    Claim,
    HostFacts,
    Placement,
    Policy,
    Request,
    l2_verdicts,
    place,
)
from .progress import Progress, ProgressArg
from .survey import Call, Host, HostList, Survey, fan_out, read_host, why
from .units import MIB, parse_amount
from .values import Disk, Nic, as_items, check_path, read_all
from .views import VM_COLUMNS, Rendered, Table

if TYPE_CHECKING:
    from .storage import Volume

T = TypeVar("T")

__all__ = ["Fleet", "FleetVMList", "HostList"]

#: What a cloud-init seed volume is counted as in a pool (it is a few KiB).
_SEED_BYTES = 2**20


@dataclass
class _Claim:
    """What one VM being created (or created since the host's last reading) holds in the fleet."""

    uri: str
    name: str
    resources: Claim
    macs: set[str]
    landed: float | None = None  # time.monotonic() when created; None while in flight


@dataclass
class _Done:
    """One host's finished part of a ``create_vms``: what to undo if another host fails."""

    uri: str
    hv: Hypervisor
    vms: list[VM]
    nics: list[tuple[Nic, ...]]
    reserved: dict[str, set[str]]  # network -> MACs reserved before the call
    dns: dict[str, set[str]]  # network -> DNS addresses before the call
    uploads: list[Volume]


class FleetVMList(list[VM], Rendered):
    """The VMs of :meth:`Fleet.vms` (each with ``vm.hypervisor``); ``errors``: ``{uri: why}``
    for the hosts that could not be listed, shown as rows of their own."""

    def __init__(self, vms: Iterable[VM] = (), errors: Mapping[str, str] | None = None) -> None:
        super().__init__(vms)
        self.errors = dict(errors or {})

    def table(self) -> Table:
        """One row per NIC, the host first; then one row per host that did not answer."""
        rows: list[tuple[str, ...]] = []
        for vm in self:
            uri = vm.hypervisor.uri if vm.hypervisor is not None else "-"
            for index, row in enumerate(nic_rows([vm])):
                rows.append((uri if index == 0 else "", *row.cells()))
        for uri, error in self.errors.items():
            rows.append((uri, f"unreachable: {error}", *("-",) * (len(VM_COLUMNS) - 1)))
        return Table(("host", *VM_COLUMNS), tuple(rows), f"{len(self)} VM{'' if len(self) == 1 else 's'}")


class Fleet(Rendered):
    """Several hypervisors as one: placement, one ledger of names and MACs, all or nothing across hosts.

    ``hosts``: libvirt URIs (the fleet connects, and closes them with
    :meth:`close`) or open :class:`Hypervisor` objects (yours to close).
    ``timeout``: seconds every call waits for a host before reporting it as
    not answering. ``memory_ratio``, ``reserve`` (MiB, or ``"512MiB"``) and
    ``disk_ratio``: how full a host may get (:class:`libvm.placement.Policy`).
    ``dhcp_owners``: ``{network name: URI}`` for a network that is one L2
    across hosts, served by that host's DHCP; ``{network name: None}`` for
    same-named networks that are separate islands (see docs/fleet.md).
    A host that cannot be reached is reported, never raised: see :meth:`hosts`.
    """

    def __init__(self, hosts: Iterable[str | Hypervisor], *, timeout: float = 10.0, memory_ratio: float = 1.0,
                 reserve: int | str = 512, disk_ratio: float = 1.0,
                 dhcp_owners: Mapping[str, str | None] | None = None) -> None:
        wanted = "a list of libvirt URIs or libvm.Hypervisor objects"
        if isinstance(hosts, (str, bytes, Hypervisor, Mapping)) or not isinstance(hosts, Iterable):
            raise InvalidSpec("hosts", hosts, wanted)
        self._hosts: dict[str, Host] = {}
        for index, item in enumerate(read_all(hosts, hosts, "hosts", wanted)):
            if isinstance(item, Hypervisor):
                uri, hv = item.uri, item
            elif isinstance(item, str) and item.strip() and "\x00" not in item:
                uri, hv = item, None
            else:
                raise InvalidSpec(f"hosts[{index}]", item, "a libvirt URI or a libvm.Hypervisor")
            if uri in self._hosts:
                raise InvalidSpec(f"hosts[{index}]", uri, "this host is given twice")
            self._hosts[uri] = Host(uri, hv)
        if not self._hosts:
            raise InvalidSpec("hosts", hosts, "at least one host")
        for field, value in (("timeout", timeout), ("memory_ratio", memory_ratio), ("disk_ratio", disk_ratio)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                raise InvalidSpec(field, value, "a positive number")
        reserve_mib = _reserve_mib(reserve)
        owners = _owners(dhcp_owners, self._hosts)
        self.timeout = float(timeout)
        self.policy = Policy(float(memory_ratio), reserve_mib, float(disk_ratio))
        self.dhcp_owners: dict[str, str | None] = owners
        self._lock = threading.Lock()  # placement, claims and the ledger
        self._claims: list[_Claim] = []
        self._surveys: dict[str, Survey] = {}  # the latest reading of each host that answered
        self._facts: dict[str, HostFacts] = {}  # the latest reading of each host, or its error
        self._images: dict[tuple[str, str], Path] = {}  # (pool, volume) -> the local file it came from
        self._closed = False
        self._fan_out(lambda host: host.hypervisor())  # connect to all at once; failures show in hosts()

    def __repr__(self) -> str:
        return f"<libvm.Fleet {list(self._hosts)!r}>"

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections the fleet opened (idempotent); Hypervisors given to it stay open.

        Every later call raises :class:`ConnectionClosed`, as a closed
        :class:`Hypervisor` does: nothing reopens a connection nobody would close.
        """
        self._closed = True
        for host in self._hosts.values():
            if host.owned and host.hv is not None:
                host.hv.close()

    @property
    def uris(self) -> list[str]:
        """The hosts' URIs, in the order given."""
        return list(self._hosts)

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectionClosed(f"this fleet ({', '.join(self._hosts)}) is closed; make a new libvm.Fleet")

    def hypervisor(self, uri: str) -> Hypervisor:
        """The :class:`Hypervisor` of host ``uri`` (connecting if needed); :class:`NotFound` for another URI."""
        self._check_open()
        if not isinstance(uri, str):
            raise InvalidSpec("uri", uri, "the URI of one of the fleet's hosts (a string)")
        if uri not in self._hosts:
            raise NotFound(f"no host {uri!r} in this fleet ({', '.join(self._hosts)})")
        return self._hosts[uri].hypervisor()

    # -- reading the hosts ---------------------------------------------------------

    def _fan_out(self, work: Callable[[Host], T]) -> dict[str, T | BaseException]:
        """``work(host)`` on every host at once, at most ``timeout`` seconds (:func:`libvm.survey.fan_out`)."""
        self._check_open()
        return fan_out(self._hosts.values(), work, self.timeout)

    def _survey(self, bases: frozenset[tuple[str, str]] = frozenset()) -> dict[str, HostFacts]:
        """Read every host once (in parallel); remember the readings; ``{uri: facts}``.

        ``bases``: ``(pool, volume)`` whose virtual size placement needs.
        """
        found = self._fan_out(lambda host: read_host(host, bases))
        with self._lock:
            for uri, result in found.items():
                if isinstance(result, Survey):
                    self._surveys[uri] = result
                    self._facts[uri] = result.facts
                else:
                    self._facts[uri] = HostFacts(uri, error=why(result), read_at=time.monotonic())
            self._prune()
            return dict(self._facts)

    def hosts(self) -> HostList:
        """One row per host, read now: memory (total, free, committed by defined domains),
        vCPUs, networks (subnet, forward mode, active), pools (free space), or the error."""
        facts = self._survey()
        return HostList(facts[uri] for uri in self._hosts)

    def table(self) -> Table:
        return self.hosts().table()

    # -- VMs ---------------------------------------------------------------------

    def vms(self) -> FleetVMList:
        """Every domain of every host answering, by host then name; ``errors`` lists the others."""
        def listing(host: Host) -> list[VM]:
            hv = host.hypervisor()
            vms = list(hv.vms())
            for vm in vms:
                vm.hypervisor = hv
            return vms

        found = self._fan_out(listing)
        vms: list[VM] = []
        errors: dict[str, str] = {}
        for uri in self._hosts:
            result = found[uri]
            if isinstance(result, BaseException):
                errors[uri] = why(result)
            else:
                vms.extend(result)
        return FleetVMList(vms, errors)

    def vm(self, name: str) -> VM:
        """The domain ``name`` wherever it is (``vm.hypervisor`` says where).

        Raises :class:`NotFound` if no host answering has it (the message names
        the hosts that did not answer), :class:`AlreadyExists` if several have
        it (domains made outside the fleet): then ask ``fleet.hypervisor(uri).vm(name)``.
        """
        def lookup(host: Host) -> VM | None:
            hv = host.hypervisor()
            try:
                vm = hv.vm(name)
            except NotFound:
                return None
            vm.hypervisor = hv
            return vm

        found = self._fan_out(lookup)
        hits = [r for r in found.values() if isinstance(r, VM)]
        if len(hits) > 1:
            where = ", ".join(vm.hypervisor.uri for vm in hits if vm.hypervisor is not None)
            raise AlreadyExists(f"a domain named {name!r} exists on several hosts ({where}); "
                                f"use fleet.hypervisor(uri).vm({name!r})")
        if hits:
            return hits[0]
        down = {uri: why(r) for uri, r in found.items() if isinstance(r, BaseException)}
        if any(isinstance(r, InvalidSpec) for r in found.values()):
            raise next(r for r in found.values() if isinstance(r, InvalidSpec))
        unknown = f" (not asked: {'; '.join(f'{uri}: {error}' for uri, error in down.items())})" if down else ""
        raise NotFound(f"no domain named {name!r} on any host of the fleet{unknown}")

    def delete_vm(self, name: str, *, release: bool = True, storage: bool = False) -> None:
        """Delete domain ``name`` from the host that has it, as :meth:`VM.delete` does.

        Raises what :meth:`vm` raises when it cannot tell which domain is meant.
        """
        vm = self.vm(name)
        vm.delete(release=release, storage=storage)
        with self._lock:
            self._claims = [c for c in self._claims if not (c.name == name and c.landed is not None)]

    def create_vm(self, name: str, memory: int | str = 512, vcpus: int = 1, nics: Iterable[Nic] = (), *,
                  placement: Placement = "spread", **options: Any) -> VM:
        """Place a VM on the best host and create it there; ``vm.hypervisor`` says where.

        ``options`` are :meth:`Hypervisor.create_vm`'s keyword arguments
        (``disks``, ``cloud_init``, ``virt_type``, ...). ``placement``:
        ``"spread"`` (the host with the most uncommitted memory after the VM),
        ``"pack"`` (the least), or a callable ``(hosts, request) -> host``
        choosing among the eligible :class:`libvm.placement.HostFacts`.
        Raises :class:`NoEligibleHost` (every host's reasons),
        :class:`AlreadyExists` (the name is on a host of the fleet),
        :class:`MacInUse` (the MAC is on another host, naming the domain and
        host), :class:`SubnetOverlap` (a network the fleet cannot keep safe,
        see docs/fleet.md), and what :meth:`Hypervisor.create_vm` raises.
        """
        spec = {"name": name, "memory": memory, "vcpus": vcpus, "nics": nics, **options}
        try:
            return self.create_vms([spec], placement=placement)[0]
        except InvalidSpec as exc:
            if exc.field == "specs[0]":  # an unknown keyword: what Python says for Hypervisor.create_vm
                unknown = sorted(set(options) - set(inspect.signature(Hypervisor.create_vm).parameters))
                raise TypeError(f"Fleet.create_vm() got an unexpected keyword argument {unknown[0]!r}") from None
            raise exc.relocated(lambda field: field.removeprefix("specs[0].")) from exc.__cause__
        except LibvmError as exc:
            raise exc.relocated(lambda text: re.sub(r"specs\[0\](\.|: )", "", text)) from exc.__cause__

    def create_vms(self, specs: Iterable[Mapping[str, Any]], *, placement: Placement = "spread",
                   progress: ProgressArg = None) -> FleetVMList:
        """Create several VMs across the fleet, all or nothing; each mapping holds
        :meth:`Hypervisor.create_vm`'s keyword arguments.

        Every VM is placed first (each placement counts the ones before it),
        then each host creates its VMs with one :meth:`Hypervisor.create_vms`,
        all hosts at once. If any host fails, or the call is interrupted
        (Ctrl-C), the hosts that succeeded are rolled back: their new VMs are
        deleted with the reservations, DNS entries and volumes the call made,
        and base images it uploaded. ``progress`` as for
        :meth:`Hypervisor.create_vms`. Raises what :meth:`create_vm` raises,
        an error of a host's part naming ``specs[i]`` as given here.
        """
        self._check_open()
        report = Progress(progress)
        items = check_specs(specs)
        requests = [_request(kwargs, f"specs[{index}]") for index, kwargs in enumerate(items)]
        bases = frozenset((pool, base) for r in requests for pool, base, _ in r.disks if base is not None)
        facts = self._survey(bases)
        requests = [request.sized(facts.values()) for request in requests]
        claims: list[_Claim] = []
        try:
            with self._lock:  # placing and claiming in one step: no other thread places in between
                chosen, claims = self._place(items, requests, facts, placement)
                self._claims.extend(claims)
            with report.run(len(items), "creating VMs", "VM") as step:
                done = self._apply(items, chosen, claims, step)
            with self._lock:
                now = time.monotonic()
                for claim in claims:
                    claim.landed = now
        except BaseException:
            with self._lock:
                self._claims = [c for c in self._claims if all(c is not mine for mine in claims)]
            raise
        order: dict[str, VM] = {vm.name: vm for part in done for vm in part.vms}
        return FleetVMList(order[str(kwargs["name"])] for kwargs in items)

    # -- placing -----------------------------------------------------------------

    def _place(self, items: list[dict[str, Any]], requests: list[Request], facts: Mapping[str, HostFacts],
               placement: Placement) -> tuple[list[str], list[_Claim]]:
        """Choose a host per VM and its MACs; the claims to hold while they are created. Under the lock."""
        hosts = [facts[uri] for uri in self._hosts]
        wanted = [name for r in requests for name in r.networks]
        verdicts = l2_verdicts(hosts, wanted, self.dhcp_owners)
        names = self._names()
        macs = self._macs()
        held = self._held()
        uploadable = frozenset(self._images)
        chosen: list[str] = []
        claims: list[_Claim] = []
        for index, (kwargs, request) in enumerate(zip(items, requests, strict=True)):
            where = f"specs[{index}]"
            if request.name in names:
                raise AlreadyExists(f"{where}: a domain named {request.name!r} already exists on {names[request.name]}")
            host = place(hosts, request, held, self.policy, placement, networks=verdicts, uploadable=uploadable)
            nics = [mac_for(nic, host, hosts, macs, f"{where}.nics[{i}]")
                    for i, nic in enumerate(kwargs.get("nics", ()))]
            kwargs["nics"] = nics
            mine = {format_mac(nic.mac) for nic in nics if nic.mac is not None}
            for mac in mine:
                macs[mac] = (host.uri, f"VM {request.name!r} of this call")
            resources = Claim(request.memory, request.vcpus, request.pool_bytes())
            held[host.uri] = held.get(host.uri, Claim()) + resources
            names[request.name] = f"{host.uri} (this call)"
            claims.append(_Claim(host.uri, request.name, resources, mine))
            chosen.append(host.uri)
        return chosen, claims

    def _held(self) -> dict[str, Claim]:
        """Per host, what the fleet has promised beyond the host's last reading."""
        held: dict[str, Claim] = {}
        for claim in self._claims:
            held[claim.uri] = held.get(claim.uri, Claim()) + claim.resources
        return held

    def _prune(self) -> None:
        """Forget claims that a host's reading, started after they landed, includes."""
        def counted(claim: _Claim) -> bool:
            facts = self._facts.get(claim.uri)
            return claim.landed is not None and facts is not None and facts.error is None \
                and facts.read_at > claim.landed
        self._claims = [c for c in self._claims if not counted(c)]

    def _names(self) -> dict[str, str]:
        """Every VM name in the fleet: the hosts' last readings (a host that is down keeps
        its last known names) and the claims; ``{name: where}``."""
        names: dict[str, str] = {}
        for uri, survey in self._surveys.items():
            for name in survey.names:
                names.setdefault(name, uri)
        for claim in self._claims:
            names.setdefault(claim.name, f"{claim.uri} (being created)")
        return names

    def _macs(self) -> dict[str, tuple[str, str]]:
        """Every MAC in the fleet: ``{mac: (host, owner)}`` (last readings and claims)."""
        macs: dict[str, tuple[str, str]] = {}
        for uri, survey in self._surveys.items():
            for mac, domain in survey.macs.items():
                macs.setdefault(mac, (uri, f"domain {domain!r}"))
        for claim in self._claims:
            for mac in claim.macs:
                macs.setdefault(mac, (claim.uri, f"VM {claim.name!r} (being created)"))
        return macs

    def _check_macs(self, done: list[_Done], claims: list[_Claim], now: Mapping[str, object]) -> None:
        """After creating: every MAC of the new VMs is on no other host. Under the lock.

        ``now``: each host's ``{mac: domain}`` read after the VMs were created
        (or its error: then its last reading counts). Only a host changed
        behind the fleet's back (virsh, another program) can make this fail;
        then the whole call is rolled back.
        """
        mine = {mac for claim in claims for mac in claim.macs}
        others: dict[str, tuple[str, str]] = {}
        for uri in self._hosts:
            owners = now.get(uri)
            survey = self._surveys.get(uri)
            if not isinstance(owners, dict):
                owners = dict(survey.macs) if survey is not None else {}
            for mac, domain in owners.items():
                others.setdefault(mac, (uri, f"domain {domain!r}"))
        for claim in self._claims:
            if all(claim is not c for c in claims):
                for mac in claim.macs:
                    others.setdefault(mac, (claim.uri, f"VM {claim.name!r} (being created)"))
        by_name = {claim.name: claim for claim in claims}
        for part in done:
            for vm in part.vms:
                claim = by_name[vm.name]
                for mac in vm.macs:
                    owner = others.get(mac)
                    if owner is not None and owner[0] != part.uri and mac not in mine:
                        self._rollback(done)  # under the fleet's lock: rare, and nothing may take the MAC meanwhile
                        raise MacInUse(f"MAC {mac} of VM {vm.name!r} is already on {owner[1]} on host {owner[0]} "
                                       f"(it appeared while the VM was created); nothing was kept",
                                       other=f"{owner[0]} {owner[1]}")
                    claim.macs.add(mac)
                    others[mac] = (part.uri, f"VM {vm.name!r} of this call")

    # -- applying ----------------------------------------------------------------

    def _apply(self, items: list[dict[str, Any]], chosen: list[str], claims: list[_Claim],
               step: Callable[[], None]) -> list[_Done]:
        """Each host creates its VMs (all hosts at once); all or nothing across them.

        A host's ``create_vms`` runs on a worker thread and is all or nothing
        by itself. Ctrl-C reaches only the main thread, which is waiting here:
        it then waits for the workers to finish (a libvirt call cannot be
        cut), undoes every host that succeeded, and raises KeyboardInterrupt.
        So every change is undone or kept as a whole; no host is left half done.
        The MACs the hosts derived are checked last (:meth:`_check_macs`).
        """
        groups: dict[str, list[int]] = {}
        for index, uri in enumerate(chosen):
            groups.setdefault(uri, []).append(index)
        lock = threading.Lock()

        def locked_step() -> None:
            with lock:
                step()

        interrupted = False
        calls: dict[str, Call] = {}
        try:
            with sigint_deferred():  # a Ctrl-C now waits until every started host is known
                for uri, indexes in groups.items():
                    part = [items[i] for i in indexes]
                    calls[uri] = Call(self._hosts[uri], functools.partial(self._create_on, part=part,
                                                                           step=locked_step))
        except KeyboardInterrupt:
            interrupted = True
        for call in calls.values():
            # Not Thread.join: a KeyboardInterrupt inside it can mark a running thread
            # as stopped (CPython 3.11, bpo-45274's fix), and its VMs would never be undone.
            while not call.ended.is_set():
                try:
                    call.ended.wait(0.1)
                except KeyboardInterrupt:
                    interrupted = True
        done = [call.result for call in calls.values() if isinstance(call.result, _Done)]
        failed = [(uri, call.result) for uri, call in calls.items() if isinstance(call.result, BaseException)]
        try:
            with sigint_deferred():  # from here on the call is undone as a whole, or kept as a whole
                if not interrupted and not failed:
                    macs = self._fan_out(lambda host: host.hypervisor().mac_owners())
                    with self._lock:
                        self._check_macs(done, claims, macs)
                    return done
                self._rollback(done)
        except KeyboardInterrupt:
            if not interrupted and not failed:
                self._rollback(done)
            raise
        if interrupted:
            raise KeyboardInterrupt
        uri, error = min(failed, key=lambda f: groups[f[0]][0])
        renumbered = _renumber(error, uri, groups[uri])
        if renumbered is error:
            raise error
        raise renumbered from error

    def _create_on(self, host: Host, part: list[dict[str, Any]], step: Callable[[], None]) -> _Done:
        """One host's part: upload missing bases, note what exists, create the VMs (on a worker thread)."""
        hv = host.hypervisor()
        networks = {nic.network for kwargs in part for nic in kwargs.get("nics", ())}
        reserved: dict[str, set[str]] = {}
        dns: dict[str, set[str]] = {}
        for name in networks:
            net = hv.network(name)
            reserved[name] = {format_mac(r.mac) for r in net.reservations() if r.mac is not None}
            dns[name] = {str(h.ip) for h in net.dns_hosts()}
        uploads: list[Volume] = []
        try:
            for pool, base in sorted({(d.image.pool, d.image.base) for kwargs in part for d in kwargs.get("disks", ())
                                      if isinstance(d, Disk) and d.image is not None}):
                target = hv.pool(pool)
                if not target.has(base) and (pool, base) in self._images:
                    uploads.append(target.upload(base, self._images[(pool, base)]))
            vms = list(hv.create_vms(part, progress=lambda _done, _total: step()))
        except BaseException:
            for vol in reversed(uploads):
                _quietly(f"deleting base image {vol.pool}/{vol.name} on {host.uri}",
                         functools.partial(vol.delete, force=True))
            raise
        for vm in vms:
            vm.hypervisor = hv
        return _Done(host.uri, hv, vms, [tuple(kwargs.get("nics", ())) for kwargs in part], reserved, dns, uploads)

    def _rollback(self, done: list[_Done]) -> None:
        """Undo each host's finished part, newest VM first; Ctrl-C is held back meanwhile. Never raises."""
        with sigint_deferred():
            for part in done:
                for vm, asked in reversed(list(zip(part.vms, part.nics, strict=True))):
                    _undo_vm(part, vm, asked)
                for vol in reversed(part.uploads):
                    _quietly(f"deleting base image {vol.pool}/{vol.name} on {part.uri}",
                             functools.partial(vol.delete, force=True))
                log.info("rolled back %d VM(s) on %s", len(part.vms), part.uri)

    # -- images ----------------------------------------------------------------

    def upload_image(self, source: str | Path, pool: str, *, name: str | None = None) -> dict[str, Volume]:
        """Put the local image ``source`` into ``pool`` on every host answering, once per host.

        The volume is named after the file's SHA-256 (``<stem>-<16 hex digits><suffix>``,
        or ``<name>-<digits><suffix>``), so a host that has it is found again by
        that checksum and is not uploaded to again. Returns ``{uri: Volume}``;
        use ``Disk.from_image(volume)`` with any of them: the disk names the
        pool and volume, which are the same on every host. The fleet also
        remembers the file, so a VM placed later on a host without the image
        gets it uploaded first. A host that does not answer is logged and left
        out; a host without ``pool`` raises :class:`NotFound` naming it (after
        the others have the image). ``pool`` of the wrong type: :class:`InvalidSpec`.
        """
        self._check_open()
        check_name(pool, "pool", lookup=True)
        path = check_path(source, "source")
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as handle:
                while chunk := handle.read(2**20):
                    digest.update(chunk)
        except OSError as exc:
            raise InvalidSpec("source", str(source), f"cannot read it: {exc.strerror}") from exc
        stem = name if name is not None else path.stem
        volume = f"{stem}-{digest.hexdigest()[:16]}{path.suffix}"

        def ensure(host: Host) -> Volume:
            target = host.hypervisor().pool(pool)
            return target.volume(volume) if target.has(volume) else target.upload(volume, path)

        found = self._fan_out(ensure)
        self._images[(pool, volume)] = path
        volumes: dict[str, Volume] = {}
        missing = [uri for uri, result in found.items() if isinstance(result, NotFound)]
        if missing:
            done = [uri for uri, result in found.items() if not isinstance(result, BaseException)]
            raise NotFound(f"no storage pool {pool!r} on {', '.join(missing)}; the image is uploaded to "
                           f"{', '.join(done) or 'no host'}")
        for uri, result in found.items():
            if isinstance(result, BaseException):
                log.warning("image %s not uploaded to %s: %s", volume, uri, why(result))
            else:
                volumes[uri] = result
        return volumes


# -- helpers ---------------------------------------------------------------------


def _reserve_mib(reserve: object) -> int:
    """``Fleet(reserve=)``: MiB kept free on each host, 0 or more."""
    if isinstance(reserve, int) and not isinstance(reserve, bool) and reserve >= 0:
        return reserve  # 0 is fine here, though no VM has 0 MiB
    wanted = "0 or more MiB: an int, or a string like '512MiB'"
    if not isinstance(reserve, str):
        raise InvalidSpec("reserve", reserve, wanted)
    mib = parse_amount(reserve, "reserve", MIB, "MiB", "'512MiB'")
    if mib < 0:
        raise InvalidSpec("reserve", reserve, wanted)
    return mib


def _owners(dhcp_owners: object, hosts: Mapping[str, Host]) -> dict[str, str | None]:
    """``Fleet(dhcp_owners=)`` checked: ``{network name: None or a host's URI}``."""
    if dhcp_owners is None:
        return {}
    if not isinstance(dhcp_owners, Mapping):
        raise InvalidSpec("dhcp_owners", dhcp_owners, "a mapping {network name: None or a host's URI}")
    owners: dict[str, str | None] = {}
    for name, owner in dhcp_owners.items():
        check_name(name, "dhcp_owners key", lookup=True)
        if owner is not None and owner not in hosts:
            raise InvalidSpec(f"dhcp_owners[{name!r}]", owner, "None or the URI of one of the fleet's hosts")
        owners[name] = owner
    return owners


def _request(kwargs: dict[str, Any], where: str) -> Request:
    """What placement needs to know of one VM (its NICs and disks validated here, once)."""
    try:
        memory = parse_memory(kwargs.get("memory", 512))
        vcpus = kwargs.get("vcpus", 1)
        if isinstance(vcpus, bool) or not isinstance(vcpus, int) or vcpus < 1:
            raise InvalidSpec("vcpus", vcpus, "a whole number, 1 or more")
        nics = as_items(kwargs.get("nics", ()), "nics", Nic)
        disks = as_items(kwargs.get("disks", ()), "disks", Disk)
    except InvalidSpec as exc:
        raise exc.at(where) from None
    kwargs["nics"], kwargs["disks"] = nics, disks
    needs: list[tuple[str, str | None, int]] = []
    for disk in disks:
        if disk.image is not None:
            needs.append((disk.image.pool, disk.image.base, disk.image.size or 0))
    if kwargs.get("cloud_init") is not None and needs:
        needs.append((needs[0][0], None, _SEED_BYTES))
    virt_type = kwargs.get("virt_type")
    addresses = tuple((nic.network, str(nic.ip), None if nic.mac is None else format_mac(nic.mac))
                      for nic in nics if nic.ip is not None)
    return Request(str(kwargs["name"]), memory, vcpus, tuple(nic.network for nic in nics),
                   virt_type if isinstance(virt_type, str) else None, "x86_64", tuple(needs), addresses)


def _undo_vm(part: _Done, vm: VM, asked: tuple[Nic, ...]) -> None:
    """Delete one VM a rolled-back call created, with what it brought: the reservations and DNS
    entries that were not there before the call, its volumes and its leases."""
    try:
        nics = vm.nics
    except NotFound:
        nics = []
    _quietly(f"deleting domain {vm.name!r} on {part.uri}", lambda: vm.delete(release=False, storage=True))
    for nic, wanted in zip(nics, asked, strict=False):
        if nic.mac is None:
            continue
        mac = format_mac(nic.mac)

        def undo(nic: Nic = nic, mac: str = mac, wanted: Nic = wanted) -> None:
            net = part.hv.network(nic.network)
            if mac not in part.reserved.get(nic.network, set()):
                net.forget(mac)
            if wanted.dns and nic.ip is not None and str(nic.ip) not in part.dns.get(nic.network, set()):
                net.remove_dns_host(nic.ip)

        _quietly(f"releasing {mac} on network {nic.network!r} of {part.uri}", undo)


def _quietly(what: str, undo: Callable[[], object]) -> None:
    """Run one undo; a failure is logged, never raised (a rollback goes on)."""
    try:
        with contextlib.suppress(NotFound):
            undo()
    except LibvmError as exc:
        log.error("fleet rollback: could not undo %s: %s", what, exc)


def _renumber(error: BaseException, uri: str, indexes: list[int]) -> BaseException:
    """A host's error, its ``specs[i]`` (its own list) renamed to the index given to the fleet."""
    def fix(text: str) -> str:
        return re.sub(r"specs\[(\d+)\]", lambda m: f"specs[{indexes[int(m.group(1))]}]", text)

    if isinstance(error, InvalidSpec):
        return InvalidSpec(fix(error.field), error.value, error.reason)
    if isinstance(error, LibvmError):
        copy = error.at(f"on {uri}")
        copy.args = (fix(str(copy)),)
        return copy
    return error


