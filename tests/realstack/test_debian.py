"""Real Debian 12 cloud guests on the real daemon: both of cloud-init's Debian network
renderers (ENI for ifupdown, netplan for systemd-networkd), on DHCP and with
``static_network=True``, checked from inside the guest over SSH.

The images come from ``libvm.testing.build_debian_image`` (mmdebstrap from the host's
Debian apt sources, cached). The guests boot from qcow2 overlays of one uploaded base
with a NoCloud seed, no ``kernel=``. Logging in uses the real OpenSSH client with the
seed's key, run where the guests' bridge is (the sandbox's network namespace).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import libvm
from libvm import CloudInit, Disk, Nic
from libvm.testing import Sandbox
from libvm.testing.debian import FLAVOURS, build_debian_image
from tests.realstack.conftest import Stack, unavailable

POOL = "libvmtestdebian"
POOL_DIR = "/var/lib/libvirt/images/libvmtestdebian"
BOOT_TIMEOUT = 300.0
MEMORY = "512MiB"


@pytest.fixture(scope="module")
def images() -> dict[str, Path]:
    """The cached Debian image of every flavour (built on first use, about a minute each)."""
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        unavailable("the OpenSSH client is missing: apt-get install openssh-client")
    try:
        return {flavour: build_debian_image(flavour) for flavour in FLAVOURS}
    except Exception as exc:
        unavailable(f"the Debian images could not be built: {exc}")
        raise


@pytest.fixture(scope="module")
def bases(uri: str, images: dict[str, Path]) -> Iterator[dict[str, str]]:
    """Each flavour's image uploaded once into a pool: flavour -> base volume name."""
    with libvm.connect(uri) as hv:
        pool = hv.ensure_pool(POOL, POOL_DIR)
        for vol in pool.volumes():  # left over by a crashed run
            vol.delete()
        try:
            started = time.monotonic()
            names = {flavour: pool.upload(f"debian-{flavour}.qcow2", image).name for flavour, image in images.items()}
            print(f"\nTIMING upload of {len(names)} Debian bases: {time.monotonic() - started:.1f} s")
            yield names
        finally:
            hv.pool(POOL).delete(volumes=True)


@dataclass
class Ssh:
    """The real OpenSSH client, run where the guests' bridge is reachable."""

    key: Path
    known_hosts: Path
    netns: str | None

    def argv(self, ip: str, command: str) -> list[str]:
        argv = ["ssh", "-i", str(self.key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=accept-new", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", f"debian@{ip}", command]
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else argv

    def run(self, ip: str, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(ip, command), capture_output=True, text=True, timeout=timeout, check=False)

    def out(self, ip: str, command: str, timeout: float = 60) -> str:
        proc = self.run(ip, command, timeout)
        assert proc.returncode == 0, f"ssh {ip} {command!r}: exit {proc.returncode}: {proc.stderr[-1500:]}"
        return proc.stdout.strip()


@pytest.fixture(scope="module")
def ssh(sandbox: Sandbox | None, tmp_path_factory: pytest.TempPathFactory) -> Ssh:
    """A fresh ed25519 key pair and known_hosts file for this module's guests."""
    tmp = tmp_path_factory.mktemp("ssh")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "libvmtest", "-f", str(tmp / "key")],
                   check=True, capture_output=True)
    return Ssh(tmp / "key", tmp / "known_hosts", sandbox.netns if sandbox is not None else None)


def wait_for_login(ssh: Ssh, guests: dict[str, str], started: float) -> dict[str, float]:
    """Poll every guest (label -> IP) until it accepts the key; seconds from ``started`` per guest."""
    ready: dict[str, float] = {}
    errors: dict[str, str] = {}
    while len(ready) < len(guests) and time.monotonic() - started < BOOT_TIMEOUT:
        for label, ip in guests.items():
            if label in ready:
                continue
            proc = ssh.run(ip, "true", timeout=30)
            if proc.returncode == 0:
                ready[label] = time.monotonic() - started
            else:
                errors[label] = proc.stderr.strip()[-300:]
        time.sleep(1)
    assert len(ready) == len(guests), f"no SSH login within {BOOT_TIMEOUT} s: {errors}"
    return ready


def nameservers(resolv_conf: str) -> list[str]:
    return [line.split()[1] for line in resolv_conf.splitlines() if line.startswith("nameserver ")]


@dataclass(frozen=True)
class Guest:
    label: str
    flavour: str
    ip: str
    static: bool
    other: str  # the guest whose name this one must resolve
    ip6: str  # reserved for it too (dual stack); a static guest must hold it


def problems_inside(ssh: Ssh, guest: Guest, gateway: str, other: Guest, gateway6: str) -> list[str]:
    """What is wrong inside ``guest``, seen over SSH (empty: all as promised)."""
    status = ssh.run(guest.ip, "cloud-init status --wait --long", timeout=BOOT_TIMEOUT)
    if "status: done" not in status.stdout:
        return [f"cloud-init not done: {status.stdout}{status.stderr}"]
    result = json.loads(ssh.out(guest.ip, "sudo -n cat /run/cloud-init/result.json"))["v1"]
    network_file = FLAVOURS[guest.flavour].network_file
    facts = ssh.out(guest.ip, "hostname; echo @; ip -4 -o addr show scope global; echo @; "
                              "ip -4 route show default; echo @; cat /etc/resolv.conf; echo @; "
                              f"getent hosts {guest.other}; echo @; test -f {network_file} && echo rendered; "
                              "echo @; command -v route || echo no-net-tools; echo @; "
                              "ip -6 -o addr show scope global; echo @; ip -6 route show default").split("@\n")
    hostname, addresses, route, resolv, resolved, rendered, net_tools, addresses6, route6 = (
        part.strip() for part in facts)
    dual = [  # static_network pins both addresses; a DHCP guest's IPv6 depends on its DHCPv6 client
        (f" inet6 {guest.ip6}/64 " in addresses6, f"IPv6 addresses: {addresses6!r}"),
        # The pinned gateway, maybe beside the router dnsmasq advertises (a multipath default).
        (route6.startswith("default") and f"via {gateway6} " in route6, f"IPv6 default route: {route6!r}"),
    ] if guest.static else []
    if not guest.static:  # reported, not promised: whether the DHCPv6 client sent the name dnsmasq keys on
        print(f"\n{guest.label}: IPv6 {'holds' if f' inet6 {guest.ip6}/' in addresses6 else 'lacks'} "
              f"{guest.ip6}: {addresses6!r}")
    expected = [
        (result["errors"] == [], f"cloud-init errors: {result['errors']}"),
        ("NoCloud" in result["datasource"], f"datasource: {result['datasource']}"),
        (hostname == guest.label, f"hostname: {hostname}"),
        (f" inet {guest.ip}/24 " in addresses, f"addresses: {addresses}"),
        (route.startswith(f"default via {gateway} "), f"default route: {route!r}"),
        # dnsmasq on the network's addresses; on a dual-stack network its IPv6 one too (RDNSS in its RAs).
        # (RDNSS in its router advertisements: its global or its link-local address on the bridge).
        (gateway in nameservers(resolv) and all(ns in (gateway, gateway6) or ns.startswith("fe80:")
                                                for ns in nameservers(resolv)),
         f"resolver is not the network's dnsmasq: {nameservers(resolv)}"),
        # Its IPv4 address (the DNS entry), or on a dual-stack network its IPv6 one (dnsmasq's DHCP
        # name of the IPv6 reservation), which getent prefers.
        (resolved.split() in ([other.ip, guest.other], [other.ip6, guest.other]),
         f"getent hosts {guest.other}: {resolved!r}"),
        (rendered == "rendered", f"cloud-init did not render {network_file}"),
        # The default route above came without route(8): no net-tools in the image.
        (net_tools == "no-net-tools", f"route(8) is installed: {net_tools}"),
        *dual,
    ]
    return [problem for ok, problem in expected if not ok]


def test_debian_guests_on_dhcp_and_static_network(stack: Stack, bases: dict[str, str], ssh: Ssh) -> None:
    """Both flavours, each with a DHCP and a static_network guest: four guests booted at once."""
    # NAT, not isolated: libvirt's dnsmasq offers no router to DHCP clients of an isolated network.
    # Dual stack: every NIC also gets a reserved IPv6 address (by its DHCP name).
    net, prefix = stack.network("debian", forward="nat", dual=True)
    gateway = f"{prefix}.1"
    prefix6 = str(net.spec().ips[1].subnet.network)  # fd00:213:N::
    gateway6 = f"{prefix6}1"
    pool = stack.hv.pool(POOL)
    key = ssh.key.with_suffix(".pub").read_text()
    guests = []
    for n, flavour in enumerate(sorted(FLAVOURS)):
        dhcp, static = f"{flavour}-dhcp", f"{flavour}-static"
        guests += [Guest(dhcp, flavour, f"{prefix}.{50 + 2 * n}", False, static, f"{prefix6}{50 + 2 * n}"),
                   Guest(static, flavour, f"{prefix}.{51 + 2 * n}", True, dhcp, f"{prefix6}{51 + 2 * n}")]
    by_label = {g.label: g for g in guests}
    started = time.monotonic()
    vms = {}
    for g in guests:  # create all, then wait: they boot concurrently
        vms[g.label] = stack.hv.create_vm(
            stack.name(g.label), memory=MEMORY, vcpus=1,
            disks=[Disk.from_image(pool.volume(bases[g.flavour]))],
            nics=[Nic(net.name, ip=g.ip, hostname=g.label, dns=True, ip6=g.ip6)],
            cloud_init=CloudInit(hostname=g.label, ssh_authorized_keys=[key], static_network=g.static),
            serial_log=stack.console_path(g.label), virt_type="qemu")
    lease_s = {}
    for g in guests:
        if not g.static:
            assert str(vms[g.label].wait_for_ip(timeout=BOOT_TIMEOUT)) == g.ip
            lease_s[g.label] = time.monotonic() - started
    try:
        login_s = wait_for_login(ssh, {g.label: g.ip for g in guests}, started)
    except AssertionError as exc:
        consoles = {g.label: stack.console_path(g.label).read_text(errors="replace")[-1500:] for g in guests}
        raise AssertionError(f"{exc}\n{consoles}") from None
    print("\nTIMING boot to lease: " + ", ".join(f"{label} {s:.1f} s" for label, s in lease_s.items())
          + "; boot to SSH: " + ", ".join(f"{label} {s:.1f} s" for label, s in login_s.items()))

    with ThreadPoolExecutor(len(guests)) as executor:  # each waits for its cloud-init to finish
        found = executor.map(lambda g: problems_inside(ssh, g, gateway, by_label[g.other], gateway6), guests)
        problems = dict(zip(by_label, found, strict=True))
    assert not any(problems.values()), {label: found for label, found in problems.items() if found}
    # IPv4 leases: a static guest never asked DHCPv4 (systemd-networkd may still ask DHCPv6 when
    # dnsmasq's router advertisement says "managed"; it then gets its reserved IPv6 address).
    leased = {str(lease.mac): str(lease.ip) for lease in net.leases() if lease.ip.version == 4}
    for g in guests:
        # A static guest never asked DHCP; a DHCP guest holds its reserved address.
        assert leased.get(vms[g.label].macs[0]) == (None if g.static else g.ip), (g, leased)

    overlays = {f"{stack.name(g.label)}-{part}" for g in guests for part in ("disk0.qcow2", "seed.iso")}
    assert {v.name for v in pool.volumes()} == {*bases.values(), *overlays}
    six = {str(r.ip) for r in net.reservations() if r.ip.version == 6}
    assert six == {g.ip6 for g in guests}, six  # each keyed by the guest's name
    for vm in vms.values():
        vm.delete(storage=True)
    assert {v.name for v in pool.volumes()} == set(bases.values())
    assert net.reservations() == []  # both families released


def test_cloud_image_example_runs_on_the_debian_image(
        stack: Stack, images: dict[str, Path], sandbox: Sandbox | None, uri: str) -> None:
    """examples/cloud_image.py --image on a real Debian image, as a user would run it."""
    env = dict(os.environ, LIBVM_URI=uri)
    if sandbox is not None:
        env["LIBVM_NETNS"] = sandbox.netns
    example = Path(__file__).parents[2] / "examples" / "cloud_image.py"
    argv = [sys.executable, str(example), "--image", str(images["ifupdown"])]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env, check=False)
    except subprocess.TimeoutExpired as exc:  # run() killed it; the stack fixture removes its VM and network
        if "libvmexample" in [p.name for p in stack.hv.pools()]:
            stack.hv.pool("libvmexample").delete(volumes=True)  # and its pool with the uploaded image
        raise AssertionError(f"the example hung: {exc.stdout!r}") from exc
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "OK: the cloud-image VM is ready" in proc.stdout, proc.stdout
    print("\n" + proc.stdout)
    assert "libvmexample" not in [p.name for p in stack.hv.pools()]
