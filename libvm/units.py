"""Sizes with units: memory in MiB (``"256MiB"``, ``"1G"``), disk sizes in bytes (``"10GiB"``),
and the ``unit`` attributes of libvirt's XML.

Pure code: one table of units, :data:`UNIT_BYTES`, and one parser,
:func:`parse_amount`, behind both kinds of size. A string is ASCII digits with
an optional unit ``K``, ``M``, ``G`` or ``T`` (powers of 1024, as libvirt and
qemu count; ``i`` and ``B`` are optional, case and spaces around it are
ignored); a bare number counts the caller's unit. A bad value raises
:class:`libvm.InvalidSpec` naming the field.
"""

from __future__ import annotations

import re

from .errors import InvalidSpec

_AMOUNT = re.compile(r"\s*([0-9]+)\s*([KMGT]?)(i?B?)\s*", re.IGNORECASE | re.ASCII)
#: Bytes per unit, by libvirt's names for them in lower case (``<memory unit='KiB'>``,
#: ``<capacity unit='bytes'>``): ``k``, ``KiB`` are powers of 1024, ``KB`` of 1000.
UNIT_BYTES: dict[str, int] = {"b": 1, "bytes": 1} | {
    name: size
    for power, letter in enumerate("kmgtpe", 1)
    for name, size in ((letter, 1024**power), (f"{letter}ib", 1024**power), (f"{letter}b", 1000**power))
}
MIB = 2**20
#: 16 TiB: more than any qemu guest here can have; a bigger number is a typo.
MAX_MEMORY_MIB = 16 * 1024 * 1024
#: 1 PiB: bigger than any disk image here; a bigger number is a typo.
MAX_SIZE_BYTES = 2**50


def parse_amount(value: object, field: str, unit: int, unit_name: str, example: str) -> int:
    """``value`` counted in ``unit`` bytes (``unit_name``: ``"MiB"``, ``"bytes"``).

    An ``int`` counts units, as does a bare number in a string; ``"2G"`` is
    converted and must be a whole number of units. When the unit is not a byte,
    a plain ``"B"`` suffix (``"256B"``) is refused as the likely slip it is.
    ``example`` (``"'256MiB'"``) shows a good value in the message.
    """
    hint = f"give {unit_name} as an int or a string like {example}"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise InvalidSpec(field, value, hint)
    if isinstance(value, int):
        return value
    if value.strip().startswith("-") and _AMOUNT.fullmatch(value.strip()[1:]):
        # "-5" (from a command line) is the int -5: the caller's range check says what is wrong.
        return -parse_amount(value.strip()[1:], field, unit, unit_name, example)
    match = _AMOUNT.fullmatch(value)
    if not match:
        raise InvalidSpec(field, value, hint)
    number, prefix, suffix = int(match.group(1)), match.group(2).upper(), match.group(3).upper()
    if not prefix:
        if suffix == "B" and unit != 1:
            raise InvalidSpec(field, value, f"bytes: say {example} (or give {unit_name} as an int)")
        return number
    amount, rest = divmod(number * UNIT_BYTES[prefix.lower()], unit)
    if rest:
        raise InvalidSpec(field, value, f"not a whole number of {unit_name}")
    return amount


def parse_memory(value: int | str, field: str = "memory") -> int:
    """Memory in MiB from an int (MiB) or a string such as ``"256MiB"``, ``"1G"``; 16 MiB to 16 TiB."""
    mib = parse_amount(value, field, MIB, "MiB", "'256MiB'")
    if not 16 <= mib <= MAX_MEMORY_MIB:
        raise InvalidSpec(field, value, f"from 16 MiB to {MAX_MEMORY_MIB} MiB (16 TiB)")
    return mib


def parse_size(value: object, field: str) -> int:
    """Bytes from an int (bytes) or a string such as ``"10GiB"``, ``"512M"``; 1 byte to 1 PiB."""
    size = parse_amount(value, field, 1, "bytes", "'10GiB'")
    if not 1 <= size <= MAX_SIZE_BYTES:
        raise InvalidSpec(field, value, "from 1 byte to 1 PiB")
    return size


def unit_bytes(unit: str, default: int) -> int:
    """Bytes per ``unit`` as libvirt's XML names it (any case); ``default`` for a unit libvirt does not have."""
    return UNIT_BYTES.get(unit.lower(), default)
