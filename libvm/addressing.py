"""MAC, IP and subnet validation, MAC generation and address allocation.

Pure netaddr code: nothing here talks to libvirt. Strings are accepted at the
edge and turned into ``netaddr.EUI`` / ``IPAddress`` / ``IPNetwork``; every bad
value raises :class:`libvm.InvalidSpec` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeAlias

import netaddr

from .errors import InvalidSpec, NoFreeAddress
from .units import MAX_MEMORY_MIB as MAX_MEMORY_MIB  # kept importable from here
from .units import parse_memory as parse_memory

MacLike: TypeAlias = "str | netaddr.EUI"
IpLike: TypeAlias = "str | netaddr.IPAddress"

# Every pattern is used with fullmatch(): '$' also matches before a final newline,
# so "pc001\n" passed a '^...$' check and libvirt stored it as "pc001 ".
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME = re.compile(rf"{_LABEL}(\.{_LABEL})*")


def parse_mac(value: MacLike, field: str = "mac") -> netaddr.EUI:
    """Return ``value`` as a unicast 48-bit MAC (``aa:bb:cc:dd:ee:ff`` dialect)."""
    # netaddr.EUI takes ints too (EUI(5) is 00:00:00:00:00:05): refuse them, a
    # number is a mistake here, not a MAC.
    if not isinstance(value, (str, netaddr.EUI)):
        raise InvalidSpec(field, value, "not a 48-bit MAC address (give a string)")
    try:
        # White space around it is ignored, as for IPs, subnets and sizes (api.md): netaddr
        # itself accepts a trailing newline but not a space.
        mac = netaddr.EUI(value.strip() if isinstance(value, str) else value, version=48,
                          dialect=netaddr.mac_unix_expanded)
    except (netaddr.AddrFormatError, TypeError, ValueError) as exc:
        raise InvalidSpec(field, value, "not a 48-bit MAC address") from exc
    if mac.words[0] & 0x01:
        raise InvalidSpec(field, value, "multicast MAC (lowest bit of the first octet set)")
    if int(mac) == 0:
        raise InvalidSpec(field, value, "all-zero MAC")
    return mac


def format_mac(mac: netaddr.EUI) -> str:
    """The form libvirt writes: lowercase, colon separated."""
    return str(netaddr.EUI(int(mac), dialect=netaddr.mac_unix_expanded)).lower()


def parse_ip(value: IpLike, field: str = "ip") -> netaddr.IPAddress:
    """Return ``value`` as an IPv4 or IPv6 address."""
    if isinstance(value, netaddr.IPAddress):
        return value
    if not isinstance(value, str) or "/" in value:
        raise InvalidSpec(field, value, "not an IP address")
    try:
        return netaddr.IPAddress(value.strip())
    except (netaddr.AddrFormatError, ValueError) as exc:
        raise InvalidSpec(field, value, "not an IP address") from exc


#: Special-purpose blocks (RFC 6890) that cannot hold a guest's address: dnsmasq would
#: serve them, but a guest's kernel drops (0/8, 240/4, multicast), keeps to itself
#: (loopback) or never routes (link-local, which is also what it picks on its own) them.
UNUSABLE_SUBNETS = {
    netaddr.IPNetwork("0.0.0.0/8"): "'this network' (0.0.0.0/8)",
    netaddr.IPNetwork("127.0.0.0/8"): "loopback (127.0.0.0/8)",
    netaddr.IPNetwork("169.254.0.0/16"): "link-local (169.254.0.0/16)",
    netaddr.IPNetwork("224.0.0.0/4"): "multicast (224.0.0.0/4)",
    netaddr.IPNetwork("240.0.0.0/4"): "reserved (240.0.0.0/4, with the broadcast address 255.255.255.255)",
    netaddr.IPNetwork("::/128"): "the unspecified address (::)",
    netaddr.IPNetwork("::1/128"): "loopback (::1)",
    netaddr.IPNetwork("::ffff:0:0/96"): "IPv4-mapped (::ffff:0:0/96)",
    netaddr.IPNetwork("fe80::/10"): "link-local (fe80::/10)",
    netaddr.IPNetwork("ff00::/8"): "multicast (ff00::/8)",
}


def check_usable_subnet(net: netaddr.IPNetwork, field: str = "subnet", value: object = None) -> netaddr.IPNetwork:
    """Refuse a subnet that overlaps a block no guest can hold an address in (:data:`UNUSABLE_SUBNETS`)."""
    for block, what in UNUSABLE_SUBNETS.items():
        if block.version == net.version and net.first <= block.last and block.first <= net.last:
            raise InvalidSpec(field, net if value is None else value,
                              f"overlaps {what}: no guest can be served an address there")
    return net


def parse_subnet(value: str | netaddr.IPNetwork, field: str = "subnet") -> netaddr.IPNetwork:
    """Parse ``"192.168.150.0/24"`` or ``"192.168.150.1/24"`` (gateway form).

    The returned network keeps the host part: ``.ip`` is the gateway (the
    address libvirt gives the bridge). A bare network address gets its first
    host as the gateway.
    """
    if not isinstance(value, (str, netaddr.IPNetwork)):
        raise InvalidSpec(field, value, "not a subnet in CIDR form (give a string like 192.168.150.0/24)")
    try:
        net = netaddr.IPNetwork(value)
    except (netaddr.AddrFormatError, TypeError, ValueError) as exc:
        raise InvalidSpec(field, value, "not a subnet in CIDR form") from exc
    if "/" not in str(value):
        raise InvalidSpec(field, value, "give a prefix length, e.g. 192.168.150.0/24")
    max_prefix = 30 if net.version == 4 else 126
    if net.prefixlen > max_prefix:
        raise InvalidSpec(field, value, f"prefix longer than /{max_prefix} leaves no room for hosts")
    check_usable_subnet(net, field, value)
    if net.ip == net.network:
        net = netaddr.IPNetwork(f"{net.network + 1}/{net.prefixlen}")
    elif net.version == 4 and net.ip == net.broadcast:
        raise InvalidSpec(field, value, "the gateway cannot be the broadcast address")
    return net


def check_host_ip(ip: netaddr.IPAddress, subnet: netaddr.IPNetwork, field: str = "ip") -> None:
    """Refuse an address a guest cannot hold in ``subnet`` (gateway form)."""
    if ip.version != subnet.version or ip not in subnet:
        raise InvalidSpec(field, str(ip), f"outside the network's subnet {subnet.cidr}")
    if ip == subnet.network:
        raise InvalidSpec(field, str(ip), f"is the network address of {subnet.cidr}")
    if subnet.version == 4 and ip == subnet.broadcast:
        raise InvalidSpec(field, str(ip), f"is the broadcast address of {subnet.cidr}")
    if ip == subnet.ip:
        raise InvalidSpec(field, str(ip), f"is the gateway (bridge) address of {subnet.cidr}")


#: libvirt keeps a definition in ``/etc/libvirt/<driver>/<name>.xml``: the name must fit a file name.
MAX_NAME_BYTES = 200


def check_name(name: object, field: str = "name", *, lookup: bool = False) -> str:
    """libvirt accepts any name but '/' and control characters; so does libvm.

    The name must also be valid UTF-8 (no lone surrogates) and at most
    :data:`MAX_NAME_BYTES` bytes, since libvirt stores the definition in a
    file named after it. ``lookup=True`` checks a name to look up: only what
    cannot be sent to libvirt (not a string, empty, control characters, not
    UTF-8) is refused; a name no object can have ('/', too long) is left to
    libvirt's "not found".
    """
    wanted = "the name of a libvirt object" if lookup else "a non-empty name without '/' or control characters"
    if not isinstance(name, str) or not name or _CONTROL.search(name):
        raise InvalidSpec(field, name, wanted)
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidSpec(field, name, "not valid Unicode text (a lone surrogate)") from exc
    if lookup:
        return name
    if not name.strip() or "/" in name:
        raise InvalidSpec(field, name, wanted)
    if size > MAX_NAME_BYTES:
        raise InvalidSpec(field, name, f"longer than {MAX_NAME_BYTES} bytes")
    return name


def check_hostname(value: str, field: str = "hostname") -> str:
    """A DNS name: dot-separated labels of letters, digits and '-'."""
    if not isinstance(value, str) or len(value) > 253 or not _HOSTNAME.fullmatch(value):
        raise InvalidSpec(field, value, "not a DNS name (labels of letters, digits, '-', at most 63)")
    return value


def dns_label(name: str) -> str | None:
    """``name`` as a DHCP and DNS host name, if it is a valid one (a VM's default hostname)."""
    try:
        return check_hostname(name)
    except InvalidSpec:
        return None


_DUID = re.compile(r"[0-9A-Fa-f]{1,2}(:[0-9A-Fa-f]{1,2}){3,129}")


def check_duid(value: object, field: str = "client_id") -> str:
    """A DHCPv6 DUID in colon-separated hex (``00:01:00:01:...``), returned in lower case
    (libvirt keeps ``<host id=>`` as given; libvm compares ids in lower case)."""
    if not isinstance(value, str) or not _DUID.fullmatch(value):
        raise InvalidSpec(field, value, "a DHCPv6 DUID in colon-separated hex")
    return value.lower()


def generate_mac(network: str, ip: IpLike) -> netaddr.EUI:
    """A locally administered MAC derived from ``(network, ip)``.

    Deterministic, so that re-creating a VM with the same address keeps the
    same MAC (and the guest keeps its DHCP identity). For IPv4 the last four
    octets *are* the address (``02:xx:c0:a8:96:58`` for 192.168.150.88), so a
    MAC is readable and unique per network; the first two come from a hash of
    the network name, with the locally-administered bit set and the multicast
    bit clear. ``ip`` may be a string.
    """
    check_name(network, "network")
    ip = parse_ip(ip, "ip")
    key = network if ip.version == 4 else f"{network}\0{ip}"
    import hashlib  # here: import libvm stays cheap (see bench/bench_import.py)

    digest = hashlib.sha256(key.encode()).digest()
    head = bytes([(digest[0] & 0xFC) | 0x02, digest[1]])
    tail = ip.packed if ip.version == 4 else digest[2:6]
    return netaddr.EUI(int.from_bytes(head + tail, "big"), dialect=netaddr.mac_unix_expanded)


def in_range(ip: netaddr.IPAddress, start: netaddr.IPAddress, end: netaddr.IPAddress) -> bool:
    """Whether ``start <= ip <= end`` (same family)."""
    return ip.version == start.version and int(start) <= int(ip) <= int(end)


def next_free(
    subnet: netaddr.IPNetwork,
    used: Iterable[netaddr.IPAddress | int],
    *,
    pool: tuple[netaddr.IPAddress, netaddr.IPAddress] | None = None,
    exclude: Iterable[tuple[netaddr.IPAddress, netaddr.IPAddress]] = (),
) -> netaddr.IPAddress:
    """The lowest address of ``pool`` (default: the whole subnet) that is free.

    Skips the network, broadcast and gateway addresses, every address in
    ``used`` and every range in ``exclude`` (the dynamic DHCP ranges).
    Runs in O(len(used) + len(exclude)) plus the number of addresses skipped.
    """
    first = int(subnet.network) + 1
    last = int(subnet.broadcast) - 1 if subnet.version == 4 else int(subnet.last)
    if pool is not None:
        first, last = max(first, int(pool[0])), min(last, int(pool[1]))
    taken = set(map(int, used))
    taken.add(int(subnet.ip))
    ranges = sorted((int(a), int(b)) for a, b in exclude)
    candidate = first
    while candidate <= last:
        # Reservations come in runs (tens of thousands on a big network): step
        # over a run in this tight loop, look at the ranges once per run.
        while candidate in taken:
            candidate += 1
        jumped = False
        for start, end in ranges:
            if start <= candidate <= end:
                candidate, jumped = end + 1, True
        if not jumped and candidate <= last:
            return netaddr.IPAddress(candidate, subnet.version)
    low, high = (netaddr.IPAddress(n, subnet.version) for n in (first, last))
    dynamic = ", ".join(f"{netaddr.IPAddress(a, subnet.version)}-{netaddr.IPAddress(b, subnet.version)}"
                        for a, b in ranges)
    raise NoFreeAddress(
        f"no free address in {subnet.cidr} between {low} and {high}"
        + (f" outside the dynamic DHCP range {dynamic}" if dynamic else "")
    )
