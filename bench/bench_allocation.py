"""Allocation speed on a /16 with tens of thousands of reservations.

Prints, in one run, the time of libvm's allocator next to a naive one (netaddr
iteration with a set of used addresses) and the end-to-end ``Network.free_ip``
on a libvirt test-driver network holding every reservation in its XML, as
ratios. Run: ``.venv/bin/python bench/bench_allocation.py [N]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import netaddr

import libvm
from libvm.addressing import generate_mac, next_free, parse_subnet

SUBNET = parse_subnet("10.20.0.0/16")
DYNAMIC = (netaddr.IPAddress("10.20.255.0"), netaddr.IPAddress("10.20.255.254"))


def naive(used: set[netaddr.IPAddress]) -> netaddr.IPAddress:
    for ip in SUBNET.iter_hosts():
        if ip != SUBNET.ip and ip not in used and not (DYNAMIC[0] <= ip <= DYNAMIC[1]):
            return ip
    raise RuntimeError("full")


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def node_xml(count: int) -> str:
    hosts = "".join(
        f"<host mac='{generate_mac('big', SUBNET.network + 2 + i)}' ip='{SUBNET.network + 2 + i}'/>"
        for i in range(count)
    )
    return (
        "<node><network><name>big</name><bridge name='vbig0'/>"
        f"<ip address='{SUBNET.ip}' prefix='16'><dhcp>"
        f"<range start='{DYNAMIC[0]}' end='{DYNAMIC[1]}'/>{hosts}</dhcp></ip></network></node>"
    )


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 30000
    used = {SUBNET.network + 2 + i for i in range(count)}
    expected = SUBNET.network + 2 + count
    assert next_free(SUBNET, used, exclude=[DYNAMIC]) == expected == naive(used)
    t_naive = best_of(3, lambda: naive(used))
    t_libvm = best_of(3, lambda: next_free(SUBNET, used, exclude=[DYNAMIC]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.xml"
        path.write_text(node_xml(count))
        with libvm.connect(f"test://{path}") as hv:
            net = hv.network("big")
            assert net.free_ip() == expected
            t_net = best_of(3, net.free_ip)
            t_check = best_of(3, lambda: net.check("02:00:00:00:00:01", str(expected)))
    print(f"free address after {count} reservations in {SUBNET.cidr}: {expected}")
    print(f"{'allocator':40} {'seconds':>10} {'vs naive':>10}")
    for label, value in [
        ("naive netaddr iteration", t_naive),
        ("libvm next_free (pure)", t_libvm),
        ("libvm Network.free_ip (test driver)", t_net),
        ("libvm Network.check (one reservation)", t_check),
    ]:
        print(f"{label:40} {value:10.4f} {value / t_naive:9.2f}x")


if __name__ == "__main__":
    main()
