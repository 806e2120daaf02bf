"""Reading the hosts of a :class:`libvm.Fleet`: connections, calls with a timeout, one reading per host.

Every fleet call that asks the hosts fans out on one daemon thread per host
(:func:`fan_out`) and waits at most a timeout in all: a host that refused,
failed or did not answer in time becomes an error in its row, never a
failure of the others. :func:`read_host` is one reading of a host, what
placement (:class:`libvm.placement.HostFacts`) and the fleet's ledger of names
and MACs need: memory, CPUs, domains, networks, pools, guest types.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _xml
from .errors import InvalidSpec, LibvirtFailure, LibvmError, NotFound
from .hypervisor import Hypervisor, connect
from .networkxml import read_network
from .placement import HostFacts, NetworkFacts, PoolFacts
from .views import Rendered, Table

__all__ = ["Call", "Host", "HostList", "Survey", "fan_out", "read_host", "why"]

T = TypeVar("T")

HOST_COLUMNS = ("host", "state", "memory MiB (total / free / committed)", "vCPUs (host / committed)", "domains",
                "networks", "pools (free)")


class Host:
    """One host of a fleet: its URI, its connection (opened on first use) and whether calls hang there."""

    def __init__(self, uri: str, hv: Hypervisor | None) -> None:
        self.uri = uri
        self.hv = hv
        self.owned = hv is None  # the fleet opened it, so the fleet closes it
        self.lock = threading.Lock()  # held while connecting
        self.overdue_lock = threading.Lock()  # not self.lock: a connect that hangs holds that one
        self.overdue = 0  # calls that outlived the timeout and have not returned yet
        self.guests: frozenset[tuple[str, str]] | None = None
        self.guests_read = False
        self.failed: tuple[float, LibvmError] | None = None  # when the last connect failed, and how

    #: After a failed connect, calls fail at once with that error for this long (seconds) before
    #: connecting is tried again: a host that is down costs its connect timeout once, not per call.
    RETRY_AFTER = 30.0

    def hypervisor(self) -> Hypervisor:
        """The open connection, connecting (again) if needed."""
        with self.lock:
            if self.hv is None or (self.owned and self.hv.closed):
                failed = self.failed
                if failed is not None and time.monotonic() - failed[0] < self.RETRY_AFTER:
                    raise failed[1]
                try:
                    self.hv = connect(self.uri)
                except LibvmError as exc:
                    self.failed = (time.monotonic(), exc)
                    raise
                self.failed = None
                self.guests_read = False
            return self.hv

    def drop_if_dead(self) -> None:
        """After a failed call: close a connection the fleet opened whose daemon no longer
        answers (libvirtd restarted, the link dropped), so that the next call connects again."""
        hv = self.hv
        if not self.owned or hv is None or hv.closed:
            return
        try:
            alive = bool(hv.handle.isAlive())
        except Exception:  # libvirt's error type stays in _live; any failure here means dead
            alive = False
        if not alive:
            hv.close()


@dataclass
class Survey:
    """One reading of a host: the placement facts, and the names and MACs for the ledger."""

    facts: HostFacts
    names: frozenset[str] = frozenset()
    macs: Mapping[str, str] = dataclasses.field(default_factory=dict)  # mac -> domain


class HostList(list[HostFacts], Rendered):
    """The rows of :meth:`Fleet.hosts`: a list of :class:`libvm.placement.HostFacts` that renders as a table."""

    def table(self) -> Table:
        """One row per host: state or error, memory, vCPUs, domains, networks, pools."""
        return Table(HOST_COLUMNS, tuple(_host_cells(h) for h in self),
                     f"{len(self)} host{'' if len(self) == 1 else 's'}")


class Call:
    """``work(host)`` on a daemon thread, waited for at most a timeout.

    A call that outlives its wait is abandoned: the host counts it as overdue
    until it returns, and its result is dropped.
    """

    def __init__(self, host: Host, work: Callable[[Host], Any]) -> None:
        self.host = host
        self.lock = threading.Lock()
        self.finished = False
        self.ended = threading.Event()
        self.abandoned = False
        self.result: Any = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True, name=f"libvm-fleet {host.uri}")
        self.thread.start()

    def _run(self, work: Callable[[Host], Any]) -> None:
        try:
            result: Any = work(self.host)
        except BaseException as exc:  # handed to the waiter, never lost on this thread
            result = exc
        with self.lock:
            self.result, self.finished = result, True
            if self.abandoned:
                with self.host.overdue_lock:
                    self.host.overdue -= 1
        self.ended.set()

    def wait(self, seconds: float, timeout: float) -> Any:
        """The result or error; a :class:`LibvirtFailure` if ``seconds`` pass first."""
        self.ended.wait(seconds)
        with self.lock:
            if self.finished:
                return self.result
            self.abandoned = True
            with self.host.overdue_lock:
                self.host.overdue += 1
        return LibvirtFailure(f"{self.host.uri} did not answer within {timeout:g} s")


def fan_out(hosts: Iterable[Host], work: Callable[[Host], T], timeout: float) -> dict[str, T | BaseException]:
    """``work(host)`` for every host at once, each on its own thread; ``{uri: result or error}``.

    A host gets at most ``timeout`` seconds (all hosts together, not one after
    the other); then it is reported as not answering and its thread is left to
    finish on its own (a daemon thread: a hung libvirt call cannot be
    cancelled, and must not keep the program alive). While such a call is
    still out, the host is not asked again, so a dead host never piles up threads.
    """
    chosen = list(hosts)
    calls: dict[str, Call] = {}
    results: dict[str, T | BaseException] = {}
    for host in chosen:
        if host.overdue:
            results[host.uri] = LibvirtFailure(f"{host.uri} has not answered an earlier call yet "
                                               f"(over {timeout:g} s): the host is down or slow")
            continue
        calls[host.uri] = Call(host, work)
    deadline = time.monotonic() + timeout
    for uri, call in calls.items():
        results[uri] = call.wait(max(0.0, deadline - time.monotonic()), timeout)
    return {host.uri: results[host.uri] for host in chosen}


def read_host(host: Host, bases: frozenset[tuple[str, str]]) -> Survey:
    """One reading of ``host``: memory, CPUs, domains, networks, pools, guest types (on a worker thread).

    A host whose connection died is connected again on the next reading.
    """
    try:
        return _read(host, bases)
    except Exception:
        host.drop_if_dead()
        raise


def _read(host: Host, bases: frozenset[tuple[str, str]]) -> Survey:
    started = time.monotonic()
    hv = host.hypervisor()
    info = hv.handle.getInfo()  # [model, memory MiB, cpus, mhz, nodes, sockets, cores, threads]
    free = int(hv.handle.getFreeMemory()) // 2**20 or None  # the test driver says 0: unknown
    if not host.guests_read:  # capabilities are slow and do not change: once per connection
        host.guests = _guests(str(hv.handle.getCapabilities()))
        host.guests_read = True
    names: set[str] = set()
    macs: dict[str, str] = {}
    committed = vcpus = 0
    for vm in hv.vms():
        try:
            doc = vm.document()
        except NotFound:
            continue  # undefined since the listing
        names.add(vm.name)
        committed += doc.spec.memory
        vcpus += doc.spec.vcpus
        for interface in doc.interfaces:
            macs.setdefault(interface.mac, vm.name)
    networks = {}
    for net in hv.networks():
        try:
            spec, entries = read_network(net.xml())
        except InvalidSpec:  # a network libvm cannot read: unusable here
            continue
        networks[net.name] = NetworkFacts(net.name, net.active, spec.forward,
                                          tuple(ip.subnet for ip in spec.ips),
                                          any(ip.dhcp for ip in spec.ips if ip.subnet.version == 4), spec.bridge,
                                          {entry.ip: entry.mac for entry in entries})
    pools = {}
    for pool in hv.pools():
        active = pool.active
        state = pool.handle.info() if active else [0, 0, 0, 0]  # [state, capacity, allocation, available]
        volumes = frozenset(v.name for v in pool.volumes()) if active else frozenset()
        sizes = {base: pool.volume(base).capacity for p, base in bases if p == pool.name and base in volumes}
        pools[pool.name] = PoolFacts(pool.name, active, int(state[3]), volumes, sizes)
    facts = HostFacts(host.uri, None, int(info[1]), free, committed, int(info[2]), vcpus, len(names),
                      networks, pools, host.guests, started)
    return Survey(facts, frozenset(names), macs)


def _guests(capabilities: str) -> frozenset[tuple[str, str]] | None:
    """``(arch, virt type)`` libvirt offers; ``None`` for the test driver, which accepts any."""
    root = _xml.parse(capabilities, "capabilities")
    offered = frozenset((arch.get("name", ""), dom.get("type", ""))
                        for arch in root.iterfind("guest/arch") for dom in arch.iterfind("domain"))
    if offered and {kind for _, kind in offered} == {"test"}:
        return None
    return offered


def why(error: object) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _host_cells(host: HostFacts) -> tuple[str, ...]:
    if host.error is not None:
        return (host.uri, f"unreachable: {host.error}", "-", "-", "-", "-", "-")
    free = "-" if host.memory_free is None else str(host.memory_free)
    networks = ", ".join(f"{n.name} {'/'.join(str(s.cidr) for s in n.subnets) or '-'} {n.forward}"
                         f"{'' if n.active else ' (inactive)'}" for n in host.networks.values()) or "-"
    pools = ", ".join(f"{p.name} {p.available // 2**30} GiB" if p.active else f"{p.name} (inactive)"
                      for p in host.pools.values()) or "-"
    return (host.uri, "up", f"{host.memory_total} / {free} / {host.committed}",
            f"{host.cpus} / {host.committed_vcpus}", str(host.domains), networks, pools)
