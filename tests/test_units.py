"""libvm.units: the one parser behind memory (MiB) and disk sizes (bytes)."""

from __future__ import annotations

import pytest

from libvm import InvalidSpec, addressing, storagexml
from libvm.units import MAX_SIZE_BYTES, parse_amount, parse_memory, parse_size, unit_bytes


@pytest.mark.parametrize(("value", "mib"), [(256, 256), ("256MiB", 256), ("256M", 256), ("1G", 1024),
                                            ("2GiB", 2048), ("1048576KiB", 1024), (" 2 gib ", 2048), ("64", 64)])
def test_memory(value: int | str, mib: int) -> None:
    assert parse_memory(value) == mib


@pytest.mark.parametrize("value", ["lots", "1.5G", -1, 0, True, "100KiB", "256B", "15", "17T", None, 2.0, "\u0661G"])
def test_bad_memory(value: object) -> None:
    with pytest.raises(InvalidSpec, match="memory"):
        parse_memory(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "size"), [(1, 1), ("512", 512), ("256B", 256), ("10GiB", 10 << 30),
                                             ("512M", 512 << 20), ("1k", 1024), ("1T", 1 << 40)])
def test_size(value: int | str, size: int) -> None:
    assert parse_size(value, "disk.size") == size


@pytest.mark.parametrize("value", [0, -5, True, "1.5G", "ten", "2000T", MAX_SIZE_BYTES + 1, None, [1]])
def test_bad_size(value: object) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_size(value, "disk.size")
    assert info.value.field == "disk.size"


def test_one_parser_behind_both() -> None:
    assert parse_amount("3G", "f", 1 << 20, "MiB", "'1G'") * (1 << 20) == parse_amount("3G", "f", 1, "bytes", "'1G'")
    with pytest.raises(InvalidSpec, match="whole number of MiB"):
        parse_amount("1K", "f", 1 << 20, "MiB", "'1G'")
    # The old homes of both parsers name the same functions, not copies.
    assert addressing.parse_memory is parse_memory and storagexml.parse_size is parse_size


@pytest.mark.parametrize(("unit", "size"), [("bytes", 1), ("B", 1), ("KiB", 1024), ("k", 1024), ("KB", 1000),
                                            ("MiB", 1 << 20), ("MB", 10**6), ("G", 1 << 30), ("TiB", 1 << 40),
                                            ("PB", 10**15), ("EiB", 1 << 60)])
def test_libvirt_units(unit: str, size: int) -> None:
    assert unit_bytes(unit, 0) == size


def test_an_unknown_unit_gets_the_callers_default() -> None:
    assert unit_bytes("furlongs", 7) == 7


def test_volume_sizes_are_read_with_the_same_units() -> None:
    xml = ("<volume><name>v</name><capacity unit='KB'>3</capacity><allocation unit='KiB'>2</allocation>"
           "<target><path>/p/v</path></target></volume>")
    info = storagexml.read_volume(xml)
    assert (info.capacity, info.allocation) == (3000, 2048)
