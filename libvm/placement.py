"""Where a VM goes in a :class:`libvm.Fleet`: filter, then weigh (nova's scheduler, small).

Pure: no libvirt. :class:`HostFacts` is what one reading of a host says
(memory, CPUs, networks, pools, the guest types libvirt offers); :class:`Request`
is what a VM needs; :class:`Claim` is what the fleet has promised to a host but
the host's reading may not show yet (a VM being created, or created after the
reading). :func:`place` drops every host a filter refuses, with the reason, and
weighs the rest:

- ``"spread"``: the most uncommitted memory left after the VM (the default);
- ``"pack"``: the least (fill one host before the next);
- a callable ``(hosts, request) -> host``: your own choice among the eligible hosts.

A host that already holds every base image the VM's disks name is preferred
before memory is weighed (no upload, and overlays share the base's blocks).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import netaddr

from .addressing import format_mac, generate_mac
from .errors import InvalidSpec, NoEligibleHost, SubnetOverlap

__all__ = ["Claim", "HostFacts", "NetworkFacts", "Placement", "Policy", "PoolFacts", "Request", "free_there",
           "l2_verdicts", "overlap", "place", "refusals"]


@dataclass(frozen=True)
class NetworkFacts:
    """One libvirt network of a host: what placement and the shared-L2 rules look at.

    ``dhcp``: whether libvirt runs DHCP on its IPv4 subnet now (a ``<dhcp>``
    element). libvm can reserve an address on any network whose IPv4
    addressing libvirt manages (:attr:`serves_dhcp`), with or without one.
    """

    name: str
    active: bool
    forward: str
    subnets: tuple[netaddr.IPNetwork, ...] = ()
    dhcp: bool = False
    bridge: str | None = None
    reserved: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # ip -> MAC of each <host>

    @property
    def serves_dhcp(self) -> bool:
        """Whether libvirt's dnsmasq hands out the addresses libvm reserves here.

        libvirt (networkDnsmasqConfContents, 9.0) writes ``dhcp-range=<net>,static``
        for an IPv4 ``<ip>`` whose ``<dhcp>`` has host entries and no range, so
        a network without a range serves its reservations. A ``bridge`` (or other
        host-device) forward mode has no libvirt DHCP at all.
        """
        return self.dhcp or (self.forward in _MANAGED and any(s.version == 4 for s in self.subnets))


# Forward modes whose addressing libvirt manages (an <ip> and dnsmasq).
_MANAGED = frozenset({"nat", "route", "open", "none"})


@dataclass(frozen=True)
class PoolFacts:
    """One storage pool: free bytes, the volumes it holds, and the virtual size of those asked about."""

    name: str
    active: bool
    available: int
    volumes: frozenset[str] = frozenset()
    sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class HostFacts:
    """One reading of a host (``error`` set: it could not be read, and nothing else is).

    Memory is in MiB: ``memory_total`` is the host's RAM, ``memory_free`` what
    the kernel reports free (``None`` where the driver cannot tell), ``committed``
    the sum of the memory of every defined domain, running or not (a stopped
    domain can be started). ``guests`` is the set of ``(arch, virt type)``
    libvirt offers, ``None`` for "anything" (libvirt's test driver, which
    accepts every type although its capabilities list only ``test``).
    ``read_at`` is when the reading started (``time.monotonic()``).
    """

    uri: str
    error: str | None = None
    memory_total: int = 0
    memory_free: int | None = None
    committed: int = 0
    cpus: int = 0
    committed_vcpus: int = 0
    domains: int = 0
    networks: Mapping[str, NetworkFacts] = dataclasses.field(default_factory=dict)
    pools: Mapping[str, PoolFacts] = dataclasses.field(default_factory=dict)
    guests: frozenset[tuple[str, str]] | None = frozenset()
    read_at: float = 0.0

    @property
    def reachable(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Request:
    """What one VM needs from a host.

    ``memory`` in MiB; ``disks``: ``(pool, base volume, bytes)`` per volume
    ``create_vm`` would make (the base ``None`` for a cloud-init seed);
    ``virt_type`` ``None`` means kvm or qemu, whichever the host offers.
    """

    name: str
    memory: int
    vcpus: int = 1
    networks: tuple[str, ...] = ()
    virt_type: str | None = None
    arch: str = "x86_64"
    disks: tuple[tuple[str, str | None, int], ...] = ()
    addresses: tuple[tuple[str, str, str | None], ...] = ()  # (network, ip, MAC or None) given by the caller

    def sized(self, hosts: Iterable[HostFacts]) -> Request:
        """This request with each disk's default size (0: the base's) read from a host holding the base."""
        disks = []
        for pool, base, size in self.disks:
            if not size and base is not None:
                size = max((h.pools[pool].sizes.get(base, 0) for h in hosts if pool in h.pools), default=0)
            disks.append((pool, base, size))
        return dataclasses.replace(self, disks=tuple(disks))

    def pool_bytes(self) -> dict[str, int]:
        """``{pool: bytes}`` of the new volumes."""
        pools: dict[str, int] = {}
        for pool, _, size in self.disks:
            pools[pool] = pools.get(pool, 0) + size
        return pools


@dataclass(frozen=True)
class Claim:
    """Memory (MiB) and pool bytes promised to a host, not yet in its reading."""

    memory: int = 0
    vcpus: int = 0
    pools: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __add__(self, other: Claim) -> Claim:
        pools = dict(self.pools)
        for name, size in other.pools.items():
            pools[name] = pools.get(name, 0) + size
        return Claim(self.memory + other.memory, self.vcpus + other.vcpus, pools)


@dataclass(frozen=True)
class Policy:
    """How full a host may get.

    ``memory_ratio``: committed memory may reach ``memory_total * ratio -
    reserve`` (nova's ``ram_allocation_ratio``; 1.0: no overcommit, since a
    guest that touches all its memory on an overcommitted host is killed by
    the OOM killer); ``reserve``: MiB kept for the host itself (nova's
    ``reserved_host_memory_mb``, also 512); ``disk_ratio``: a pool may promise
    ``available * disk_ratio`` bytes of new volumes at their full virtual size
    (an overlay is thin, but can grow to that).
    """

    memory_ratio: float = 1.0
    reserve: int = 512
    disk_ratio: float = 1.0

    def capacity(self, host: HostFacts) -> int:
        """The MiB of guest memory ``host`` may hold."""
        return int(host.memory_total * self.memory_ratio) - self.reserve


#: ``"spread"``, ``"pack"`` or ``placement(hosts, request) -> host`` (a :class:`HostFacts` or its URI).
Placement: TypeAlias = "str | Callable[[Sequence[HostFacts], Request], HostFacts | str]"


def refusals(host: HostFacts, request: Request, claim: Claim, policy: Policy,
             networks: Mapping[str, str | None] | None = None,
             uploadable: frozenset[tuple[str, str]] = frozenset()) -> list[str]:
    """Why ``host`` cannot take ``request`` (empty: it can), one reason per failed filter.

    ``networks``: per network name, why the fleet refuses it on this host
    (the shared-L2 rules), ``None`` if it may be used. ``uploadable``: base
    images ``(pool, volume)`` the fleet can upload where they are missing.
    """
    if host.error is not None:
        return [f"unreachable: {host.error}"]
    reasons = []
    for name in dict.fromkeys(request.networks):
        net = host.networks.get(name)
        ruled = (networks or {}).get(name)
        if net is None:
            reasons.append(f"no network {name!r}")
        elif not net.active:
            reasons.append(f"network {name!r} is not active")
        elif ruled is not None:
            reasons.append(ruled)
        elif not net.serves_dhcp:
            why = f"forward mode {net.forward}" if net.forward not in _MANAGED else "no IPv4 subnet"
            reasons.append(f"network {name!r} has no libvirt DHCP here ({why}): "
                           f"libvm cannot reserve an address on it")
    if not _offers(host, request):
        wanted = request.virt_type or "kvm or qemu"
        reasons.append(f"libvirt offers no {wanted} guest of arch {request.arch}")
    capacity = policy.capacity(host)
    after = host.committed + claim.memory + request.memory
    if after > capacity:
        reasons.append(f"memory: {host.committed + claim.memory} MiB committed + {request.memory} MiB > "
                       f"{capacity} MiB allowed ({host.memory_total} MiB x {policy.memory_ratio:g} - "
                       f"{policy.reserve} MiB reserve)")
    for pool, base, _ in request.disks:
        facts = host.pools.get(pool)
        if facts is None:
            reasons.append(f"no storage pool {pool!r}")
        elif not facts.active:
            reasons.append(f"storage pool {pool!r} is not active")
        elif base is not None and base not in facts.volumes and (pool, base) not in uploadable:
            reasons.append(f"storage pool {pool!r} has no base image {base!r}")
    for pool, size in request.pool_bytes().items():
        facts = host.pools.get(pool)
        if facts is None or not facts.active:
            continue
        room = int(facts.available * policy.disk_ratio) - claim.pools.get(pool, 0)
        if size > room:
            reasons.append(f"storage pool {pool!r}: {size} bytes of new volumes > {room} bytes free")
    return list(dict.fromkeys(reasons))


def _offers(host: HostFacts, request: Request) -> bool:
    if host.guests is None:
        return True
    types = (request.virt_type,) if request.virt_type is not None else ("kvm", "qemu")
    return any((request.arch, kind) in host.guests for kind in types)


def uncommitted_after(host: HostFacts, request: Request, claim: Claim, policy: Policy) -> int:
    """MiB the host could still promise once ``request`` is placed on it."""
    return policy.capacity(host) - host.committed - claim.memory - request.memory


def place(hosts: Sequence[HostFacts], request: Request, claims: Mapping[str, Claim], policy: Policy,
          placement: Placement = "spread", *, networks: Mapping[str, Mapping[str, str | None]] | None = None,
          uploadable: frozenset[tuple[str, str]] = frozenset()) -> HostFacts:
    """The host ``request`` goes to.

    ``claims``: per host URI, what is promised there beyond its reading.
    ``networks``: per host URI, the shared-L2 verdict per network name (see
    :func:`refusals`). A callable ``placement`` gets the eligible hosts with
    their claims counted in ``committed`` and must return one of them (or its
    URI). Raises :class:`NoEligibleHost` with every host's reasons,
    :class:`InvalidSpec` for a bad ``placement`` or a callable's bad answer.
    """
    if not callable(placement) and placement not in ("spread", "pack"):
        raise InvalidSpec("placement", placement, "'spread', 'pack' or a callable (hosts, request) -> host")
    eligible: list[HostFacts] = []
    why: dict[str, list[str]] = {}
    for host in hosts:
        claim = claims.get(host.uri, Claim())
        reasons = refusals(host, request, claim, policy, (networks or {}).get(host.uri), uploadable)
        if reasons:
            why[host.uri] = reasons
        else:
            eligible.append(host)
    if not eligible:
        raise NoEligibleHost(request.name, why)
    if callable(placement):
        seen = [dataclasses.replace(h, committed=h.committed + claims.get(h.uri, Claim()).memory) for h in eligible]
        chosen = placement(seen, request)
        uri = chosen.uri if isinstance(chosen, HostFacts) else chosen
        for host in eligible:
            if host.uri == uri:
                return host
        got = repr(uri) if isinstance(uri, str) else f"a {type(chosen).__name__}"
        raise InvalidSpec("placement", placement, f"the callable returned {got}, not one of the eligible hosts "
                                                  f"({', '.join(h.uri for h in eligible)}) or its URI")
    sign = 1 if placement == "spread" else -1

    def weight(item: tuple[int, HostFacts]) -> tuple[bool, bool, int, int]:
        index, host = item
        holds = all(base is None or base in host.pools[pool].volumes for pool, base, _ in request.disks)
        free = uncommitted_after(host, request, claims.get(host.uri, Claim()), policy)
        return free_there(host, request), holds, sign * free, -index  # ties: the host given first

    return max(enumerate(eligible), key=weight)[1]


def free_there(host: HostFacts, request: Request) -> bool:
    """Whether every address the caller gave is unreserved on ``host`` (or reserved for its MAC).

    Placement prefers such a host: on another, ``create_vm`` would fail with
    ``IpReserved``. Islands hold their addresses per host, so another host may
    well have the address free.
    """
    for network, ip, mac in request.addresses:
        net = host.networks.get(network)
        holder = net.reserved.get(ip) if net is not None else None
        if holder is not None and holder != (mac or format_mac(generate_mac(network, ip))):
            return False
    return True


def l2_verdicts(hosts: Sequence[HostFacts], wanted: Sequence[str],
                dhcp_owners: Mapping[str, str | None]) -> dict[str, dict[str, str | None]]:
    """The shared-L2 rules for the networks ``wanted``: per host URI, per network, why not (or ``None``).

    One DHCP server per L2. A libvirt network with DHCP on two hosts is either
    two islands (each host's own bridge: the same subnet may hold the same
    address twice, harmlessly) or one L2 the user wired together (then two
    dnsmasqs answer every DISCOVER and a guest may take the wrong one's offer).
    The fleet cannot see the wiring, so:

    - ``dhcp_owners[name] = None``: the hosts' networks ``name`` are islands;
    - ``dhcp_owners[name] = uri``: one L2 whose addresses ``uri``'s dnsmasq
      hands out; every other host's ``name`` must run no DHCP (else
      :class:`SubnetOverlap`), and VMs on it are placed on ``uri`` (a
      reservation made on the owner for a VM on another host is not built yet);
    - undeclared: NAT networks are islands (libvirt's own bridge behind NAT;
      joining two takes manual bridging); any other network whose subnet
      overlaps a network on another host raises :class:`SubnetOverlap`
      (``other`` names that host and network) until it is declared.
    """
    verdicts: dict[str, dict[str, str | None]] = {host.uri: {} for host in hosts}
    up = [host for host in hosts if host.reachable]
    for name in dict.fromkeys(wanted):
        if name in dhcp_owners:
            owner = dhcp_owners[name]
            if owner is None:
                continue
            for host in up:
                net = host.networks.get(name)
                if host.uri == owner or net is None:
                    continue
                if net.dhcp:
                    raise SubnetOverlap(
                        f"network {name!r} is declared one L2 served by {owner}'s DHCP (dhcp_owners), but {host.uri} "
                        f"runs DHCP on its network {name!r} too: two DHCP servers would answer on one L2; remove the "
                        f"<dhcp> of {name!r} on {host.uri}", other=f"{host.uri} {name}")
                verdicts[host.uri][name] = (f"network {name!r} is one L2 served by {owner}'s DHCP; "
                                            f"VMs on it are placed on {owner}")
            continue
        for host in up:
            mine = host.networks.get(name)
            if mine is None:
                continue
            for other in up:
                if other.uri == host.uri:
                    continue
                for theirs in other.networks.values():
                    if theirs.name in dhcp_owners and dhcp_owners[theirs.name] is None and theirs.name == name:
                        continue
                    if mine.forward == "nat" and theirs.forward == "nat":
                        continue
                    clash = overlap(mine.subnets, theirs.subnets)
                    if clash is not None:
                        raise SubnetOverlap(
                            f"subnet {clash[0].cidr} of network {name!r} on {host.uri} overlaps {clash[1].cidr} of "
                            f"network {theirs.name!r} on {other.uri}: if they are one L2, two DHCP servers answer "
                            f"on it. Declare it: Fleet(..., dhcp_owners={{{name!r}: None}}) if they are separate, "
                            f"or {{{name!r}: <the URI whose DHCP serves it>}}", other=f"{other.uri} {theirs.name}")
    return verdicts


def overlap(mine: Sequence[netaddr.IPNetwork],
             theirs: Sequence[netaddr.IPNetwork]) -> tuple[netaddr.IPNetwork, netaddr.IPNetwork] | None:
    """The first pair of subnets, one of each list, of which one contains the other."""
    for a in mine:
        for b in theirs:
            if a.version == b.version and (a.cidr in b.cidr or b.cidr in a.cidr):
                return a, b
    return None
