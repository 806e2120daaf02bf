"""Time to IP: from the lease appearing in dnsmasq to ``wait_for_ip`` returning.

Boots the tiny test guest N times on a real daemon (the sandbox, root; or
``$LIBVM_URI``). A watcher thread asks libvirt for the leases every 2 ms and
notes when the guest's lease first appears; the main thread waits with
``vm.wait_for_ip()`` (libvm: watches dnsmasq's lease file with a stat every
10 ms, asks libvirt only when it changed, else every ``poll`` s) and, side by
side in the same run, with the plain 0.5 s polling libvm used before. Prints
the median and the worst delay of each and their ratio, plus the CPU time the
waiting process spent per second of waiting.
Run: ``sudo .venv/bin/python bench/bench_time_to_ip.py [N]``.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from _common import daemon, wants_help

import libvm


def poll_plain(vm: libvm.VM, net: libvm.Network, mac: str) -> None:
    """What wait_for_ip did before: ask libvirt every 0.5 s."""
    while not any(str(x.mac) == mac for x in net.leases()):
        time.sleep(0.5)


def one_boot(hv: libvm.Hypervisor, uri: str, net: libvm.Network, base: str, n: int, tmp: Path,
             waiter: Callable[[libvm.VM, libvm.Network, str], object]) -> tuple[float, float, float]:
    """(lease appeared -> waiter returned) delay, wait wall time, CPU seconds of the wait."""
    from libvm.testing import build_guest

    guest = build_guest()
    name = f"libvmtest-tti{n}"
    mac = str(libvm.Nic(net.name, ip=f"{base}.{50 + n % 100}").mac)
    seen: list[float] = []
    stop = threading.Event()

    def watch() -> None:
        with libvm.connect(uri) as own:
            watched = own.network(net.name)
            while not stop.is_set() and not seen:
                if any(str(x.mac) == mac for x in watched.leases()):
                    seen.append(time.monotonic())
                time.sleep(0.002)

    vm = hv.create_vm(name, memory="256MiB", nics=[libvm.Nic(net.name, ip=f"{base}.{50 + n % 100}")],
                      kernel=guest.kernel, initrd=guest.initrd, cmdline=guest.cmdline,
                      serial_log=tmp / f"{name}.log", virt_type="qemu")
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        start, cpu = time.monotonic(), time.process_time()
        waiter(vm, net, mac)
        done, cpu = time.monotonic(), time.process_time() - cpu
        stop.set()
        watcher.join()
        return done - seen[0] if seen else float("nan"), done - start, cpu
    finally:
        stop.set()
        watcher.join()
        vm.delete()


def main() -> int:
    if wants_help(__doc__):
        return 0
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    waiters: dict[str, Callable[[libvm.VM, libvm.Network, str], object]] = {
        "libvm wait_for_ip": lambda vm, net, mac: vm.wait_for_ip(timeout=120),
        "plain 0.5 s polling": poll_plain,
    }
    results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in waiters}
    with daemon() as uri, libvm.connect(uri) as hv, tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        base = "10.214.7"
        net = hv.ensure_network("libvmtest-tti", f"{base}.0/24", dhcp_range=(f"{base}.200", f"{base}.250"),
                                forward="none")
        try:
            for n in range(rounds):
                for index, (label, waiter) in enumerate(waiters.items()):  # interleaved: same conditions
                    results[label].append(one_boot(hv, uri, net, base, 2 * n + index, Path(tmp), waiter))
        finally:
            net.delete()
    print(f"time to IP over {rounds} boots each (lease visible in libvirt -> wait returns)")
    medians = {}
    for label, rows in results.items():
        delays = [r[0] for r in rows]
        cpu_rate = sum(r[2] for r in rows) / sum(r[1] for r in rows)
        medians[label] = statistics.median(delays)
        print(f"  {label:22s} median {medians[label] * 1000:6.1f} ms  worst {max(delays) * 1000:6.1f} ms  "
              f"CPU {cpu_rate * 100:4.1f}% of the wait")
    ratio = medians["libvm wait_for_ip"] / medians["plain 0.5 s polling"]
    print(f"  ratio libvm/plain: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
