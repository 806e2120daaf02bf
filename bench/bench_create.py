"""VM creation: libvm's ``create_vm`` next to raw libvirt-python and ``virt-install``, on a real daemon.

Every variant does the same work for each VM: reserve its IP in the network's
DHCP (``<host mac ip name>``, live and persistent), define the domain (the
tiny test guest, direct kernel boot, TCG, one virtio NIC) and start it. Only
that is timed, until the domain runs; the guest's boot is not.

- raw: ``virNetworkUpdate`` ADD_LAST, ``defineXML`` of hand-written XML (the
  devices libvm's XML has), ``create``;
- libvm: ``hv.create_vm`` (its checks, then the same calls);
- virt-install: ``virsh net-update ... add ip-dhcp-host ... --live --config``,
  then ``virt-install --import --disk none --boot kernel=...`` (two processes,
  as a shell user runs them); "not installed" if it is missing.

One VM: the median of three rounds, variants in rotating order. N VMs: one
after another on the same network; each is paused once it runs (untimed) so
the guests already booting do not take the CPU from the next creation (TCG
boots are CPU-bound; bench_many.py measures that case). Between variants
every domain is destroyed and undefined and its reservation and lease released.
Starts the sandbox (root; or uses ``$LIBVM_URI``).
Run: ``sudo .venv/bin/python bench/bench_create.py [N]`` (default 20).
"""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import libvirt
from _common import DOMAIN_XML, FLAGS, SECTION, cleanup, daemon, size, wants_help

import libvm
from libvm.testing import GuestImage, build_guest

NETWORK = "libvmtest-bench-create"
PREFIX = "libvmtest-bc-"
ROUNDS = 3



@dataclasses.dataclass(frozen=True)
class Host:
    """One VM to create: its name and the address reserved for it."""

    name: str
    mac: str
    ip: str


#: A variant creates one VM and returns the seconds of each of its phases.
Create = Callable[[Host], dict[str, float]]


def hosts(variant: int, count: int) -> list[Host]:
    """Distinct names and addresses per variant: 10.217.<variant>.<10 + i>."""
    return [Host(f"{PREFIX}{variant}-{i}", f"52:54:00:d9:{variant:02x}:{i:02x}", f"10.217.{variant}.{10 + i}")
            for i in range(count)]


def raw_variant(conn: libvirt.virConnect, guest: GuestImage) -> Create:
    net = conn.networkLookupByName(NETWORK)

    def create(host: Host) -> dict[str, float]:
        t0 = time.perf_counter()
        net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, SECTION, -1,
                   f"<host mac='{host.mac}' name='{host.name}' ip='{host.ip}'/>", FLAGS)
        t1 = time.perf_counter()
        dom = conn.defineXML(DOMAIN_XML.format(name=host.name, kernel=guest.kernel, initrd=guest.initrd,
                                               cmdline=guest.cmdline, mac=host.mac, network=NETWORK))
        t2 = time.perf_counter()
        dom.create()
        return {"reserve": t1 - t0, "define": t2 - t1, "start": time.perf_counter() - t2}
    return create


def libvm_variant(hv: libvm.Hypervisor, guest: GuestImage) -> Create:
    def create(host: Host) -> dict[str, float]:
        t0 = time.perf_counter()
        hv.create_vm(host.name, memory="256MiB", nics=[libvm.Nic(NETWORK, ip=host.ip, mac=host.mac)],
                     kernel=guest.kernel, initrd=guest.initrd, cmdline=guest.cmdline, virt_type="qemu")
        return {"create_vm": time.perf_counter() - t0}
    return create


def virt_install_variant(uri: str, guest: GuestImage) -> Create:
    def create(host: Host) -> dict[str, float]:
        t0 = time.perf_counter()
        run(["virsh", "-c", uri, "net-update", NETWORK, "add", "ip-dhcp-host",
             f"<host mac='{host.mac}' name='{host.name}' ip='{host.ip}'/>", "--live", "--config"])
        t1 = time.perf_counter()
        run(["virt-install", "--connect", uri, "--name", host.name, "--memory", "256", "--vcpus", "1",
             "--boot", f"kernel={guest.kernel},initrd={guest.initrd},kernel_args={guest.cmdline}",
             "--disk", "none", "--import", "--network", f"network={NETWORK},mac={host.mac},model=virtio",
             "--osinfo", "detect=on,require=off", "--virt-type", "qemu", "--graphics", "none", "--noautoconsole"])
        return {"virsh net-update": t1 - t0, "virt-install": time.perf_counter() - t1}
    return create


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr.strip()}")


def measure(hv: libvm.Hypervisor, create: Create, batch: list[Host]) -> tuple[float, dict[str, float]]:
    """Create ``batch`` one VM after another: (seconds, seconds per phase), summed over the VMs.

    Each VM is paused once it runs (untimed), then all are deleted (untimed).
    """
    total, phases = 0.0, dict[str, float]()
    try:
        for host in batch:
            start = time.perf_counter()
            for phase, seconds in create(host).items():
                phases[phase] = phases.get(phase, 0.0) + seconds
            total += time.perf_counter() - start
            vm = hv.vm(host.name)
            if not vm.running:
                raise RuntimeError(f"{host.name} is {vm.state} after creation")
            vm.handle.suspend()
    finally:
        cleanup(hv, PREFIX)
    return total, phases


def main() -> int:
    if wants_help(__doc__):
        return 0
    count = size(240)
    guest = build_guest()
    labels = ["raw libvirt-python", "libvm create_vm", "virt-install --import"]
    installed = shutil.which("virt-install") is not None and shutil.which("virsh") is not None
    one: dict[str, list[float]] = {label: [] for label in labels}
    many: dict[str, tuple[float, dict[str, float]]] = {}
    with daemon() as uri, libvm.connect(uri) as hv:
        cleanup(hv, PREFIX)  # leftovers of a crashed run
        net = hv.ensure_network(NETWORK, "10.217.0.0/16", dhcp_range=("10.217.255.200", "10.217.255.250"),
                                forward="none")
        try:
            variants = {labels[0]: raw_variant(hv.handle, guest), labels[1]: libvm_variant(hv, guest)}
            if installed:
                variants[labels[2]] = virt_install_variant(uri, guest)
            order = list(variants)
            for n in range(ROUNDS):
                for label in order[n % len(order):] + order[:n % len(order)]:
                    one[label].append(measure(hv, variants[label], hosts(labels.index(label), 1))[0])
            for label, create in variants.items():
                many[label] = measure(hv, create, hosts(labels.index(label), count))
        finally:
            cleanup(hv, PREFIX)
            net.delete()
    print(f"VM creation: reserve the IP, define, start (until running); the TCG test guest; libvm {libvm.__version__}")
    print(f"1 VM: median of {ROUNDS} rounds. {count} VMs: one after another, each paused once running.")
    print(f"{'variant':24} {'1 VM s':>8} {'vs raw':>7} {f'{count} VMs s':>10} {'per VM s':>9} {'vs raw':>7}")
    base_one, base_many = statistics.median(one[labels[0]]), many[labels[0]][0]
    for label in labels:
        if label not in many:
            print(f"{label:24} {'not installed':>8}")
            continue
        single, total = statistics.median(one[label]), many[label][0]
        print(f"{label:24} {single:8.3f} {single / base_one:6.2f}x {total:10.2f} {total / count:9.3f} "
              f"{total / base_many:6.2f}x")
    print(f"where the time goes, per VM over the {count}-VM run:")
    for label, (_, phases) in many.items():
        print(f"  {label:22} " + ", ".join(f"{phase} {seconds / count:.3f} s" for phase, seconds in phases.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
