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
import hashlib
import logging
import os
import signal
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeAlias, TypeVar

import libvirt

from . import _xml
from .addressing import format_mac
from .domainxml import DomainDoc, read_domain
from .errors import (
    AlreadyExists,
    ClientIdShared,
    ConnectionClosed,
    LibvirtFailure,
    LibvmError,
    NotFound,
)
from .values import Lease

log = logging.getLogger("libvm")
T = TypeVar("T")

_NOT_FOUND = {
    libvirt.VIR_ERR_NO_DOMAIN,
    libvirt.VIR_ERR_NO_NETWORK,
    libvirt.VIR_ERR_NO_STORAGE_VOL,
    libvirt.VIR_ERR_NO_STORAGE_POOL,
}
_EXISTS = {libvirt.VIR_ERR_DOM_EXIST, getattr(libvirt, "VIR_ERR_NETWORK_EXIST", -1)}


class InvalidState(LibvirtFailure):
    """libvirt refused because of the object's state (``VIR_ERR_OPERATION_INVALID``):
    a domain that is not running, a ``<host>`` entry that is already there."""


class Unsupported(LibvirtFailure):
    """The driver does not support the call or a flag of it (``VIR_ERR_NO_SUPPORT``,
    ``VIR_ERR_INVALID_ARG`` for flags such as ``VIR_DOMAIN_UNDEFINE_NVRAM`` on ``test:///``)."""


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


def open_connection(uri: str) -> libvirt.virConnect:
    """``libvirt.open(uri)``, or :class:`LibvirtFailure` saying what to check."""
    _silence_default_handler()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as exc:
        raise LibvirtFailure(
            f"cannot connect to {uri!r}: {exc.get_error_message()} (check the URI; for qemu:///system: "
            f"is libvirtd running, are you root?)",
            exc.get_error_code(),
        ) from exc


def _lookup(kind: str, name: str, find: Callable[[str], T], missing: int) -> T:
    """``find(name)``; libvirt's "no such object" (``missing``) as :class:`NotFound`."""
    with translate(f"looking up {kind} {name!r}"):
        try:
            return find(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == missing:
                raise NotFound(f"no {kind} named {name!r}") from exc
            raise


class Live:
    """One libvirt connection and everything that must be shared by its users."""

    def __init__(self, conn: libvirt.virConnect, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = conn
        #: Bumped on every reconnect: handles from an older connection are stale.
        self.generation = 0
        self.thread_lock = threading.RLock()
        self._client_ids: dict[tuple[str, str], str] = {}

    # -- the connection --------------------------------------------------------

    @property
    def conn(self) -> libvirt.virConnect:
        """The open ``virConnect``; :class:`ConnectionClosed` after :meth:`close`."""
        if self._conn is None:
            raise ConnectionClosed(f"the connection to {self.uri!r} is closed; call libvm.connect() again")
        return self._conn

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    def alive(self) -> bool:
        """Whether the daemon still answers on this connection."""
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    def reconnect(self, timeout: float = 30.0) -> None:
        """Replace a dead connection (libvirtd restarted), waiting up to ``timeout`` s for the daemon.

        Raises :class:`LibvirtFailure` if the daemon does not come back.
        """
        old = self.conn
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = libvirt.open(self.uri)
                break
            except libvirt.libvirtError as exc:
                if time.monotonic() > deadline:
                    raise LibvirtFailure(f"cannot reconnect to {self.uri!r} within {timeout:g} s: "
                                         f"{exc.get_error_message()}", exc.get_error_code()) from exc
                time.sleep(0.5)
        with contextlib.suppress(libvirt.libvirtError):
            old.close()
        self._conn = conn
        self.generation += 1

    # -- lookups ---------------------------------------------------------------

    def network(self, name: str) -> libvirt.virNetwork:
        """The network called ``name``, or :class:`NotFound`."""
        return _lookup("network", name, self.conn.networkLookupByName, libvirt.VIR_ERR_NO_NETWORK)

    def domain(self, name: str) -> libvirt.virDomain:
        """The domain called ``name``, or :class:`NotFound`."""
        return _lookup("domain", name, self.conn.lookupByName, libvirt.VIR_ERR_NO_DOMAIN)

    def pool(self, name: str) -> libvirt.virStoragePool:
        """The storage pool called ``name``, or :class:`NotFound`."""
        return _lookup("storage pool", name, self.conn.storagePoolLookupByName, libvirt.VIR_ERR_NO_STORAGE_POOL)

    def volume_at(self, path: str) -> libvirt.virStorageVol:
        """The storage volume whose file is ``path``, or :class:`NotFound`."""
        return _lookup("storage volume", path, self.conn.storageVolLookupByPath, libvirt.VIR_ERR_NO_STORAGE_VOL)

    def pools(self) -> list[libvirt.virStoragePool]:
        with translate("listing storage pools"):
            return list(self.conn.listAllStoragePools(0))

    def networks(self) -> list[libvirt.virNetwork]:
        with translate("listing networks"):
            return list(self.conn.listAllNetworks())

    def domains(self) -> list[libvirt.virDomain]:
        with translate("listing domains"):
            return list(self.conn.listAllDomains())

    # -- hypervisor-wide facts ---------------------------------------------------

    def documents(self) -> Iterator[DomainDoc]:
        """Every domain's persistent definition, read once each (a domain undefined
        while they are listed is skipped)."""
        for dom in self.domains():
            try:
                xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError:
                continue  # undefined while we listed
            yield read_domain(xml)

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

    @property
    def is_local(self) -> bool:
        """Whether the daemon runs on this machine (no host in the URI)."""
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
        digest = hashlib.sha256(network.encode()).hexdigest()[:16]
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
        digest = hashlib.sha256(self.canonical_uri.encode()).hexdigest()[:16]
        base = Path(os.environ.get("LIBVM_LOCK_DIR") or
                    ("/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir()))
        path = base / f"libvm-{digest}{suffix}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LibvirtFailure(f"cannot open libvm's lock file {path}: {exc.strerror}; "
                                 f"set LIBVM_LOCK_DIR to a writable directory") from exc
        try:
            with contextlib.suppress(OSError):  # only the creator may chmod; others find it 0666
                if os.fstat(fd).st_uid == os.geteuid():
                    os.fchmod(fd, 0o666)  # the umask narrowed os.open's mode
            fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)  # releases the flock


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


def volume_upload(vol: VolumeHandle, size: int, chunks: Iterable[bytes], what: str) -> int:
    """Stream ``chunks`` (``size`` bytes in all) into ``vol``; returns the bytes sent.

    The stream is aborted when anything fails, a ``KeyboardInterrupt`` or an
    error raised by ``chunks`` (a progress callback) included.
    """
    sent = 0
    with translate(what):
        stream = vol.connect().newStream(0)
        vol.upload(stream, 0, size, 0)
        try:
            for chunk in chunks:
                stream.send(chunk)
                sent += len(chunk)
            stream.finish()
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise
    return sent
