"""Allocation and reservation reads on a /16 with tens of thousands of reservations.

For each size (default 10,000 and 50,000 reservations), side by side: a naive
allocator (netaddr iteration with a set of used addresses), libvm's pure
``next_free``, and, on a libvirt test-driver network holding every
reservation in its XML, ``Network.free_ip``, ``Network.reservations()`` and
``Network.check`` of one new reservation; best of 3, in seconds and as ratios
to the naive allocator. One libvirt ``XMLDesc`` call is shown too: every
network read starts with it, so no reader can be faster. Last, whether
``free_ip`` meets the target of 50 ms at 50,000 reservations.

Run: ``.venv/bin/python bench/bench_allocation.py [SIZES]`` (``10000,50000``;
CI: ``1000``).
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import netaddr
from _common import wants_help

import libvm
from libvm.addressing import generate_mac, next_free, parse_subnet

SUBNET = parse_subnet("10.20.0.0/16")
DYNAMIC = (netaddr.IPAddress("10.20.255.0"), netaddr.IPAddress("10.20.255.254"))
TARGET_SIZE = 50_000
TARGET_SECONDS = 0.050
LABELS = {
    "naive": "naive netaddr iteration",
    "next_free": "libvm next_free (pure)",
    "xmldesc": "libvirt XMLDesc alone (the floor)",
    "free_ip": "Network.free_ip",
    "reservations": "Network.reservations()",
    "check": "Network.check (one new reservation)",
}


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


def measure(count: int) -> dict[str, float]:
    """Seconds per operation (best of 3) on a network of ``count`` reservations."""
    used = {SUBNET.network + 2 + i for i in range(count)}
    expected = SUBNET.network + 2 + count
    assert next_free(SUBNET, used, exclude=[DYNAMIC]) == expected == naive(used)
    times = {
        "naive": best_of(3, lambda: naive(used)),
        "next_free": best_of(3, lambda: next_free(SUBNET, used, exclude=[DYNAMIC])),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "node.xml"
        path.write_text(node_xml(count))
        with libvm.connect(f"test://{path}") as hv:
            net = hv.network("big")
            mac = str(generate_mac("big", expected))
            assert net.free_ip() == expected
            assert len(net.reservations()) == count
            assert net.check(mac, str(expected)) == (libvm.Reservation(mac, expected), False)
            times["xmldesc"] = best_of(3, lambda: net.handle.XMLDesc(0))
            times["free_ip"] = best_of(3, net.free_ip)
            times["reservations"] = best_of(3, net.reservations)
            times["check"] = best_of(3, lambda: net.check(mac, str(expected)))
    return times


def main() -> None:
    if wants_help(__doc__):
        return
    sizes = [int(size) for size in (sys.argv[1] if len(sys.argv) > 1 else "10000,50000").split(",")]
    results = {count: measure(count) for count in sizes}
    print(f"reservations in {SUBNET.cidr}, best of 3; ratio = time / naive allocator at the same size")
    print(f"{'operation':38}" + "".join(f"{f'{count} s':>12} {'ratio':>8}" for count in sizes))
    for key, label in LABELS.items():
        cells = "".join(f"{results[c][key]:12.4f} {results[c][key] / results[c]['naive']:7.2f}x" for c in sizes)
        print(f"{label:38}{cells}")
    if TARGET_SIZE in results:
        took = results[TARGET_SIZE]["free_ip"]
        verdict = "met" if took < TARGET_SECONDS else "not met"
        print(f"target free_ip < 50 ms at 50k: {verdict} ({took * 1000:.1f} ms)")
    else:
        print("target free_ip < 50 ms at 50k: not measured (no 50000 run)")


if __name__ == "__main__":
    main()
