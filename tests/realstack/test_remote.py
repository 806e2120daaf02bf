"""The remote hypervisor: a second libvirtd reached only over the network (issue 16).

It runs beside the session's sandbox: neither sees the other's objects, neither
refuses to start because of the other, and its relay adds the latency asked
for and loses the link on demand.
"""

from __future__ import annotations

import concurrent.futures
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest

import libvm
from libvm.testing import GuestImage, Relay, RemoteHypervisor, remote_link
from libvm.testing.remote import Transport
from libvm.testing.sandbox import FOREIGN_DAEMONS, _running, shares_run_libvirt
from tests.realstack.conftest import PREFIX, Stack, next_subnet, stack_on

TRANSPORTS: list[Transport] = ["tcp", "ssh", "libssh"]


@pytest.fixture
def remote_hv(remote: RemoteHypervisor) -> Iterator[Callable[[str], libvm.Hypervisor]]:
    """``connect(uri)`` to the remote; removes its ``libvmtest-*`` networks before and after."""
    opened: list[libvm.Hypervisor] = []

    def connect(uri: str) -> libvm.Hypervisor:
        hv = libvm.connect(uri)
        opened.append(hv)
        return hv

    def cleanup() -> None:
        with libvm.connect(remote.tcp_uri) as hv:
            for net in hv.networks():
                if net.name.startswith(PREFIX):
                    net.delete()

    cleanup()
    try:
        yield connect
    finally:
        for hv in opened:
            hv.close()
        cleanup()


@pytest.fixture
def remote_stack(remote: RemoteHypervisor, guest: GuestImage) -> Iterator[Stack]:
    """The real-stack helpers on the remote daemon, over qemu+tcp."""
    with stack_on(remote.tcp_uri, guest) as s:
        yield s


def in_namespaces(pid: int, namespaces: list[int]) -> bool:
    try:
        return [os.stat(f"/proc/{pid}/ns/{ns}").st_ino for ns in ("mnt", "net")] == namespaces
    except OSError:
        return False


def round_trip(conn: libvirt.virConnect, calls: int = 7) -> float:
    """Median seconds of one ``getLibVersion`` (one RPC) on ``conn``."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        conn.getLibVersion()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_connects_over_each_transport_to_the_remote_daemon(
    remote: RemoteHypervisor, remote_hv: Callable[[str], libvm.Hypervisor], transport: Transport
) -> None:
    uri = remote.uri(transport)
    assert uri.startswith(f"qemu+{transport}://") and remote.address in uri
    hv = remote_hv(uri)
    # The machine has domains and networks of its own (/etc/libvirt/qemu); the remote starts with none.
    assert [vm.name for vm in hv.vms()] == []
    assert [net.name for net in hv.networks()] == []
    # The daemon runs inside the remote's namespaces, not on the machine's /run/libvirt.
    pid = int((remote.state_dir / "libvirtd.pid").read_text())
    assert not shares_run_libvirt(pid)
    assert os.stat(f"/proc/{pid}/ns/mnt").st_ino != os.stat("/proc/self/ns/mnt").st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino


def test_the_remote_daemon_has_no_local_socket(remote: RemoteHypervisor) -> None:
    """Only the network reaches it: its /run/libvirt is not the machine's."""
    inside = remote.run(["ls", "/run/libvirt"]).stdout.split()
    assert "libvirt-sock" in inside
    sock = Path("/run/libvirt/libvirt-sock")
    if sock.exists():  # the sandbox's (or the machine's) socket is another inode
        inner = remote.run(["stat", "-c", "%d %i", "/run/libvirt/libvirt-sock"]).stdout.split()
        assert [int(x) for x in inner] != [sock.stat().st_dev, sock.stat().st_ino]
    assert remote.run(["ls", "/etc/libvirt/qemu"]).stdout.split() == ["autostart", "networks"]
    assert remote.run(["ls", "/etc/libvirt/qemu/networks"]).stdout.split() == ["autostart"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_reserve_and_release_over_each_transport(
    remote: RemoteHypervisor, remote_hv: Callable[[str], libvm.Hypervisor], transport: Transport
) -> None:
    hv = remote_hv(remote.uri(transport))
    base = next_subnet()
    name = f"{PREFIX}remote-{transport}"
    net = hv.ensure_network(name, f"{base}.0/24", forward="none", dhcp_range=(f"{base}.30", f"{base}.39"))
    res = net.reserve("52:54:00:10:00:01", f"{base}.50", "web1")
    assert str(res.ip) == f"{base}.50"
    # Another transport sees the same daemon's reservation.
    other = remote_hv(remote.uri("tcp" if transport != "tcp" else "ssh"))
    assert [str(r.ip) for r in other.network(name).reservations()] == [f"{base}.50"]
    assert [str(r.ip) for r in net.release("52:54:00:10:00:01")] == [f"{base}.50"]
    assert list(other.network(name).reservations()) == []


def test_neither_side_sees_the_other_sides_objects(
    stack: Stack, remote: RemoteHypervisor, remote_hv: Callable[[str], libvm.Hypervisor]
) -> None:
    """The sandbox (local, on the machine's /run/libvirt) and the remote run at once, apart."""
    local_net, _ = stack.network("on-local")
    far = remote_hv(remote.tcp_uri)
    base = next_subnet()
    far.ensure_network(f"{PREFIX}on-remote", f"{base}.0/24", forward="none",
                       dhcp_range=(f"{base}.30", f"{base}.39"))
    assert local_net.name not in [n.name for n in far.networks()]
    assert f"{PREFIX}on-remote" not in [n.name for n in stack.hv.networks()]
    # Neither daemon counts as foreign for the sandbox, which shares /run/libvirt with the local one only.
    remote_pid = int((remote.state_dir / "libvirtd.pid").read_text())
    foreign = [pid for pid in _running(FOREIGN_DAEMONS) if shares_run_libvirt(pid)]
    assert remote_pid not in foreign


def test_wrong_host_key_is_refused(remote: RemoteHypervisor, tmp_path: Path) -> None:
    """known_hosts is checked: a host key other than the remote sshd's fails the connection."""
    other = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"{remote.address} {' '.join(Path(f'{other}.pub').read_text().split()[:2])}\n")
    uri = remote.libssh_uri.replace(str(remote.known_hosts), str(known))
    with pytest.raises(libvm.LibvirtFailure):
        libvm.connect(uri)


def test_relay_adds_the_latency_asked_for(remote: RemoteHypervisor) -> None:
    direct = libvirt.open(remote.tcp_uri)
    relay = remote.relay("tcp", delay_ms=25)
    try:
        assert relay.uri is not None
        relayed = libvirt.open(relay.uri)
        try:
            fast, slow = round_trip(direct), round_trip(relayed)
        finally:
            relayed.close()
    finally:
        direct.close()
        relay.stop()
    print(f"getLibVersion: {fast * 1000:.2f} ms direct, {slow * 1000:.2f} ms through a 25 ms relay")
    assert fast < 0.02
    assert 0.050 <= slow < 0.050 + max(0.05, 3 * fast)


@pytest.mark.parametrize("transport", ["ssh", "libssh"])
def test_ssh_through_a_relay(remote: RemoteHypervisor, transport: Transport) -> None:
    """The relay's address is in known_hosts, so host keys are still checked through it."""
    relay = remote.relay(transport, delay_ms=5)
    try:
        assert relay.uri is not None and f"127.0.0.1:{relay.port}" in relay.uri
        with libvm.connect(relay.uri) as hv:
            assert [n.name for n in hv.networks() if not n.name.startswith(PREFIX)] == []
    finally:
        relay.stop()


def test_cutting_the_relay_fails_the_next_call(remote: RemoteHypervisor) -> None:
    relay = remote.relay("tcp", delay_ms=5)
    try:
        assert relay.uri is not None
        with libvm.connect(relay.uri) as hv:
            hv.networks()
            assert relay.connections == 1
            relay.cut()
            with pytest.raises(libvm.LibvirtFailure):
                hv.networks()
        with pytest.raises(libvm.LibvirtFailure):  # new connections are refused too
            libvm.connect(relay.uri)
        relay.restore()
        with libvm.connect(relay.uri) as hv:
            hv.networks()
    finally:
        relay.stop()


def test_benchmark_helper_and_nothing_left_behind(remote: RemoteHypervisor) -> None:
    """remote_link() for bench/: a working link with latency; afterwards, no process, netns, veth or mount.

    It runs beside the session's remote (``remote``, requested so that a machine where
    none can start skips or, under CI, fails these tests the usual way).
    """
    name = "libvmtest-remote2"
    probe = RemoteHypervisor(name, "10.253.9.0/24")
    with remote_link(delay_ms=10, name=name, subnet="10.253.9.0/24") as relay:
        assert isinstance(relay, Relay) and relay.uri is not None
        conn = libvirt.open(relay.uri)
        try:
            assert round_trip(conn, 3) >= 0.020
            # A network with DHCP: a dnsmasq in the remote netns that stop() must end too.
            base = next_subnet()
            conn.networkCreateXML(
                f"<network><name>{PREFIX}leftover</name><ip address='{base}.1' netmask='255.255.255.0'>"
                f"<dhcp><range start='{base}.30' end='{base}.39'/></dhcp></ip></network>")
        finally:
            conn.close()
        assert any("dnsmasq" in item for item in probe.leftovers())
        namespaces = [int(x) for x in (probe.state_dir / "namespaces").read_text().split()]
    assert probe.leftovers() == []
    # No process in either namespace, even one that left the netns's list.
    assert [pid for pid in os.listdir("/proc") if pid.isdigit() and in_namespaces(int(pid), namespaces)] == []
    assert not Path(f"/run/netns/{name}").exists()
    assert remote.running()  # the other remote was not touched


def test_stop_cleans_up_after_a_crashed_run(remote: RemoteHypervisor) -> None:
    """A new object with the same name finds the old run's processes by netns and recorded inodes."""
    name = "libvmtest-remote3"
    first = RemoteHypervisor(name, "10.253.10.0/24")
    first.start()
    try:
        assert first.running()
        RemoteHypervisor(name, "10.253.10.0/24").stop()
        assert first.leftovers() == []
        assert not first.running()
        assert remote.running()
    finally:
        first.stop()


def test_a_guest_on_the_remote_gets_its_reserved_address(remote_stack: Stack) -> None:
    """A whole hypervisor, not just an API: qemu and dnsmasq run in the remote's namespaces."""
    net, base = remote_stack.network("far")
    vm = remote_stack.vm("far-vm", [libvm.Nic(net.name, ip=f"{base}.50")])
    assert str(vm.wait_for_ip(timeout=120)) == f"{base}.50"
    assert list(remote_stack.console("far-vm").values()) == [f"{base}.50"]


def test_a_stalled_relay_holds_calls_until_restored(remote: RemoteHypervisor) -> None:
    """The silent kind of lost link: the call hangs (no error), then completes once the link is back."""
    relay = remote.relay("tcp", delay_ms=1)
    try:
        assert relay.uri is not None
        conn = libvirt.open(relay.uri)
        try:
            relay.stall()
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                call = pool.submit(conn.getLibVersion)
                with pytest.raises(concurrent.futures.TimeoutError):
                    call.result(timeout=0.5)
                relay.restore()
                assert call.result(timeout=5) == conn.getLibVersion()
        finally:
            conn.close()
    finally:
        relay.stop()


def test_restart_libvirtd_keeps_the_remote_and_its_objects(
    remote: RemoteHypervisor, remote_hv: Callable[[str], libvm.Hypervisor]
) -> None:
    base = next_subnet()
    remote_hv(remote.tcp_uri).ensure_network(f"{PREFIX}survivor", f"{base}.0/24", forward="none")
    before = int((remote.state_dir / "libvirtd.pid").read_text())
    remote.restart_libvirtd()
    assert remote.running() and int((remote.state_dir / "libvirtd.pid").read_text()) != before
    for transport in TRANSPORTS:
        assert f"{PREFIX}survivor" in [n.name for n in remote_hv(remote.uri(transport)).networks()]
