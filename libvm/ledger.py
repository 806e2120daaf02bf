"""The fleet's ledger of MACs: a MAC is on one host of a :class:`libvm.Fleet`, never two (pure).

libvm derives a NIC's MAC from its network and IPv4 address (two bytes from
the network's name, then the four bytes of the address: :func:`libvm.generate_mac`),
unique on one host. Two hosts with the same network name and subnet (two NAT
islands, say) would derive the same MAC for the same address, so the fleet
decides the MAC of each NIC with :func:`mac_for` before a host creates it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Mapping, Sequence

import netaddr

from .addressing import format_mac, generate_mac
from .errors import MacInUse
from .placement import HostFacts, overlap
from .values import Nic

__all__ = ["Owners", "mac_for"]

#: ``{mac: (host URI, owner)}``: every MAC the fleet knows, the owner worded for messages ("domain 'web1'").
Owners = Mapping[str, tuple[str, str]]


def mac_for(nic: Nic, host: HostFacts, hosts: Sequence[HostFacts], macs: Owners, where: str) -> Nic:
    """``nic`` with the MAC it gets on ``host``, unique in the fleet.

    A MAC given by the caller that another host holds is refused, naming
    the domain. libvm derives a MAC from (network, address): the same
    network name and subnet on two hosts would derive the same one, so a
    derived MAC another host holds is replaced by one derived with the
    host in the key, and a NIC whose address the host will allocate gets a
    random (locally administered) MAC when another host's network could
    derive the same ones.
    """
    if nic.mac is not None and (nic.ip is None or nic.mac != generate_mac(nic.network, nic.ip)):
        mac = format_mac(nic.mac)
        owner = macs.get(mac)
        if owner is not None and owner[0] != host.uri:
            raise MacInUse(f"{where}: MAC {mac} is already on {owner[1]} on host {owner[0]}",
                           other=f"{owner[0]} {owner[1]}")
        return nic
    if nic.ip is not None:
        derived = generate_mac(nic.network, nic.ip)
        if _free(derived, host.uri, macs):
            return dataclasses.replace(nic, mac=derived)
        salted = generate_mac(f"{nic.network}~{_short(host.uri)}", nic.ip)
        if _free(salted, host.uri, macs):
            return dataclasses.replace(nic, mac=salted)
        return dataclasses.replace(nic, mac=_random_mac(macs))
    if _could_clash(nic.network, host, hosts, macs):
        return dataclasses.replace(nic, mac=_random_mac(macs))
    return nic  # the host derives it from the address it allocates


def _free(mac: netaddr.EUI, uri: str, macs: Owners) -> bool:
    """Whether ``mac`` is on no other host (the host's own planner refuses its own clashes)."""
    owner = macs.get(format_mac(mac))
    return owner is None or owner[0] == uri


def _could_clash(network: str, host: HostFacts, hosts: Sequence[HostFacts],
                 macs: Owners) -> bool:
    """Whether a MAC ``host`` derives for an address it allocates on ``network`` could be on another host.

    A derived IPv4 MAC is two bytes from the network's name, then the
    address: another host's network whose name gives the same two bytes and
    whose subnet overlaps could derive the same MAC, and so could any MAC
    already on another host that starts with those two bytes.
    """
    mine = host.networks.get(network)
    if mine is None:
        return False
    head = _head(network)
    for other in hosts:
        if other.uri == host.uri or other.error is not None:
            continue
        for theirs in other.networks.values():
            if _head(theirs.name) == head and overlap(mine.subnets, theirs.subnets) is not None:
                return True
    return any(owner[0] != host.uri and mac.startswith(head) for mac, owner in macs.items())


def _head(network: str) -> str:
    """The first two octets of the MACs libvm derives on ``network`` (``02:ab:``)."""
    return format_mac(generate_mac(network, "10.0.0.1"))[:6]


def _short(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _random_mac(macs: Owners) -> netaddr.EUI:
    """A random locally administered unicast MAC on no host of the fleet."""
    while True:
        raw = bytearray(random.getrandbits(8) for _ in range(6))
        raw[0] = (raw[0] & 0xFC) | 0x02
        mac = netaddr.EUI(int.from_bytes(raw, "big"), dialect=netaddr.mac_unix_expanded)
        if format_mac(mac) not in macs:
            return mac
