"""Storage pool and volume XML, both ways (pure lxml, no connection).

libvm defines only directory pools (``<pool type='dir'>``) and creates file
volumes in them: a copy of an uploaded image (the *base*), qcow2 overlays
backed by a base, and raw cloud-init seeds. Reading works for any pool type.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from lxml import etree

from . import _xml
from .errors import InvalidSpec
from .units import parse_size as parse_size  # kept importable from here
from .units import unit_bytes

VOLUME_FORMATS = ("qcow2", "raw", "iso")
_VOLUME_NAME = re.compile(r"[A-Za-z0-9._+-]{1,200}")


class PoolInfo(NamedTuple):
    """What libvm reads from a ``<pool>``: its name, type and target directory."""

    name: str
    type: str
    path: str | None


class VolumeInfo(NamedTuple):
    """What libvm reads from a ``<volume>``: sizes in bytes, format, backing file."""

    name: str
    path: str
    format: str
    capacity: int
    allocation: int
    backing: str | None


def check_volume_name(name: object, field: str = "name") -> str:
    """A volume file name: letters, digits, '.', '_', '+', '-' (no '/', no leading '.')."""
    if not isinstance(name, str) or not _VOLUME_NAME.fullmatch(name) or name.startswith("."):
        raise InvalidSpec(field, name, "a file name of letters, digits, '.', '_', '+', '-'")
    return name


def pool_xml(name: str, path: str) -> str:
    """A directory pool ``name`` whose volumes live in ``path`` (on the daemon's host)."""
    pool = etree.Element("pool", type="dir")
    _xml.sub(pool, "name", name)
    target = _xml.sub(pool, "target")
    _xml.sub(target, "path", path)
    return _xml.to_string(pool)


def volume_xml(name: str, capacity: int, fmt: str, backing: tuple[str, str] | None = None,
               allocation: int | None = None) -> str:
    """A file volume; ``backing=(path, format)`` makes it a qcow2 overlay of that file.

    ``allocation=0`` asks for a sparse file: without ``<allocation>`` libvirt's
    dir pool allocates a raw volume's whole capacity up front, so an upload's
    holes would be written out anyway.
    """
    vol = etree.Element("volume", type="file")
    _xml.sub(vol, "name", name)
    _xml.sub(vol, "capacity", str(capacity), unit="bytes")
    if allocation is not None:
        _xml.sub(vol, "allocation", str(allocation), unit="bytes")
    target = _xml.sub(vol, "target")
    _xml.sub(target, "format", type=fmt)
    if backing is not None:
        store = _xml.sub(vol, "backingStore")
        _xml.sub(store, "path", backing[0])
        _xml.sub(store, "format", type=backing[1])
    return _xml.to_string(vol)


def read_pool(xml: str | bytes) -> PoolInfo:
    root = _xml.parse(xml, "pool xml")
    return PoolInfo(root.findtext("name") or "", root.get("type", ""), root.findtext("target/path"))


def read_volume(xml: str | bytes) -> VolumeInfo:
    root = _xml.parse(xml, "volume xml")
    fmt = root.find("target/format")
    return VolumeInfo(
        name=root.findtext("name") or "",
        path=root.findtext("target/path") or root.findtext("key") or "",
        format=fmt.get("type", "raw") if fmt is not None else "raw",
        capacity=_bytes(root, "capacity"),
        allocation=_bytes(root, "allocation"),
        backing=root.findtext("backingStore/path"),
    )


def _bytes(root: etree._Element, tag: str) -> int:
    element = root.find(tag)
    if element is None or not (element.text or "").strip().isdigit():
        return 0
    return int((element.text or "0").strip()) * unit_bytes(element.get("unit", "bytes"), 1)
