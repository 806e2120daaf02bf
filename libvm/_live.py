"""The live boundary: the one object that holds a libvirt connection.

``Live`` owns the ``virConnect``, reconnects after a daemon restart, finds
networks and domains by name, holds the locks that make ``create_vm`` atomic
on this host, and is the one place where libvirt's error codes become libvm
errors. ``Hypervisor``, ``Network``, ``VM`` and the provisioning code receive
it; none of them touches another object's underscores or inspects a libvirt
error code.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

import libvirt

from . import _xml
from ._log import log
from .addressing import format_mac
from .domainxml import DomainDoc, read_domain
from .errors import (
    AlreadyExists,
    ClientIdShared,
    ConnectionClosed,
    LibvirtFailure,
    LibvmError,
    LockFailure,
    NotFound,
)
from .errors import InvalidState as InvalidState  # defined there, raised here: kept importable from here
from .errors import Unsupported as Unsupported
from .values import Lease

T = TypeVar("T")

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
}
_EXISTS = {libvirt.VIR_ERR_DOM_EXIST, getattr(libvirt, "VIR_ERR_NETWORK_EXIST", -1)}


def convert(exc: libvirt.libvirtError, what: str) -> LibvmError:
    """The libvm error for a libvirt error raised while doing ``what``."""
    code = exc.get_error_code()
    message = f"{what}: {exc.get_error_message() or exc}"
    if code in _NOT_FOUND:
        return NotFound(message)
    if code in _EXISTS:
        return AlreadyExists(message)
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState(message, code)
    if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG):
        return Unsupported(message, code)
    return LibvirtFailure(message, code)


@contextlib.contextmanager
def translate(what: str) -> Iterator[None]:
    """Re-raise any ``libvirtError`` in the block as a libvm error about ``what``."""
    try:
        yield
    except libvirt.libvirtError as exc:
        raise convert(exc, what) from exc


#: The last libvirt error, as libvirt's error callback reports it (``libvirtError`` carries it too).
_last_error: dict[str, object] = {}


def _silence_default_handler() -> None:
    """Stop libvirt printing every error to stderr; libvm raises them instead.

    The callback must not be a Python function: libvirt calls it from inside
    the failing C call, so it is the first Python code to run after a blocking
    RPC, and a Ctrl-C (SIGINT) that arrived during the RPC would be raised
    inside it, where libvirt-python drops it silently (create_vm would then
    finish although the user interrupted it). A C-level bound method runs no
    bytecode, so the KeyboardInterrupt surfaces in libvm's own code instead.
    The handler is process-wide, so this runs once, on the first connect, not at import.
    """
    if not _last_error:
        _last_error["last"] = None
        libvirt.registerErrorHandler(_last_error.__setitem__, "last")


#: Whether libvm runs libvirt's default event loop (on a daemon thread), or the
#: application registered its own (``libvirtaio``) or none (``LIBVM_EVENT_LOOP=none``).
_events: dict[str, bool] = {}


def _start_event_loop() -> bool:
    """Make sure an event loop serves libvirt's callbacks; whether one does.

    libvirt delivers domain events (and keepalive) only through a registered
    event loop implementation, and it must be registered before the connection
    is opened. libvm registers libvirt's own default loop and runs it on a daemon
    thread, once per process, unless the application has registered one
    (``libvirtaio.virEventRegisterAsyncIOImpl()`` before ``libvm.connect``) or set
    ``LIBVM_EVENT_LOOP=none``; in that last case libvm reads every domain's XML
    where it needs the MACs in use (one call per domain).
    """
    if "running" in _events:
        return _events["running"]
    aio = sys.modules.get("libvirtaio")
    if aio is not None and getattr(aio, "_current_impl", None) is not None:
        _events["running"] = True  # the application's asyncio loop serves libvirt
        return True
    if os.environ.get("LIBVM_EVENT_LOOP", "").lower() == "none":
        _events["running"] = False
        return False
    try:
        libvirt.virEventRegisterDefaultImpl()
    except libvirt.libvirtError as exc:
        log.warning("libvirt's event loop cannot be registered (%s): reading every domain's XML instead", exc)
        _events["running"] = False
        return False

    def run() -> None:
        while True:
            if libvirt.virEventRunDefaultImpl() < 0:
                time.sleep(0.1)

    threading.Thread(target=run, name="libvirt-events", daemon=True).start()
    _events["running"] = True
    return True


def open_connection(uri: str) -> libvirt.virConnect:
    """``libvirt.open(uri)``, or :class:`LibvirtFailure` saying what to check."""
    _silence_default_handler()
    _start_event_loop()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        import urllib.parse

        remote = bool(urllib.parse.urlsplit(uri).hostname)
        hint = ("is the host reachable and its libvirtd listening; for SSH: your key, the host's key in "
                "known_hosts" if remote else "is libvirtd running, are you root?")
        raise LibvirtFailure(f"cannot connect to {uri!r}: {exc.get_error_message()} (check the URI; {hint})",
                             exc.get_error_code()) from exc


def _lookup(kind: str, name: str, find: Callable[[str], T], missing: int) -> T:
    """``find(name)``; libvirt's "no such object" (``missing``) as :class:`NotFound`."""
    with translate(f"looking up {kind} {name!r}"):
        try:
            return find(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == missing:
                raise NotFound(f"no {kind} named {name!r}") from exc
            raise


_CLOSE_REASONS = {libvirt.VIR_CONNECT_CLOSE_REASON_ERROR: "a read or write error",
                  libvirt.VIR_CONNECT_CLOSE_REASON_EOF: "the daemon closed it",
                  libvirt.VIR_CONNECT_CLOSE_REASON_KEEPALIVE: "no answer to keepalive"}


class DomainIndex:
    """Every domain's persistent definition, read once and kept fresh by libvirt's events.

    ``create_vm`` must know every MAC on the host. Reading each domain's XML
    costs one round trip per domain per call: nothing on a local socket, ten
    seconds at 200 domains over a 50 ms link. The index reads a domain once,
    then again only after libvirt reported that it was defined again or got or
    lost a device (lifecycle ``DEFINED``/``UNDEFINED``, ``DEVICE_ADDED``/
    ``DEVICE_REMOVED`` events). Each use still lists the domains (one call,
    whatever their number), so a domain defined or undefined by another client
    a moment ago is never missed, even if its event is still on the way.
    Without an event loop (``LIBVM_EVENT_LOOP=none``, or a driver without
    events) every use reads every domain, as before.
    """

    def __init__(self) -> None:
        self._docs: dict[str, DomainDoc] = {}
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._callbacks: list[int] = []
        self._conn: libvirt.virConnect | None = None

    @property
    def watching(self) -> bool:
        """Whether libvirt's events keep the index fresh."""
        return bool(self._callbacks)

    def watch(self, conn: libvirt.virConnect) -> None:
        """Subscribe to ``conn``'s domain events (a new connection forgets what was read)."""
        with self._lock:
            self._docs.clear()
            self._dirty.clear()
        self._callbacks = []
        self._conn = conn
        if not _events.get("running"):
            return
        events = (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_ADDED,
                  libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED)
        try:
            for event in events:
                self._callbacks.append(conn.domainEventRegisterAny(None, event, self._changed, None))
        except libvirt.libvirtError as exc:  # a driver without events
            log.debug("domain events unavailable (%s): reading every domain's XML when needed", exc)
            self.unwatch()

    def unwatch(self) -> None:
        """Drop the subscriptions (the connection is closing)."""
        callbacks, self._callbacks = self._callbacks, []
        if self._conn is not None:
            for callback in callbacks:
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.domainEventDeregisterAny(callback)

    def _changed(self, _conn: libvirt.virConnect, dom: libvirt.virDomain, *_args: object) -> None:
        # Runs on the event loop's thread: note the domain, read it on the next use.
        with self._lock:
            self._dirty.add(dom.UUIDString())

    def documents(self, domains: list[libvirt.virDomain],
                  fan_out: Callable[..., list[Any]] | None = None) -> list[DomainDoc]:
        """The definitions of ``domains`` (the host's current list), reading only what changed
        (``fan_out``: how to make the reads, see :meth:`Live.fan_out`)."""
        uuids = {dom.UUIDString(): dom for dom in domains}  # local: no round trip
        with self._lock:
            if not self.watching:
                self._docs.clear()
            for gone in set(self._docs) - set(uuids):
                del self._docs[gone]
            todo = [(uuid, dom) for uuid, dom in uuids.items() if uuid not in self._docs or uuid in self._dirty]
            self._dirty.difference_update(uuid for uuid, _ in todo)  # an event from now on marks it again
        def read(dom: libvirt.virDomain) -> str | None:
            try:
                return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            except libvirt.libvirtError:
                return None  # undefined while we listed

        # A connection's first use reads every domain: at once over a network link.
        reads = [functools.partial(read, dom) for _, dom in todo]
        xmls = fan_out(*reads) if fan_out is not None else [each() for each in reads]
        for (uuid, _), xml in zip(todo, xmls, strict=True):
            if xml is not None:
                doc = read_domain(xml)
                with self._lock:
                    self._docs[uuid] = doc
        with self._lock:
            return [self._docs[uuid] for uuid in uuids if uuid in self._docs]


class Live:
    """One libvirt connection and everything that must be shared by its users."""

    def __init__(self, conn: libvirt.virConnect, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = conn
        #: Bumped on every reconnect: handles from an older connection are stale.
        self.generation = 0
        self.thread_lock = threading.RLock()
        self._client_ids: dict[tuple[str, str], str] = {}
        self.index = DomainIndex()
        #: Why libvirt closed the connection under us (link lost, keepalive timeout), if it did.
        self.lost: str | None = None
        self._reconnecting = threading.Lock()
        self._watch(conn)

    # -- the connection --------------------------------------------------------

    #: Keepalive over a network link: a probe every 5 s, the link declared dead after 3 unanswered
    #: (15 s), so a call never waits on a dead TCP connection for the kernel's minutes-long timeout.
    KEEPALIVE = (5, 3)

    def _watch(self, conn: libvirt.virConnect) -> None:
        """Follow ``conn``'s health: domain events for the index, keepalive and a close callback.

        Both need libvirt's event loop (see :func:`_start_event_loop`); without
        it a lost link shows as the next call's failure, and :meth:`alive` tells.
        """
        self.lost = None
        self.index.watch(conn)
        if not _events.get("running"):
            return
        with contextlib.suppress(libvirt.libvirtError):  # drivers without a close callback (test:///)
            conn.registerCloseCallback(self._closed, None)
        if self.remote_link:
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(*self.KEEPALIVE)

    def _closed(self, _conn: libvirt.virConnect, reason: int, _opaque: object) -> None:
        # On the event loop's thread: only note it; the next use reconnects.
        if reason != libvirt.VIR_CONNECT_CLOSE_REASON_CLIENT:
            self.lost = _CLOSE_REASONS.get(reason, f"reason {reason}")
            log.warning("the connection to %s was lost (%s); reconnecting at the next call", self.uri, self.lost)

    @property
    def conn(self) -> libvirt.virConnect:
        """The open ``virConnect``; :class:`ConnectionClosed` after :meth:`close`.

        After libvirt reported the link lost (the close callback), the
        connection is opened again first, and handles are looked up again
        (:attr:`generation`); :class:`LibvirtFailure` if the daemon does not
        come back within 30 s.
        """
        if self._conn is None:
            raise ConnectionClosed(f"the connection to {self.uri!r} is closed; call libvm.connect() again")
        if self.lost is not None:
            with self._reconnecting:  # concurrent reads (fan_out) reconnect once, not once each
                if self.lost is not None:
                    self.reconnect()
        return self._conn

    def ensure(self) -> int:
        """The connection's :attr:`generation`, after reconnecting if libvirt reported the link
        lost: handles from an older generation must be looked up again.
        :class:`ConnectionClosed` after :meth:`close`."""
        self.conn  # noqa: B018 (reconnects if the link was lost)
        return self.generation

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            _release(conn, self.index)

    def alive(self) -> bool:
        """Whether the daemon still answers on this connection."""
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    def reconnect(self, timeout: float = 30.0) -> None:
        """Replace a dead connection (libvirtd restarted, link lost), waiting up to ``timeout`` s
        for the daemon.

        Raises :class:`LibvirtFailure` if the daemon does not come back.
        """
        if self._conn is None:
            raise ConnectionClosed(f"the connection to {self.uri!r} is closed; call libvm.connect() again")
        old = self._conn
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = open_connection(self.uri)
                break
            except LibvirtFailure as exc:
                if time.monotonic() > deadline:
                    raise LibvirtFailure(f"cannot reconnect to {self.uri!r} within {timeout:g} s: {exc}",
                                         exc.code) from exc
                time.sleep(0.5)
        _release(old, self.index)
        self._conn = conn
        self.generation += 1
        self._watch(conn)
        log.info("reconnected to %s", self.uri)

    # -- lookups ---------------------------------------------------------------

    def network(self, name: str) -> libvirt.virNetwork:
        """The network called ``name``, or :class:`NotFound`."""
        return _lookup("network", name, self.conn.networkLookupByName, libvirt.VIR_ERR_NO_NETWORK)

    def domain(self, name: str) -> libvirt.virDomain:
        """The domain called ``name``, or :class:`NotFound`."""
        return _lookup("domain", name, self.conn.lookupByName, libvirt.VIR_ERR_NO_DOMAIN)

    def domain_with_uuid(self, uuid: str) -> str | None:
        """The name of the domain whose UUID is ``uuid``, if there is one."""
        try:
            return str(_lookup("domain", uuid, self.conn.lookupByUUIDString, libvirt.VIR_ERR_NO_DOMAIN).name())
        except NotFound:
            return None

    def pool(self, name: str) -> libvirt.virStoragePool:
        """The storage pool called ``name``, or :class:`NotFound`."""
        return _lookup("storage pool", name, self.conn.storagePoolLookupByName, libvirt.VIR_ERR_NO_STORAGE_POOL)

    def volume_at(self, path: str) -> libvirt.virStorageVol:
        """The storage volume whose file is ``path``, or :class:`NotFound`."""
        return _lookup("storage volume", path, self.conn.storageVolLookupByPath, libvirt.VIR_ERR_NO_STORAGE_VOL)

    def pools(self) -> list[libvirt.virStoragePool]:
        with translate("listing storage pools"):
            return list(self.conn.listAllStoragePools(0))

    def networks(self, active: bool = False) -> list[libvirt.virNetwork]:
        """Every network (``active``: only the running ones), in one call."""
        with translate("listing networks"):
            return list(self.conn.listAllNetworks(libvirt.VIR_CONNECT_LIST_NETWORKS_ACTIVE if active else 0))

    def domains(self) -> list[libvirt.virDomain]:
        with translate("listing domains"):
            return list(self.conn.listAllDomains())

    # -- hypervisor-wide facts ---------------------------------------------------

    def documents(self) -> list[DomainDoc]:
        """Every domain's persistent definition (see :class:`DomainIndex`: one list call,
        plus one read per domain defined or changed since the last use)."""
        return self.index.documents(self.domains(), self.fan_out)

    def mac_owners(self) -> dict[str, str]:
        """``{mac: domain name}`` for every interface of every domain."""
        owners: dict[str, str] = {}
        for doc in self.documents():
            for interface in doc.interfaces:
                owners.setdefault(interface.mac, doc.spec.name)
        return owners

    def files_in_use(self) -> dict[str, str]:
        """``{path: domain name}`` for every disk and cdrom file of every domain."""
        users: dict[str, str] = {}
        for doc in self.documents():
            spec = doc.spec
            for path in [*(d.path for d in spec.disks if d.path is not None), *spec.cdroms]:
                users.setdefault(str(path), spec.name)
        return users

    def domain_running(self, name: str) -> bool:
        """Whether domain ``name`` exists and qemu runs for it."""
        try:
            with translate(f"state of domain {name!r}"):
                return bool(self.domain(name).isActive())
        except NotFound:
            return False

    @functools.cached_property
    def canonical_uri(self) -> str:
        """The daemon's own name for this connection (``qemu:///system`` for any alias)."""
        with translate("reading the connection URI"):
            return str(self.conn.getURI())

    @functools.cached_property
    def remote_link(self) -> bool:
        """Whether calls travel over a network (``qemu+ssh://``, ``qemu+tcp://``, a host in the URI),
        where each round trip costs a network delay; read from the URI, without a call."""
        import urllib.parse

        parts = urllib.parse.urlsplit(self.uri)
        return bool(parts.hostname) or any(t in parts.scheme for t in ("+ssh", "+tcp", "+tls", "+libssh"))

    def fan_out(self, *calls: Callable[[], Any]) -> list[Any]:
        """The results of ``calls``, in order; the first failure (in that order) is raised.

        Over a network link they run at once, each on its own thread: libvirt's
        RPC client carries many calls in flight on one connection, so N reads
        cost one round trip instead of N. Locally (Unix socket, test driver) a
        thread costs more than the call, so they run one after the other.
        """
        if len(calls) < 2 or not self.remote_link:
            return [call() for call in calls]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="libvm-read") as pool:
            futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]

    @property
    def is_local(self) -> bool:
        """Whether the daemon runs on this machine (no host in the URI)."""
        import urllib.parse

        return not urllib.parse.urlsplit(self.canonical_uri).hostname

    @functools.cached_property
    def kvm_usable(self) -> bool:
        """Whether libvirt offers ``kvm`` domains (capabilities are slow: read once)."""
        with translate("reading capabilities"):
            caps = _xml.parse(self.conn.getCapabilities(), "capabilities")
        return caps.find("guest/arch/domain[@type='kvm']") is not None

    def note_client_id(self, network: str, lease: Lease) -> None:
        """Remember which MAC presented which DHCP client-id; refuse a second MAC with it.

        dnsmasq keys a lease by client-id when there is one, so two guests
        cloned from one image (same /etc/machine-id, hence same DUID-based
        client-id) share one lease: on a dynamic range they get the same IP;
        with reservations each boot takes the lease from the other. The leases
        only ever show one of them, so libvm remembers what it has seen.
        """
        if lease.client_id is None or lease.mac is None:
            return
        mac = format_mac(lease.mac)
        key = (network, lease.client_id.lower())
        other = self._client_ids.get(key)
        if other is not None and other != mac:
            owner = self.mac_owners().get(other)
            if owner is not None and self.domain_running(owner):
                raise ClientIdShared(
                    f"{mac} and {other} (domain {owner!r}) present the same DHCP client-id "
                    f"{lease.client_id} on network {network!r}; dnsmasq gives them one lease. "
                    f"Give each clone its own /etc/machine-id (or DUID)",
                    other=owner,
                )
        self._client_ids[key] = mac

    # -- locks -----------------------------------------------------------------

    @contextlib.contextmanager
    def create_lock(self) -> Iterator[None]:
        """Serialise check-reserve-define across threads and local processes.

        libvirt refuses a duplicate ``<host>`` atomically, but the hypervisor-
        wide checks (a MAC on another domain, the next free IP) are read-then-
        write; a lock file per daemon makes them atomic for every libvm on this
        host (``$LIBVM_LOCK_DIR``, default /run/lock). Callers that do not share
        the lock (other hosts) are still kept apart by libvirt's atomic add and
        ``create_vm``'s retry. The file is made world-writable (0666, like
        /run/lock itself is sticky and world-writable), so a user's libvm can
        lock what root's created.
        """
        with self.thread_lock, self._flock("", fcntl.LOCK_EX):
            yield

    @contextlib.contextmanager
    def network_lock(self, network: str, *, exclusive: bool) -> Iterator[None]:
        """A reader-writer lock on ``network``'s bridge, across threads and local processes.

        Starting a guest holds it shared (many boot at once); restarting the
        network (``Network.reserve_many`` on an idle network) holds it
        exclusive, so no libvm guest attaches to the bridge while it is
        recreated. Same file rules as :meth:`create_lock`.
        """
        digest = _digest(network)
        with self._flock(f"-net-{digest}", fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH):
            yield

    @contextlib.contextmanager
    def attaching(self, networks: Iterable[str]) -> Iterator[None]:
        """Hold :meth:`network_lock` shared on each of ``networks`` while a guest starts."""
        with contextlib.ExitStack() as stack:
            for network in sorted(set(networks)):  # one order everywhere: no deadlock
                stack.enter_context(self.network_lock(network, exclusive=False))
            yield

    @contextlib.contextmanager
    def _flock(self, suffix: str, mode: int) -> Iterator[None]:
        """``flock(mode)`` on this daemon's lock file (plus ``suffix``), held while the block runs.

        Each call opens the file anew, so threads of one process exclude each
        other as processes do.
        """
        digest = _digest(self.canonical_uri)
        base = Path(os.environ.get("LIBVM_LOCK_DIR") or
                    ("/run/lock" if os.access("/run/lock", os.W_OK) else _tempdir()))
        path = base / f"libvm-{digest}{suffix}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LockFailure(f"cannot open libvm's lock file {path}: {exc.strerror}; "
                                 f"set LIBVM_LOCK_DIR to a writable directory") from exc
        try:
            with contextlib.suppress(OSError):  # only the creator may chmod; others find it 0666
                if os.fstat(fd).st_uid == os.geteuid():
                    os.fchmod(fd, 0o666)  # the umask narrowed os.open's mode
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # releases the flock


# -- network verbs -------------------------------------------------------------
# Types and constants other modules need, so that none of them imports libvirt.

NetworkHandle: TypeAlias = libvirt.virNetwork
ConnectionHandle: TypeAlias = libvirt.virConnect
DomainHandle: TypeAlias = libvirt.virDomain
ADD, DELETE = libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE
DHCP_HOST, DNS_HOST = libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, libvirt.VIR_NETWORK_SECTION_DNS_HOST
# reservations.LIVE and .CONFIG are libvirt's own bits:
assert (libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE, libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG) == (1, 2)


def network_state(handle: NetworkHandle, name: str) -> tuple[bool, bool]:
    """``(active, persistent)`` of a network."""
    with translate(f"network {name!r}"):
        return bool(handle.isActive()), bool(handle.isPersistent())


def network_xml(handle: NetworkHandle, name: str, inactive: bool = False, same: str | None = None) -> str:
    """A network's XML (``inactive``: its persistent definition).

    The test driver (libvirt 9.0) has one definition and refuses
    ``VIR_NETWORK_XML_INACTIVE``: then its one definition is returned, which is
    ``same`` if the caller has just read it (reading it again costs as much as
    the rest of ``free_ip`` on a network of 50,000 hosts).
    """
    try:
        with translate(f"network {name!r}"):
            return str(handle.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE if inactive else 0))
    except Unsupported:
        if not inactive:
            raise
        if same is not None:
            return same
    with translate(f"network {name!r}"):
        return str(handle.XMLDesc(0))


def update_network(handle: NetworkHandle, command: int, section: int, index: int, xml: str, flags: int,
                   what: str) -> None:
    """virNetworkUpdate: ``command`` (:data:`ADD`, :data:`DELETE`) one element of ``section``
    (:data:`DHCP_HOST`, :data:`DNS_HOST`) in the definitions ``flags`` names."""
    with translate(what):
        handle.update(command, section, index, xml, flags)


def network_leases(handle: NetworkHandle, name: str) -> list[dict[str, object]] | None:
    """libvirt's DHCP leases of a network; ``None`` when the driver has none (``test:///``)."""
    try:
        with translate(f"leases of network {name!r}"):
            return list(handle.DHCPLeases())
    except Unsupported:
        return None


def network_ports(handle: NetworkHandle, name: str) -> bool:
    """Whether a guest is attached (libvirt network ports); True when libvirt cannot tell."""
    try:
        with translate(f"ports of network {name!r}"):
            return bool(handle.listAllPorts())
    except Unsupported:
        return True


def call(handle: object, verb: str, what: str, *args: object) -> Any:
    """``handle.verb(*args)`` on a libvirt object (``create``, ``destroy``, ``undefine``,
    ``setAutostart``, ``bridgeName``, ``UUIDString``...), its libvirt error as a libvm error about ``what``."""
    with translate(what):
        return getattr(handle, verb)(*args)


# -- definitions ---------------------------------------------------------------

_DEFINE = {
    "domain": lambda conn, xml: conn.defineXML(xml),
    "network": lambda conn, xml: conn.networkDefineXML(xml),
    "storage pool": lambda conn, xml: conn.storagePoolDefineXML(xml, 0),
}


def define(live: Live, kind: str, xml: str, name: str) -> Any:
    """Define (or redefine) a ``"domain"``, ``"network"`` or ``"storage pool"``; its handle."""
    with translate(f"defining {kind} {name!r}"):
        return _DEFINE[kind](live.conn, xml)


def domain_capabilities(live: Live, arch: str, virt_type: str) -> str:
    """libvirt's domain capabilities for ``arch`` and ``virt_type`` (firmware, devices)."""
    with translate("reading domain capabilities"):
        return str(live.conn.getDomainCapabilities(None, arch, None, virt_type, 0))


def _release(conn: libvirt.virConnect, index: DomainIndex) -> None:
    """Let go of ``conn``: its event subscriptions and close callback first (each holds a
    reference that would keep the connection, and an SSH transport's session, open), then close it."""
    index.unwatch()
    with contextlib.suppress(libvirt.libvirtError):
        conn.unregisterCloseCallback()
    with contextlib.suppress(libvirt.libvirtError):
        conn.close()


def _digest(text: str) -> str:
    """A short, stable file-name-safe digest of ``text`` (lock file names)."""
    import hashlib  # here, like tempfile below: import libvm stays cheap

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tempdir() -> str:
    import tempfile

    return tempfile.gettempdir()


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) for the block; re-raise it after. Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
        if caught:
            raise KeyboardInterrupt


# -- domain verbs (h-dups) -----------------------------------------------------
# What libvm.domain asks of a libvirt domain, each call wrapped once here so
# that no other module needs libvirt's names.

#: libvirt's domain state codes (``virDomainState``) by the name ``libvm.VMState`` gives each.
DOMAIN_STATES = {
    "NOSTATE": libvirt.VIR_DOMAIN_NOSTATE,
    "RUNNING": libvirt.VIR_DOMAIN_RUNNING,
    "BLOCKED": libvirt.VIR_DOMAIN_BLOCKED,
    "PAUSED": libvirt.VIR_DOMAIN_PAUSED,
    "SHUTDOWN": libvirt.VIR_DOMAIN_SHUTDOWN,
    "SHUTOFF": libvirt.VIR_DOMAIN_SHUTOFF,
    "CRASHED": libvirt.VIR_DOMAIN_CRASHED,
    "PMSUSPENDED": libvirt.VIR_DOMAIN_PMSUSPENDED,
}


def domain_xml(dom: DomainHandle, *, inactive: bool = False) -> str:
    """The domain's XML (``inactive``: the persistent config)."""
    with translate(f"domain {dom.name()!r}"):
        return str(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))


def domain_state(dom: DomainHandle) -> int:
    """The domain's state code (see :data:`DOMAIN_STATES`); :class:`NotFound` once it is gone."""
    with translate(f"state of domain {dom.name()!r}"):
        return int(dom.state()[0])


def start_domain(dom: DomainHandle) -> None:
    """Boot the defined domain."""
    with translate(f"starting domain {dom.name()!r}"):
        dom.create()


def shutdown_domain(dom: DomainHandle) -> None:
    """Ask the guest to power off (ACPI power button); :class:`InvalidState` if it does not run."""
    with translate(f"shutting down domain {dom.name()!r}"):
        dom.shutdown()


def destroy_domain(dom: DomainHandle) -> None:
    """Power the domain off at once; :class:`InvalidState` if it does not run."""
    with translate(f"destroying domain {dom.name()!r}"):
        dom.destroy()


def undefine_domain(dom: DomainHandle) -> None:
    """Remove the domain's definition, its NVRAM and managed save included.

    A UEFI guest made by virt-install cannot be undefined without its NVRAM;
    drivers without NVRAM support (``test:///``) refuse the flag, so they are
    asked again without it.
    """
    what = f"undefining domain {dom.name()!r}"
    try:
        with translate(what):
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
    except Unsupported:
        with translate(what):
            dom.undefineFlags(0)


def delete_volume(live: Live, path: str) -> None:
    """Delete the storage volume whose file is ``path``; :class:`NotFound` if no pool has it."""
    volume = live.volume_at(path)
    with translate(f"deleting volume {path}"):
        volume.delete(0)


# -- storage verbs (h-edges) ------------------------------------------------------
# Every libvirt call of storage.py, which imports no libvirt: handles in, plain
# values out, libvirt's errors mapped by code with the libvirtError as __cause__.

PoolHandle: TypeAlias = libvirt.virStoragePool
VolumeHandle: TypeAlias = libvirt.virStorageVol


def pool_xml_desc(pool: PoolHandle, what: str) -> str:
    with translate(what):
        return str(pool.XMLDesc(0))


def pool_active(pool: PoolHandle, what: str) -> bool:
    with translate(what):
        return bool(pool.isActive())


def pool_start(pool: PoolHandle, what: str) -> None:
    with translate(what):
        pool.create(0)


def pool_refresh(pool: PoolHandle, what: str) -> None:
    with translate(what):
        pool.refresh(0)


def pool_volumes(pool: PoolHandle, what: str) -> list[VolumeHandle]:
    with translate(what):
        return list(pool.listAllVolumes(0))


def pool_volume(pool: PoolHandle, pool_name: str, name: str) -> VolumeHandle:
    """The volume ``name`` of ``pool``, or :class:`NotFound` (with libvirt's error as cause)."""
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise NotFound(f"no volume named {name!r} in pool {pool_name!r}") from exc
        raise convert(exc, f"looking up volume {pool_name}/{name}") from exc


def pool_create_volume(pool: PoolHandle, xml: str, what: str, source: VolumeHandle | None = None) -> VolumeHandle:
    """A new volume from ``xml`` (a copy of ``source`` if given); a taken name is :class:`AlreadyExists`."""
    with translate(what):
        try:
            return pool.createXML(xml, 0) if source is None else pool.createXMLFrom(xml, source, 0)
        except libvirt.libvirtError as exc:
            # A file libvirt had not seen yet (the pool was not refreshed): VIR_ERR_STORAGE_VOL_EXIST.
            if exc.get_error_code() == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                raise AlreadyExists(f"{what}: {exc.get_error_message()}") from exc
            raise


def pool_teardown(pool: PoolHandle, name: str) -> None:
    """Stop ``pool``, remove its directory if empty, undefine it; each step skipped when done already."""
    with translate(f"stopping pool {name!r}"):
        if pool.isActive():
            pool.destroy()
    # An inactive dir pool's delete is an rmdir: it fails if something else is in it, which is fine.
    with contextlib.suppress(LibvirtFailure), translate(f"removing the directory of pool {name!r}"):
        pool.delete(0)
    with translate(f"undefining pool {name!r}"):
        if pool.isPersistent():
            pool.undefine()


def pool_name(pool: PoolHandle) -> str:
    with translate("reading a storage pool's name"):
        return str(pool.name())


def volume_name(vol: VolumeHandle) -> str:
    with translate("reading a volume's name"):
        return str(vol.name())


def volume_xml_desc(vol: VolumeHandle, what: str) -> str:
    with translate(what):
        return str(vol.XMLDesc(0))


def volume_delete(vol: VolumeHandle, what: str) -> None:
    with translate(what):
        vol.delete(0)


def volume_resize(vol: VolumeHandle, size: int, what: str) -> None:
    with translate(what):
        vol.resize(size, 0)


def volume_pool(vol: VolumeHandle, what: str) -> PoolHandle:
    with translate(what):
        return vol.storagePoolLookupByVolume()


def volume_upload(vol: VolumeHandle, size: int, chunks: Iterable[bytes | int], what: str,
                  sparse: bool = False) -> int:
    """Stream ``chunks`` (``size`` bytes in all) into ``vol``; returns the bytes covered.

    A chunk is data (``bytes``) or, with ``sparse``, the length of a hole
    (``int``) that libvirt writes as a hole (``VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM``):
    a mostly empty raw image costs its data, not its size, over a network link.
    The stream is aborted when anything fails, a ``KeyboardInterrupt`` or an
    error raised by ``chunks`` (a progress callback) included.
    """
    sent = 0
    with translate(what):
        stream = vol.connect().newStream(0)
        vol.upload(stream, 0, size, libvirt.VIR_STORAGE_VOL_UPLOAD_SPARSE_STREAM if sparse else 0)
        try:
            for chunk in chunks:
                if isinstance(chunk, int):
                    stream.sendHole(chunk, 0)
                    sent += chunk
                    continue
                stream.send(chunk)
                sent += len(chunk)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
    return sent
