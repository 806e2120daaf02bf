"""Many VMs at once: N created and started, then all waited on, next to one VM's create-to-IP.

In one run on a real daemon (the sandbox, root; or ``$LIBVM_URI``):

- one VM: ``hv.create_vm`` + ``vm.wait_for_ip()``, the median of three;
- N VMs: ``hv.create_vms([...])`` (each guest starts as soon as it is
  defined, so the first ones boot while the rest are created), then
  ``hv.wait_for_ips(vms)``.

Prints the wall times and their ratio, and the CPU time that bounds it: the
qemu processes' (from ``/proc/<pid>/stat``), libvirtd's with the children it
ran (iptables, dnsmasq helpers), this process's, and the whole host's. TCG
guests are CPU-bound, so N guests need N times one guest's CPU time, spread
over the host's cores. Run: ``sudo .venv/bin/python bench/bench_many.py [N]`` (default 20).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import cleanup, daemon, size, wants_help

import libvm
from libvm.testing import GuestImage, build_guest

NETWORK = "libvmtest-bench-many"
PREFIX = "libvmtest-bm-"
ROUNDS = 3
TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds (user + system) of ``pid``; with the children it waited for. 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / TICK


def processes() -> dict[int, tuple[str, float]]:
    """``{pid: (command name, CPU seconds)}`` of every process now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = ((entry / "comm").read_text().strip(), process_cpu(int(entry.name)))
            except OSError:
                continue
    return found


def qemu_cpu(names: list[str]) -> float:
    """CPU seconds of the qemu processes of domains ``names`` (libvirt's pid files, local daemon)."""
    total = 0.0
    for name in names:
        try:
            total += process_cpu(int(Path(f"/run/libvirt/qemu/{name}.pid").read_text()))
        except (OSError, ValueError):
            return float("nan")
    return total


def host_cpu() -> dict[str, float]:
    """CPU seconds of the whole host since boot, from /proc/stat: busy, stolen (by the
    hypervisor this machine runs on) and total."""
    user, nice, system, idle, iowait, irq, softirq, steal = (
        int(v) / TICK for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9])
    return {"host busy": user + nice + system + irq + softirq, "host stolen": steal,
            "host total": user + nice + system + idle + iowait + irq + softirq + steal}


def cpu_now() -> tuple[dict[str, float], dict[int, tuple[str, float]]]:
    """Cumulative CPU seconds (libvirtd with the children it ran, this process, the host), and every process's."""
    every = processes()
    times = os.times()
    libvirtd = sum(process_cpu(pid, children=True) for pid, (comm, _) in every.items() if comm == "libvirtd")
    return {"libvirtd": libvirtd, "this process": times.user + times.system, **host_cpu()}, every


def others(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]) -> list[tuple[str, float]]:
    """CPU seconds by command name of the processes other than qemu, libvirtd and this one, most first."""
    used: dict[str, float] = {}
    for pid, (comm, seconds) in after.items():
        if comm not in ("qemu-system-x86", "libvirtd") and pid != os.getpid():
            name = comm.split("/", 1)[0]  # kernel workers rename themselves after their current job
            used[name] = used.get(name, 0.0) + seconds - before.get(pid, (comm, 0.0))[1]
    return sorted(used.items(), key=lambda item: -item[1])


def spec(guest: GuestImage, logs: Path, index: int) -> dict[str, Any]:
    name = f"{PREFIX}{index}"
    nic = libvm.Nic(NETWORK, ip=f"10.218.{index // 200}.{10 + index % 200}")
    return {"name": name, "memory": "256MiB", "nics": [nic],
            "kernel": guest.kernel, "initrd": guest.initrd, "cmdline": guest.cmdline,
            "serial_log": logs / f"{name}.log", "virt_type": "qemu"}


def one_vm(hv: libvm.Hypervisor, guest: GuestImage, logs: Path) -> tuple[float, float]:
    """(create_vm + wait_for_ip seconds, the guest's qemu CPU seconds by then)."""
    start = time.perf_counter()
    vm = hv.create_vm(**spec(guest, logs, 0))
    try:
        vm.wait_for_ip(timeout=300)
        took = time.perf_counter() - start
        return took, qemu_cpu([vm.name])
    finally:
        vm.delete()


def many_vms(hv: libvm.Hypervisor, guest: GuestImage, logs: Path, count: int) -> dict[str, Any]:
    specs = [spec(guest, logs, 1 + i) for i in range(count)]
    running: list[float] = []
    leased: list[float] = []
    before, procs_before = cpu_now()
    start = time.perf_counter()
    try:
        vms = hv.create_vms(specs, progress=lambda done, total: running.append(time.perf_counter() - start))
        created = time.perf_counter() - start
        macs = {str(nic.mac) for one in specs for nic in one["nics"]}
        early = sum(1 for lease in hv.network(NETWORK).leases() if str(lease.mac) in macs)
        hv.wait_for_ips(vms, timeout=900, progress=lambda done, total: leased.append(time.perf_counter() - start))
        total = time.perf_counter() - start
        after, procs_after = cpu_now()
        guests = qemu_cpu([vm.name for vm in vms])
    finally:
        cleanup(hv, PREFIX)
    cpu = {key: after[key] - before[key] for key in before}
    return {"total": total, "created": created, "running": running, "leased": leased, "early": early,
            "qemu": guests, "others": others(procs_before, procs_after), **cpu}


def main() -> int:
    if wants_help(__doc__):
        return 0
    count = size(1000)
    guest = build_guest()
    cores = os.cpu_count() or 1
    with daemon() as uri, libvm.connect(uri) as hv, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)  # qemu (libvirt-qemu) writes the serial logs here
        cleanup(hv, PREFIX)  # leftovers of a crashed run
        net = hv.ensure_network(NETWORK, "10.218.0.0/16", dhcp_range=("10.218.255.200", "10.218.255.250"),
                                forward="none")
        try:
            singles = [one_vm(hv, guest, Path(tmp)) for _ in range(ROUNDS)]
            result = many_vms(hv, guest, Path(tmp), count)
        finally:
            cleanup(hv, PREFIX)
            net.delete()
    one = statistics.median(s[0] for s in singles)
    one_cpu = statistics.median(s[1] for s in singles)
    floor = count * one_cpu / cores
    busy, stolen, available = result["host busy"], result["host stolen"], result["host total"]
    print(f"{count} VMs at once vs one VM: the TCG test guest, {cores} cores, libvm {libvm.__version__}")
    print(f"{'':44} {'seconds':>8} {'vs one VM':>10}")
    print(f"{f'one VM: create_vm + wait_for_ip (median of {ROUNDS})':44} {one:8.2f} {1:9.2f}x")
    print(f"{f'{count} VMs: create_vms + wait_for_ips':44} {result['total']:8.2f} {result['total'] / one:9.2f}x")
    print(f"{'  create_vms returned':44} {result['created']:8.2f}   "
          f"(VM 1 running at {result['running'][0]:.1f} s; {result['early']} leases held by then)")
    print(f"{'  first / median / last VM with its IP':44} {result['leased'][0]:8.2f} / "
          f"{statistics.median(result['leased']):.2f} / {result['leased'][-1]:.2f}")
    print("CPU seconds during the run:")
    for label, seconds in [("one guest's qemu, create to lease (median)", one_cpu),
                           (f"{count} guests' qemu", result["qemu"]),
                           ("libvirtd and the processes it ran", result["libvirtd"]),
                           ("this process (libvm)", result["this process"]),
                           *((f"other: {comm}", spent) for comm, spent in result["others"][:3])]:
        print(f"  {label:42} {seconds:8.2f}")
    print(f"  {'whole host busy':42} {busy:8.2f} of {available:.2f} ({100 * busy / available:.0f}%; "
          f"stolen by the hypervisor {stolen:.2f})")
    print(f"floor: {count} guests x {one_cpu:.2f} CPU s / {cores} cores = {floor:.1f} s = {floor / one:.2f}x one VM; "
          f"under 2x needs at least {count * one_cpu / (2 * one):.1f} cores")
    return 0


if __name__ == "__main__":
    sys.exit(main())
