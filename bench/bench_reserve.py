"""Reservations on a real daemon: one at a time, in bulk, and as the network grows.

Starts the sandbox (root; or uses ``$LIBVM_URI``) and measures, in one run:

1. **One at a time**, for each size N: N reservations made with libvm's
   ``Network.reserve`` (validation, conflict and lease checks, then the update),
   with a raw ``virNetworkUpdate`` ADD (live and persistent), and with
   ``virsh net-update ... add-last ip-dhcp-host --live --config`` subprocesses;
   each on a fresh network. Ratios against raw.
2. **Bulk**, for the largest N: a new network defined with all N hosts
   (``ensure_network(hosts=)``) and ``Network.reserve_many`` of N hosts on a
   running network with no guest, against the N raw live updates of part 1.
3. **Growth**: the cost of one more reservation (libvm and raw, median of a
   few) on a network that already holds 0 ... 10,000 hosts.

Run: ``sudo .venv/bin/python bench/bench_reserve.py [--sizes 10,100,1000]
[--grow 0,1000,5000,10000]``. The full run takes about 20 minutes: libvirt
9.0 re-applies the network's firewall rules (24 iptables calls) on every live
update, about 0.28 s each.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator

from _common import ADD, FLAGS, SECTION, daemon

import libvm

NET = "libvmtest-bench"
Host = tuple[str, str, str]


def hosts(count: int, first: int = 0) -> list[Host]:
    """``count`` distinct (mac, ip, name) in 10.216.0.0/16, outside the dynamic range (10.216.255.x)."""
    return [(f"02:00:00:{i >> 16:02x}:{(i >> 8) & 255:02x}:{i & 255:02x}", f"10.216.{i // 250}.{2 + i % 250}",
             f"h{i}") for i in range(first, first + count)]


@contextlib.contextmanager
def network(hv: libvm.Hypervisor, existing: list[Host] | None = None) -> Iterator[libvm.Network]:
    net = hv.ensure_network(NET, "10.216.0.0/16", dhcp_range=("10.216.255.1", "10.216.255.250"),
                            forward="none", hosts=existing or [])
    try:
        yield net
    finally:
        net.delete()


def timed(fn: Callable[..., object], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def one_at_a_time(hv: libvm.Hypervisor, uri: str, count: int) -> dict[str, float]:
    batch = hosts(count)

    def raw(net: libvm.Network) -> None:
        for mac, ip, name in batch:
            net.handle.update(ADD, SECTION, -1, f"<host mac='{mac}' name='{name}' ip='{ip}'/>", FLAGS)

    def libvm_reserve(net: libvm.Network) -> None:
        for mac, ip, name in batch:
            net.reserve(mac, ip, name)

    def virsh(net: libvm.Network) -> None:
        for mac, ip, name in batch:
            subprocess.run(["virsh", "-q", "-c", uri, "net-update", net.name, "add-last", "ip-dhcp-host",
                            f"<host mac='{mac}' name='{name}' ip='{ip}'/>", "--live", "--config"],
                           check=True, capture_output=True)

    seconds = {}
    for label, fn in (("raw", raw), ("libvm", libvm_reserve), ("virsh", virsh)):
        with network(hv) as net:
            seconds[label] = timed(fn, net)
            assert len(net.reservations()) == count
    return seconds


def bulk(hv: libvm.Hypervisor, count: int) -> dict[str, float]:
    batch = hosts(count)
    seconds = {}
    start = time.perf_counter()
    with network(hv, batch) as net:
        seconds["ensure_network(hosts=)"] = time.perf_counter() - start
        assert len(net.reservations()) == count
    with network(hv) as net:
        seconds["reserve_many, idle running network"] = timed(net.reserve_many, batch)
        assert len(net.reservations()) == count and all(ip in net.xml() for _, ip, _ in batch[-3:])
    return seconds


def growth(hv: libvm.Hypervisor, existing: int, samples: int) -> tuple[float, float]:
    """Median seconds of one libvm reserve and one raw update on a network holding ``existing`` hosts."""
    extra = hosts(2 * samples, first=existing)
    mine, theirs = [], []
    with network(hv, hosts(existing)) as net:
        for index in range(samples):
            mac, ip, name = extra[2 * index]
            mine.append(timed(net.reserve, mac, ip, name))
            mac, ip, name = extra[2 * index + 1]
            theirs.append(timed(net.handle.update, ADD, SECTION, -1, f"<host mac='{mac}' name='{name}' ip='{ip}'/>",
                                FLAGS))
    return statistics.median(mine), statistics.median(theirs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="hosts per run of part 1; the largest is bulk's N")
    parser.add_argument("--grow", default="0,1000,5000,10000", help="existing hosts for part 3")
    parser.add_argument("--samples", type=int, default=5, help="reservations timed per growth step")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    steps = [int(x) for x in args.grow.split(",")]
    with daemon() as uri, libvm.connect(uri) as hv:
        single = {count: one_at_a_time(hv, uri, count) for count in sizes}
        largest = max(sizes)
        many = bulk(hv, largest)
        grown = {existing: growth(hv, existing, args.samples) for existing in steps}

    print("1. One reservation at a time on a running network (live and persistent)")
    print(f"{'hosts':>6} {'raw ms/host':>12} {'libvm':>8} {'virsh':>8}   (ratio to raw)")
    for count, s in single.items():
        print(f"{count:6} {1000 * s['raw'] / count:12.1f} {s['libvm'] / s['raw']:7.2f}x {s['virsh'] / s['raw']:7.2f}x")
    live = single[largest]["raw"]
    print(f"\n2. Bulk: {largest} hosts at once, against {largest} raw live updates ({live:.1f} s)")
    print(f"{'path':38} {'seconds':>9} {'ms/host':>9} {'speed-up':>9}")
    for label, seconds in many.items():
        print(f"{label:38} {seconds:9.2f} {1000 * seconds / largest:9.2f} {live / seconds:8.0f}x")
    verdict = "met" if live / many["ensure_network(hosts=)"] >= 20 else "NOT met"
    print(f"target: a lab of {largest} reservations >= 20x faster than {largest} live updates: {verdict}")
    print("\n3. One more reservation as the network grows (median ms)")
    print(f"{'existing':>9} {'libvm':>9} {'raw':>9} {'ratio':>7}")
    for existing, (mine, theirs) in grown.items():
        print(f"{existing:9} {1000 * mine:9.1f} {1000 * theirs:9.1f} {mine / theirs:6.2f}x")


if __name__ == "__main__":
    main()
