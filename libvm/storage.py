"""Live storage pools and volumes: base images, overlays and seeds, through libvirt's storage API.

Everything goes through libvirt (``virStorageVolCreateXML``, ``virStorageVolUpload``
streams), never through the caller's filesystem, so it works the same when the
daemon runs on another host.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import libvirt

from ._live import Live, translate
from .errors import AlreadyExists, InUse, InvalidSpec, LibvirtFailure, NotFound
from .storagexml import VOLUME_FORMATS, VolumeInfo, check_volume_name, parse_size, read_pool, read_volume, volume_xml
from .values import check_bool, check_path

log = logging.getLogger("libvm")

#: Upload chunk: large enough that the RPC overhead vanishes, small enough for steady progress.
CHUNK = 4 * 2**20

Progress = Callable[[int, int], object]
"""``progress(bytes_sent, bytes_total)``, called after every chunk of an upload."""


class Volume:
    """A storage volume (a file in a pool). Get one from :meth:`Pool.volume` or :meth:`Pool.upload`."""

    def __init__(self, live: Live, handle: libvirt.virStorageVol, pool: str) -> None:
        self._live = live
        self._vol = handle
        self.pool = pool
        self.name: str = handle.name()

    def __repr__(self) -> str:
        return f"<libvm.Volume {self.pool}/{self.name}>"

    @property
    def handle(self) -> libvirt.virStorageVol:
        """The underlying ``libvirt.virStorageVol``."""
        self._live.conn  # noqa: B018 (raises ConnectionClosed after close())
        return self._vol

    def info(self) -> VolumeInfo:
        """Name, path, format, capacity (virtual size) and allocation in bytes, backing file."""
        with translate(f"volume {self.pool}/{self.name}"):
            return read_volume(self.handle.XMLDesc(0))

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
        """Remove the volume (idempotent).

        Refused (:class:`InUse`) while a domain uses the file as a disk or cdrom,
        or while another volume of its pool is an overlay backed by it (a base
        image): removing it would leave those guests unbootable. ``force=True``
        removes it anyway.
        """
        check_bool(force, "force")
        if not force:
            self._refuse_if_used()
        try:
            with translate(f"deleting volume {self.pool}/{self.name}"):
                self.handle.delete(0)
        except NotFound:
            pass
        log.info("deleted volume %s/%s", self.pool, self.name)

    def _refuse_if_used(self) -> None:
        try:
            info = self.info()
        except NotFound:
            return
        owner = self._live.files_in_use().get(info.path)
        if owner is not None:
            raise InUse(f"volume {self.pool}/{self.name} is a disk of domain {owner!r}; delete that domain "
                        f"first (vm.delete(storage=True)) or pass force=True")
        with translate(f"pool {self.pool!r}"):
            siblings = self.handle.storagePoolLookupByVolume().listAllVolumes(0)
        for vol in siblings:
            with translate(f"volume {self.pool}/{vol.name()}"):
                backing = read_volume(vol.XMLDesc(0)).backing
            if backing == info.path:
                raise InUse(f"volume {self.pool}/{self.name} is the base of overlay {self.pool}/{vol.name()}; "
                            f"delete the VMs made from it first, or pass force=True")


class Pool:
    """A libvirt storage pool. Get one from :meth:`Hypervisor.ensure_pool` or :meth:`Hypervisor.pool`."""

    def __init__(self, live: Live, handle: libvirt.virStoragePool) -> None:
        self._live = live
        self._pool = handle
        self.name: str = handle.name()

    def __repr__(self) -> str:
        return f"<libvm.Pool {self.name!r}>"

    @property
    def handle(self) -> libvirt.virStoragePool:
        """The underlying ``libvirt.virStoragePool``."""
        self._live.conn  # noqa: B018 (raises ConnectionClosed after close())
        return self._pool

    @property
    def path(self) -> str | None:
        """The directory the pool keeps its volumes in (on the daemon's host)."""
        with translate(f"pool {self.name!r}"):
            return read_pool(self.handle.XMLDesc(0)).path

    @property
    def active(self) -> bool:
        with translate(f"pool {self.name!r}"):
            return bool(self.handle.isActive())

    def delete(self, *, volumes: bool = False) -> None:
        """Stop and undefine the pool (idempotent); its directory goes too if it is empty.

        ``volumes=True`` first deletes every volume in it; otherwise volumes
        stay on disk (libvirt finds them again if the pool is redefined).
        """
        check_bool(volumes, "volumes")
        try:
            held = self.volumes()
            if held and not volumes:
                raise InUse(f"pool {self.name!r} still holds {', '.join(v.name for v in held)}; delete them "
                            f"(or pass volumes=True), else they stay on disk out of libvirt's sight")
            used = self._live.files_in_use()
            for vol in held:
                owner = used.get(vol.path)
                if owner is not None:
                    raise InUse(f"volume {self.name}/{vol.name} of pool {self.name!r} is a disk of domain "
                                f"{owner!r}; delete that domain first")
            for vol in sorted(held, key=lambda v: v.info().backing is None):  # overlays before their bases
                vol.delete(force=True)
            with translate(f"stopping pool {self.name!r}"):
                if self.handle.isActive():
                    self.handle.destroy()
            with contextlib.suppress(LibvirtFailure), translate(f"removing the directory of pool {self.name!r}"):
                self.handle.delete(0)  # an inactive dir pool: rmdir (fails if something else is in it)
            with translate(f"undefining pool {self.name!r}"):
                if self.handle.isPersistent():
                    self.handle.undefine()
        except NotFound:
            pass
        log.info("deleted storage pool %s", self.name)

    def refresh(self) -> None:
        """Re-read the pool's directory (files added behind libvirt's back)."""
        with translate(f"refreshing pool {self.name!r}"):
            self.handle.refresh(0)

    def volumes(self) -> list[Volume]:
        """Every volume of the pool, sorted by name."""
        with translate(f"listing volumes of pool {self.name!r}"):
            handles = self.handle.listAllVolumes(0)
        return sorted((Volume(self._live, h, self.name) for h in handles), key=lambda v: v.name)

    def volume(self, name: str) -> Volume:
        """The volume called ``name``; :class:`NotFound` if there is none."""
        check_volume_name(name)
        try:
            with translate(f"looking up volume {self.name}/{name}"):
                return Volume(self._live, self.handle.storageVolLookupByName(name), self.name)
        except NotFound:
            raise NotFound(f"no volume named {name!r} in pool {self.name!r}") from None

    def has(self, name: str) -> bool:
        try:
            self.volume(name)
        except NotFound:
            return False
        return True

    def create(self, name: str, capacity: int | str, fmt: str, backing: Volume | None = None) -> Volume:
        """Create an empty volume ``capacity`` bytes big (an int, or ``"10GiB"``) in
        format ``fmt`` (``qcow2`` or ``raw``); ``backing``: a qcow2 overlay of that volume.

        Raises :class:`InvalidSpec`, :class:`AlreadyExists` (the name is taken)
        or :class:`LibvirtFailure`.
        """
        check_volume_name(name)
        capacity = parse_size(capacity, "capacity")
        if fmt not in ("qcow2", "raw"):
            raise InvalidSpec("fmt", fmt, "qcow2 or raw")
        if backing is not None and not isinstance(backing, Volume):
            raise InvalidSpec("backing", backing, "a libvm.Volume or None")
        if backing is not None and fmt != "qcow2":
            raise InvalidSpec("fmt", fmt, "an overlay (backing=...) is qcow2")
        if self.has(name):
            raise AlreadyExists(f"pool {self.name!r} already has a volume named {name!r}")
        back = None if backing is None else (backing.path, backing.format)
        with translate(f"creating volume {self.name}/{name}"):
            handle = self.handle.createXML(volume_xml(name, capacity, fmt, back), 0)
        log.info("created volume %s/%s", self.name, name)
        return Volume(self._live, handle, self.name)

    def clone(self, name: str, source: Volume, capacity: int | str | None = None) -> Volume:
        """A full copy of ``source`` named ``name``, grown to ``capacity`` bytes (an int or
        ``"10GiB"``, at least the source's virtual size; default: the same size)."""
        check_volume_name(name)
        if not isinstance(source, Volume):
            raise InvalidSpec("source", source, "a libvm.Volume")
        wanted = None if capacity is None else parse_size(capacity, "capacity")
        if self.has(name):
            raise AlreadyExists(f"pool {self.name!r} already has a volume named {name!r}")
        info = source.info()
        if wanted is not None and wanted < info.capacity:
            raise InvalidSpec("capacity", capacity,
                              f"smaller than {source.name}'s virtual size ({info.capacity} bytes)")
        size = wanted or info.capacity
        with translate(f"cloning volume {source.pool}/{source.name} to {self.name}/{name}"):
            handle = self.handle.createXMLFrom(volume_xml(name, size, info.format), source.handle, 0)
        vol = Volume(self._live, handle, self.name)
        if size > vol.capacity:
            with translate(f"resizing volume {self.name}/{name}"):
                handle.resize(size, 0)
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
        vol = self.create(name, max(size, 1), fmt)
        try:
            self._stream(vol, path, size, progress)
            self.refresh()  # libvirt probes the uploaded image: format, virtual size
        except BaseException:
            vol.delete()
            raise
        log.info("uploaded %s to %s/%s (%d bytes)", path, self.name, name, size)
        return self.volume(name)

    def upload_bytes(self, name: str, data: bytes, fmt: str = "raw") -> Volume:
        """A new volume ``name`` holding ``data`` (a cloud-init seed, say)."""
        vol = self.create(name, max(len(data), 1), fmt)
        try:
            with translate(f"uploading to volume {self.name}/{name}"):
                stream = self.handle.connect().newStream(0)
                vol.handle.upload(stream, 0, len(data), 0)
                try:
                    for offset in range(0, len(data), CHUNK):
                        stream.send(data[offset:offset + CHUNK])
                    stream.finish()
                except BaseException:
                    with contextlib.suppress(libvirt.libvirtError):
                        stream.abort()
                    raise
        except BaseException:
            vol.delete()
            raise
        return vol

    def _stream(self, vol: Volume, path: Path, size: int, progress: Progress | None) -> None:
        with translate(f"uploading {path} to {self.name}/{vol.name}"):
            stream = self.handle.connect().newStream(0)
            vol.handle.upload(stream, 0, size, 0)
            sent = 0
            try:
                with open(path, "rb") as source:
                    while chunk := source.read(CHUNK):
                        stream.send(chunk)
                        sent += len(chunk)
                        if progress is not None:
                            progress(sent, size)
                stream.finish()
            except BaseException:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
                raise
        if sent != size:
            raise LibvirtFailure(f"{path} changed during the upload ({sent} of {size} bytes sent)")
