"""Live storage pools and volumes: base images, overlays and seeds, through libvirt's storage API.

Everything goes through libvirt (``virStorageVolCreateXML``, ``virStorageVolUpload``
streams), never through the caller's filesystem, so it works the same when the
daemon runs on another host. The libvirt calls themselves are in ``_live``.

Teardown (``delete``) succeeds on a pool or volume that is gone already; every
other call on one raises :class:`NotFound`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from ._live import (
    Live,
    PoolHandle,
    VolumeHandle,
    pool_active,
    pool_create_volume,
    pool_name,
    pool_refresh,
    pool_start,
    pool_teardown,
    pool_volume,
    pool_volumes,
    pool_xml_desc,
    volume_delete,
    volume_name,
    volume_pool,
    volume_resize,
    volume_upload,
    volume_xml_desc,
)
from ._log import log
from .errors import AlreadyExists, InUse, InvalidSpec, LibvirtFailure, NotFound, SourceChanged
from .storagexml import VOLUME_FORMATS, VolumeInfo, check_volume_name, parse_size, read_pool, read_volume, volume_xml
from .values import check_bool, check_path

#: Upload chunk: large enough that the RPC overhead vanishes, small enough for steady progress.
CHUNK = 4 * 2**20

Progress = Callable[[int, int], object]
"""``progress(bytes_sent, bytes_total)``, called after every chunk of an upload."""


class Volume:
    """A storage volume (a file in a pool). Get one from :meth:`Pool.volume` or :meth:`Pool.upload`.

    Two ``Volume`` objects are equal when they name the same volume of the same
    pool on the same connection.
    """

    def __init__(self, live: Live, handle: VolumeHandle, pool: str) -> None:
        self._live = live
        self._vol = handle
        self._generation = live.generation
        self.pool = pool
        self.name: str = volume_name(handle)

    def __repr__(self) -> str:
        return f"<libvm.Volume {self.pool}/{self.name}>"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Volume) and other._live is self._live
                and (other.pool, other.name) == (self.pool, self.name))

    def __hash__(self) -> int:
        return hash((id(self._live), self.pool, self.name))

    @property
    def handle(self) -> VolumeHandle:
        """The underlying ``libvirt.virStorageVol`` (looked up again after a reconnect)."""
        self._live.conn  # noqa: B018 (raises ConnectionClosed after close())
        if self._generation != self._live.ensure():
            self._vol = pool_volume(self._live.pool(self.pool), self.pool, self.name)
            self._generation = self._live.generation
        return self._vol

    def info(self) -> VolumeInfo:
        """Name, path, format, capacity (virtual size) and allocation in bytes, backing file."""
        return read_volume(volume_xml_desc(self.handle, f"volume {self.pool}/{self.name}"))

    @property
    def path(self) -> str:
        """The volume's path as the pool reports it (on the daemon's host)."""
        return self.info().path

    @property
    def format(self) -> str:
        return self.info().format

    @property
    def capacity(self) -> int:
        """The virtual size in bytes (what a guest sees)."""
        return self.info().capacity

    def delete(self, *, force: bool = False) -> None:
        """Remove the volume (idempotent: a volume that is gone already is fine).

        Refused (:class:`InUse`) while a domain uses the file as a disk or cdrom,
        or while another volume of its pool is an overlay backed by it (a base
        image): removing it would leave those guests unbootable. ``force=True``
        removes it anyway.
        """
        check_bool(force, "force")
        try:
            if not force:
                self._refuse_if_used()
            volume_delete(self.handle, f"deleting volume {self.pool}/{self.name}")
        except NotFound:
            return
        log.info("deleted volume %s/%s", self.pool, self.name)

    def _refuse_if_used(self) -> None:
        info = self.info()
        owner = self._live.files_in_use().get(info.path)
        if owner is not None:
            raise InUse(f"volume {self.pool}/{self.name} is a disk of domain {owner!r}; delete that domain "
                        f"first (vm.delete(storage=True)) or pass force=True")
        siblings = pool_volumes(volume_pool(self.handle, f"pool {self.pool!r}"), f"pool {self.pool!r}")
        for handle in siblings:
            sibling = Volume(self._live, handle, self.pool)
            try:
                backing = sibling.info().backing
            except NotFound:
                continue  # deleted meanwhile
            if backing == info.path:
                raise InUse(f"volume {self.pool}/{self.name} is the base of overlay {self.pool}/{sibling.name}; "
                            f"delete the VMs made from it first, or pass force=True")


class Pool:
    """A libvirt storage pool. Get one from :meth:`Hypervisor.ensure_pool` or :meth:`Hypervisor.pool`.

    Two ``Pool`` objects are equal when they name the same pool on the same connection.
    """

    def __init__(self, live: Live, handle: PoolHandle) -> None:
        self._live = live
        self._pool = handle
        self._generation = live.generation
        self.name: str = pool_name(handle)

    def __repr__(self) -> str:
        return f"<libvm.Pool {self.name!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pool) and other._live is self._live and other.name == self.name

    def __hash__(self) -> int:
        return hash((id(self._live), self.name))

    @property
    def handle(self) -> PoolHandle:
        """The underlying ``libvirt.virStoragePool`` (looked up again after a reconnect)."""
        self._live.conn  # noqa: B018 (raises ConnectionClosed after close())
        if self._generation != self._live.ensure():
            self._pool = self._live.pool(self.name)
            self._generation = self._live.generation
        return self._pool

    @property
    def path(self) -> str | None:
        """The directory the pool keeps its volumes in (on the daemon's host)."""
        return read_pool(pool_xml_desc(self.handle, f"pool {self.name!r}")).path

    @property
    def active(self) -> bool:
        return pool_active(self.handle, f"pool {self.name!r}")

    def delete(self, *, volumes: bool = False) -> None:
        """Stop and undefine the pool (idempotent); its directory goes too if it is empty.

        ``volumes=True`` first deletes every volume in it (the pool is refreshed
        first, so a file removed behind libvirt's back is no obstacle);
        otherwise volumes stay on disk (libvirt finds them again if the pool is
        redefined) and the pool is refused (:class:`InUse`) while it holds any.
        """
        check_bool(volumes, "volumes")
        try:
            listed = self._volumes_to_delete()
        except NotFound:
            return  # the pool is gone already
        held: dict[Volume, VolumeInfo] = {}
        for vol in listed:
            try:
                held[vol] = vol.info()
            except NotFound:
                continue  # removed since the listing: nothing to delete
        if held and not volumes:
            raise InUse(f"pool {self.name!r} still holds {', '.join(v.name for v in held)}; delete them "
                        f"(or pass volumes=True), else they stay on disk out of libvirt's sight")
        used = self._live.files_in_use()
        for vol, info in held.items():
            owner = used.get(info.path)
            if owner is not None:
                raise InUse(f"volume {self.name}/{vol.name} of pool {self.name!r} is a disk of domain "
                            f"{owner!r}; delete that domain first")
        for vol in sorted(held, key=lambda v: held[v].backing is None):  # overlays before their bases
            vol.delete(force=True)
        try:
            pool_teardown(self.handle, self.name)
        except NotFound:
            return  # removed by someone else meanwhile
        log.info("deleted storage pool %s", self.name)

    def _volumes_to_delete(self) -> list[Volume]:
        """The volumes, of a stopped pool too: libvirt lists only an active pool's
        volumes, so a stopped one is started first; one that cannot start (its
        directory is gone) has none."""
        if not self.active:
            try:
                pool_start(self.handle, f"starting pool {self.name!r} to list its volumes")
            except LibvirtFailure as exc:
                log.warning("pool %s cannot start (%s): deleting it without listing volumes", self.name, exc)
                return []
        return self.volumes()

    def refresh(self) -> None:
        """Re-read the pool's directory (files added or removed behind libvirt's back)."""
        pool_refresh(self.handle, f"refreshing pool {self.name!r}")

    def _rescan(self) -> None:
        """Refresh before a name is looked up or taken, at best.

        libvirt lists a dir pool's files as of its last refresh: without one, a
        file copied in by hand was NotFound for :meth:`volume` but AlreadyExists
        for :meth:`upload`, and a removed one was found. A refresh fails while
        an upload into the pool runs (libvirt refuses it during async jobs) or
        when the pool is stopped: then the lookup goes on with libvirt's list.
        """
        try:
            pool_refresh(self.handle, f"refreshing pool {self.name!r}")
        except LibvirtFailure as exc:
            log.debug("pool %s not refreshed before a lookup: %s", self.name, exc)

    def volumes(self) -> list[Volume]:
        """Every volume of the pool, sorted by name."""
        self._rescan()
        handles = pool_volumes(self.handle, f"listing volumes of pool {self.name!r}")
        return sorted((Volume(self._live, h, self.name) for h in handles), key=lambda v: v.name)

    def volume(self, name: str) -> Volume:
        """The volume called ``name``; :class:`NotFound` if there is none."""
        check_volume_name(name)
        self._rescan()
        return Volume(self._live, pool_volume(self.handle, self.name, name), self.name)

    def has(self, name: str) -> bool:
        """Whether the pool has a volume called ``name`` (:class:`NotFound` if the pool is gone)."""
        check_volume_name(name)
        self._rescan()  # raises NotFound for a pool that is gone
        try:
            pool_volume(self.handle, self.name, name)
        except NotFound:
            return False
        return True

    def create(self, name: str, capacity: int | str, fmt: str, backing: Volume | None = None) -> Volume:
        """Create an empty volume ``capacity`` bytes big (an int, or ``"10GiB"``) in
        format ``fmt`` (``qcow2`` or ``raw``); ``backing``: a qcow2 overlay of that volume.

        Raises :class:`InvalidSpec`, :class:`AlreadyExists` (the name is taken)
        or :class:`LibvirtFailure`.
        """
        if fmt not in ("qcow2", "raw"):
            raise InvalidSpec("fmt", fmt, "qcow2 or raw")
        return self._create(name, capacity, fmt, backing)

    def _create(self, name: str, capacity: int | str, fmt: str, backing: Volume | None = None,
                allocation: int | None = None) -> Volume:
        check_volume_name(name)
        size = parse_size(capacity, "capacity")
        if backing is not None and not isinstance(backing, Volume):
            raise InvalidSpec("backing", backing, "a libvm.Volume or None")
        if backing is not None and fmt != "qcow2":
            raise InvalidSpec("fmt", fmt, "an overlay (backing=...) is qcow2")
        self._refuse_taken(name)
        back = None
        if backing is not None:
            base = backing.info()
            back = (base.path, base.format)
        handle = pool_create_volume(self.handle, volume_xml(name, size, fmt, back, allocation),
                                    f"creating volume {self.name}/{name}")
        log.info("created volume %s/%s", self.name, name)
        return Volume(self._live, handle, self.name)

    def _refuse_taken(self, name: str) -> None:
        if self.has(name):
            raise AlreadyExists(f"pool {self.name!r} already has a volume named {name!r}")

    def clone(self, name: str, source: Volume, capacity: int | str | None = None) -> Volume:
        """A full copy of ``source`` named ``name``, grown to ``capacity`` bytes (an int or
        ``"10GiB"``, at least the source's virtual size; default: the same size)."""
        check_volume_name(name)
        if not isinstance(source, Volume):
            raise InvalidSpec("source", source, "a libvm.Volume")
        wanted = None if capacity is None else parse_size(capacity, "capacity")
        self._refuse_taken(name)
        info = source.info()
        if wanted is not None and wanted < info.capacity:
            raise InvalidSpec("capacity", capacity,
                              f"smaller than {source.name}'s virtual size ({info.capacity} bytes)")
        size = wanted or info.capacity
        handle = pool_create_volume(self.handle, volume_xml(name, size, info.format),
                                    f"cloning volume {source.pool}/{source.name} to {self.name}/{name}",
                                    source.handle)
        vol = Volume(self._live, handle, self.name)
        if size > vol.capacity:
            volume_resize(handle, size, f"resizing volume {self.name}/{name}")
        return vol

    def upload(self, name: str, source: str | os.PathLike[str], *, fmt: str | None = None,
               progress: Progress | None = None) -> Volume:
        """Copy the local file ``source`` into a new volume ``name`` through a libvirt stream.

        ``fmt`` is the image format (``qcow2``, ``raw`` or ``iso``; default:
        ``qcow2`` if the file starts with qcow2's magic, else ``raw``).
        ``progress(sent, total)`` is called after every 4 MiB chunk. The
        volume is removed again if the upload fails or is interrupted.
        Raises :class:`AlreadyExists` if the name is taken.
        """
        check_volume_name(name)
        path = check_path(source, "source")
        try:
            size = path.stat().st_size
            with open(path, "rb") as handle:
                magic = handle.read(4)
        except OSError as exc:
            raise InvalidSpec("source", str(source), f"cannot read it: {exc.strerror}") from exc
        if fmt is None:
            fmt = "qcow2" if magic == b"QFI\xfb" else "raw"
        if fmt not in VOLUME_FORMATS:
            raise InvalidSpec("fmt", fmt, f"one of {', '.join(VOLUME_FORMATS)}")
        if fmt == "qcow2" and magic != b"QFI\xfb":
            raise InvalidSpec("source", str(source), "not a qcow2 image (no qcow2 header); pass fmt='raw'")
        if progress is not None and not callable(progress):
            raise InvalidSpec("progress", progress, "a callable progress(sent, total) or None")
        vol = self._create(name, max(size, 1), fmt, allocation=0)  # sparse: the upload fills it
        holes = fmt == "raw" and _has_holes(path, size)
        try:
            sent = volume_upload(vol.handle, size, _file_chunks(path, size, progress, holes),
                                 f"uploading {path} to {self.name}/{name}", sparse=holes)
            if sent != size:
                raise SourceChanged(f"{path} changed during the upload ({sent} of {size} bytes sent)")
        except BaseException:
            vol.delete(force=True)
            raise
        log.info("uploaded %s to %s/%s (%d bytes)", path, self.name, name, size)
        return self.volume(name)  # refreshed: libvirt probes the uploaded image's format and virtual size

    def upload_bytes(self, name: str, data: bytes, fmt: str = "raw") -> Volume:
        """A new volume ``name`` holding ``data`` (bytes; a cloud-init seed, say)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidSpec("data", data, "bytes (the volume's contents)")
        data = bytes(data)
        if fmt not in VOLUME_FORMATS:
            raise InvalidSpec("fmt", fmt, f"one of {', '.join(VOLUME_FORMATS)}")
        vol = self._create(name, max(len(data), 1), fmt)
        try:
            volume_upload(vol.handle, len(data), (data[at:at + CHUNK] for at in range(0, len(data), CHUNK)),
                          f"uploading to volume {self.name}/{name}")
        except BaseException:
            vol.delete(force=True)
            raise
        return vol


def _has_holes(path: Path, size: int) -> bool:
    """Whether the file has holes worth sending as such (fewer blocks than its size)."""
    try:
        return path.stat().st_blocks * 512 < size - CHUNK
    except OSError:
        return False


def _file_chunks(path: Path, size: int, progress: Progress | None, holes: bool = False) -> Iterator[bytes | int]:
    """``path`` in :data:`CHUNK` pieces; ``progress(sent, size)`` after each one is sent.

    With ``holes``, a hole of the file (``SEEK_HOLE``/``SEEK_DATA``) comes as its length.
    """
    sent = 0
    try:
        with open(path, "rb") as source:
            fd = source.fileno()
            while sent < size:
                if holes:
                    try:
                        data = os.lseek(fd, sent, os.SEEK_DATA)
                    except OSError:  # ENXIO: only a hole is left
                        data = size
                    if data > sent:
                        yield min(data, size) - sent
                        sent = min(data, size)
                        source.seek(sent)
                        if progress is not None:
                            progress(sent, size)
                        continue
                    end = min(os.lseek(fd, sent, os.SEEK_HOLE), size)
                    source.seek(sent)
                    want = min(CHUNK, end - sent)
                else:
                    want = CHUNK
                chunk = source.read(want)
                if not chunk:
                    break
                yield chunk
                sent += len(chunk)
                if progress is not None:
                    progress(sent, size)
    except OSError as exc:
        raise InvalidSpec("source", str(path), f"cannot read it: {exc.strerror}") from exc
