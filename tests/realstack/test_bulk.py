"""Bulk reservations on the real stack: the restart path, and the live path when a guest is attached."""

from __future__ import annotations

from pathlib import Path

import netaddr

import libvm
from tests.realstack.conftest import Stack


def dnsmasq_pid(net: libvm.Network) -> int:
    """The PID of the network's dnsmasq, from libvirt's pidfile."""
    return int(Path(f"/run/libvirt/network/{net.name}.pid").read_text().strip())


def hostsfile(net: libvm.Network) -> str:
    """What dnsmasq reads its reservations from (libvirt writes it)."""
    return Path(f"/var/lib/libvirt/dnsmasq/{net.name}.hostsfile").read_text()


def test_reserve_many_on_an_idle_network_restarts_it_once_and_dnsmasq_serves_the_hosts(stack: Stack) -> None:
    net, base = stack.network("bulk")
    before = dnsmasq_pid(net)
    hosts = [(f"02:00:00:0b:00:{i:02x}", f"{base}.{50 + i}", f"bulk{i}") for i in range(3)]
    net.reserve_many(hosts)
    assert dnsmasq_pid(net) != before  # one restart, not three live updates
    live = net.xml()
    assert all(f"ip='{ip}'" in live for _, ip, _ in hosts)
    assert all(mac in hostsfile(net) for mac, _, _ in hosts)
    mac, ip, _ = hosts[1]
    vm = stack.vm("bulk", [libvm.Nic(net.name, mac=mac, ip=ip)])
    assert vm.wait_for_ip(timeout=90) == netaddr.IPAddress(ip)


def test_reserve_many_with_a_guest_attached_updates_live_and_keeps_the_guest(stack: Stack) -> None:
    net, base = stack.network("busy")
    vm = stack.vm("busy", [libvm.Nic(net.name, ip=f"{base}.10")])
    ports = net.handle.listAllPorts()
    assert len(ports) == 1
    before = dnsmasq_pid(net)
    hosts = [(f"02:00:00:0c:00:{i:02x}", f"{base}.{60 + i}") for i in range(2)]
    net.reserve_many(hosts)
    # No restart: it would have cut the guest off its bridge. (Two guards: the live XML differs
    # from the persistent one while a guest is attached, and the guest has a network port.)
    assert dnsmasq_pid(net) == before
    assert [p.UUIDString() for p in net.handle.listAllPorts()] == [p.UUIDString() for p in ports]
    assert all(mac in hostsfile(net) for mac, _ in hosts)
    assert vm.wait_for_ip(timeout=90) == netaddr.IPAddress(f"{base}.10")


def test_ensure_network_with_hosts_serves_them_from_the_start(stack: Stack) -> None:
    hosts = [(f"02:00:00:0d:{i // 256:02x}:{i % 256:02x}", f"10.213.250.{10 + i}") for i in range(200)]
    net = stack.hv.ensure_network(stack.name("lab"), "10.213.250.0/24", forward="none", hosts=hosts)
    assert net.active
    served = hostsfile(net)
    assert all(f"{mac},{ip}" in served for mac, ip in hosts)
